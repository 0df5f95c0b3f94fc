"""The contract types decode and re-encode the JSON of docs/CONTRACT.md unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from connector_contracts import (
    BridgeEvent,
    CancelSessionRequest,
    ConnectionList,
    ConnectionView,
    ConnectorInfo,
    ConnectorSessionView,
    DeliveryList,
    Health,
    HostAnswer,
    LogoutRequest,
    LogoutResult,
    Problem,
    Readiness,
    ReplayRequest,
    ReplayResult,
    SendRequest,
    SendResult,
    SimFaults,
    SimInboundAccepted,
    SimInboundMessage,
    SimScanRequest,
    SimSentList,
    StartSessionRequest,
    VerifyCodeRequest,
    decode,
    encode,
    format_timestamp,
    parse_timestamp,
)

EVENT: dict[str, Any] = {
    "eventId": "evt_0123456789abcdef0123456789abcdef",
    "timestamp": "2026-06-02T09:30:00Z",
    "deliveryAttempt": 1,
    "connectionId": "conn_1",
    "channelId": "weixin-main",
    "kind": "weixin",
    "accountId": "wx-bot-1",
    "peerId": "o9cq80_user",
    "peerType": "dm",
    "userId": "o9cq80_user",
    "threadId": None,
    "messageId": "7318412783641287364",
    "messageType": "text",
    "content": "你好",
    "metadata": {"mentions": [], "botMentioned": False, "quoted": None},
}

# Every example below is the JSON of docs/CONTRACT.md, filled in where the page writes "…".
EXAMPLES: list[tuple[type[Any], dict[str, Any] | list[Any]]] = [
    (
        Problem,
        {
            "type": "about:blank",
            "title": "Unprocessable Content",
            "status": 422,
            "detail": "this requestId was already used for a different message",
            "code": "request_id_conflict",
            "errors": [{"path": "$.target.peerId", "message": "Expected `str`, got `int`"}],
            "requestId": "out_1",
        },
    ),
    (
        ConnectorInfo,
        {
            "kind": "weixin",
            "displayName": "WeChat",
            "pairing": "qr",
            "capabilities": ["receive_text", "send_text", "direct_messages"],
            "optionsSchema": {"type": "object", "properties": {}},
            "enabled": True,
        },
    ),
    (
        StartSessionRequest,
        {
            "kind": "weixin",
            "connectionId": "conn_1",
            "channelId": "weixin-main",
            "displayName": "",
            "callbackBaseUrl": "",
            "options": {},
        },
    ),
    (
        ConnectorSessionView,
        {
            "sessionId": "cs_0123456789abcdef01234567",
            "kind": "weixin",
            "connectionId": "conn_1",
            "channelId": "weixin-main",
            "status": "connected",
            "qrImage": None,
            "qrContent": "https://liteapp.weixin.qq.com/q/abc",
            "accountId": "wx-bot-1",
            "displayName": "Bot",
            "expiresAt": "2026-06-02T09:38:00Z",
            "error": None,
            "metadata": {"stateRef": "sqlite:connections/conn_1"},
        },
    ),
    (CancelSessionRequest, {}),
    (VerifyCodeRequest, {"code": "123456"}),
    (
        ConnectionView,
        {
            "connectionId": "conn_1",
            "channelId": "weixin-main",
            "kind": "weixin",
            "status": "auth_expired",
            "accountId": "wx-bot-1",
            "displayName": "Bot",
            "lastError": "errcode -14: session expired",
            "lastInboundAt": "2026-06-02T09:30:00Z",
            "lastOutboundAt": None,
            "pendingDeliveries": 2,
            "deadDeliveries": 0,
            "createdAt": "2026-06-01T00:00:00Z",
            "updatedAt": "2026-06-02T09:31:00.250Z",
            "replica": None,
        },
    ),
    (LogoutRequest, {}),
    (LogoutResult, {"ok": True}),
    (
        SendRequest,
        {
            "requestId": "out_weixin-main:s1:out-msg-1",
            "connectionId": "conn_1",
            "channelId": "weixin-main",
            "kind": "weixin",
            "target": {"peerId": "peer-1", "peerType": "dm", "threadId": None},
            "content": "reply",
            "metadata": {"inboundMessageId": "in-msg-1", "sessionId": "s1"},
            "messageType": "text",
            "replyToMessageId": None,
            "attachments": [
                {
                    "kind": "image",
                    "data": None,
                    "url": None,
                    "mediaId": "med_0123",
                    "fileName": "a.png",
                    "mimeType": "image/png",
                }
            ],
        },
    ),
    (
        SendResult,
        {
            "ok": True,
            "requestId": "out_weixin-main:s1:out-msg-1",
            "status": "sent",
            "providerMessageId": "m1",
            "providerMessageIds": ["m1", "m2"],
            "duplicate": False,
        },
    ),
    (
        SendResult,
        {
            "ok": True,
            "requestId": "out_2",
            "status": "deferred",
            "providerMessageId": None,
            "providerMessageIds": [],
            "duplicate": False,
        },
    ),
    (BridgeEvent, EVENT),
    (
        HostAnswer,
        {"accepted": True, "duplicate": False, "pending": False, "retryAfterSeconds": None},
    ),
    (HostAnswer, {"accepted": False, "duplicate": True, "pending": True, "retryAfterSeconds": 5}),
    (
        DeliveryList,
        {
            "items": [
                {
                    "eventId": EVENT["eventId"],
                    "connectionId": "conn_1",
                    "status": "dead",
                    "attempts": 3,
                    "createdAt": "2026-06-02T09:30:00Z",
                    "nextAttemptAt": None,
                    "deliveredAt": None,
                    "lastStatusCode": 400,
                    "lastError": "400: bad event",
                    "event": EVENT,
                }
            ],
            "nextCursor": "s17",
        },
    ),
    (ReplayRequest, {"connectionId": "conn_1", "status": "dead"}),
    (ReplayResult, {"replayed": 3}),
    (Health, {"ok": True}),
    (Readiness, {"ok": False, "reasons": ["BRIDGE_URL is not set"]}),
    (SimScanRequest, {"accountId": "acct", "displayName": "Alice"}),
    (
        SimInboundMessage,
        {
            "peerId": "peer-1",
            "peerType": "dm",
            "userId": None,
            "threadId": None,
            "content": "hi",
            "messageId": "m-1",
            "messageType": "text",
            "media": [{"kind": "image", "data": "iVBORw0K", "fileName": None, "mimeType": None}],
        },
    ),
    (SimInboundAccepted, {"eventId": EVENT["eventId"], "messageId": "m-1"}),
    (
        SimSentList,
        {
            "items": [
                {
                    "requestId": "out_1",
                    "chunkIndex": 0,
                    "providerMessageId": "sim_1",
                    "peerId": "peer-1",
                    "threadId": None,
                    "content": "hello",
                    "sentAt": "2026-06-02T09:30:00Z",
                    "kind": None,
                    "fileName": None,
                    "mimeType": None,
                    "size": None,
                    "sha256": None,
                }
            ]
        },
    ),
    (
        SimFaults,
        {
            "sendFailures": 2,
            "sendRejects": 1,
            "sendLatencyMs": 50,
            "expireLogin": False,
            "replyWindowClosed": True,
            "sendFailuresAfter": 2,
            "uploadFailures": 1,
            "uploadRejects": 0,
        },
    ),
]


@pytest.mark.parametrize(
    ("type_", "example"), EXAMPLES, ids=[f"{t.__name__}-{i}" for i, (t, _) in enumerate(EXAMPLES)]
)
def test_examples_round_trip(type_: type[Any], example: dict[str, Any]) -> None:
    """Each docs/CONTRACT.md example decodes and re-encodes to the same JSON."""
    # v1.1: every bridge event says its type; docs/CONTRACT.md §5's examples predate the field. A bare
    # BridgeEvent decodes without it; inside a DeliveryView the event is a tagged union.
    typed = _with_event_types(example)
    value = decode(json.dumps(example if type_ is BridgeEvent else typed), type_)
    # Fields v1.1 added, at their defaults.
    added: dict[type[Any], dict[str, Any]] = {
        ReplayRequest: {"from": None, "to": None},
        Readiness: {"bridge": [], "deliveryPaused": False},
    }
    typed = {**typed, **added.get(type_, {})}
    assert json.loads(encode(value)) == typed


def _with_event_types(value: Any) -> Any:
    if isinstance(value, dict):
        typed = {k: _with_event_types(v) for k, v in value.items()}
        if {"eventId", "peerId", "content"} <= value.keys() and "type" not in value:
            typed = {"type": "message", **typed}
        return typed
    if isinstance(value, list):
        return [_with_event_types(v) for v in value]
    return value


def test_connection_list_round_trips() -> None:
    """``GET /connections`` is ``{"items": [ConnectionView]}``."""
    body = {"items": [dict(EXAMPLES[6][1])]}
    assert json.loads(encode(decode(json.dumps(body), ConnectionList))) == body


def test_core_send_request_decodes_without_additions() -> None:
    """The core SendRequest of a pre-existing host decodes; additions take their defaults."""
    request = decode(
        json.dumps(
            {
                "requestId": "out_1",
                "connectionId": "conn_1",
                "channelId": "weixin-main",
                "kind": "weixin",
                "target": {"peerId": "peer-1", "peerType": "dm", "threadId": None},
                "content": "reply",
                "metadata": {},
            }
        ),
        SendRequest,
    )
    assert request.message_type == "text"
    assert request.reply_to_message_id is None
    assert request.target.peer_id == "peer-1"


def test_unknown_fields_are_ignored() -> None:
    """Fields a newer peer adds are skipped, in requests, nested objects and views alike."""
    request = decode(
        b'{"requestId": "r", "connectionId": "c", "content": "x", "newField": 1,'
        b' "target": {"peerId": "p", "shape": "round"}}',
        SendRequest,
    )
    assert request.target.peer_id == "p"
    event = decode(json.dumps({**EVENT, "priority": "high"}), BridgeEvent)
    assert event.event_id == EVENT["eventId"]


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        (b'{"connectionId": "c", "content": "x", "target": {"peerId": "p"}}', "requestId"),
        (b'{"requestId": "r", "connectionId": "c", "content": "x", "target": {}}', "peerId"),
        (
            b'{"requestId": "", "connectionId": "c", "content": "x", "target": {"peerId": "p"}}',
            "$.requestId",
        ),
        (
            b'{"requestId": "r", "connectionId": "c", "content": 1, "target": {"peerId": "p"}}',
            "$.content",
        ),
        (
            b'{"requestId": "r", "connectionId": "c", "content": "x", "messageType": "html", "target": {"peerId": "p"}}',
            "$.messageType",
        ),
    ],
)
def test_bad_requests_raise_validation_errors_naming_the_field(
    document: bytes, fragment: str
) -> None:
    """Missing or wrong fields raise msgspec.ValidationError naming the field."""
    with pytest.raises(msgspec.ValidationError, match=fragment.replace("$", r"\$")):
        decode(document, SendRequest)


def test_malformed_json_raises_decode_error() -> None:
    """Malformed JSON raises msgspec.DecodeError (the API's 400), not a ValidationError (422)."""
    with pytest.raises(msgspec.DecodeError) as caught:
        decode(b'{"requestId": ', SendRequest)
    assert not isinstance(caught.value, msgspec.ValidationError)


def test_vendor_ids_stay_strings() -> None:
    """A WeChat id beyond 2^53 survives as the exact string it was."""
    big = str(2**63 + 7)
    event = decode(json.dumps({**EVENT, "messageId": big}), BridgeEvent)
    assert json.loads(encode(event))["messageId"] == big


def test_structs_are_frozen_values() -> None:
    """A decoded message is a value: it cannot be changed in place and compares by content."""
    one = decode(json.dumps(EVENT), BridgeEvent)
    two = decode(json.dumps(EVENT), BridgeEvent)
    assert one == two
    with pytest.raises(AttributeError):
        one.content = "changed"


def test_format_timestamp() -> None:
    """Timestamps are UTC with a ``Z``, milliseconds only when there are any."""
    assert format_timestamp(datetime(2026, 6, 2, 9, 30, tzinfo=UTC)) == "2026-06-02T09:30:00Z"
    assert (
        format_timestamp(
            datetime(2026, 6, 2, 11, 30, 0, 250_999, tzinfo=timezone(timedelta(hours=2)))
        )
        == "2026-06-02T09:30:00.250Z"
    )
    assert format_timestamp(1780392600.5) == "2026-06-02T09:30:00.500Z"


def test_parse_timestamp() -> None:
    """``Z``, offsets and naive values all parse to aware UTC datetimes, inverse of formatting."""
    expected = datetime(2026, 6, 2, 9, 30, tzinfo=UTC)
    assert parse_timestamp("2026-06-02T09:30:00Z") == expected
    assert parse_timestamp("2026-06-02T11:30:00+02:00") == expected
    assert parse_timestamp("2026-06-02T09:30:00") == expected
    assert parse_timestamp(format_timestamp(expected)) == expected


def test_event_types_decode_by_their_type_field() -> None:
    """A body without ``type`` is a message (older sidecars); other types decode to their struct."""
    from connector_contracts import (
        ConnectionStatusEvent,
        PingEvent,
        SendStatusEvent,
        UnknownEventType,
        decode_bridge_event,
    )

    assert isinstance(decode_bridge_event(json.dumps(EVENT)), BridgeEvent)
    common = {
        "eventId": "evt_1",
        "timestamp": "2026-06-02T09:30:00Z",
        "deliveryAttempt": 1,
        "connectionId": "conn_1",
        "channelId": "ch_1",
        "kind": "weixin",
    }
    status = decode_bridge_event(
        json.dumps(
            {
                "type": "connection.status",
                **common,
                "accountId": "bot@im.bot",
                "status": "auth_expired",
                "previousStatus": "connected",
                "lastError": "errcode -14",
            }
        )
    )
    assert isinstance(status, ConnectionStatusEvent)
    assert (status.status, status.previous_status) == ("auth_expired", "connected")
    sent = decode_bridge_event(
        json.dumps(
            {
                "type": "send.status",
                **common,
                "requestId": "r1",
                "status": "sent",
                "providerMessageIds": ["p1"],
            }
        )
    )
    assert isinstance(sent, SendStatusEvent)
    assert sent.provider_message_ids == ["p1"]
    ping = decode_bridge_event(json.dumps({"type": "ping", "eventId": "e", "timestamp": "t"}))
    assert isinstance(ping, PingEvent)
    with pytest.raises(UnknownEventType):
        decode_bridge_event(json.dumps({"type": "connection.deleted", "eventId": "e"}))
    assert json.loads(encode(status))["type"] == "connection.status"


def test_replay_request_takes_a_created_at_range() -> None:
    """``from`` (a Python keyword) is spelled ``from`` on the wire."""
    body = decode(b'{"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}', ReplayRequest)
    assert body.from_ is not None
    assert body.to is not None
    assert (body.from_.isoformat(), body.to.isoformat()) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-02T00:00:00+00:00",
    )
    assert json.loads(encode(body))["from"] == "2026-01-01T00:00:00Z"
