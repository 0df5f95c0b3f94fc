"""Webhook ("send events to developer server") crypto: AES-256-CBC decryption and the signature.

docs/protocols/feishu.md §6.2-6.4, from the docs and both SDKs [doc][sdk]. Decryption: key = SHA-256(Encrypt Key); the base64 body is
``IV (16 bytes) || ciphertext``; PKCS#7 padding checked in full by ``cryptography``'s unpadder.
A caller must not tell a padding failure apart from any other failure of an unauthenticated
request (``webhook.py`` answers them all alike): that difference is a padding oracle. Signature: lowercase hex of
plain SHA-256 (not HMAC) over ``timestamp + nonce + encrypt_key`` followed by the raw body
bytes, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "DecryptError",
    "constant_time_equal",
    "decrypt",
    "signature",
    "verify_signature",
]

_BLOCK = 16


class DecryptError(ValueError):
    """The ``encrypt`` field does not decrypt with this key."""


def decrypt(encrypted: str, encrypt_key: str) -> bytes:
    """The plaintext of a ``{"encrypt": …}`` body (UTF-8 JSON for events)."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptError("the encrypt field is not base64") from None
    # Like the Python SDK: at least one block after the IV, whole blocks only.
    if len(raw) < 2 * _BLOCK or len(raw) % _BLOCK:
        raise DecryptError("the ciphertext has a bad length")
    key = hashlib.sha256(encrypt_key.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:_BLOCK])).decryptor()
    padded = decryptor.update(raw[_BLOCK:]) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise DecryptError("bad padding: wrong Encrypt Key?") from None


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """``X-Lark-Signature`` of a request: hex SHA-256 of timestamp+nonce+key, then the body."""
    digest = hashlib.sha256((timestamp + nonce + encrypt_key).encode())
    digest.update(body)
    return digest.hexdigest()


def verify_signature(
    timestamp: str, nonce: str, encrypt_key: str, body: bytes, presented: str
) -> bool:
    """Whether ``presented`` is the signature of this exact body (constant-time compare)."""
    return constant_time_equal(signature(timestamp, nonce, encrypt_key, body), presented.lower())


def constant_time_equal(expected: str, presented: str) -> bool:
    """Compare in constant time; any ``str`` compares (a lone surrogate is unequal, never raises)."""
    return hmac.compare_digest(
        expected.encode("utf-8", "surrogatepass"), presented.encode("utf-8", "surrogatepass")
    )
