"""Every error the SDK raises, under one base class.

::

    ConnectorSDKError
    ├── ConfigurationError              a bad argument or setting (also a ValueError)
    ├── SidecarError                    a call to the sidecar failed
    │   ├── SidecarUnavailable          no answer: connection refused or reset, timeout
    │   └── SidecarHTTPError            the sidecar answered with an error status
    │       ├── InvalidResponse         ... or with a body that is not the contract's
    │       ├── Unauthorized            401, 403: wrong EXTERNAL_CONNECTOR_TOKEN
    │       ├── ValidationFailed        400, 413, 422: the request is malformed
    │       ├── RequestIdConflict       422: the requestId was used for another payload
    │       ├── NotFound                404
    │       │   ├── ConnectorNotFound
    │       │   ├── SessionNotFound
    │       │   ├── ConnectionNotFound
    │       │   ├── RequestNotFound
    │       │   ├── DeliveryNotFound
    │       │   └── MediaNotFound
    │       ├── Conflict                409
    │       │   ├── ConnectionNotReady      a person must re-pair; never retried
    │       │   ├── RequestInProgress       the same requestId is in flight; retried
    │       │   └── SessionNotAwaitingCode
    │       ├── Gone                    410
    │       │   └── SendExpired             a deferred send expired: it was never sent
    │       ├── RateLimited             429; retried
    │       ├── ProviderRejected        502: the vendor refused the send for good
    │       └── ServerError             5xx; retried
    │           └── ProviderUnavailable 503: the vendor is down for now
    ├── BridgeRequestError              an inbound bridge request is refused
    │   ├── BridgeUnauthorized          401
    │   │   ├── InvalidBridgeToken
    │   │   └── InvalidBridgeSignature
    │   │       └── BridgeTimestampOutOfTolerance
    │   └── InvalidBridgeEvent          400 malformed JSON, 422 wrong shape
    └── DedupeError
        ├── UnknownDedupeKey
        └── DedupeImportError

Errors about a call carry what identifies it: the HTTP ``status``, the contract's ``code``,
its ``detail``, the ``request_id`` of a send and the number of ``attempts`` made.
"""

from __future__ import annotations

from typing import ClassVar

from connector_contracts import Problem, ProblemError

__all__ = [
    "BridgeRequestError",
    "BridgeTimestampOutOfTolerance",
    "BridgeUnauthorized",
    "ConfigurationError",
    "Conflict",
    "ConnectionNotFound",
    "ConnectionNotReady",
    "ConnectorNotFound",
    "ConnectorSDKError",
    "DedupeError",
    "DedupeImportError",
    "DeliveryNotFound",
    "Gone",
    "InvalidBridgeEvent",
    "InvalidBridgeSignature",
    "InvalidBridgeToken",
    "InvalidResponse",
    "MediaNotFound",
    "NotFound",
    "ProviderRejected",
    "ProviderUnavailable",
    "RateLimited",
    "RequestIdConflict",
    "RequestInProgress",
    "RequestNotFound",
    "SendExpired",
    "ServerError",
    "SessionNotAwaitingCode",
    "SessionNotFound",
    "SidecarError",
    "SidecarHTTPError",
    "SidecarUnavailable",
    "Unauthorized",
    "UnknownDedupeKey",
    "ValidationFailed",
    "code_for_status",
    "error_class_for",
]


class ConnectorSDKError(Exception):
    """Base of every error the SDK raises."""


class ConfigurationError(ConnectorSDKError, ValueError):
    """A constructor was given a bad value (no token, a secret that is not base64, …)."""


# Calls to the sidecar ----------------------------------------------------------------------------


class SidecarError(ConnectorSDKError):
    """A call to the sidecar failed; ``attempts`` counts the tries made before giving up.

    Every one carries ``status`` (None when no answer came), ``code``, ``detail`` and the
    ``request_id`` of the send it was about, so one ``except SidecarError`` can log them all.
    """

    #: The code when the sidecar gave none (no answer at all).
    default_code: ClassVar[str] = "sidecar_error"

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.request_id = request_id
        self.attempts = attempts
        self.status: int | None = None
        self.code: str = self.default_code
        self.detail: str | None = message

    def _context(self) -> str:
        parts = []
        if self.method and self.url:
            parts.append(f"{self.method} {self.url}")
        if self.request_id:
            parts.append(f"requestId={self.request_id}")
        if self.attempts > 1:
            parts.append(f"after {self.attempts} attempts")
        return f" ({', '.join(parts)})" if parts else ""

    def __str__(self) -> str:
        return f"{self.message}{self._context()}"


