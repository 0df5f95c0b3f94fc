"""Every type of the connector contract (docs/CONTRACT.md), as msgspec Structs.

Section numbers refer to docs/CONTRACT.md. Fields marked (core) there are spoken by hosts that predate
this project: their names and meanings are fixed. Status-like fields in *views* are plain strings
with the known values documented, so an older SDK keeps decoding a newer sidecar's answers;
fields in *requests* are Literals, so a bad value is a 422 naming the field.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

import msgspec

from connector_contracts._base import Wire

__all__ = [
    "BRIDGE_EVENT_TYPES",
    "AnyBridgeEvent",
    "Attachment",
    "AttachmentKind",
    "BridgeEvent",
    "BridgeTestResult",
    "CancelSessionRequest",
    "ConnectionList",
    "ConnectionStatus",
    "ConnectionStatusEvent",
    "ConnectionView",
    "ConnectorInfo",
    "ConnectorSessionView",
    "DeliveryAttempt",
    "DeliveryAttemptList",
    "DeliveryList",
    "DeliveryStatus",
    "DeliveryView",
    "Health",
    "HostAnswer",
    "LogoutRequest",
    "LogoutResult",
    "MediaDescriptor",
    "MessageType",
    "OkResult",
    "PeerType",
    "PingEvent",
    "Problem",
    "ProblemError",
    "Readiness",
    "ReadinessProblem",
    "ReplayRequest",
    "ReplayResult",
    "SendRequest",
    "SendResult",
    "SendStatus",
    "SendStatusEvent",
    "SendTarget",
    "SessionStatus",
    "SimFaults",
    "SimFaultsView",
    "SimInboundAccepted",
    "SimInboundMessage",
    "SimMedia",
    "SimScanRequest",
    "SimSentItem",
    "SimSentList",
    "StartSessionRequest",
    "TypingRequest",
    "TypingResult",
    "VerifyCodeRequest",
]

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
Content = Annotated[str, msgspec.Meta(max_length=200_000)]
# What POST /send takes: at least one character that is not white space. The sidecar checks it
# itself (a 422 naming ``$.content``); the pattern only documents it in the OpenAPI schema.
SendContent = Annotated[str, msgspec.Meta(max_length=200_000, extra_json_schema={"pattern": "\\S"})]

PeerType = Literal["dm", "group", "unknown"]
MessageType = Literal["text", "markdown"]
SessionStatus = Literal[
    "pending",
    "qr_ready",
    "scanned",
    "verify_code_required",
    "connected",
    "expired",
    "cancelled",
    "error",
]
TERMINAL_SESSION_STATUSES: frozenset[str] = frozenset(
    {"connected", "expired", "cancelled", "error"}
)
ConnectionStatus = Literal[
    "pairing", "connected", "reconnecting", "paused", "auth_expired", "logged_out", "error"
]
SendStatus = Literal["sent", "deferred", "failed", "expired", "pending"]
"""docs/CONTRACT.md §4's statuses, and ``pending`` (an addition): in progress, or interrupted."""
DeliveryStatus = Literal["pending", "delivered", "dead"]


# §0 errors ---------------------------------------------------------------------------------------


class ProblemError(Wire):
    """One field-level validation failure: a JSON path into the request and what is wrong."""

    path: str
    message: str


class Problem(Wire):
    """RFC 9457 problem document; ``code`` is the stable machine-readable name."""

    title: str
    status: int
    code: str
    detail: str | None = None
    type: str = "about:blank"
    errors: list[ProblemError] | None = None
    request_id: str | None = None


# §1 connectors -----------------------------------------------------------------------------------


class ConnectorInfo(Wire):
    kind: str
    display_name: str
    pairing: str
    capabilities: list[str]
    options_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    enabled: bool = True


# §2 pairing sessions -----------------------------------------------------------------------------


class StartSessionRequest(Wire):
    kind: NonEmpty
    connection_id: NonEmpty
    channel_id: NonEmpty
    display_name: str | None = ""
    callback_base_url: str | None = ""
    options: dict[str, Any] | None = None


class ConnectorSessionView(Wire):
    session_id: str
    kind: str
    connection_id: str
    channel_id: str
    status: str
    qr_image: str | None = None
    qr_content: str | None = None
    account_id: str | None = None
    display_name: str | None = None
    expires_at: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class CancelSessionRequest(Wire):
    """The body of a cancel is ``{}``; anything else is ignored."""


class VerifyCodeRequest(Wire):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


# §3 connections ----------------------------------------------------------------------------------


class ConnectionView(Wire):
    connection_id: str
    channel_id: str
    kind: str
    status: str
    account_id: str | None = None
    display_name: str | None = None
    last_error: str | None = None
    last_inbound_at: str | None = None
    last_outbound_at: str | None = None
    pending_deliveries: int = 0
    dead_deliveries: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    replica: str | None = None  # the sidecar replica running its inbound loop (v1.1)


class ConnectionList(Wire):
    items: list[ConnectionView]


