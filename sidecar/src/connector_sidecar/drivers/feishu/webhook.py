"""Opening a webhook request: decrypt, check the signature and the Verification Token.

docs/protocols/feishu.md §6. The order follows both SDKs: decrypt first, then look at ``type``.
With an Encrypt Key configured every event must carry a valid ``X-Lark-Signature``. The
URL-verification challenge is accepted unsigned too, because the Python SDK skips the check for
it and whether Feishu signs challenges is only inferred from OpenClaw [oc, inferred]; an
unsigned challenge still has to decrypt with our key and carry our token. There is no replay
window on the timestamp: its unit is [unconfirmed], Feishu's retries may reuse it, and a
replayed event is only a duplicate the outbox drops.
"""

from __future__ import annotations

import dataclasses
import json
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebhookSecrets:
    encrypt_key: str | None = dataclasses.field(default=None, repr=False)
    verification_token: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Opened:
    """A verified request: ``challenge`` for URL verification, else the event ``body``."""

    body: dict[str, Any]
    challenge: str | None = None


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8); nested too deep to parse
        raise ApiProblem(400, "invalid_json", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ApiProblem(400, "invalid_json", f"{what} is not a JSON object")
    return value


def open_webhook(body: bytes, headers: Mapping[str, str], secrets: WebhookSecrets) -> Opened:
    outer = _json_object(body, "the request body")
    encrypted = "encrypt" in outer
    if encrypted:
        if not secrets.encrypt_key or not isinstance(outer["encrypt"], str):
            raise ApiProblem(
                400, "not_configured", "the event is encrypted but no encryptKey is configured"
            )
        try:
            payload = _json_object(decrypt(outer["encrypt"], secrets.encrypt_key), "the event")
        except DecryptError as exc:
            raise ApiProblem(401, "invalid_signature", f"cannot decrypt the event: {exc}") from None
    else:
        payload = outer

    is_challenge = payload.get("type") == "url_verification"
    if secrets.encrypt_key:
        timestamp = headers.get("x-lark-request-timestamp")
        nonce = headers.get("x-lark-request-nonce")
        signature = headers.get("x-lark-signature")
        if timestamp is None or nonce is None or signature is None:
            if not (is_challenge and encrypted):
                raise ApiProblem(
                    401, "invalid_signature", "the X-Lark-Signature headers are missing"
                )
        elif not verify_signature(timestamp, nonce, secrets.encrypt_key, body, signature):
            raise ApiProblem(401, "invalid_signature", "the X-Lark-Signature does not match")

    # The token sits in header.token for schema 2.0, at the top level for the challenge and v1.
    header = payload.get("header")
    token = header.get("token") if isinstance(header, dict) else payload.get("token")
    expected = secrets.verification_token
    if expected and (not isinstance(token, str) or not constant_time_equal(expected, token)):
        raise ApiProblem(401, "invalid_token", "the Verification Token does not match")

    if is_challenge:
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise ApiProblem(400, "invalid_json", "the url_verification has no challenge")
        return Opened(body=payload, challenge=challenge)
    return Opened(body=payload)