class SidecarUnavailable(SidecarError):
    """No answer from the sidecar: the connection failed or timed out."""

    default_code: ClassVar[str] = "sidecar_unavailable"


class SidecarHTTPError(SidecarError):
    """The sidecar answered with an error status (an RFC 9457 problem document)."""

    #: The statuses this class stands for; empty means any. A contract ``code`` only selects
    #: a class when the status agrees (see :func:`error_class_for`).
    statuses: ClassVar[frozenset[int]] = frozenset()

    def __init__(
        self,
        *,
        status: int,
        code: str,
        detail: str | None = None,
        title: str | None = None,
        problem: Problem | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(
            detail or title or code,
            method=method,
            url=url,
            request_id=request_id,
            attempts=attempts,
        )
        self.status: int = status
        self.code = code
        self.detail = detail
        self.title = title
        self.problem = problem
        self.retry_after = retry_after

    @property
    def errors(self) -> list[ProblemError]:
        """Field-level failures the sidecar listed (validation errors), else empty."""
        if self.problem is None or self.problem.errors is None:
            return []
        return list(self.problem.errors)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}{self._context()}"


class InvalidResponse(SidecarHTTPError):
    """The sidecar answered with a body that does not decode as the contract's type."""


class Unauthorized(SidecarHTTPError):
    """401 or 403: the bearer token (``EXTERNAL_CONNECTOR_TOKEN``) is missing or wrong."""

    statuses = frozenset({401, 403})


class ValidationFailed(SidecarHTTPError):
    """400, 413 or 422: the sidecar could not accept the request as sent; see ``errors``."""

    statuses = frozenset({400, 413, 422})


class RequestIdConflict(SidecarHTTPError):
    """422: this requestId was already used for a different payload."""

    statuses = frozenset({409, 422})


class NotFound(SidecarHTTPError):
    """404: the thing named in the path does not exist."""

    statuses = frozenset({404})


class ConnectorNotFound(NotFound):
    """404: no connector of that kind."""


class SessionNotFound(NotFound):
    """404: no pairing session with that id."""


class ConnectionNotFound(NotFound):
    """404: no connection with that id."""


class RequestNotFound(NotFound):
    """404: no send with that requestId."""


class DeliveryNotFound(NotFound):
    """404: no bridge delivery with that eventId."""


class Conflict(SidecarHTTPError):
    """409: the request conflicts with the current state."""

    statuses = frozenset({409})


class ConnectionNotReady(Conflict):
    """409: the connection is not connected; a person must re-pair it."""


class RequestInProgress(Conflict):
    """409: a send with this requestId is still in flight."""


class SessionNotAwaitingCode(Conflict):
    """409: the pairing session is not waiting for a verification code."""


class Gone(SidecarHTTPError):
    """410: what the request is about existed and is over for good; repeating it cannot help."""

    statuses = frozenset({410})


class SendExpired(Gone):
    """410: a repeat of a send that was deferred (WeChat's reply window) and expired unsent.

    ``get_send`` still reports its status as ``expired``; send a new message (a new requestId)
    when the peer writes again.
    """


class RateLimited(SidecarHTTPError):
    """429: too many requests; ``retry_after`` says when to come back."""

    statuses = frozenset({429})


class ProviderRejected(SidecarHTTPError):
    """502: the vendor refused the send permanently; ``detail`` has its code and message."""

    statuses = frozenset({502})


class ServerError(SidecarHTTPError):
    """5xx: the sidecar (or something in front of it) failed."""

    statuses = frozenset(range(500, 600))


class ProviderUnavailable(ServerError):
    """503: the vendor is unavailable for now; a retry with the same requestId resumes."""

    statuses = frozenset({503})


class MediaNotFound(NotFound):
    """404: no media item has this mediaId."""