class LogoutRequest(Wire):
    """The body of a logout is ``{}``; anything else is ignored."""


class LogoutResult(Wire):
    ok: bool = True


# §4 sending --------------------------------------------------------------------------------------


class SendTarget(Wire):
    peer_id: NonEmpty
    peer_type: PeerType = "dm"
    thread_id: str | None = None


AttachmentKind = Literal["image", "file", "video", "voice"]


class Attachment(Wire):
    """One file to send (docs/CONTRACT.md §10.1): exactly one source of ``data`` (base64), ``url``
    (http/https, fetched by the sidecar) or ``mediaId`` (an inbound item, ``med_…``).

    The sidecar checks the one-source rule (a 422 naming ``$.attachments[i]``) so that the
    message says which attachment is wrong.
    """

    kind: AttachmentKind
    data: str | None = None
    url: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    media_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    file_name: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    mime_type: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class SendRequest(Wire):
    request_id: NonEmpty
    connection_id: NonEmpty
    target: SendTarget
    content: SendContent
    channel_id: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] | None = None
    message_type: MessageType = "text"
    reply_to_message_id: str | None = None
    attachments: Annotated[list[Attachment], msgspec.Meta(max_length=20)] | None = None
    """Addition (v1.1): files sent after the text, each as its own vendor message, in order.
    ``content`` may be empty when there are attachments."""


class SendResult(Wire):
    """The result of a send (docs/CONTRACT.md §4), from ``POST /send`` or ``GET /send/{requestId}``.

    ``status`` is ``sent``, ``deferred`` (waiting for the peer to write again; ``ok`` is true),
    ``failed`` (the vendor refused it), ``expired`` (a deferred send dropped), or, an addition to
    the contract's list, ``pending``: in progress, or interrupted (a 503, a restart) and resumed
    by a retry with the same requestId. ``providerMessageId`` is the vendor id of the first chunk
    once the whole message is ``sent``, else null; ``providerMessageIds`` lists the chunks that
    reached the vendor so far, in order, whatever the status.
    """

    ok: bool
    request_id: str
    status: Annotated[
        str,
        msgspec.Meta(
            description="sent, deferred, failed, expired; or pending (an addition): in progress"
            " or interrupted, resumed by a retry with the same requestId",
            examples=["sent", "deferred", "failed", "expired", "pending"],
        ),
    ]
    provider_message_id: str | None = None
    provider_message_ids: list[str] = msgspec.field(default_factory=list)
    duplicate: bool = False


# §5 the bridge -----------------------------------------------------------------------------------


class BridgeEvent(Wire, tag_field="type", tag="message"):
    """A message from a peer (``type: "message"``; an event without ``type`` is one too)."""

    event_id: str
    timestamp: str
    delivery_attempt: int
    connection_id: str
    channel_id: str
    kind: str
    account_id: str
    peer_id: str
    peer_type: str
    message_id: str
    message_type: str
    content: str
    user_id: str | None = None
    thread_id: str | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class MediaDescriptor(Wire):
    """One inbound media item in a bridge event's ``metadata.media`` (docs/CONTRACT.md §10.1).

    ``url`` is the sidecar path that serves the bytes (``GET /media/{mediaId}``, bearer token);
    null for an item the vendor gave no way to fetch. Vendors add their own fields beside these.
    """

    media_id: str
    kind: str
    mime_type: str | None = None
    file_name: str | None = None
    size: int | None = None
    url: str | None = None


class ConnectionStatusEvent(Wire, tag_field="type", tag="connection.status"):
    """A connection changed status (v1.1, with ``BRIDGE_EVENT_TYPES`` naming it).

    ``status`` is ``connected``, ``reconnecting``, ``paused``, ``auth_expired``, ``logged_out``
    or ``error``; ``previousStatus`` what it was before (``pairing`` for a first login).
    """

    event_id: str
    timestamp: str
    delivery_attempt: int
    connection_id: str
    channel_id: str
    kind: str
    account_id: str | None
    status: str
    previous_status: str | None = None
    last_error: str | None = None


class SendStatusEvent(Wire, tag_field="type", tag="send.status"):
    """A deferred send ended (v1.1): ``sent`` at last, or ``expired`` (or ``failed``)."""

    event_id: str
    timestamp: str
    delivery_attempt: int
    connection_id: str
    channel_id: str
    kind: str
    request_id: str
    status: str
    provider_message_ids: list[str] = msgspec.field(default_factory=list)


class PingEvent(Wire, tag_field="type", tag="ping"):
    """A test event ``POST /bridge/test`` sends at once; it is never stored or retried."""

    event_id: str
    timestamp: str
    delivery_attempt: int = 1


AnyBridgeEvent = BridgeEvent | ConnectionStatusEvent | SendStatusEvent | PingEvent
"""Every event type the bridge carries, tagged by ``type``."""

BRIDGE_EVENT_TYPES: tuple[str, ...] = ("message", "connection.status", "send.status", "ping")


