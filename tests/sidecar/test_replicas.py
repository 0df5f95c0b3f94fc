"""Two in-process replicas on one PostgreSQL schema: sessions, leases and sends across them.

The real-process version (three replicas, SIGKILL) is tests/e2e/test_replicas_e2e.py; these are
the finer rules, each in a second or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from .conftest import Sidecar, SidecarFactory, assert_problem, paragraphs

# Replicas share a PostgreSQL database; SQLite is one process per data directory.
pytestmark = [pytest.mark.anyio, pytest.mark.postgres_only, pytest.mark.timeout(60)]


@contextlib.asynccontextmanager
async def two_replicas(make_sidecar: SidecarFactory) -> AsyncIterator[tuple[Sidecar, Sidecar]]:
    async with (
        make_sidecar(replica_id="replica-a", lease_seconds=3.0) as a,
        make_sidecar(replica_id="replica-b", lease_seconds=3.0) as b,
    ):
        yield a, b


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def start_session(replica: Sidecar, connection_id: str) -> dict[str, Any]:
    response = await replica.client.post(
        "/connector-sessions",
        json={"kind": "sim", "connectionId": connection_id, "channelId": "sim-main"},
    )
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    assert view["status"] == "qr_ready"
    return view


async def test_a_session_started_on_one_replica_is_read_scanned_and_run_on_another(
    make_sidecar: SidecarFactory,
) -> None:
    """Started on A, the session reads the same on B; scanned through B, the connection runs on
    B, and A's pairing task cannot overwrite the result later."""
    async with two_replicas(make_sidecar) as (a, b):
        session = await start_session(a, "conn_x")
        on_b = (await b.client.get(f"/connector-sessions/{session['sessionId']}")).json()
        assert on_b == session
        scanned = await b.client.post(f"/sim/sessions/{session['sessionId']}/scan", json={})
        assert scanned.status_code == 200, scanned.text
        assert scanned.json()["status"] == "connected"
        view = (await a.client.get("/connections/conn_x")).json()
        assert view["status"] == "connected"
        assert view["replica"] == "replica-b"
        assert b.app.state.services.runtime.connection_running("conn_x")
        assert not a.app.state.services.runtime.connection_running("conn_x")
        # A's task tries to end the session its own way: the ended session stays connected.
        ctx = a.app.state.services.runtime.ctx
        with pytest.raises(Exception, match="connected"):
            await ctx.update_session(session["sessionId"], status="expired")
        final = (await a.client.get(f"/connector-sessions/{session['sessionId']}")).json()
        assert final["status"] == "connected"


async def test_a_cancel_on_another_replica_ends_the_session(make_sidecar: SidecarFactory) -> None:
    """A session running on A and cancelled through B is cancelled everywhere."""
    async with two_replicas(make_sidecar) as (a, b):
        session = await start_session(a, "conn_c")
        cancelled = await b.client.post(f"/connector-sessions/{session['sessionId']}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        on_a = (await a.client.get(f"/connector-sessions/{session['sessionId']}")).json()
        assert on_a["status"] == "cancelled"
        late = await a.client.post(f"/sim/sessions/{session['sessionId']}/scan", json={})
        assert_problem(late, 409, "session_not_scannable")


async def test_a_replica_that_stops_hands_over_its_connections_and_pairings(
    make_sidecar: SidecarFactory,
) -> None:
    """When A stops, B takes its connection (resuming from the stored state) and adopts its
    unfinished pairing session, which can then be completed on B."""
    async with make_sidecar(replica_id="replica-b", lease_seconds=3.0) as b:
        async with make_sidecar(replica_id="replica-a", lease_seconds=3.0) as a:
            await a.pair("conn_a")
            session = await start_session(a, "conn_p")
            assert (await a.client.get("/connections/conn_a")).json()["replica"] == "replica-a"
        store = b.app.state.services.store

        async def adopted() -> bool:
            record = await store.db.run(store.sessions.get, session["sessionId"])
            return record is not None and record.replica == "replica-b"

        await until(adopted, "B to adopt the pairing session", timeout=5)

        async def moved() -> bool:
            view = (await b.client.get("/connections/conn_a")).json()
            # The lease is written before B starts the loop: wait for the loop too.
            running = b.app.state.services.runtime.connection_running("conn_a")
            return bool(view["replica"] == "replica-b" and running)

        await until(moved, "B to take the connection over and run it", timeout=5)
        scanned = await b.client.post(f"/sim/sessions/{session['sessionId']}/scan", json={})
        assert scanned.json()["status"] == "connected"


async def test_leases_spread_over_the_replicas(make_sidecar: SidecarFactory) -> None:
    """Six connections paired on A end up three on A and three on B."""
    async with two_replicas(make_sidecar) as (a, b):
        for n in range(6):
            await a.pair(f"conn_{n}")

        async def spread() -> bool:
            items = (await b.client.get("/connections")).json()["items"]
            owners = [c["replica"] for c in items]
            if owners.count("replica-a") != 3 or owners.count("replica-b") != 3:
                return False
            # A lease is written before its replica starts the loop: wait for the loops too.
            running_a = a.app.state.services.runtime.running_connections()
            running_b = b.app.state.services.runtime.running_connections()
            return len(running_a) == len(running_b) == 3

        await until(spread, "the leases to spread and their loops to run", timeout=20)
        running_a = a.app.state.services.runtime.running_connections()
        running_b = b.app.state.services.runtime.running_connections()
        assert not running_a & running_b  # each connection runs in one replica only


async def test_one_request_id_on_two_replicas_is_sent_once(make_sidecar: SidecarFactory) -> None:
    """The same send on A and B at once: each chunk reaches the sim once, and B's answer is
    the stored result or 409 request_in_progress."""
    async with two_replicas(make_sidecar) as (a, b):
        await a.pair("conn_1")
        await a.faults(sendLatencyMs=100)
        text = paragraphs(3)
        first, second = await asyncio.gather(a.send("out_twice", text), b.send("out_twice", text))
        assert {first.status_code, second.status_code} <= {200, 409}
        assert 200 in (first.status_code, second.status_code)
        sent = await a.sent()
        assert [s["chunkIndex"] for s in sent] == [0, 1, 2]
        again = await b.send("out_twice", text)
        assert again.status_code == 200
        assert again.json()["duplicate"] is True
