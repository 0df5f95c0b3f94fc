"""Event types at the host's endpoint (docs/CONTRACT.md §10.2): messages to ``handler``, lifecycle
events to ``on_connection_status`` / ``on_send_status``, everything else accepted and ignored."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from connector_contracts import (
    BridgeEvent,
    ConnectionStatusEvent,
    PingEvent,
    SendStatusEvent,
    encode,
)
from connector_sdk import BridgeVerifier, MemoryDedupeStore, handle_bridge_request
from connector_sdk.testing import bridge_headers, make_bridge_event

pytestmark = pytest.mark.anyio

TOKEN = "bridge-token"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOW = 1_780_000_000

STATUS = ConnectionStatusEvent(
    event_id="evt_status_1",
    timestamp="2026-06-02T09:30:00Z",
    delivery_attempt=1,
    connection_id="conn_1",
    channel_id="ch",
    kind="weixin",
    account_id="bot@im.bot",
    status="auth_expired",
    previous_status="connected",
    last_error="errcode -14",
)
SEND = SendStatusEvent(
    event_id="evt_send_1",
    timestamp="2026-06-02T09:30:00Z",
    delivery_attempt=1,
    connection_id="conn_1",
    channel_id="ch",
    kind="weixin",
    request_id="r1",
    status="sent",
    provider_message_ids=["p1"],
)


def parts(body: bytes, event_id: str) -> tuple[dict[str, str], bytes]:
    headers = bridge_headers(
        body, event_id=event_id, token=TOKEN, signing_secrets=(SECRET,), timestamp=NOW
    )
    return headers, body


class Calls:
    def __init__(self) -> None:
        self.messages: list[BridgeEvent] = []
        self.statuses: list[ConnectionStatusEvent] = []
        self.sends: list[SendStatusEvent] = []

    async def message(self, event: BridgeEvent) -> str | None:
        self.messages.append(event)
        return None

    async def status(self, event: ConnectionStatusEvent) -> None:
        self.statuses.append(event)

    async def send(self, event: SendStatusEvent) -> None:
        self.sends.append(event)


async def handle(calls: Calls, body: bytes, event_id: str, **handlers: Any) -> Any:
    headers, raw = parts(body, event_id)
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=SECRET, now=lambda: NOW)
    return await handle_bridge_request(
        headers,
        raw,
        calls.message,
        verifier=verifier,
        store=handlers.pop("store", MemoryDedupeStore()),
        **handlers,
    )


async def test_lifecycle_events_go_to_their_handlers_once() -> None:
    """Each lifecycle type reaches its handler, decoded; a redelivery is a duplicate."""
    calls, store = Calls(), MemoryDedupeStore()
    kw: dict[str, Any] = {
        "on_connection_status": calls.status,
        "on_send_status": calls.send,
        "store": store,
    }
    first = await handle(calls, encode(STATUS), STATUS.event_id, **kw)
    again = await handle(calls, encode(STATUS), STATUS.event_id, **kw)
    sent = await handle(calls, encode(SEND), SEND.event_id, **kw)
    assert (first.status_code, sent.status_code) == (200, 200)
    assert json.loads(again.body)["duplicate"] is True
    assert calls.statuses == [STATUS]
    assert calls.sends == [SEND]
    assert calls.messages == []


async def test_types_without_a_handler_are_accepted_and_ignored() -> None:
    """A lifecycle event with no handler, a ping and a type from the future: 200, handler untouched."""
    calls = Calls()
    ping = PingEvent(event_id="evt_ping", timestamp="2026-06-02T09:30:00Z")
    future = json.dumps(
        {"type": "connection.deleted", "eventId": "evt_f", "connectionId": "conn_1"}
    ).encode()
    for body, event_id in (
        (encode(STATUS), STATUS.event_id),
        (encode(SEND), SEND.event_id),
        (encode(ping), ping.event_id),
        (future, "evt_f"),
    ):
        response = await handle(calls, body, event_id)
        assert response.status_code == 200, response.body
        assert json.loads(response.body)["accepted"] is True
    assert (calls.messages, calls.statuses, calls.sends) == ([], [], [])


async def test_a_message_without_type_still_reaches_the_handler() -> None:
    """An older sidecar's body (no ``type``) is a message, as before."""
    calls = Calls()
    event = make_bridge_event()
    body = json.dumps({k: v for k, v in json.loads(encode(event)).items() if k != "type"}).encode()
    response = await handle(calls, body, event.event_id, on_connection_status=calls.status)
    assert response.status_code == 200
    assert calls.messages == [event]


async def test_a_failing_status_handler_asks_for_a_redelivery() -> None:
    """A lifecycle handler that raises gets 500 ``accepted: false``, like a message handler."""
    calls = Calls()

    async def broken(event: ConnectionStatusEvent) -> None:
        raise RuntimeError("pager down")

    response = await handle(calls, encode(STATUS), STATUS.event_id, on_connection_status=broken)
    assert response.status_code == 500
    assert json.loads(response.body)["accepted"] is False
