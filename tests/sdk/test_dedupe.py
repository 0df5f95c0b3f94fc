"""Dedupe stores: every rule, the purge, concurrency in one process and typed errors, each on
every store (memory, SQLite, PostgreSQL, Redis). Several processes: test_dedupe_processes.py;
the JSON import: test_dedupe_import.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector_sdk import (
    DedupeDecision,
    DedupeError,
    DedupeStore,
    MemoryDedupeStore,
    PostgresDedupeStore,
    RedisDedupeStore,
    SqliteDedupeStore,
    UnknownDedupeKey,
)

from ._dedupe_stores import KINDS, MakeStore, Store, open_store
from ._fakes import FakeClock

pytestmark = pytest.mark.anyio

TTL = 60.0
RETENTION = 7 * 24 * 3600.0


@pytest.fixture
def clock() -> FakeClock:
    """The stores' clock, moved by hand."""
    return FakeClock()


@pytest.fixture
async def store(make_store: MakeStore, clock: FakeClock) -> AsyncIterator[Store]:
    """Each store kind, with default windows and the fake clock."""
    async with make_store(now=clock) as opened:
        yield opened


async def test_stores_implement_the_protocol(store: Store) -> None:
    """Both stores satisfy the DedupeStore protocol."""
    assert isinstance(store, DedupeStore)


async def test_new_key_is_processed(store: Store, clock: FakeClock) -> None:
    """A new key: process, status processing, attempts from the delivery, key conn:event."""
    decision = await store.begin("conn_1", "evt_1", 3)
    assert decision.should_process
    assert decision.dedupe_key == "conn_1:evt_1"
    assert decision.status == "processing"
    assert decision.http_status == 200
    assert decision.retry_after_seconds is None
    record = decision.record
    assert record.delivery_attempts == 3
    assert (record.connection_id, record.event_id) == ("conn_1", "evt_1")
    assert record.first_seen_at == datetime.fromtimestamp(clock.now, UTC)
    assert record.last_error is None
    assert record.message_id is None


@pytest.mark.parametrize("attempt", [0, -2, 1])
async def test_new_key_counts_at_least_one_attempt(store: Store, attempt: int) -> None:
    """Attempts on a new key are ``max(1, delivery_attempt)``."""
    decision = await store.begin("c", "e", attempt)
    assert decision.record.delivery_attempts == 1


async def test_completed_is_not_processed_again(store: Store, clock: FakeClock) -> None:
    """After complete(): no processing, 200, status completed, message id kept."""
    first = await store.begin("c", "e", 1)
    await store.complete(first.dedupe_key, "host-msg-9")
    clock.advance(3600)
    again = await store.begin("c", "e", 2)
    assert not again.should_process
    assert (again.http_status, again.status, again.retry_after_seconds) == (200, "completed", None)
    assert again.record.message_id == "host-msg-9"
    assert again.record.delivery_attempts == 1


async def test_processing_young_answers_409(store: Store, clock: FakeClock) -> None:
    """A key processing for less than the TTL: no processing, 409, retry after 5 s."""
    await store.begin("c", "e", 1)
    clock.advance(TTL - 1)
    again = await store.begin("c", "e", 2)
    assert not again.should_process
    assert (again.http_status, again.status, again.retry_after_seconds) == (409, "processing", 5)
    assert again.record.delivery_attempts == 1


async def test_processing_stale_is_processed_again(store: Store, clock: FakeClock) -> None:
    """A key processing for longer than the TTL is taken over; attempts = previous + 1."""
    await store.begin("c", "e", 1)
    clock.advance(TTL + 1)
    again = await store.begin("c", "e", 1)
    assert again.should_process
    assert again.status == "processing"
    assert again.record.delivery_attempts == 2
    assert again.record.updated_at == datetime.fromtimestamp(clock.now, UTC)


async def test_failed_is_processed_again_and_error_cleared(store: Store) -> None:
    """After fail(): processed again at once, last_error cleared, attempts bumped."""
    first = await store.begin("c", "e", 1)
    await store.fail(first.dedupe_key, "RuntimeError: boom")
    failed = await store.get(first.dedupe_key)
    assert failed is not None
    assert (failed.status, failed.last_error) == ("failed", "RuntimeError: boom")
    again = await store.begin("c", "e", 1)
    assert again.should_process
    assert again.record.last_error is None
    assert again.record.delivery_attempts == 2


