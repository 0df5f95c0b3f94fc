"""Several sidecar replicas on one PostgreSQL, as real processes (ARCHITECTURE "Where it runs").

Three ``connector-sidecar serve`` processes share the test's PostgreSQL schema; the host is
tests/e2e/recording_host.py. Leases are 3 s (``SIDECAR_LEASE_SECONDS``) so that takeovers after
a SIGKILL fit a test.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import SidecarProcess, wait_until

from .conftest import RecordingHost
from .test_delivery_e2e import assert_no_attempt_number_reused, first_receipts, pair

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]
LEASE_SECONDS = 3


def start_replicas(
    factory: SidecarFactory, count: int, database_url: str, **extra: str
) -> list[SidecarProcess]:
    replicas = [
        factory(
            env={
                "SIDECAR_DATABASE_URL": database_url,
                "SIDECAR_REPLICA_ID": f"replica-{n}",
                "SIDECAR_LEASE_SECONDS": str(LEASE_SECONDS),
                "LOG_LEVEL": "warning",
                **extra,
            }
        )
        for n in range(count)
    ]
    for replica in replicas:
        replica.start()
    return replicas


def conversation_of(record: dict[str, Any]) -> str:
    return f"{record['event']['connectionId']}/{record['event']['peerId']}"


def connections(replica: SidecarProcess) -> dict[str, dict[str, Any]]:
    with replica.client() as client:
        items = client.get("/connections").json()["items"]
    return {c["connectionId"]: c for c in items}


def running(replica: SidecarProcess) -> dict[str, str | None]:
    """Which replica each connection runs on, as one replica sees the database."""
    return {c: view["replica"] for c, view in connections(replica).items()}


@pytest.mark.timeout(300)
def test_three_replicas_deliver_everything_in_order_through_a_sigkill(
    tmp_path: Path, sidecar_factory: SidecarFactory, postgres_url: str
) -> None:
    """20 connections, 600 messages over 60 conversations injected through all three replicas,
    one SIGKILLed mid-stream and started again: the host gets every event, in order, none dead,
    and every connection ends connected on a live replica."""
    host = RecordingHost(tmp_path, fail_rate=0.05, seed=7)
    host.start()
    try:
        replicas = start_replicas(
            sidecar_factory,
            3,
            postgres_url,
            BRIDGE_URL=host.url,
            BRIDGE_TOKEN=host.token,
            BRIDGE_CONCURRENCY="8",
        )
        ids = [f"conn_{n:02d}" for n in range(20)]
        for n, connection_id in enumerate(ids):
            pair(replicas[n % 3], connection_id)
        conversations = [(c, f"peer-{p}") for c in ids for p in range(3)]
        injected: dict[str, list[str]] = collections.defaultdict(list)
        turn = itertools.cycle(range(3))
        killed = replicas[1]
        for round_ in range(10):
            if round_ == 5:
                killed.kill()  # SIGKILL mid-stream: its leases, claims and POSTs in flight
            for connection_id, peer in conversations:
                replica = replicas[next(turn)]
                if not replica.running:
                    replica = replicas[0]
                with replica.client() as client:
                    response = client.post(
                        f"/sim/connections/{connection_id}/messages",
                        json={
                            "peerId": peer,
                            "content": f"{round_}",
                            "messageId": f"{peer}-{round_}",
                        },
                    )
                assert response.status_code == 202, response.text
                injected[f"{connection_id}/{peer}"].append(response.json()["eventId"])
            if round_ == 7:
                killed.start()
        everything = {e for events in injected.values() for e in events}
        assert len(everything) == 600

        wait_until(
            lambda: {e["eventId"] for e in host.accepted()} >= everything,
            timeout=120,
            interval=0.5,
            what="the host to accept every event",
        )
        records = host.records()
        assert_no_attempt_number_reused(records)
        for accepted_only in (False, True):
            lanes = first_receipts(
                [{**r, "event": {**r["event"], "peerId": conversation_of(r)}} for r in records],
                accepted_only=accepted_only,
            )
            for conversation, order in injected.items():
                assert lanes[conversation] == order, f"{conversation} out of order"
        with replicas[0].client() as client:
            dead = client.get("/deliveries", params={"status": "dead"}).json()["items"]
        assert dead == []

        live = {"replica-0", "replica-1", "replica-2"}

        def all_running() -> bool:
            views = connections(replicas[2])
            return all(v["status"] == "connected" and v["replica"] in live for v in views.values())

        wait_until(all_running, timeout=LEASE_SECONDS + 20, what="every connection to run")
        assert set(connections(replicas[0])) == set(ids)
    finally:
        host.terminate()


@pytest.mark.timeout(120)
def test_thirty_identical_sends_over_three_replicas_reach_the_vendor_once(
    sidecar_factory: SidecarFactory, postgres_url: str
) -> None:
    """30 concurrent identical sends spread over three replicas: each chunk is sent once, and
    every answer is the stored result or 409 request_in_progress."""
    replicas = start_replicas(sidecar_factory, 3, postgres_url)
    pair(replicas[0], "conn_send")
    text = "\n\n".join(f"{i}" + "x" * 1499 for i in range(4))  # four sim chunks
    with replicas[0].client() as client:
        client.post("/sim/connections/conn_send/faults", json={"sendLatencyMs": 50})
    body = {
        "requestId": "out_once",
        "connectionId": "conn_send",
        "channelId": "sim-main",
        "kind": "sim",
        "target": {"peerId": "peer-1", "peerType": "dm"},
        "content": text,
    }

    def send(n: int) -> httpx.Response:
        with replicas[n % 3].client() as client:
            return client.post("/send", json=body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(send, range(30)))
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    ok = [a.json() for a in answers if a.status_code == 200]
    assert ok
    assert sum(not a["duplicate"] for a in ok) <= 1
    assert len({tuple(a["providerMessageIds"]) for a in ok}) == 1
    for conflict in (a for a in answers if a.status_code == 409):
        assert conflict.json()["code"] == "request_in_progress"
        assert "retry-after" in conflict.headers
    with replicas[2].client() as client:
        sent = client.get("/sim/connections/conn_send/sent").json()["items"]
    assert [s["chunkIndex"] for s in sent] == [0, 1, 2, 3]


@pytest.mark.timeout(120)
def test_connections_move_when_a_replica_stops_or_dies(
    sidecar_factory: SidecarFactory, postgres_url: str
) -> None:
    """A replica stopped with SIGTERM hands its connections over within 2 s; one SIGKILLed,
    within the lease time plus 5 s. Leases are spread over the replicas meanwhile."""
    replicas = start_replicas(sidecar_factory, 3, postgres_url)
    ids = [f"conn_{n}" for n in range(9)]
    for n, connection_id in enumerate(ids):
        pair(replicas[n % 3], connection_id)

    def spread() -> bool:
        owners = collections.Counter(running(replicas[0]).values())
        return None not in owners and max(owners.values()) <= 3 and len(owners) == 3

    wait_until(spread, timeout=30, what="the leases to spread over three replicas")

    def moved_off(name: str, alive: set[str]) -> Callable[[], bool]:
        return lambda: all(owner in alive for owner in running(replicas[0]).values())

    stopped = time.monotonic()
    replicas[2].terminate()  # SIGTERM: a graceful stop releases its leases at once
    wait_until(
        moved_off("replica-2", {"replica-0", "replica-1"}),
        timeout=10,
        interval=0.1,
        what="the stopped replica's connections to move",
    )
    assert time.monotonic() - stopped <= 2.0 + 0.5  # the 0.5: this test's own polling

    killed = time.monotonic()
    replicas[1].kill()
    wait_until(
        moved_off("replica-1", {"replica-0"}),
        timeout=LEASE_SECONDS + 15,
        interval=0.1,
        what="the killed replica's connections to move",
    )
    assert time.monotonic() - killed <= LEASE_SECONDS + 5
    assert all(v["status"] == "connected" for v in connections(replicas[0]).values())