_BY_CODE: dict[str, type[SidecarHTTPError]] = {
    "unauthorized": Unauthorized,
    "forbidden": Unauthorized,
    "invalid_json": ValidationFailed,
    "validation_failed": ValidationFailed,
    "body_too_large": ValidationFailed,
    "request_id_conflict": RequestIdConflict,
    "connector_not_found": ConnectorNotFound,
    "session_not_found": SessionNotFound,
    "connection_not_found": ConnectionNotFound,
    "request_not_found": RequestNotFound,
    "delivery_not_found": DeliveryNotFound,
    "event_not_found": DeliveryNotFound,
    "media_not_found": MediaNotFound,
    "media_too_large": ValidationFailed,
    "attachment_too_large": ValidationFailed,
    "connection_not_ready": ConnectionNotReady,
    "request_in_progress": RequestInProgress,
    "session_not_awaiting_code": SessionNotAwaitingCode,
    "rate_limited": RateLimited,
    "provider_rejected": ProviderRejected,
    "provider_unavailable": ProviderUnavailable,
    "send_expired": SendExpired,
}

_BY_STATUS: dict[int, type[SidecarHTTPError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    410: Gone,
    413: ValidationFailed,
    422: ValidationFailed,
    429: RateLimited,
}

_DEFAULT_CODES: dict[int, str] = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    410: "gone",
    413: "body_too_large",
    422: "validation_failed",
    429: "rate_limited",
}


def code_for_status(status: int) -> str:
    """The code to assume when an error answer carries none (a proxy's HTML page, say)."""
    return _DEFAULT_CODES.get(status, "server_error" if status >= 500 else f"http_{status}")


def error_class_for(status: int, code: str | None) -> type[SidecarHTTPError]:
    """The error class for an answer: by the contract's ``code`` when the status agrees.

    The status has the last word, so a proxy's 502 that happens to say ``provider_rejected``
    in a 503 cannot turn a transient failure into a permanent one, or the other way round.
    """
    by_code = _BY_CODE.get(code or "")
    if by_code is not None and status in by_code.statuses:
        return by_code
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else SidecarHTTPError


# Inbound bridge requests -------------------------------------------------------------------------


class BridgeRequestError(ConnectorSDKError):
    """An inbound bridge request is refused; ``status`` and ``code`` are what to answer."""

    default_status: ClassVar[int] = 400
    default_code: ClassVar[str] = "bad_request"

    def __init__(
        self, reason: str, *, status: int | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status: int = status or self.default_status
        self.event_id = event_id

    @property
    def code(self) -> str:
        """The problem code to answer with."""
        return self.default_code

    def __str__(self) -> str:
        suffix = f" (eventId={self.event_id})" if self.event_id else ""
        return f"{self.status} {self.code}: {self.reason}{suffix}"


class BridgeUnauthorized(BridgeRequestError):
    """401: the request does not prove it comes from our sidecar."""

    default_status: ClassVar[int] = 401
    default_code: ClassVar[str] = "unauthorized"


class InvalidBridgeToken(BridgeUnauthorized):
    """The ``Authorization: Bearer`` header is missing, malformed or wrong."""


class InvalidBridgeSignature(BridgeUnauthorized):
    """The Standard Webhooks headers are missing, malformed, or no signature matches."""


class BridgeTimestampOutOfTolerance(InvalidBridgeSignature):
    """``webhook-timestamp`` is further from now than the tolerance (a replay, or a bad clock)."""


class InvalidBridgeEvent(BridgeRequestError):
    """The body is not JSON (400) or not a BridgeEvent (422); ``errors`` names the field."""

    default_status: ClassVar[int] = 422

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        errors: list[ProblemError] | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(reason, status=status, event_id=event_id)
        self.errors: list[ProblemError] = errors or []

    @property
    def code(self) -> str:
        return "invalid_json" if self.status == 400 else "validation_failed"


# Dedupe stores -----------------------------------------------------------------------------------


class DedupeError(ConnectorSDKError):
    """A dedupe store could not do what was asked."""


class UnknownDedupeKey(DedupeError, KeyError):
    """``complete()`` or ``fail()`` named a key that ``begin()`` never returned (or was purged)."""

    def __init__(self, dedupe_key: str) -> None:
        super().__init__(dedupe_key)
        self.dedupe_key = dedupe_key

    def __str__(self) -> str:
        return f"no dedupe record for {self.dedupe_key!r}"


class DedupeImportError(DedupeError):
    """A ``message_dedupe.json`` file could not be read as one."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
