"""At-least-once, in-order bridge delivery with real processes on loopback (docs/CONTRACT.md §5).

The sidecar runs as ``connector-sidecar serve``; the host is tests/e2e/recording_host.py, which
records every attempt. Messages go in through the sim connector; the sidecar is SIGKILLed and
restarted while it delivers.
"""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import SidecarProcess, wait_until

from .conftest import RecordingHost

pytestmark = pytest.mark.e2e

SIGNING_SECRET = "whsec_" + base64.b64encode(b"end-to-end signing secret 32 by").decode()
SidecarFactory = Callable[..., SidecarProcess]


def bridge_env(host: RecordingHost, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_URL": host.url,
        "BRIDGE_TOKEN": host.token,
        "BRIDGE_SIGNING_SECRET": SIGNING_SECRET,
        "LOG_LEVEL": "warning",
        **extra,
    }


def pair(sidecar: SidecarProcess, connection_id: str) -> None:
    with sidecar.client() as client:
        response = client.post(
            "/connector-sessions",
            json={
                "kind": "sim",
                "connectionId": connection_id,
                "channelId": "sim-main",
                "options": {"autoConfirm": True},
            },
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "connected"


def inject(
    sidecar: SidecarProcess, client: httpx.Client, connection_id: str, peer: str, message_id: str
) -> str:
    """Hand one message to the sim connector; retried (same messageId) while the sidecar restarts."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = client.post(
                f"/sim/connections/{connection_id}/messages",
                json={
                    "peerId": peer,
                    "content": f"content of {message_id}",
                    "messageId": message_id,
                },
            )
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        assert response.status_code == 202, response.text
        event_id: str = response.json()["eventId"]
        return event_id


def outbox_counts(sidecar: SidecarProcess, connection_id: str) -> tuple[int, int]:
    with sidecar.client() as client:
        view = client.get(f"/connections/{connection_id}").json()
    return view["pendingDeliveries"], view["deadDeliveries"]


def first_receipts(records: list[dict[str, Any]], *, accepted_only: bool) -> dict[str, list[str]]:
    """For each conversation, its eventIds in the order the host first saw each one."""
    seen: set[str] = set()
    lanes: dict[str, list[str]] = collections.defaultdict(list)
    for record in records:
        if accepted_only and not record["accepted"]:
            continue
        event = record["event"]
        if event["eventId"] not in seen:
            seen.add(event["eventId"])
            lanes[event["peerId"]].append(event["eventId"])
    return lanes


def assert_no_attempt_number_reused(records: list[dict[str, Any]]) -> None:
    attempts: dict[str, list[int]] = collections.defaultdict(list)
    for record in records:
        attempts[record["event"]["eventId"]].append(record["event"]["deliveryAttempt"])
    reused = {e: a for e, a in attempts.items() if len(a) != len(set(a))}
    assert not reused, f"attempt numbers used twice: {list(reused.items())[:3]}"


@pytest.mark.timeout(300)
def test_every_event_arrives_in_order_through_faults_and_crashes(
    tmp_path: Path, sidecar_factory: SidecarFactory
) -> None:
    """2,000 events over 50 conversations, a host failing ~20% of attempts, 3 SIGKILLs: all arrive, in order, none dead."""
    conversations, per_conversation = 50, 40
    host = RecordingHost(
        tmp_path,
        signing_secret=SIGNING_SECRET,
        fail_rate=0.2,
        conflict_rate=0.05,
        slow_rate=0.05,
        slow_seconds=0.5,
        seed=20240601,
    )
    host.start()
    try:
        sidecar = sidecar_factory(env=bridge_env(host, BRIDGE_CONCURRENCY="16"))
        sidecar.start()
        pair(sidecar, "conn_e2e")
        injected: dict[str, list[str]] = collections.defaultdict(list)
        kill_at = {700, 1400, conversations * per_conversation}
        backlog_at_kill: list[int] = []
        kills = 0
        count = 0
        with sidecar.client() as client:
            for round_ in range(per_conversation):
                for c in range(conversations):
                    peer = f"peer-{c:02d}"
                    event_id = inject(sidecar, client, "conn_e2e", peer, f"m-{c}-{round_}")
                    injected[peer].append(event_id)
                    count += 1
                    if count in kill_at:
                        backlog_at_kill.append(outbox_counts(sidecar, "conn_e2e")[0])
                        sidecar.kill()  # SIGKILL while POSTs are in flight
                        kills += 1
                        sidecar.start()
        assert kills == 3
        assert max(backlog_at_kill) > 0  # killed mid-delivery, not between runs
        everything = {e for events in injected.values() for e in events}
        assert len(everything) == conversations * per_conversation

        def all_accepted() -> bool:
            return {e["eventId"] for e in host.accepted()} >= everything

        wait_until(all_accepted, timeout=150, interval=0.5, what="the host to accept every event")
        wait_until(
            lambda: outbox_counts(sidecar, "conn_e2e") == (0, 0),
            timeout=30,
            what="the outbox to drain",
        )
        records = host.records()
        statuses = collections.Counter(r["status"] for r in records)
        assert statuses[500] > 0.1 * len(records)  # the faults really happened
        assert statuses[409] > 0
        assert all(r["signatureValid"] is True for r in records)
        assert all(r["headers"]["authorization"] == f"Bearer {host.token}" for r in records)
        assert_no_attempt_number_reused(records)
        for accepted_only in (False, True):
            lanes = first_receipts(records, accepted_only=accepted_only)
            assert set(lanes) == set(injected)
            for peer, order in injected.items():
                assert lanes[peer] == order, f"{peer} out of order (accepted_only={accepted_only})"
        with sidecar.client() as client:
            dead = client.get("/deliveries", params={"status": "dead"}).json()["items"]
        assert dead == []
    finally:
        host.terminate()


@pytest.mark.timeout(180)
def test_a_backlog_drains_after_the_host_comes_back(
    tmp_path: Path, sidecar_factory: SidecarFactory
) -> None:
    """With the host down events queue and are retried; once it is up again the backlog drains in order."""
    host = RecordingHost(tmp_path)
    host.start()
    try:
        sidecar = sidecar_factory(env=bridge_env(host))
        sidecar.start()
        pair(sidecar, "conn_down")
        host.terminate()  # connection refused from here on
        injected: dict[str, list[str]] = collections.defaultdict(list)
        with sidecar.client() as client:
            for n in range(20):
                for c in range(10):
                    peer = f"peer-{c}"
                    injected[peer].append(inject(sidecar, client, "conn_down", peer, f"m-{c}-{n}"))

        def retried() -> list[dict[str, Any]] | None:
            """The pending events, once some have failed twice (no fixed sleep: backoff is random)."""
            with sidecar.client() as client:
                pending = client.get("/deliveries", params={"status": "pending", "limit": "500"})
            found: list[dict[str, Any]] = pending.json()["items"]
            return found if max(i["attempts"] for i in found) >= 2 else None

        items = wait_until(retried, timeout=30, what="events retried while the host is down")
        assert len(items) == 200
        assert any("ConnectError" in (i["lastError"] or "") for i in items)
        host.start()
        wait_until(
            lambda: outbox_counts(sidecar, "conn_down") == (0, 0),
            timeout=120,
            interval=0.5,
            what="the backlog to drain",
        )
        lanes = first_receipts(host.records(), accepted_only=True)
        assert dict(lanes) == dict(injected)
    finally:
        host.terminate()