async def test_processing_at_exactly_the_ttl_is_taken_over(store: Store, clock: FakeClock) -> None:
    """Just under the TTL the record is still pending (409); at exactly the TTL it is stale."""
    await store.begin("c", "e", 1)
    clock.advance(TTL - 0.001)
    pending = await store.begin("c", "e", 2)
    assert (pending.should_process, pending.http_status) == (False, 409)
    clock.advance(0.001)
    taken = await store.begin("c", "e", 2)
    assert (taken.should_process, taken.http_status, taken.retry_after_seconds) == (True, 200, None)
    assert taken.record.delivery_attempts == 2


async def test_pending_answer_does_not_touch_the_record(store: Store, clock: FakeClock) -> None:
    """A 409 leaves the record as it was, so the TTL still counts from the first claim."""
    first = await store.begin("c", "e", 1)
    clock.advance(TTL / 2)
    await store.begin("c", "e", 2)
    record = await store.get(first.dedupe_key)
    assert record == first.record
    clock.advance(TTL / 2)
    assert (await store.begin("c", "e", 3)).should_process


async def test_lower_delivery_attempt_than_stored(store: Store) -> None:
    """A delivery_attempt below the stored count never lowers it: attempts = previous + 1."""
    first = await store.begin("c", "e", 5)
    assert first.record.delivery_attempts == 5
    await store.fail(first.dedupe_key, "boom")
    again = await store.begin("c", "e", 2)
    assert again.should_process
    assert again.record.delivery_attempts == 6


async def test_fail_after_complete_keeps_it_completed(store: Store) -> None:
    """A late fail() of a completed event is ignored: a redelivery stays a duplicate."""
    first = await store.begin("c", "e", 1)
    await store.complete(first.dedupe_key, "host-msg-1")
    await store.fail(first.dedupe_key, "TimeoutError: late")
    record = await store.get(first.dedupe_key)
    assert record is not None
    assert (record.status, record.message_id, record.last_error) == (
        "completed",
        "host-msg-1",
        None,
    )
    again = await store.begin("c", "e", 2)
    assert (again.should_process, again.http_status) == (False, 200)


async def test_complete_after_fail_completes(store: Store) -> None:
    """complete() after fail() (the work did finish) marks the event done, error cleared."""
    first = await store.begin("c", "e", 1)
    await store.fail(first.dedupe_key, "x")
    await store.complete(first.dedupe_key, "m")
    record = await store.get(first.dedupe_key)
    assert record is not None
    assert (record.status, record.message_id, record.last_error) == ("completed", "m", None)


async def test_attempts_follow_a_higher_delivery_attempt(store: Store) -> None:
    """When the sidecar's count is ahead (our record was lost), it wins: max(prev + 1, n)."""
    first = await store.begin("c", "e", 1)
    await store.fail(first.dedupe_key, "x")
    again = await store.begin("c", "e", 7)
    assert again.record.delivery_attempts == 7


async def test_first_seen_is_kept_across_attempts(store: Store, clock: FakeClock) -> None:
    """A retried event keeps its first_seen_at and moves updated_at."""
    first = await store.begin("c", "e", 1)
    await store.fail(first.dedupe_key, "x")
    clock.advance(10)
    again = await store.begin("c", "e", 2)
    assert again.record.first_seen_at == first.record.first_seen_at
    assert again.record.updated_at > first.record.updated_at


async def test_keys_are_per_connection(store: Store) -> None:
    """The same eventId on two connections is two events."""
    a = await store.begin("conn_a", "evt", 1)
    b = await store.begin("conn_b", "evt", 1)
    assert a.should_process
    assert b.should_process
    assert a.dedupe_key != b.dedupe_key


async def test_unknown_key_on_complete_or_fail(store: Store) -> None:
    """complete() or fail() of a key begin() never returned raises UnknownDedupeKey."""
    with pytest.raises(UnknownDedupeKey):
        await store.complete("c:nope", None)
    with pytest.raises(UnknownDedupeKey):
        await store.fail("c:nope", "x")


