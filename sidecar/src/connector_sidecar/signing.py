"""Standard Webhooks signatures on bridge POSTs (docs/CONTRACT.md §5, https://www.standardwebhooks.com).

Each attempt carries ``webhook-id`` (the eventId, the same on every attempt), a fresh
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` and the
base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"`` under each configured secret, separated by
spaces. Several secrets exist only during a rotation: the host accepts the request when any one
of them matches the secret it knows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from connector_sidecar._secret import Secret

__all__ = ["SECRET_PREFIX", "Signer", "decode_secret"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional, padding too)."""
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        # Missing padding is tolerated, as the reference library tolerates it.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a signing secret must be whsec_ followed by base64") from None
    if not key:
        raise ValueError("a signing secret may not be empty")
    return key


class Signer:
    """Signs bridge bodies with every configured secret; the keys are decoded once."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[Secret | str]) -> None:
        self._keys = tuple(
            decode_secret(s.reveal() if isinstance(s, Secret) else s) for s in secrets
        )

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __repr__(self) -> str:
        return f"Signer(<{len(self._keys)} secret(s)>)"

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value: one ``v1,<base64>`` per secret, space-separated."""
        signed = f"{msg_id}.{timestamp}.".encode() + body
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            for key in self._keys
        )

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers, or none when no secret is configured."""
        if not self._keys:
            return {}
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }
