"""Dedupe store throughput: 16 concurrent tasks against one, for each store that persists.

Each task runs ``begin()`` then ``complete()`` on new events, as a host handler does. The
figure is the ratio of the 16-task rate to the 1-task rate of the same store, measured in the
same run (median of 3 rounds): concurrency should pay, for SQLite by group commit (one fsync
for all the calls that arrive while the previous commit runs; target >= 4x), for PostgreSQL
and Redis by the connection pool.

PostgreSQL and Redis are the machine's (``CONNECTOR_BENCH_POSTGRES_URL``,
``CONNECTOR_BENCH_REDIS_URL``); the benchmark creates its own database and key prefix and
removes them after. A service that is not reachable is reported and skipped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from bench._options import Options
from connector_sdk import PostgresDedupeStore, RedisDedupeStore, SqliteDedupeStore

Store = SqliteDedupeStore | PostgresDedupeStore | RedisDedupeStore

POSTGRES_URL = os.environ.get(
    "CONNECTOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CONNECTOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ROUNDS = 3
SECONDS = 1.5  # each measurement runs this long, whole events only
TASKS = 16


async def rate(store: Store, tasks: int, label: str, seconds: float) -> float:
    """Events per second (begin + complete each) with ``tasks`` tasks for about ``seconds``."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(number: int) -> None:
        nonlocal done
        for n in range(10_000_000):  # bounded by the deadline below
            if time.perf_counter() >= deadline:
                return
            decision = await store.begin(label, f"{number}-{n}", 1)
            await store.complete(decision.dedupe_key)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(number) for number in range(tasks)))
    return done / (time.perf_counter() - started)


async def ratio(store: Store, rounds: int, seconds: float) -> tuple[float, float, float]:
    """(1-task rate, 16-task rate, ratio), medians over ``rounds`` alternating rounds."""
    await store.begin("warm-up", "0", 1)
    ones, many = [], []
    for round_ in range(rounds):
        ones.append(await rate(store, 1, f"one-{round_}", seconds))
        many.append(await rate(store, TASKS, f"many-{round_}", seconds))
    ratios = [m / o for o, m in zip(ones, many, strict=True)]
    return statistics.median(ones), statistics.median(many), statistics.median(ratios)


@asynccontextmanager
async def sqlite_store() -> AsyncIterator[Store]:
    # A directory on the working tree's disk, so commits pay a real fsync (not tmpfs).
    with tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-dedupe-") as tmp:
        async with SqliteDedupeStore(Path(tmp) / "dedupe.sqlite3") as store:
            yield store


@asynccontextmanager
async def postgres_store() -> AsyncIterator[Store]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"connector_bench_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(
        POSTGRES_URL, autocommit=True, connect_timeout=5
    ) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            dsn = make_conninfo(POSTGRES_URL, dbname=name)
            async with PostgresDedupeStore(dsn, pool_max_size=TASKS) as store:
                yield store
        finally:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@asynccontextmanager
async def redis_store() -> AsyncIterator[Store]:
    from redis.asyncio import Redis

    prefix = f"connector-bench:{secrets.token_hex(4)}:"
    try:
        async with RedisDedupeStore(REDIS_URL, prefix=prefix, max_connections=TASKS) as store:
            yield store
    finally:
        client = Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start : start + 1000])
        finally:
            await client.aclose()


STORES: list[tuple[str, Callable[[], AbstractAsyncContextManager[Store]], str]] = [
    ("SqliteDedupeStore", sqlite_store, ">= 4x (group commit)"),
    ("PostgresDedupeStore", postgres_store, ""),
    ("RedisDedupeStore", redis_store, ""),
]


async def run(rounds: int, seconds: float) -> None:
    print(f"   begin+complete events/s, {TASKS} tasks / 1 task, median of {rounds}")
    for name, open_store, target in STORES:
        try:
            async with open_store() as store:
                one, many, times = await ratio(store, rounds, seconds)
        except Exception as error:  # a service that is not there: say so, go on
            print(f"   {name:20} skipped: {type(error).__name__}: {error}".splitlines()[0])
            continue
        print(
            f"   {name:20} 1 task {one:7.0f}/s   {TASKS} tasks {many:7.0f}/s"
            f"   ratio {times:5.2f}x  {target}"
        )


def main(options: Options | None = None) -> None:
    smoke = options is not None and options.smoke
    asyncio.run(run(1 if smoke else ROUNDS, 0.1 if smoke else SECONDS))
