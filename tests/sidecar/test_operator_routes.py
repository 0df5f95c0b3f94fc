"""The operator's controls (docs/CONTRACT.md §10.3) through the real app, on both stores: delete, pause
and resume a connection; pause, resume and test the bridge; the attempt history; replay by
createdAt range; the dead-letter retention. The host is a respx mock."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import httpx
import pytest
import respx
from prometheus_client.parser import text_string_to_metric_families

from connector_sidecar._secret import Secret
from connector_sidecar.runtime import Runtime

from .conftest import FakeClock, Sidecar, SidecarFactory, assert_problem
from .test_delivery import until
from .test_delivery_api import URL, Recorder, bridged, deliveries, host, wait_for_status

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.both_stores]
__all__ = ["host"]  # the fixture, imported for its use here

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def services(sidecar: Sidecar) -> Any:
    return sidecar.app.state.services


# -- connections -----------------------------------------------------------------------------------


async def test_delete_removes_the_connection_but_delivers_its_events(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """DELETE answers ``{"ok": true}``, then 404; the event accepted before is still delivered."""
    host.answer = lambda event: httpx.Response(503)
    async with bridged(make_sidecar) as sidecar:
        await sidecar.pair()
        accepted = await sidecar.inbound(content="before the delete", messageId="m-1")
        event_id = accepted.json()["eventId"]
        deleted = await sidecar.client.delete("/connections/conn_1")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json() == {"ok": True}
        assert_problem(await sidecar.client.get("/connections/conn_1"), 404, "connection_not_found")
        assert_problem(
            await sidecar.client.delete("/connections/conn_1"), 404, "connection_not_found"
        )
        assert_problem(
            await sidecar.client.delete("/connections/never_seen"), 404, "connection_not_found"
        )
        assert services(sidecar).runtime.connection_running("conn_1") is False
        assert (
            await services(sidecar).store.db.run(services(sidecar).store.connections.get, "conn_1")
            is None
        )
        host.answer = lambda event: httpx.Response(200, json={"accepted": True})
        await wait_for_status(sidecar, "delivered", 1)  # at its next retry
    assert event_id in {e["eventId"] for e in host.events}


async def test_pause_stops_sends_and_resume_restarts_them(paired: Sidecar) -> None:
    """A paused connection is ``paused`` and refuses sends with 409; resume makes it connected."""
    paused = await paired.client.post("/connections/conn_1/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert services(paired).runtime.connection_running("conn_1") is False
    assert_problem(await paired.send("out_paused"), 409, "connection_not_ready")
    again = await paired.client.post("/connections/conn_1/pause")
    assert again.json()["status"] == "paused"  # idempotent
    resumed = await paired.client.post("/connections/conn_1/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "connected"
    assert services(paired).runtime.connection_running("conn_1") is True
    assert (await paired.send("out_resumed")).json()["status"] == "sent"
    assert_problem(
        await paired.client.post("/connections/nobody/pause"), 404, "connection_not_found"
    )
    assert_problem(
        await paired.client.post("/connections/nobody/resume"), 404, "connection_not_found"
    )


async def test_a_logged_out_connection_cannot_be_paused_or_resumed(paired: Sidecar) -> None:
    """Pause and resume answer 409 for a connection that is not running (logged out)."""
    await paired.client.post("/connections/conn_1/logout", json={})
    assert_problem(
        await paired.client.post("/connections/conn_1/pause"), 409, "connection_not_ready"
    )
    assert_problem(
        await paired.client.post("/connections/conn_1/resume"), 409, "connection_not_ready"
    )


async def test_a_paused_connection_is_not_revived_by_its_driver(paired: Sidecar) -> None:
    """The driver's own status changes (a reconnect) leave an operator's pause alone."""
    await paired.client.post("/connections/conn_1/pause")
    record = await services(paired).runtime.set_status("conn_1", "connected")
    assert record.status == "paused"
    assert (await paired.client.get("/connections/conn_1")).json()["status"] == "paused"


# -- the bridge ------------------------------------------------------------------------------------


async def worker_looked(worker: Any) -> None:
    """Wait until the worker ran a whole step after now (two wake-ups it did not start in)."""
    for _ in range(3):
        target = worker.stats.wakeups + 1
        worker.notify()

        async def woke(target: int = target) -> bool:
            return bool(worker.stats.wakeups >= target)

        await until(woke, what="the delivery worker to wake up")


def paused_metric(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "connector_bridge_paused":
            return float(family.samples[0].value)
    raise AssertionError("no connector_bridge_paused metric")


async def test_bridge_pause_holds_delivery_until_resume(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """While paused, events stay pending, /readyz stays 200 and says so, the metric is 1."""
    async with bridged(make_sidecar) as sidecar:
        await sidecar.pair()
        paused = await sidecar.client.post("/bridge/pause")
        assert paused.status_code == 200, paused.text
        await sidecar.inbound(content="held", messageId="m-1")
        await sidecar.inbound(content="held too", messageId="m-2")
        await worker_looked(services(sidecar).delivery)
        assert host.events == []
        ready = await sidecar.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["deliveryPaused"] is True
        assert any("operator" in reason for reason in ready.json()["bridge"])
        assert paused_metric((await sidecar.client.get("/metrics")).text) == 1.0
        assert len(await deliveries(sidecar, status="pending")) == 2
        assert (await sidecar.client.post("/bridge/resume")).status_code == 200
        await wait_for_status(sidecar, "delivered", 2)
        assert (await sidecar.client.get("/readyz")).json()["deliveryPaused"] is False
        assert paused_metric((await sidecar.client.get("/metrics")).text) == 0.0


async def test_bridge_pause_is_kept_in_the_database(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """A pause outlives the sidecar that took it: the next one (or another replica) starts paused."""
    async with bridged(make_sidecar) as first:
        await first.client.post("/bridge/pause")
        data_dir = first.settings.data_dir
    async with bridged(make_sidecar, data_dir=data_dir) as second:
        assert services(second).delivery.paused is True
        assert (await second.client.get("/readyz")).json()["deliveryPaused"] is True
        await second.client.post("/bridge/resume")
    async with bridged(make_sidecar, data_dir=data_dir) as third:
        assert services(third).delivery.paused is False


async def test_bridge_test_posts_a_signed_ping(make_sidecar: SidecarFactory) -> None:
    """``POST /bridge/test`` sends a signed ``ping`` at once and answers the host's reply."""
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(URL).mock(return_value=httpx.Response(200, text='{"accepted": true}'))
        async with bridged(make_sidecar, bridge_signing_secrets=(Secret(SECRET),)) as sidecar:
            response = await sidecar.client.post("/bridge/test")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["statusCode"] == 200
    assert body["bodyExcerpt"] == '{"accepted": true}'
    assert body["latencyMs"] >= 0
    assert body["error"] is None
    request = route.calls.last.request
    event = httpx.Response(200, content=request.content).json()
    assert event["type"] == "ping"
    assert request.headers["authorization"] == "Bearer bridge-token-123"
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, signed + request.content, hashlib.sha256).digest())
    assert request.headers["webhook-signature"] == f"v1,{expected.decode()}"


