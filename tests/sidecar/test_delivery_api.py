"""The operator side of delivery through the real app: replay routes (docs/CONTRACT.md §6), counts on
ConnectionView, and ``/readyz`` while the bridge is paused (§7). The host is a respx mock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from connector_sidecar._secret import Secret

from .conftest import Sidecar, SidecarFactory
from .test_delivery import until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.both_stores]

URL = "http://host.test/bridge/events"


class Recorder:
    """Answers each bridge POST with ``answer(event)`` and keeps the events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer = lambda event: httpx.Response(200, json={"accepted": True})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        event = json.loads(request.content)
        self.events.append(event)
        response: httpx.Response = self.answer(event)
        return response


@pytest.fixture
def host() -> Iterator[Recorder]:
    recorder = Recorder()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=recorder)
        yield recorder


def bridged(make_sidecar: SidecarFactory, **overrides: Any) -> Any:
    return make_sidecar(bridge_url=URL, bridge_token=Secret("bridge-token-123"), **overrides)


async def deliveries(sidecar: Sidecar, **params: str) -> list[dict[str, Any]]:
    response = await sidecar.client.get("/deliveries", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_for_status(sidecar: Sidecar, status: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def reached() -> bool:
        found[:] = await deliveries(sidecar, status=status)
        return len(found) == count

    await until(reached, timeout=10, what=f"{count} {status} deliveries")
    return found


async def test_replay_one_dead_event(make_sidecar: SidecarFactory, host: Recorder) -> None:
    """A dead event is listed with its status and error, replayed with attempts restarted, then delivered."""
    host.answer = lambda event: (
        httpx.Response(404, text="unknown channel")
        if event["content"] == "poison"
        else httpx.Response(200, json={"accepted": True})
    )
    async with bridged(make_sidecar) as sidecar:
        await sidecar.pair()
        accepted = await sidecar.inbound(content="poison", messageId="m-1")
        assert accepted.status_code == 202
        event_id = accepted.json()["eventId"]
        [dead] = await wait_for_status(sidecar, "dead", 1)
        assert dead["eventId"] == event_id
        assert dead["attempts"] == 1
        assert dead["event"]["deliveryAttempt"] == 1  # the last attempt's number, as POSTed
        assert dead["lastStatusCode"] == 404
        assert dead["lastError"] == "HTTP 404: unknown channel"
        view = (await sidecar.client.get("/connections/conn_1")).json()
        assert (view["pendingDeliveries"], view["deadDeliveries"]) == (0, 1)

        host.answer = lambda event: httpx.Response(200, json={"accepted": True})
        response = await sidecar.client.post(f"/deliveries/{event_id}/replay", json={})
        assert response.status_code == 200, response.text
        replayed = response.json()
        assert replayed["eventId"] == event_id
        assert replayed["status"] == "pending"
        assert replayed["attempts"] == 0
        assert replayed["event"]["deliveryAttempt"] == 0  # no attempt since the replay yet
        assert replayed["lastError"] is None

        [delivered] = await wait_for_status(sidecar, "delivered", 1)
        assert delivered["attempts"] == 1
        assert delivered["event"]["deliveryAttempt"] == 1
        assert [(e["eventId"], e["deliveryAttempt"]) for e in host.events] == [
            (event_id, 1),
            (event_id, 1),
        ]
        view = (await sidecar.client.get("/connections/conn_1")).json()
        assert (view["pendingDeliveries"], view["deadDeliveries"]) == (0, 0)

        again = await sidecar.client.post(f"/deliveries/{event_id}/replay")
        assert again.status_code == 200  # a delivered event can be sent once more
        await wait_for_status(sidecar, "delivered", 1)
        assert len(host.events) == 3


async def test_replay_one_unknown_or_pending(make_sidecar: SidecarFactory) -> None:
    """Replaying an unknown event is 404 delivery_not_found; a pending one is 409 delivery_pending."""
    async with make_sidecar() as sidecar:  # no BRIDGE_URL: events stay pending
        await sidecar.pair()
        event_id = (await sidecar.inbound(messageId="m-1")).json()["eventId"]
        missing = await sidecar.client.post("/deliveries/evt_nope/replay", json={})
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["code"] == "delivery_not_found"
        pending = await sidecar.client.post(f"/deliveries/{event_id}/replay", json={})
        assert pending.status_code == 409
        assert pending.json()["code"] == "delivery_pending"
        [item] = await deliveries(sidecar)
        assert item["status"] == "pending"
        assert item["attempts"] == 0


async def test_bulk_replay_by_connection(make_sidecar: SidecarFactory, host: Recorder) -> None:
    """``POST /deliveries/replay`` re-queues the dead events of one connection and counts them."""
    host.answer = lambda event: httpx.Response(410, text="gone")
    async with bridged(make_sidecar) as sidecar:
        await sidecar.pair("conn_1")
        await sidecar.pair("conn_2")
        for n in range(3):
            await sidecar.inbound("conn_1", content=f"a{n}", peerId=f"peer-{n % 2}")
        await sidecar.inbound("conn_2", content="b")
        await wait_for_status(sidecar, "dead", 4)

        host.answer = lambda event: httpx.Response(200, json={"accepted": True})
        response = await sidecar.client.post(
            "/deliveries/replay", json={"connectionId": "conn_1", "status": "dead"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"replayed": 3}
        await wait_for_status(sidecar, "delivered", 3)
        [still_dead] = await deliveries(sidecar, status="dead")
        assert still_dead["connectionId"] == "conn_2"

        everything = await sidecar.client.post("/deliveries/replay")
        assert everything.json() == {"replayed": 1}  # defaults: dead events of every connection
        await wait_for_status(sidecar, "delivered", 4)

        bad = await sidecar.client.post("/deliveries/replay", json={"status": "pending"})
        assert bad.status_code == 422
        assert bad.json()["code"] == "validation_failed"


async def test_readyz_reports_a_paused_bridge(make_sidecar: SidecarFactory, host: Recorder) -> None:
    """After a 401 from the host ``/readyz`` stays 200 and names the pause in ``bridge``; with
    ``?strict=true`` it is 503; the event stays pending, not dead."""
    host.answer = lambda event: httpx.Response(401, json={"accepted": False})
    async with bridged(make_sidecar) as sidecar:
        ready = await sidecar.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        await sidecar.pair()
        await sidecar.inbound(messageId="m-1")

        async def paused() -> bool:
            return bool((await sidecar.client.get("/readyz")).json()["deliveryPaused"])

        await until(paused, timeout=10, what="readyz to report the pause")
        ready = await sidecar.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["reasons"] == []
        [reason] = ready.json()["bridge"]
        assert "paused" in reason
        assert "HTTP 401" in reason
        strict = await sidecar.client.get("/readyz", params={"strict": "true"})
        assert strict.status_code == 503
        assert strict.json()["reasons"] == [reason]
        view = (await sidecar.client.get("/connections/conn_1")).json()
        assert (view["pendingDeliveries"], view["deadDeliveries"]) == (1, 0)
        assert len(host.events) == 1  # no further attempt before the probe interval