class HostAnswer(Wire):
    """What a host answers to a bridge POST (the SDK's endpoint builds it)."""

    accepted: bool = True
    duplicate: bool = False
    pending: bool = False
    retry_after_seconds: int | None = None


class TypingRequest(Wire):
    """``POST /typing``: show or stop the typing indicator in one conversation (v1.1)."""

    connection_id: NonEmpty
    target: SendTarget
    status: Literal["typing", "stop"] = "typing"


class TypingResult(Wire):
    """``ok`` false with ``reason: "unsupported"`` where the connector has no typing indicator."""

    ok: bool
    reason: str | None = None


# §6 deliveries -----------------------------------------------------------------------------------


class DeliveryView(Wire):
    event_id: str
    connection_id: str
    status: str
    attempts: int
    created_at: str
    event: AnyBridgeEvent
    next_attempt_at: str | None = None
    delivered_at: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None


class DeliveryList(Wire):
    items: list[DeliveryView]
    next_cursor: str | None = None


class ReplayRequest(Wire):
    connection_id: str | None = None
    status: Literal["dead", "delivered"] = "dead"
    from_: Annotated[
        datetime.datetime | None, msgspec.Meta(description="createdAt at or after (RFC 3339)")
    ] = msgspec.field(default=None, name="from")
    to: Annotated[
        datetime.datetime | None, msgspec.Meta(description="createdAt before (RFC 3339)")
    ] = None


class DeliveryAttempt(Wire):
    """One POST of an event to the host, as it happened (v1.1)."""

    attempt: int
    at: str
    duration_ms: int
    status_code: int | None = None
    error: str | None = None


class DeliveryAttemptList(Wire):
    items: list[DeliveryAttempt]


class BridgeTestResult(Wire):
    """The host's answer to a ``ping`` from ``POST /bridge/test``; ``statusCode`` null when
    the host could not be reached (``error`` says why)."""

    status_code: int | None
    latency_ms: int
    body_excerpt: str | None = None
    error: str | None = None


class OkResult(Wire):
    ok: bool = True


class ReplayResult(Wire):
    replayed: int


# §7 health ---------------------------------------------------------------------------------------


class Health(Wire):
    ok: bool = True


class Readiness(Wire):
    """``reasons`` are what makes the answer 503; ``bridge`` lists bridge trouble (no
    ``BRIDGE_URL``, paused), which fails readiness only with ``?strict=true`` (v1.1)."""

    ok: bool
    reasons: list[str] = msgspec.field(default_factory=list)
    bridge: list[str] = msgspec.field(default_factory=list)
    delivery_paused: bool = False


class ReadinessProblem(Problem):
    """``/readyz``'s 503: a problem document (code ``not_ready``) whose extension members
    ``ok`` (false) and ``reasons`` say what a 200's Readiness would, for readers of either."""

    ok: bool = False
    reasons: list[str] = msgspec.field(default_factory=list)


# §8 the sim connector ----------------------------------------------------------------------------


class SimScanRequest(Wire):
    account_id: str | None = None
    display_name: str | None = None


class SimMedia(Wire):
    """A media item of an injected sim message: the bytes (base64) and what they are."""

    kind: AttachmentKind
    data: str
    file_name: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    mime_type: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class SimInboundMessage(Wire):
    peer_id: NonEmpty
    content: Content
    peer_type: PeerType = "dm"
    user_id: str | None = None
    thread_id: str | None = None
    message_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    message_type: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "text"
    media: Annotated[list[SimMedia], msgspec.Meta(max_length=20)] | None = None


class SimInboundAccepted(Wire):
    event_id: str
    message_id: str


class SimSentItem(Wire):
    request_id: str
    chunk_index: int
    provider_message_id: str
    peer_id: str
    content: str
    sent_at: str
    thread_id: str | None = None
    kind: str | None = None
    """Addition: an attachment part (``image``, ``file``, …); null for a text chunk."""
    file_name: str | None = None
    mime_type: str | None = None
    size: int | None = None
    sha256: str | None = None


class SimSentList(Wire):
    items: list[SimSentItem]


NonNegative = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class SimFaults(Wire):
    """Fault injection for a sim connection; fields left out keep their current value."""

    send_failures: NonNegative | None = None
    send_rejects: NonNegative | None = None
    send_latency_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] | None = None
    expire_login: bool | None = None
    reply_window_closed: bool | None = None
    send_failures_after: NonNegative | None = None
    """Addition: let this many sends succeed before the ``sendFailures`` begin (mid-send faults)."""
    upload_failures: NonNegative | None = None
    """Addition: the next n attachment uploads fail transiently."""
    upload_rejects: NonNegative | None = None
    """Addition: the next n attachment uploads are refused permanently."""


class SimFaultsView(Wire):
    send_failures: int = 0
    send_rejects: int = 0
    send_latency_ms: int = 0
    expire_login: bool = False
    reply_window_closed: bool = False
    send_failures_after: int = 0
    upload_failures: int = 0
    upload_rejects: int = 0