async def test_bridge_test_reports_an_unreachable_host(make_sidecar: SidecarFactory) -> None:
    """A host that cannot be reached: ``statusCode`` null and the error; no BRIDGE_URL: 409."""
    with respx.mock() as mock:
        mock.post(URL).mock(side_effect=httpx.ConnectError("connection refused"))
        async with bridged(make_sidecar) as sidecar:
            response = await sidecar.client.post("/bridge/test")
    assert response.status_code == 200, response.text
    assert response.json()["statusCode"] is None
    assert "connection refused" in response.json()["error"]
    async with make_sidecar() as unbridged:
        assert_problem(await unbridged.client.post("/bridge/test"), 409, "bridge_not_configured")


# -- history, replay, retention ----------------------------------------------------------------------


async def test_attempts_are_listed_with_their_answers(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """Each POST of an event is listed: attempt number, time, duration, status code, error."""
    answers = iter([httpx.Response(500, text="host broke"), httpx.Response(200, json={})])
    host.answer = lambda event: next(answers)
    async with bridged(make_sidecar) as sidecar:  # the first backoff is at most 0.5 s
        await sidecar.pair()
        event_id = (await sidecar.inbound(messageId="m-1")).json()["eventId"]
        await wait_for_status(sidecar, "delivered", 1)
        items = (await sidecar.client.get(f"/deliveries/{event_id}/attempts")).json()["items"]
        missing = await sidecar.client.get("/deliveries/evt_nope/attempts")
    assert [(i["attempt"], i["statusCode"]) for i in items] == [(1, 500), (2, 200)]
    assert "host broke" in items[0]["error"]
    assert items[1]["error"] is None
    assert all(i["durationMs"] >= 0 and i["at"].endswith("Z") for i in items)
    assert_problem(missing, 404, "delivery_not_found")


async def test_replay_takes_a_created_at_range(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """``from``/``to`` replay only the dead events created in that range; a bad time is a 422."""
    host.answer = lambda event: httpx.Response(404, text="gone")
    clock = FakeClock(start=1_780_000_000.0)  # 2026-05-28T20:26:40Z
    async with bridged(make_sidecar, clock=clock, sleep=clock.sleep) as sidecar:
        await sidecar.pair()
        await sidecar.inbound(messageId="m-old", peerId="a")
        clock.advance(3600)
        await sidecar.inbound(messageId="m-new", peerId="b")
        await wait_for_status(sidecar, "dead", 2)
        host.answer = lambda event: httpx.Response(200, json={"accepted": True})
        replayed = await sidecar.client.post(
            "/deliveries/replay",
            json={"status": "dead", "from": "2026-05-28T21:00:00Z", "to": "2026-05-29T00:00:00Z"},
        )
        assert replayed.status_code == 200, replayed.text
        assert replayed.json() == {"replayed": 1}
        [delivered] = await wait_for_status(sidecar, "delivered", 1)
        bad = await sidecar.client.post("/deliveries/replay", json={"from": "yesterday"})
    assert delivered["event"]["messageId"] == "m-new"
    problem = assert_problem(bad, 422, "validation_failed")
    assert problem["errors"][0]["path"] == "$.from"


async def test_dead_letters_are_purged_after_their_retention(
    make_sidecar: SidecarFactory, host: Recorder
) -> None:
    """A dead letter older than DEAD_RETENTION_SECONDS is purged, with its attempt history."""
    host.answer = lambda event: httpx.Response(404, text="gone")
    clock = FakeClock()
    async with bridged(
        make_sidecar, clock=clock, sleep=clock.sleep, dead_retention_seconds=3600.0
    ) as sidecar:
        await sidecar.pair()
        event_id = (await sidecar.inbound(messageId="m-1")).json()["eventId"]
        await wait_for_status(sidecar, "dead", 1)
        worker = services(sidecar).delivery
        assert await worker.purge() == 0  # not old enough yet
        clock.advance(3601)
        assert await worker.purge() == 1
        assert await deliveries(sidecar) == []
        store = services(sidecar).store
        assert await store.db.run(store.outbox.attempts_of, event_id) == []


async def test_bridge_pause_holds_on_every_replica(
    make_sidecar: SidecarFactory, host: Recorder, store_backend: str
) -> None:
    """A pause taken on one replica stops delivery on the others; a resume on any ends it."""
    if store_backend == "sqlite":
        pytest.skip("replicas share a PostgreSQL database; a SQLite file has one sidecar")
    async with bridged(make_sidecar) as one, bridged(make_sidecar) as two:
        await one.pair()
        await one.client.post("/bridge/pause")
        worker_two = services(two).delivery

        async def two_paused() -> bool:
            return bool(worker_two.paused)

        await until(two_paused, what="the second replica to see the pause")
        await one.inbound(content="held", messageId="m-1")
        await worker_looked(worker_two)
        await worker_looked(services(one).delivery)
        assert host.events == []
        assert (await two.client.post("/bridge/resume")).status_code == 200
        await wait_for_status(one, "delivered", 1)


async def test_pause_and_delete_work_from_any_replica(
    make_sidecar: SidecarFactory, host: Recorder, store_backend: str
) -> None:
    """A pause or a delete taken on another replica stops the loop where it runs."""
    if store_backend == "sqlite":
        pytest.skip("replicas share a PostgreSQL database; a SQLite file has one sidecar")
    async with bridged(make_sidecar) as one, bridged(make_sidecar) as two:
        await one.pair()
        runtime_one: Runtime = services(one).runtime
        runtime_two: Runtime = services(two).runtime

        async def stopped_on_one() -> bool:
            return not runtime_one.connection_running("conn_1")

        async def running_somewhere() -> bool:
            return runtime_one.connection_running("conn_1") or runtime_two.connection_running(
                "conn_1"
            )

        async def running_on_one() -> bool:
            return runtime_one.connection_running("conn_1")

        await until(running_on_one, what="the loop to run where it was paired")
        paused = await two.client.post("/connections/conn_1/pause")
        assert paused.json()["status"] == "paused"
        await until(stopped_on_one, what="replica one to stop the paused loop")
        assert (await one.client.get("/connections/conn_1")).json()["status"] == "paused"
        await two.client.post("/connections/conn_1/resume")
        await until(running_somewhere, what="the resumed loop to run")
        assert (await one.client.delete("/connections/conn_1")).json() == {"ok": True}

        async def stopped_everywhere() -> bool:
            return not await running_somewhere()

        await until(stopped_everywhere, what="every replica to stop the deleted connection")
        assert_problem(await two.client.get("/connections/conn_1"), 404, "connection_not_found")
