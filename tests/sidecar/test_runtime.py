"""The runtime under races: a re-pair against the old inbound loop, a pairing cancelled while it
connects, a login confirmed after the host cancelled (docs/ARCHITECTURE.md "The guarantees")."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from connector_sidecar.drivers.base import SessionClosedError
from connector_sidecar.runtime import Runtime
from connector_sidecar.store import ConnectionRecord

from .conftest import Sidecar

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


def runtime_of(sidecar: Sidecar) -> Runtime:
    runtime: Runtime = sidecar.app.state.services.runtime
    return runtime


async def start_session(sidecar: Sidecar, connection_id: str = "conn_1") -> str:
    """Start a sim session that waits for a scan; returns its id."""
    response = await sidecar.client.post(
        "/connector-sessions",
        json={"kind": "sim", "connectionId": connection_id, "channelId": "sim-main"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "qr_ready"
    session_id: str = response.json()["sessionId"]
    return session_id


async def confirm(runtime: Runtime, session_id: str, account_id: str) -> ConnectionRecord:
    """What a driver does when the vendor confirms the login."""
    return await runtime.ctx.session_connected(
        session_id, account_id=account_id, display_name=None, credentials={"token": account_id}
    )


async def test_a_repair_resets_the_cursor_the_old_loop_was_about_to_store(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old login's inbound loop is stopped before a re-pair resets the vendor state, so its
    cursor cannot land on top of the reset."""
    runtime = runtime_of(sidecar)
    old_poll_returned = asyncio.Event()

    async def run(connection: ConnectionRecord) -> None:
        if connection.account_id == "acct-old":
            await old_poll_returned.wait()  # a long poll of the old login answers...
            await runtime.ctx.ingest(connection.connection_id, [], state={"cursor": "old-login"})
        await asyncio.Event().wait()

    monkeypatch.setattr(runtime.drivers["sim"], "run", run)
    await sidecar.pair("conn_1", accountId="acct-old")
    session_id = await start_session(sidecar)
    old_poll_returned.set()  # ...just as the new login is confirmed
    await confirm(runtime, session_id, "acct-new")
    assert await runtime.ctx.get_state("conn_1", "cursor") is None
    connection = await runtime.ctx.get_connection("conn_1")
    assert connection is not None
    assert connection.account_id == "acct-new"
    assert runtime.connection_running("conn_1")


async def test_a_pairing_cancelled_while_it_connects_still_starts_the_inbound_loop(
    sidecar: Sidecar,
) -> None:
    """A login stored while its pairing task is cancelled still gets its inbound loop: a connected
    connection is never left deaf until the next restart."""
    runtime = runtime_of(sidecar)
    session_id = await start_session(sidecar)
    pairing = asyncio.create_task(confirm(runtime, session_id, "acct-1"))
    await asyncio.sleep(0)  # the login is on its way to the database
    pairing.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pairing
    connection: Any = None
    for _ in range(100):  # at most 1 s
        connection = (await sidecar.client.get("/connections/conn_1")).json()
        if connection["status"] == "connected" and runtime.connection_running("conn_1"):
            break
        await asyncio.sleep(0.01)
    assert connection["status"] == "connected"
    assert runtime.connection_running("conn_1")


async def test_a_login_confirmed_after_a_cancel_is_refused(sidecar: Sidecar) -> None:
    """A vendor confirmation that arrives after the host cancelled the session does not connect."""
    runtime = runtime_of(sidecar)
    session_id = await start_session(sidecar)
    cancelled = await sidecar.client.post(f"/connector-sessions/{session_id}/cancel", json={})
    assert cancelled.json()["status"] == "cancelled"
    with pytest.raises(SessionClosedError):
        await confirm(runtime, session_id, "acct-late")
    session = (await sidecar.client.get(f"/connector-sessions/{session_id}")).json()
    assert session["status"] == "cancelled"
    connection = (await sidecar.client.get("/connections/conn_1")).json()
    assert (connection["status"], connection["accountId"]) == ("pairing", None)
    assert not runtime.connection_running("conn_1")


async def test_spawn_after_stop_runs_nothing(sidecar: Sidecar) -> None:
    """A background task spawned while the runtime stops is cancelled, not left to run on a closed store."""
    runtime = runtime_of(sidecar)
    ran: list[bool] = []

    async def work() -> None:
        ran.append(True)

    await runtime.stop()
    task = runtime.spawn(work(), name="late")
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert ran == []


async def test_closing_a_session_that_just_connected_leaves_it_connected(sidecar: Sidecar) -> None:
    """A cancel (or logout) that arrives after the login was confirmed does not rewrite it."""
    runtime = runtime_of(sidecar)
    session_id = await start_session(sidecar)
    await confirm(runtime, session_id, "acct-1")
    closed = await runtime.close_session(session_id, error="cancelled by the host")
    assert closed is not None
    assert closed.status == "connected"


async def test_logout_during_a_repair_cancels_it_and_stops_inbound(sidecar: Sidecar) -> None:
    """Logging out a connection with a re-pair under way cancels the pairing and leaves no loop."""
    runtime = runtime_of(sidecar)
    await sidecar.pair("conn_1", accountId="acct-old")
    assert runtime.connection_running("conn_1")
    session_id = await start_session(sidecar, "conn_1")

    response = await sidecar.client.post("/connections/conn_1/logout", json={})
    assert response.status_code == 200, response.text

    session = (await sidecar.client.get(f"/connector-sessions/{session_id}")).json()
    assert session["status"] == "cancelled"
    assert session["error"] == "the connection logged out"
    assert not runtime.connection_running("conn_1")
    connection = (await sidecar.client.get("/connections/conn_1")).json()
    assert connection["status"] == "logged_out"
