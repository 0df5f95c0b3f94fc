"""Lifecycle events through the bridge (docs/CONTRACT.md §10.2), through the real app, on both stores:
``connection.status`` and ``send.status`` go through the outbox when ``BRIDGE_EVENT_TYPES``
names them, and a host that names none sees only its messages. The host is a respx mock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector_contracts import ConnectionStatusEvent, SendStatusEvent, decode_bridge_event
from connector_sidecar.sending import DEFERRED_TTL_MS

from .conftest import FakeClock, Sidecar, SidecarFactory
from .test_delivery import until
from .test_delivery_api import Recorder, bridged, host

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.both_stores]
__all__ = ["host"]  # the fixture, imported for its use here

ALL_TYPES = frozenset({"message", "connection.status", "send.status"})


def of_type(recorder: Recorder, event_type: str) -> list[dict[str, Any]]:
    return [e for e in recorder.events if e.get("type") == event_type]


async def wait_events(recorder: Recorder, event_type: str, count: int) -> list[dict[str, Any]]:
    async def arrived() -> bool:
        return len(of_type(recorder, event_type)) >= count

    await until(arrived, timeout=10, what=f"{count} {event_type} events at the host")
    return of_type(recorder, event_type)


async def test_status_changes_reach_the_host_in_order(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """Pairing, an expired login and a logout each send ``connection.status``, in order, with
    the status before it and the last error."""
    async with bridged(make_sidecar, bridge_event_types=ALL_TYPES) as sidecar:
        await sidecar.pair()
        await sidecar.faults(expireLogin=True)
        assert (await sidecar.client.post("/connections/conn_1/logout", json={})).status_code == 200
        events = await wait_events(host, "connection.status", 3)
    assert [(e["previousStatus"], e["status"]) for e in events] == [
        ("pairing", "connected"),
        ("connected", "auth_expired"),
        ("auth_expired", "logged_out"),
    ]
    expired = events[1]
    assert expired["lastError"] == "the sim login has expired"
    assert (expired["connectionId"], expired["channelId"], expired["kind"]) == (
        "conn_1",
        "sim-main",
        "sim",
    )
    assert expired["deliveryAttempt"] >= 1
    assert isinstance(decode_bridge_event(json.dumps(expired)), ConnectionStatusEvent)
    assert len({e["eventId"] for e in events}) == 3


async def test_a_deferred_send_that_goes_out_is_reported(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """A deferred send flushed when the peer writes gives ``send.status`` ``sent`` with its ids."""
    async with bridged(make_sidecar, bridge_event_types=ALL_TYPES) as sidecar:
        await sidecar.pair()
        await sidecar.faults(replyWindowClosed=True)
        response = await sidecar.send("out_later", "see you")
        assert response.json()["status"] == "deferred"
        await sidecar.inbound(content="I am back")
        [event] = await wait_events(host, "send.status", 1)
        [sent] = await sidecar.sent()
    assert (event["requestId"], event["status"]) == ("out_later", "sent")
    assert event["providerMessageIds"] == [sent["providerMessageId"]]
    assert isinstance(decode_bridge_event(json.dumps(event)), SendStatusEvent)


async def test_a_deferred_send_that_expires_is_reported(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """A deferred send older than 24 h expires in housekeeping and gives ``send.status``
    ``expired``; a send that was never deferred gives none."""
    clock = FakeClock()
    async with bridged(
        make_sidecar,
        clock=clock,
        sleep=clock.sleep,
        bridge_event_types=ALL_TYPES,
        bridge_max_age_seconds=30 * 86400.0,
    ) as sidecar:
        await sidecar.pair()
        assert (await sidecar.send("out_now", "hello")).json()["status"] == "sent"
        await sidecar.faults(replyWindowClosed=True)
        assert (await sidecar.send("out_later", "see you")).json()["status"] == "deferred"
        clock.advance(DEFERRED_TTL_MS / 1000 + 60)
        await services(sidecar).sender.housekeeping()
        [event] = await wait_events(host, "send.status", 1)
        assert (await sidecar.client.get("/send/out_later")).json()["status"] == "expired"
    assert (event["requestId"], event["status"], event["providerMessageIds"]) == (
        "out_later",
        "expired",
        [],
    )


async def test_a_failed_pairing_does_not_stay_pairing(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """A pairing that expires moves its never-connected connection to ``error``, with the
    reason, and the host hears of it; the next pairing starts from ``pairing`` again."""
    clock = FakeClock()
    async with bridged(
        make_sidecar, clock=clock, sleep=clock.sleep, bridge_event_types=ALL_TYPES
    ) as sidecar:
        started = await sidecar.client.post(
            "/connector-sessions",
            json={"kind": "sim", "connectionId": "conn_2", "channelId": "c", "options": {}},
        )
        assert started.status_code == 201, started.text
        session_id = started.json()["sessionId"]
        await services(sidecar).runtime.update_session(
            session_id, status="expired", error="the QR code was not scanned in time"
        )
        view = (await sidecar.client.get("/connections/conn_2")).json()
        [event] = await wait_events(host, "connection.status", 1)
        await sidecar.pair("conn_2", "c")  # pairing it again, successfully this time
        again = await wait_events(host, "connection.status", 2)
    assert view["status"] == "error"
    assert "the QR code was not scanned in time" in view["lastError"]
    assert (event["previousStatus"], event["status"]) == ("pairing", "error")
    assert (again[1]["previousStatus"], again[1]["status"]) == ("pairing", "connected")


async def test_a_host_that_enables_nothing_sees_only_messages(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """With the default BRIDGE_EVENT_TYPES the host gets its messages and nothing else, and
    no lifecycle event is even stored."""
    async with bridged(make_sidecar) as sidecar:
        await sidecar.pair()
        await sidecar.faults(replyWindowClosed=True)
        await sidecar.send("out_later", "see you")
        await sidecar.inbound(content="m1", messageId="m-1")
        await sidecar.faults(expireLogin=True)
        await wait_events(host, "message", 1)
        listed = (await sidecar.client.get("/deliveries")).json()["items"]
    assert [e["type"] for e in host.events] == ["message"]
    assert [d["event"]["type"] for d in listed] == ["message"]
    assert host.events[0]["content"] == "m1"


def services(sidecar: Sidecar) -> Any:
    return sidecar.app.state.services


async def test_a_change_rolled_back_sends_no_event(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """The event is part of the change's transaction: a rollback takes both back."""
    async with bridged(make_sidecar, bridge_event_types=ALL_TYPES) as sidecar:
        await sidecar.pair()
        await wait_events(host, "connection.status", 1)
        runtime, store = services(sidecar).runtime, services(sidecar).store

        def change_then_fail(conn: Any) -> None:
            runtime.change_status(conn, "conn_1", "reconnecting", last_error="flaky")
            raise RuntimeError("the rest of the transaction failed")

        with pytest.raises(RuntimeError):
            await store.db.transaction(change_then_fail)
        listed = (await sidecar.client.get("/deliveries")).json()["items"]
        view = (await sidecar.client.get("/connections/conn_1")).json()
    assert [d["event"]["status"] for d in listed] == ["connected"]
    assert view["status"] == "connected"
