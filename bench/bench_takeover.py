"""Takeover after a crash: 1,000 sim connections over 3 replicas on PostgreSQL, one SIGKILLed.

Prints how long until every connection runs again on a live replica, against the goal of the
lease time plus 5 s, and how evenly the leases were spread before the kill (the largest share
against ceil(1.5 x connections / replicas)). Real processes on loopback; a database of its own
on the machine's PostgreSQL (``SIDECAR_BENCH_POSTGRES_URL``), dropped at the end.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import os
import secrets
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench._options import Options
from connector_sidecar.testing import SidecarProcess

ADMIN_URL = os.environ.get(
    "SIDECAR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CONNECTIONS = 1000
REPLICAS = 3
LEASE_SECONDS = 5


def _owners(replica: SidecarProcess) -> dict[str, str | None]:
    with replica.client() as client:
        items = client.get("/connections").json()["items"]
    return {c["connectionId"]: c["replica"] for c in items}


def _pair(replica: SidecarProcess, connection_id: str) -> None:
    with replica.client() as client:
        response = client.post(
            "/connector-sessions",
            json={
                "kind": "sim",
                "connectionId": connection_id,
                "channelId": "bench",
                "options": {"autoConfirm": True},
            },
        )
    if response.status_code != 201:
        raise RuntimeError(f"pairing {connection_id} failed: {response.text}")


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - started


def main(options: Options | None = None) -> None:
    connections = 30 if options is not None and options.smoke else CONNECTIONS
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(f"   skipped: PostgreSQL unreachable at {ADMIN_URL} ({exc.__class__.__name__})")
        return
    name = f"sidecar_bench_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    replicas: list[SidecarProcess] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in range(REPLICAS):
                replica = SidecarProcess(
                    Path(tmp) / f"replica{n}",
                    env={
                        "SIDECAR_DATABASE_URL": url,
                        "SIDECAR_REPLICA_ID": f"replica-{n}",
                        "SIDECAR_LEASE_SECONDS": str(LEASE_SECONDS),
                        "LOG_LEVEL": "warning",
                    },
                )
                replicas.append(replica)
                replica.start()
            ids = [f"conn_{n:04d}" for n in range(connections)]
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(lambda i: _pair(replicas[i % REPLICAS], ids[i]), range(len(ids))))
            paired = time.monotonic() - started
            fair = math.ceil(1.5 * connections / REPLICAS)

            def spread() -> bool:
                owners = collections.Counter(_owners(replicas[0]).values())
                return None not in owners and max(owners.values()) <= fair

            spread_s = _wait(spread, "the leases to spread", timeout=120)
            shares = collections.Counter(_owners(replicas[0]).values())
            victim = replicas[1]
            victim.kill()
            alive = {"replica-0", "replica-2"}
            takeover = _wait(
                lambda: all(o in alive for o in _owners(replicas[0]).values()),
                "every connection to run again",
                timeout=LEASE_SECONDS + 120,
            )
            goal = LEASE_SECONDS + 5
            print(f"   {connections} connections paired over {REPLICAS} replicas in {paired:.1f} s")
            print(
                f"   leases spread in {spread_s:.1f} s; largest share {max(shares.values())}"
                f" (ceil(1.5 x N / R) = {fair}): {dict(sorted(shares.items()))}"
            )
            print(
                f"   SIGKILL of one replica -> every connection running again in {takeover:.1f} s"
                f" (goal: lease {LEASE_SECONDS} s + 5 s = {goal} s; ratio {takeover / goal:.2f})"
            )
    finally:
        for replica in replicas:
            replica.terminate()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
