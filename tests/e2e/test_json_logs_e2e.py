"""``LOG_FORMAT=json`` on a real sidecar process: every line it writes is one JSON object, with
an access line per API request (path templates, no ids in the path) and no secret anywhere."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import SidecarProcess, wait_until

from .conftest import RecordingHost

pytestmark = pytest.mark.e2e


def test_every_line_is_json_with_context_and_access_fields(
    tmp_path: Path, recording_host: RecordingHost
) -> None:
    """A pairing, a delivery, a send and refused requests: each logged line parses as JSON."""
    token = "api-" + secrets.token_hex(8)
    sidecar = SidecarProcess(
        tmp_path / "sidecar",
        token=token,
        env={
            "LOG_FORMAT": "json",
            "BRIDGE_URL": recording_host.url,
            "BRIDGE_TOKEN": recording_host.token,
        },
    )
    with sidecar, sidecar.client() as client:
        started = client.post(
            "/connector-sessions",
            json={"kind": "sim", "connectionId": "conn_log", "channelId": "sim-logs"},
        )
        assert started.status_code == 201, started.text
        session_id = started.json()["sessionId"]
        assert client.get(f"/connector-sessions/{session_id}").status_code == 200
        scanned = client.post(f"/sim/sessions/{session_id}/scan", json={})
        assert scanned.status_code == 200, scanned.text
        accepted = client.post(
            "/sim/connections/conn_log/messages", json={"peerId": "p1", "content": "hi"}
        )
        assert accepted.status_code == 202, accepted.text
        event_id = accepted.json()["eventId"]
        wait_until(
            lambda: any(e["eventId"] == event_id for e in recording_host.accepted()),
            what="the host to accept the event",
        )
        replayed = client.post(f"/deliveries/{event_id}/replay", json={})
        assert replayed.status_code == 200, replayed.text
        sent = client.post(
            "/send",
            json={
                "requestId": "req-log-1",
                "connectionId": "conn_log",
                "target": {"peerId": "p1", "peerType": "dm"},
                "content": "hello",
            },
        )
        assert sent.status_code == 200, sent.text
        assert client.get("/send/req-log-1").status_code == 200
        assert httpx.get(f"{sidecar.url}/connections?token={token}").status_code == 401
        assert client.get("/no/such/route").status_code == 404
    assert sidecar.proc is not None
    assert sidecar.proc.returncode == 0

    text = sidecar.log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    entries: list[dict[str, Any]] = []
    for line in lines:
        entry = json.loads(line)  # fails the test on any line that is not JSON
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    assert token not in text
    assert recording_host.token not in text

    access = [e for e in entries if e["logger"] == "connector_sidecar.access"]
    by_route = {(e["method"], e["path"], e["status"]): e for e in access}
    for entry in access:
        assert isinstance(entry["duration_ms"], int | float)
        assert entry["duration_ms"] >= 0
    assert by_route["GET", "/connector-sessions/{session_id}", 200]["sessionId"] == session_id
    assert by_route["POST", "/deliveries/{event_id}/replay", 200]["eventId"] == event_id
    assert by_route["GET", "/send/{request_id}", 200]["requestId"] == "req-log-1"
    assert ("POST", "/send", 200) in by_route
    assert ("GET", "/connections", 401) in by_route
    assert ("GET", "unmatched", 404) in by_route
    assert not any(event_id in e["path"] or "?" in e["path"] for e in access)
    # Lines logged inside a pairing or a connection's work carry its ids.
    [login] = [e for e in entries if e["message"].startswith("connection conn_log connected")]
    assert (login["connectionId"], login["sessionId"]) == ("conn_log", session_id)
