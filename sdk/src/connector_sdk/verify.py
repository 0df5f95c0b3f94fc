"""Checking that a bridge request comes from our sidecar (docs/CONTRACT.md §5).

Two proofs, both optional but at least one required: the bearer token (``BRIDGE_TOKEN``),
compared in constant time, and Standard Webhooks signatures (``BRIDGE_SIGNING_SECRET``):
``webhook-signature`` carries ``v1,<base64 HMAC-SHA256>`` over ``"{webhook-id}.{webhook-timestamp}.{raw body}"``,
one per secret during a key rotation, and ``webhook-timestamp`` must be within the tolerance
of now, so a captured request cannot be replayed later. Every malformed header is one of our
typed errors, never a stray ``ValueError`` or ``binascii.Error``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import msgspec

from connector_contracts import AnyBridgeEvent, ProblemError, UnknownEventType
from connector_contracts.codec import decode_bridge_event
from connector_sdk._secret import Secret
from connector_sdk.errors import (
    BridgeTimestampOutOfTolerance,
    ConfigurationError,
    InvalidBridgeEvent,
    InvalidBridgeSignature,
    InvalidBridgeToken,
)

__all__ = [
    "BridgeVerifier",
    "Headers",
    "UnknownEvent",
    "WebhookSecret",
    "decode_event",
    "sign_webhook",
]

Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
# More signatures than this in one header is not a rotation, it is someone probing.
_MAX_SIGNATURES: Final = 16
_VALIDATION_PATH = re.compile(r" - at `(\$[^`]*)`$")


class WebhookSecret:
    """A Standard Webhooks signing secret (``whsec_`` + base64 of the key bytes)."""

    __slots__ = ("_key",)

    def __init__(self, secret: str | Secret) -> None:
        text = Secret(secret).reveal().strip()
        text = text.removeprefix(_SECRET_PREFIX)
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError("a webhook signing secret must be 'whsec_' + base64") from None
        if not key:
            raise ConfigurationError("a webhook signing secret must not be empty")
        self._key = key

    def __repr__(self) -> str:
        return "WebhookSecret('whsec_**********')"

    def signature(self, msg_id: str, timestamp: str, body: bytes) -> bytes:
        """The raw HMAC-SHA256 over ``"{msg_id}.{timestamp}.{body}"``."""
        signed = f"{msg_id}.{timestamp}.".encode() + body
        return hmac.new(self._key, signed, hashlib.sha256).digest()


def sign_webhook(
    secret: str | Secret | WebhookSecret, msg_id: str, timestamp: int, body: bytes
) -> str:
    """The ``v1,<base64>`` signature the sidecar sends, e.g. to sign requests in tests."""
    key = secret if isinstance(secret, WebhookSecret) else WebhookSecret(secret)
    digest = key.signature(msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def _secrets(value: str | Secret | Iterable[str | Secret] | None) -> tuple[WebhookSecret, ...]:
    """Secrets given as one value, one comma-separated string (as in the env), or several."""
    if value is None:
        return ()
    items: Iterable[str | Secret]
    if isinstance(value, Secret):
        items = value.reveal().split(",")
    elif isinstance(value, str):
        items = value.split(",")
    else:
        items = value
    texts = [Secret(item).reveal().strip() for item in items]
    return tuple(WebhookSecret(text) for text in texts if text)


def _lower(headers: Headers) -> dict[str, str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lowered: dict[str, str] = {}
    for name, value in pairs:
        lowered.setdefault(name.lower(), value)  # the first of a repeated header counts
    return lowered


def _utf8(text: str) -> bytes:
    # surrogatepass: a header value can never make the comparison itself raise.
    return text.encode("utf-8", "surrogatepass")


def _check_token(token: Secret, authorization: str | None) -> None:
    if not authorization:
        raise InvalidBridgeToken("missing Authorization header")
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise InvalidBridgeToken("Authorization is not a bearer token")
    if not hmac.compare_digest(_utf8(credentials), _utf8(token.reveal())):
        raise InvalidBridgeToken("wrong bearer token")


class BridgeVerifier:
    """Verifies bridge requests and decodes their BridgeEvent.

    ``token`` is ``BRIDGE_TOKEN``; ``signing_secrets`` are the ``whsec_`` secrets (a tuple,
    or the comma-separated ``BRIDGE_SIGNING_SECRET`` string); a signature by any of them is
    accepted, which is how a rotation runs without downtime. ``now`` returns Unix seconds.
    """

    def __init__(
        self,
        *,
        token: str | Secret | None,
        signing_secrets: str | Secret | Iterable[str | Secret] | None = (),
        tolerance_seconds: float = 300,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._token = Secret(token) if token else None
        self._secrets = _secrets(signing_secrets)
        if self._token is None and not self._secrets:
            raise ConfigurationError("BridgeVerifier needs a token, signing secrets, or both")
        if tolerance_seconds < 0:
            raise ConfigurationError("tolerance_seconds must not be negative")
        self.tolerance_seconds = tolerance_seconds
        self._now = now

    def __repr__(self) -> str:
        return (
            f"BridgeVerifier(token={'set' if self._token else 'unset'}, "
            f"signing_secrets={len(self._secrets)}, tolerance_seconds={self.tolerance_seconds})"
        )

    def verify(
        self, headers: Headers, body: bytes | bytearray | memoryview | str
    ) -> AnyBridgeEvent | UnknownEvent:
        """Check the request and return its event; raise a ``BridgeRequestError`` otherwise.

        ``body`` is the raw body as received (the signature covers its exact bytes); a str is
        taken as its UTF-8 encoding.

        Raises :class:`InvalidBridgeToken` or :class:`InvalidBridgeSignature` (401), and
        :class:`InvalidBridgeEvent` (400 malformed JSON, 422 not a BridgeEvent).

        The event is a :class:`BridgeEvent` (``type: "message"``, or no ``type``: an older
        sidecar), a :class:`ConnectionStatusEvent`, a :class:`SendStatusEvent`, a
        :class:`PingEvent`, or an :class:`UnknownEvent` for a type a newer sidecar added.
        """
        raw = _utf8(body) if isinstance(body, str) else bytes(body)
        lowered = _lower(headers)
        if self._token is not None:
            _check_token(self._token, lowered.get("authorization"))
        if self._secrets:
            self._check_signature(lowered, raw)
        return decode_event(raw)

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        msg_id = headers.get("webhook-id", "").strip()
        timestamp = headers.get("webhook-timestamp", "").strip()
        signatures = headers.get("webhook-signature", "").strip()
        if not (msg_id and timestamp and signatures):
            raise InvalidBridgeSignature(
                "missing webhook-id, webhook-timestamp or webhook-signature header"
            )
        if not _TIMESTAMP.fullmatch(timestamp):
            raise InvalidBridgeSignature("webhook-timestamp is not Unix seconds")
        skew = self._now() - int(timestamp)
        if abs(skew) > self.tolerance_seconds:
            raise BridgeTimestampOutOfTolerance(
                f"webhook-timestamp is {abs(skew):.0f}s {'old' if skew > 0 else 'in the future'}"
                f" (tolerance {self.tolerance_seconds:.0f}s)",
                event_id=msg_id,
            )
        candidates = []
        for entry in signatures.split()[:_MAX_SIGNATURES]:
            version, _, encoded = entry.partition(",")
            if version != "v1" or not encoded:
                continue  # another scheme (v1a, …) or a malformed entry: not ours to judge
            try:
                candidates.append(base64.b64decode(encoded, validate=True))
            except (binascii.Error, ValueError):
                continue
        if not candidates:
            raise InvalidBridgeSignature("webhook-signature has no v1 signature", event_id=msg_id)
        for secret in self._secrets:
            expected = secret.signature(msg_id, timestamp, body)
            # Compare against every candidate: no early exit that would time the secret.
            if any([hmac.compare_digest(expected, candidate) for candidate in candidates]):
                return
        raise InvalidBridgeSignature("no signature matches", event_id=msg_id)


class UnknownEvent(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """A bridge event of a type this SDK does not know: accepted and ignored."""

    type: str
    event_id: str = ""
    connection_id: str = ""
    delivery_attempt: int = 0


_unknown_decoder = msgspec.json.Decoder(UnknownEvent)


def decode_event(body: bytes) -> AnyBridgeEvent | UnknownEvent:
    """Decode a bridge body by its ``type``; 400 for malformed JSON (or not UTF-8), 422 for the
    wrong shape."""
    try:
        # JSON is UTF-8. msgspec checks only the strings it keeps, and reports bad bytes with
        # Python's UnicodeDecodeError rather than a DecodeError: check the whole body first.
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidBridgeEvent(
            f"the body is not UTF-8: {error.reason} at byte {error.start}", status=400
        ) from None
    try:
        try:
            return decode_bridge_event(body)
        except UnknownEventType:
            return _unknown_decoder.decode(body)
    except msgspec.ValidationError as error:
        message = str(error)
        match = _VALIDATION_PATH.search(message)
        path = match.group(1) if match else "$"
        raise InvalidBridgeEvent(
            f"not a BridgeEvent: {message}",
            status=422,
            errors=[ProblemError(path=path, message=message)],
        ) from None
    except msgspec.DecodeError as error:
        raise InvalidBridgeEvent(f"malformed JSON: {error}", status=400) from None
    except RecursionError:
        # msgspec follows nesting with the C stack; deep enough "[" goes past what it may.
        raise InvalidBridgeEvent("malformed JSON: nested too deeply", status=400) from None
