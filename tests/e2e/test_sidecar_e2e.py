"""The real ``connector-sidecar serve`` process: state survives SIGKILL, SIGTERM exits cleanly."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import SidecarProcess, wait_until

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]
TEXT = "\n\n".join(f"{i}" + "x" * 1499 for i in range(5))  # five sim chunks of 2000 at most
SEND = {
    "requestId": "out_sim-main:s1:out-msg-1",
    "connectionId": "conn_1",
    "channelId": "sim-main",
    "kind": "sim",
    "target": {"peerId": "peer-1", "peerType": "dm", "threadId": None},
    "content": TEXT,
    "metadata": {"inboundMessageId": "in-1", "sessionId": "s1"},
}


def pair(client: httpx.Client) -> dict[str, Any]:
    """Pair sim connection conn_1 the way a person would: start, show the QR, scan."""
    started = client.post(
        "/connector-sessions",
        json={
            "kind": "sim",
            "connectionId": "conn_1",
            "channelId": "sim-main",
            "displayName": "E2E",
            "callbackBaseUrl": "",
            "options": {},
        },
    )
    assert started.status_code == 201, started.text
    assert started.json()["status"] == "qr_ready"
    session_id = started.json()["sessionId"]
    scanned = client.post(f"/sim/sessions/{session_id}/scan", json={"accountId": "e2e-acct"})
    assert scanned.status_code == 200, scanned.text
    view: dict[str, Any] = scanned.json()
    assert view["status"] == "connected"
    return view


def snapshot(client: httpx.Client) -> dict[str, Any]:
    """What must survive a crash: connections, the session, the outbox and the vendor's record."""
    connections = client.get("/connections").json()["items"]
    for connection in connections:
        connection.pop("updatedAt")  # the restart may touch it (status re-asserted)
        assert connection.pop("replica") is not None  # running, in a replica named anew
    return {
        "connections": connections,
        "deliveries": client.get("/deliveries", params={"limit": "500"}).json(),
        "sent": client.get("/sim/connections/conn_1/sent").json()["items"],
        "send": client.get(f"/send/{SEND['requestId']}").json(),
    }


def test_state_survives_sigkill_and_restart(sidecar_factory: SidecarFactory) -> None:
    """After SIGKILL and a restart, connections, sessions, ledger and outbox are intact and sim reconnects."""
    sidecar = sidecar_factory()
    sidecar.start()
    with sidecar.client() as client:
        session = pair(client)
        accepted = [
            client.post(
                "/sim/connections/conn_1/messages",
                json={"peerId": "peer-1", "content": f"message {i}", "messageId": f"in-{i}"},
            )
            for i in range(3)
        ]
        assert [r.status_code for r in accepted] == [202, 202, 202]
        sent = client.post("/send", json=SEND)
        assert sent.status_code == 200, sent.text
        result = sent.json()
        assert len(result["providerMessageIds"]) == 5
        before = snapshot(client)
    assert len(before["sent"]) == 5
    assert len(before["deliveries"]["items"]) == 3

    sidecar.kill()
    assert sidecar.proc is not None
    assert sidecar.proc.returncode == -9
    sidecar.start()

    with sidecar.client() as client:
        after = snapshot(client)
        assert after == before
        assert after["connections"][0]["status"] == "connected"
        assert client.get(f"/connector-sessions/{session['sessionId']}").json() == session

        repeat = client.post("/send", json=SEND)
        assert repeat.status_code == 200
        assert repeat.json() == {**result, "duplicate": True}
        assert len(client.get("/sim/connections/conn_1/sent").json()["items"]) == 5

        # The connection is live again: it receives (same messageId: same event) and sends.
        again = client.post(
            "/sim/connections/conn_1/messages",
            json={"peerId": "peer-1", "content": "message 0", "messageId": "in-0"},
        )
        assert again.status_code == 202
        assert again.json()["eventId"] == accepted[0].json()["eventId"]
        assert len(client.get("/deliveries").json()["items"]) == 3
        fresh = client.post(
            "/send", json={**SEND, "requestId": "out_after_restart", "content": "hi"}
        )
        assert fresh.status_code == 200
        assert fresh.json()["duplicate"] is False

    assert sidecar.terminate() == 0
    assert sidecar.token not in sidecar.log_path.read_text(errors="replace")


def test_sigterm_exits_zero(sidecar_factory: SidecarFactory) -> None:
    """SIGTERM stops the sidecar gracefully with exit code 0, within the bounded wait."""
    sidecar = sidecar_factory()
    sidecar.start()
    with sidecar.client() as client:
        pair(client)
    started = time.monotonic()
    assert sidecar.terminate(timeout=20) == 0
    assert time.monotonic() - started < 15
    assert "sidecar stopped" in sidecar.log_tail()


def test_a_second_sidecar_on_the_same_data_dir_refuses_to_start(
    sidecar_factory: SidecarFactory,
) -> None:
    """A second process on a data directory in use exits non-zero; the first keeps serving."""
    first = sidecar_factory()
    first.start()
    second = SidecarProcess(first.data_dir, token=first.token)
    try:
        second.start(wait=False)
        assert second.proc is not None
        proc = second.proc
        wait_until(lambda: proc.poll() is not None, timeout=30, what="the second sidecar to exit")
        assert proc.returncode not in (0, None)
        output = second.log_tail()
        assert "another sidecar" in output
        assert "Traceback" not in output
        assert httpx.get(f"{first.url}/healthz", timeout=5).status_code == 200
    finally:
        second.terminate()
    assert first.terminate() == 0
