"""Opening a webhook request: check the signature, decrypt, check the Verification Token.

docs/protocols/feishu.md §6. The rules:

- With an Encrypt Key configured, the ``X-Lark-Signature`` is checked **first**, over the raw
  body, before anything is parsed or decrypted. Every event must carry a valid one. The
  URL-verification challenge is accepted unsigned too, because the Python SDK skips the check
  for it and whether Feishu signs challenges is only inferred from OpenClaw [oc, inferred]; an
  unsigned challenge still has to decrypt with our key and carry our token.
- Every failure of a request not yet authenticated (no valid signature, does not decrypt, bad
  padding, not JSON, encrypted while no key is configured, a wrong Verification Token) gets the
  **same** answer: 401 ``unauthorized`` with one fixed body. Telling bad padding apart from the
  rest would be a padding oracle that decrypts an event byte by byte; telling "not JSON" apart
  from "wrong token" tells a prober what it got right. The precise reason goes to the log.
- A request that carries a valid signature comes from someone holding the Encrypt Key: its
  failures (does not decrypt, not JSON) may say what is wrong (400).

There is no replay window on the timestamp: its unit is [unconfirmed], Feishu's retries may
reuse it, and a replayed event is only a duplicate the outbox drops.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from connector_sidecar.drivers.feishu.crypto import (
    DecryptError,
    constant_time_equal,
    decrypt,
    verify_signature,
)
from connector_sidecar.problems import ApiProblem

__all__ = ["Opened", "WebhookSecrets", "open_webhook"]

log = logging.getLogger(__name__)

UNAUTHORIZED_DETAIL = "the request is not signed, encrypted or tokened as this connection needs"


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebhookSecrets:
    encrypt_key: str | None = dataclasses.field(default=None, repr=False)
    verification_token: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Opened:
    """A verified request: ``challenge`` for URL verification, else the event ``body``."""

    body: dict[str, Any]
    challenge: str | None = None


class _Refused(Exception):
    """An unauthenticated request failed; ``str()`` is the reason, for the log only."""


def _unauthorized() -> ApiProblem:
    """The one answer to every refused unauthenticated request (same status, same body)."""
    return ApiProblem(401, "unauthorized", UNAUTHORIZED_DETAIL)


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8); nested too deep to parse
        raise ValueError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not a JSON object")
    return value


def open_webhook(body: bytes, headers: Mapping[str, str], secrets: WebhookSecrets) -> Opened:
    """The verified request, or :class:`ApiProblem` (401 alike for every unauthenticated failure)."""
    try:
        return _open(body, headers, secrets)
    except _Refused as exc:
        log.warning("a Feishu webhook request was refused: %s", exc)
        raise _unauthorized() from None


def _signed(body: bytes, headers: Mapping[str, str], encrypt_key: str) -> bool:
    """Whether the request carries a signature; raises :class:`_Refused` if it is wrong."""
    timestamp = headers.get("x-lark-request-timestamp")
    nonce = headers.get("x-lark-request-nonce")
    signature = headers.get("x-lark-signature")
    if timestamp is None or nonce is None or signature is None:
        return False
    if not verify_signature(timestamp, nonce, encrypt_key, body, signature):
        raise _Refused("the X-Lark-Signature does not match")
    return True


def _open(body: bytes, headers: Mapping[str, str], secrets: WebhookSecrets) -> Opened:
    key = secrets.encrypt_key
    signed = _signed(body, headers, key) if key else False

    def failed(reason: str) -> Exception:
        # Only a signed request may learn what is wrong with it.
        return ApiProblem(400, "invalid_json", reason) if signed else _Refused(reason)

    try:
        outer = _json_object(body, "the request body")
    except ValueError as exc:
        raise failed(str(exc)) from None
    encrypted = "encrypt" in outer
    if encrypted:
        if not key:
            raise _Refused("the event is encrypted but no encryptKey is configured")
        ciphertext = outer["encrypt"]
        if not isinstance(ciphertext, str):
            raise failed("the encrypt field is not a string")
        try:
            payload = _json_object(decrypt(ciphertext, key), "the decrypted event")
        except (DecryptError, ValueError) as exc:
            raise failed(f"cannot open the event: {exc}") from None
    else:
        payload = outer

    is_challenge = payload.get("type") == "url_verification"
    if key and not signed and not (is_challenge and encrypted):
        raise _Refused("the X-Lark-Signature headers are missing")

    # The token sits in header.token for schema 2.0, at the top level for the challenge and v1.
    header = payload.get("header")
    token = header.get("token") if isinstance(header, dict) else payload.get("token")
    expected = secrets.verification_token
    if expected and (not isinstance(token, str) or not constant_time_equal(expected, token)):
        raise _Refused("the Verification Token does not match")

    if is_challenge:
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise ApiProblem(400, "invalid_json", "the url_verification has no challenge")
        return Opened(body=payload, challenge=challenge)
    return Opened(body=payload)