async def test_long_errors_are_truncated(store: Store) -> None:
    """A huge error message is stored cut to a bounded size."""
    first = await store.begin("c", "e", 1)
    await store.fail(first.dedupe_key, "x" * 100_000)
    record = await store.get(first.dedupe_key)
    assert record is not None
    assert record.last_error is not None
    assert len(record.last_error) <= 2000


async def _wait_until_gone(store: Store, key: str) -> bool:
    """Poll (bounded: 200 x 10 ms) until ``key`` is purged; True when it went."""
    for _ in range(200):
        if await store.get(key) is None:
            return True
        await asyncio.sleep(0.01)
    return False


def _purge_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "dedupe-purge" in t.get_name() and not t.done()]


async def test_records_are_purged_in_the_background(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """With no further calls, a background task drops records older than the retention."""
    store = make_store(
        retention_seconds=100.0, processing_ttl_seconds=10.0, purge_interval_seconds=0.01, now=clock
    )
    async with store:
        old = await store.begin("c", "old", 1)
        await store.complete(old.dedupe_key)
        clock.advance(99)
        kept = await store.begin("c", "kept", 1)
        await asyncio.sleep(0.05)  # several purge rounds: "old" is 99 s old, inside the window
        assert await store.get(old.dedupe_key) is not None
        clock.advance(2)
        assert await _wait_until_gone(store, old.dedupe_key)
        assert await store.get(kept.dedupe_key) is not None
        assert len(_purge_tasks()) == 1
    assert _purge_tasks() == []


async def test_purge_starts_on_first_use_and_stops_on_aclose(
    make_store: MakeStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store used without ``async with`` starts its purge on begin(); aclose() ends it."""
    store = make_store(purge_interval_seconds=0.01, now=clock)
    assert _purge_tasks() == []
    await store.begin("c", "e", 1)
    (task,) = _purge_tasks()
    await asyncio.sleep(0.03)
    await store.aclose()
    assert task.cancelled()
    assert _purge_tasks() == []
    await store.aclose()  # twice is harmless
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_a_closed_store_opens_again_on_the_next_call(make_store: MakeStore) -> None:
    """After aclose() (or close()), the next call reopens the file, pool or client."""
    store = make_store()
    first = await store.begin("c", "e", 1)
    await store.aclose()
    await store.complete(first.dedupe_key, "m")
    store.close()
    record = await store.get(first.dedupe_key)
    assert record is not None
    assert (record.status, record.message_id) == ("completed", "m")


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_purge_task_of_a_finished_loop_is_replaced(
    store_kind: str, store_target: tuple[str, str], clock: FakeClock
) -> None:
    """A store used under one event loop, then another, purges under the second."""
    store = open_store(
        store_kind, *store_target, purge_interval_seconds=0.01, retention_seconds=100, now=clock
    )

    async def first() -> None:
        await store.begin("c", "old", 1)

    asyncio.run(first())  # the loop ends and cancels the first purge task

    async def second() -> bool:
        clock.advance(101)
        await store.begin("c", "new", 1)
        gone = await _wait_until_gone(store, "c:old")
        await store.aclose()
        return gone

    assert asyncio.run(second())


@pytest.mark.parametrize("store_kind", ["postgres", "redis"])
def test_a_pool_is_opened_again_in_a_new_loop(
    store_kind: str, store_target: tuple[str, str], clock: FakeClock
) -> None:
    """A store closed at the end of one event loop connects and purges under the next one."""
    store = open_store(
        store_kind, *store_target, purge_interval_seconds=0.01, retention_seconds=100, now=clock
    )

    async def first() -> None:
        await store.begin("c", "old", 1)
        await store.aclose()

    asyncio.run(first())

    async def second() -> bool:
        clock.advance(101)
        await store.begin("c", "new", 1)
        gone = await _wait_until_gone(store, "c:old")
        await store.aclose()
        return gone

    assert asyncio.run(second())


def test_memory_store_without_asyncio_purges_inline(clock: FakeClock) -> None:
    """Driven by a loop that is not asyncio (trio), the memory store purges inside begin()."""
    store = MemoryDedupeStore(purge_interval_seconds=10, retention_seconds=100, now=clock)

    def run(coroutine: Coroutine[object, object, DedupeDecision]) -> DedupeDecision:
        # No event loop at all: the store must not need one (it never suspends).
        with pytest.raises(StopIteration) as done:
            coroutine.send(None)
        result: DedupeDecision = done.value.value
        return result

    run(store.begin("c", "old", 1))
    clock.advance(101)
    assert run(store.begin("c", "new", 1)).should_process
    assert len(store) == 1


async def test_purge_returns_count(store: Store, clock: FakeClock) -> None:
    """purge() drops every record older than the retention and says how many."""
    for n in range(5):
        await store.begin("c", f"e{n}", 1)
    clock.advance(RETENTION - 10)
    fresh = await store.begin("c", "fresh", 1)
    clock.advance(11)
    assert await store.count() == 6
    assert await store.purge() == 5
    assert await store.purge() == 0
    assert await store.count() == 1
    assert await store.get(fresh.dedupe_key) is not None


async def test_store_does_not_grow_without_bound(make_store: MakeStore) -> None:
    """Under a steady stream of events, the record count stays near one retention's worth."""
    clock = FakeClock()
    store = make_store(
        retention_seconds=100.0,
        processing_ttl_seconds=10.0,
        purge_interval_seconds=0.005,
        now=clock,
    )
    async with store:
        for n in range(300):
            decision = await store.begin("c", f"e{n}", 1)
            await store.complete(decision.dedupe_key)
            clock.advance(1)
            if n % 50 == 49:
                await asyncio.sleep(0.05)  # let the background purge run
        assert await store.count() <= 160


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("ttl", "retention", "message"),
    [(-1.0, RETENTION, "zero or positive"), (60.0, 10.0, "retention")],
)
def test_bad_windows_are_refused(
    kind: str, ttl: float, retention: float, message: str, tmp_path: Path
) -> None:
    """A retention shorter than the processing TTL, or a negative TTL, is refused by every store."""
    target = {
        "memory": "",
        "sqlite": str(tmp_path / "x.sqlite3"),
        "postgres": "postgresql://nobody@127.0.0.1:1/none",
        "redis": "redis://127.0.0.1:1/0",
    }[kind]
    with pytest.raises(ValueError, match=message):
        open_store(kind, target, "x", processing_ttl_seconds=ttl, retention_seconds=retention)


async def test_zero_ttl_makes_every_in_flight_duplicate_stale(make_store: MakeStore) -> None:
    """processing_ttl_seconds=0: a duplicate of an event in progress is processed again."""
    clock = FakeClock()
    async with make_store(processing_ttl_seconds=0, now=clock) as store:
        first = await store.begin("c", "e", 1)
        again = await store.begin("c", "e", 1)  # same instant: still stale at once
        assert again.should_process
        assert (again.http_status, again.record.delivery_attempts) == (200, 2)
        await store.complete(first.dedupe_key, "m")
        done = await store.begin("c", "e", 3)
        assert (done.should_process, done.status, done.http_status) == (False, "completed", 200)
        failed = await store.begin("c", "f", 1)
        await store.fail(failed.dedupe_key, "x")
        assert (await store.begin("c", "f", 1)).should_process


# concurrency in one process ----------------------------------------------------------------


async def test_hundred_concurrent_begins_process_once(store: Store) -> None:
    """100 tasks begin() the same key at once: exactly one gets should_process."""
    decisions = await asyncio.gather(*(store.begin("c", "same", n + 1) for n in range(100)))
    assert sum(d.should_process for d in decisions) == 1
    assert sum(d.http_status == 409 for d in decisions) == 99


async def test_concurrent_takeovers_each_see_the_last_one(make_store: MakeStore) -> None:
    """TTL 0, 60 concurrent begins of one key: all process, attempts 1..60 (no lost update)."""
    async with make_store(processing_ttl_seconds=0) as store:
        decisions = await asyncio.gather(*(store.begin("c", "hot", 1) for _ in range(60)))
        assert all(d.should_process for d in decisions)
        assert sorted(d.record.delivery_attempts for d in decisions) == list(range(1, 61))
        record = await store.get("c:hot")
        assert record is not None
        assert record.delivery_attempts == 60


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres", "redis"])
async def test_two_store_objects_on_one_backend(make_store: MakeStore) -> None:
    """Two store objects on one file, database or Redis (two connections) still process once."""
    async with make_store() as a, make_store() as b:
        decisions = await asyncio.gather(
            *(s.begin("c", f"e{n % 10}", 1) for n in range(40) for s in (a, b))
        )
    processed = [d.dedupe_key for d in decisions if d.should_process]
    assert sorted(processed) == sorted(f"c:e{n}" for n in range(10))


async def test_concurrent_completes_and_fails_all_land(store: Store) -> None:
    """Many begins, completes and fails at once (a group commit for SQLite): each lands once."""
    begun = await asyncio.gather(*(store.begin("c", f"e{n}", 1) for n in range(60)))
    assert all(d.should_process for d in begun)
    results = await asyncio.gather(
        *(
            store.complete(d.dedupe_key, f"m{n}") if n % 3 else store.fail(d.dedupe_key, f"x{n}")
            for n, d in enumerate(begun)
        ),
        store.complete("c:never-begun", "m"),
        return_exceptions=True,
    )
    assert [type(r) for r in results] == [type(None)] * 60 + [UnknownDedupeKey]
    for n in range(60):
        record = await store.get(f"c:e{n}")
        assert record is not None
        expected = ("completed", f"m{n}", None) if n % 3 else ("failed", None, f"x{n}")
        assert (record.status, record.message_id, record.last_error) == expected


# errors ------------------------------------------------------------------------------------


async def test_database_errors_are_typed(tmp_path: Path) -> None:
    """A path that cannot hold a database raises DedupeError, not OSError or sqlite3.Error."""
    (tmp_path / "a-file").write_text("")
    store = SqliteDedupeStore(tmp_path / "a-file" / "db.sqlite3")
    with pytest.raises(DedupeError, match="a-file"):
        await store.begin("c", "e", 1)
    (tmp_path / "not-a-db.sqlite3").write_bytes(b"this is not a database file" * 100)
    broken = SqliteDedupeStore(tmp_path / "not-a-db.sqlite3")
    with pytest.raises(DedupeError, match="not-a-db"):
        await broken.begin("c", "e", 1)
    await store.aclose()
    await broken.aclose()


@pytest.mark.parametrize(
    "make",
    [
        lambda: PostgresDedupeStore(
            "postgresql://host_user:pg-s3cret@127.0.0.1:1/db", connect_timeout_seconds=2
        ),
        lambda: RedisDedupeStore("redis://:redis-s3cret@127.0.0.1:1/0", connect_timeout_seconds=2),
    ],
    ids=["postgres", "redis"],
)
async def test_unreachable_server_is_a_dedupe_error_without_the_password(
    make: Callable[[], Store],
) -> None:
    """A server that does not answer raises DedupeError, and no repr or error shows the password."""
    store = make()
    assert "s3cret" not in repr(store)
    with pytest.raises(DedupeError) as raised:
        await store.begin("c", "e", 1)
    assert "127.0.0.1:1" in str(raised.value)
    for text in (str(raised.value), repr(raised.value), str(raised.value.__cause__)):
        assert "s3cret" not in text
    await store.aclose()


@pytest.mark.parametrize("name", ["Robert'); DROP TABLE x;--", "UPPER", "a" * 49, ""])
def test_postgres_table_name_is_checked(name: str) -> None:
    """A table name that is not a plain lower-case SQL name is refused before any SQL runs."""
    with pytest.raises(ValueError, match="table"):
        PostgresDedupeStore("postgresql://127.0.0.1:1/db", table=name)


def test_redis_prefix_must_not_be_empty() -> None:
    """An empty Redis key prefix is refused: the store's keys would mix with the database's."""
    with pytest.raises(ValueError, match="prefix"):
        RedisDedupeStore("redis://127.0.0.1:1/0", prefix="")


async def test_records_are_snapshots(store: Store) -> None:
    """A record returned earlier does not change when the store moves on."""
    first = await store.begin("c", "e", 1)
    await store.complete(first.dedupe_key, "m")
    assert first.record.status == "processing"
