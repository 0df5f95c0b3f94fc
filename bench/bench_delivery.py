"""Delivery throughput of the outbox worker against an in-process host (httpx's ASGI transport).

Prints ratios against a baseline measured in the same run, never absolute promises:

- concurrency: ``BRIDGE_CONCURRENCY`` 16 against 1, with a host that takes a few milliseconds per
  answer. Lanes in parallel should deliver several times faster.
- history: the same delivery with 20,000 delivered events already in the outbox against an empty
  one. Claiming reads indexes only, so the ratio should stay near 1.
- backlog: draining 10,000 pending events against 2,000. The per-event cost does not grow with
  the backlog, so the ratio should stay near 1 too.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.types import Receive, Scope, Send

from bench._options import Options
from connector_sidecar._secret import Secret
from connector_sidecar.config import Settings
from connector_sidecar.delivery import DeliveryWorker
from connector_sidecar.store import InboundMessage, SqliteDatabase, Store
from connector_sidecar.store._sql import Connection

EVENTS = 2000
LANES = 50
HOST_LATENCY = 0.004  # seconds per answer
HISTORY = 20_000
BACKLOG = 10_000


async def host_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A bridge host that takes ``HOST_LATENCY`` to accept each event."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await asyncio.sleep(HOST_LATENCY)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"accepted":true}'})


@contextlib.asynccontextmanager
async def outbox(events: int, history: int) -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(SqliteDatabase(Path(tmp) / "bench.sqlite3"), time.time)
        await store.db.open()

        def fill(c: Connection) -> None:
            store.connections.ensure(c, connection_id="conn", channel_id="chan", kind="sim")
            record = store.connections.update(c, "conn", status="connected")
            if history:
                store.outbox.enqueue(
                    c,
                    record,
                    [
                        InboundMessage(
                            message_id=f"old{i}", peer_id=f"peer-{i % LANES}", content="x"
                        )
                        for i in range(history)
                    ],
                )
                c.execute("UPDATE outbox SET status = 'delivered', delivered_at = created_at")
            store.outbox.enqueue(
                c,
                record,
                [
                    InboundMessage(message_id=f"m{i}", peer_id=f"peer-{i % LANES}", content="hello")
                    for i in range(events)
                ],
            )

        await store.db.transaction(fill)
        try:
            yield store
        finally:
            await store.db.close()


async def deliver(*, concurrency: int, events: int = EVENTS, history: int = 0) -> float:
    """Events per second for one full drain of ``events`` over ``LANES`` conversations."""
    async with outbox(events, history) as store:
        settings = Settings(
            token=Secret("bench-token-123"),
            bridge_url="http://host.bench/events",
            bridge_token=Secret("bridge-token-123"),
            bridge_signing_secrets=(Secret("whsec_YmVuY2ggc2lnbmluZyBzZWNyZXQ="),),
            bridge_concurrency=concurrency,
        )
        worker = DeliveryWorker(
            settings,
            store,
            transport=httpx.ASGITransport(app=host_app),
            purge_interval_seconds=None,
        )
        started = time.perf_counter()
        await worker.start()
        try:
            for _ in range(120_000):  # bounded: at most 10 minutes
                if worker.stats.delivered >= events:
                    break
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            await worker.stop()
        counts = await store.db.run(store.outbox.status_counts)
        if counts["delivered"] != events + history:
            raise RuntimeError(f"the drain did not finish: {counts}")
        return events / elapsed


async def run(*, smoke: bool = False) -> None:
    # --smoke: the same steps with tiny counts, to prove the harness runs (not a measurement).
    events, history, backlog = (40, 200, 100) if smoke else (EVENTS, HISTORY, BACKLOG)
    baseline = await deliver(concurrency=1, events=max(1, events // 4))
    parallel = await deliver(concurrency=16, events=events)
    print(f"   concurrency 1:  {baseline:8.0f} events/s (baseline)")
    print(f"   concurrency 16: {parallel:8.0f} events/s  ratio {parallel / baseline:5.2f}x")
    empty = await deliver(concurrency=16, events=events)
    crowded = await deliver(concurrency=16, events=events, history=history)
    print(f"   empty outbox:   {empty:8.0f} events/s (baseline)")
    print(
        f"   {history} delivered rows: {crowded:8.0f} events/s  ratio {crowded / empty:5.2f}x"
        " (near 1: claims use indexes)"
    )
    crowd = await deliver(concurrency=16, events=backlog)
    print(f"   {events} pending:   {empty:8.0f} events/s (baseline)")
    print(
        f"   {backlog} pending:  {crowd:8.0f} events/s  ratio {crowd / empty:5.2f}x"
        " (near 1: no scan per event)"
    )


def main(options: Options | None = None) -> None:
    asyncio.run(run(smoke=options is not None and options.smoke))
