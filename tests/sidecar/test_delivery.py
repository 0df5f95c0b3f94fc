"""The bridge delivery worker against a respx host: the answer table of docs/CONTRACT.md §5, lanes,
retries, the 401/403 pause, the age limit, crash safety and retention.

The worker runs on a fake clock whose ``sleep`` only moves the clock, so backoffs of minutes take
no real time; the host records the fake time of every request.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import itertools
import json
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import psycopg
import pytest
import respx

from connector_sidecar._secret import Secret
from connector_sidecar.bridge_answers import Backoff, judge, parse_retry_after
from connector_sidecar.config import Settings
from connector_sidecar.delivery import DeliveryWorker
from connector_sidecar.store import InboundMessage, SqliteDatabase, Store
from connector_sidecar.store._sql import postgres_sql
from connector_sidecar.store.postgres import PostgresDatabase

from .conftest import DatabaseFactory

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores, pytest.mark.timeout(60)]

URL = "http://host.test/api/channel-connector-bridge/events"
BRIDGE_TOKEN = "bridge-token-123"
START = 1_750_000_000.0


class FakeTime:
    """A clock and a sleep: sleeping moves the clock instead of waiting."""

    def __init__(self, start: float = START) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclasses.dataclass
class Call:
    at: float
    event: dict[str, Any]
    headers: httpx.Headers
    body: bytes


Answer = httpx.Response | BaseException | type[BaseException] | int


class Host:
    """A respx side effect: answers from a script (then 200 accepted), recording each request."""

    def __init__(
        self,
        clock: FakeTime,
        script: list[Answer] | None = None,
        *,
        decide: Callable[[Call], Answer | None] | None = None,
        delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self.script = collections.deque(script or [])
        self.decide = decide
        self.delay = delay
        self.calls: list[Call] = []
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.max_lane_in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        call = Call(self.clock.now, json.loads(request.content), request.headers, request.content)
        self.calls.append(call)
        lane = call.event["peerId"]
        self.in_flight[lane] += 1
        self.max_lane_in_flight = max(self.max_lane_in_flight, self.in_flight[lane])
        self.max_in_flight = max(self.max_in_flight, sum(self.in_flight.values()))
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # real time: lets requests overlap
            answer = self.decide(call) if self.decide else None
            if answer is None:
                answer = self.script.popleft() if self.script else ok()
        finally:
            self.in_flight[lane] -= 1
        if isinstance(answer, int):
            return httpx.Response(answer, json={"accepted": False})
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, type):
            raise (
                answer("injected", request=request)
                if issubclass(answer, httpx.RequestError)
                else answer()
            )
        return answer

    def events(self) -> list[str]:
        return [c.event["eventId"] for c in self.calls]

    def attempts(self) -> list[int]:
        return [c.event["deliveryAttempt"] for c in self.calls]

    def gaps(self) -> list[float]:
        return [b.at - a.at for a, b in itertools.pairwise(self.calls)]


def ok(**body: Any) -> httpx.Response:
    return httpx.Response(200, json={"accepted": True, "duplicate": False, **body})


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def store(make_database: DatabaseFactory, fake_time: FakeTime) -> AsyncIterator[Store]:
    store = Store(make_database(), fake_time)
    await store.db.open()

    def setup(c: Any) -> None:
        for connection_id in ("conn_1", "conn_2"):
            store.connections.ensure(c, connection_id=connection_id, channel_id="chan", kind="sim")
            store.connections.update(c, connection_id, status="connected", account_id="acct")

    await store.db.transaction(setup)
    yield store
    await store.db.close()


WorkerFactory = Callable[..., DeliveryWorker]
_WORKER_OPTIONS = {
    "probe_seconds",
    "shutdown_grace_seconds",
    "purge_batch",
    "backoff",
    "sleep",
    "rescan_polls",
}


@pytest.fixture
async def make_worker(store: Store, fake_time: FakeTime) -> AsyncIterator[WorkerFactory]:
    """Build workers on the fake clock (not started); all are stopped at the end."""
    made: list[DeliveryWorker] = []

    def make(**overrides: Any) -> DeliveryWorker:
        options = {k: overrides.pop(k) for k in list(overrides) if k in _WORKER_OPTIONS}
        options.setdefault("sleep", fake_time.sleep)
        settings = Settings(
            token=Secret("sidecar-token-123"),
            bridge_url=overrides.pop("bridge_url", URL),
            bridge_token=Secret(BRIDGE_TOKEN),
            **overrides,
        )
        worker = DeliveryWorker(
            settings,
            store,
            clock=fake_time,
            purge_interval_seconds=None,
            purge_pause_seconds=0.0,
            **options,
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()


@pytest.fixture
def host_mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def serve(mock: respx.MockRouter, host: Host) -> Host:
    mock.post(URL).mock(side_effect=host)
    return host


async def enqueue(
    store: Store, *messages: tuple[str, str], connection_id: str = "conn_1"
) -> list[str]:
    """Commit (peerId, messageId) messages to the outbox, in order; returns their eventIds."""

    def work(c: Any) -> list[str]:
        connection = store.connections.get(c, connection_id)
        assert connection is not None
        results = store.outbox.enqueue(
            c,
            connection,
            [InboundMessage(message_id=m, peer_id=p, content=f"text of {m}") for p, m in messages],
        )
        return [r.event_id for r in results]

    return await store.db.transaction(work)


async def until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll an async condition in real time, bounded."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


def read_outside(store: Store, sql: str, *params: Any) -> list[Any]:
    """What another process reading the database sees now (from inside a host's answer)."""
    if isinstance(store.db, PostgresDatabase):
        with psycopg.connect(store.db.url) as pg:
            return pg.execute(postgres_sql(sql), params).fetchall()
    assert isinstance(store.db, SqliteDatabase)
    reader = sqlite3.connect(store.db.path)
    try:
        return reader.execute(sql, params).fetchall()
    finally:
        reader.close()


async def counts(store: Store) -> dict[str, int]:
    return await store.db.run(store.outbox.status_counts)


async def settled(store: Store, *, timeout: float = 10.0) -> dict[str, int]:
    """Wait until nothing is pending; return the status counts."""

    async def done() -> bool:
        return (await counts(store))["pending"] == 0

    await until(done, timeout=timeout, what="the outbox to drain")
    return await counts(store)


async def row(store: Store, event_id: str) -> Any:
    found = await store.db.run(store.outbox.get, event_id)
    assert found is not None
    return found


# -- the answer table, one row at a time ----------------------------------------------------------


async def test_2xx_delivers_with_bearer_and_attempt_one(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A 2xx answer marks the event delivered; the POST carries the bearer token and deliveryAttempt 1."""
    host = serve(host_mock, Host(fake_time, [httpx.Response(204)]))
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert await settled(store) == {"pending": 0, "delivered": 1, "dead": 0}
    [call] = host.calls
    assert call.headers["authorization"] == f"Bearer {BRIDGE_TOKEN}"
    assert call.headers["content-type"] == "application/json"
    assert "webhook-signature" not in call.headers
    assert call.event["eventId"] == event_id
    assert call.event["deliveryAttempt"] == 1
    assert call.event["content"] == "text of m1"
    delivered = await row(store, event_id)
    assert delivered.status == "delivered"
    assert delivered.attempts == 1
    assert delivered.last_status_code == 204
    assert delivered.delivered_at == int(START * 1000)


async def test_2xx_with_accepted_false_is_retried(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """2xx with ``accepted: false`` is a failed attempt: retried with the next deliveryAttempt."""
    refused = httpx.Response(200, json={"accepted": False})
    host = serve(host_mock, Host(fake_time, [refused, refused]))
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert (await settled(store))["delivered"] == 1
    assert host.attempts() == [1, 2, 3]
    assert (await row(store, event_id)).attempts == 3


async def test_non_json_2xx_counts_as_accepted(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A 2xx whose body is not a JSON object (or says nothing about accepted) is delivered."""
    host = serve(host_mock, Host(fake_time, [httpx.Response(200, text="ok")]))
    await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert (await settled(store))["delivered"] == 1
    assert len(host.calls) == 1


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried(
    store: Store,
    make_worker: WorkerFactory,
    host_mock: respx.MockRouter,
    fake_time: FakeTime,
    status: int,
) -> None:
    """408, 425, 429 and 5xx are retried until the host accepts; the last status is recorded."""
    host = serve(host_mock, Host(fake_time, [status, status]))
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert await settled(store) == {"pending": 0, "delivered": 1, "dead": 0}
    assert host.attempts() == [1, 2, 3]
    assert (await row(store, event_id)).last_status_code == 200


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.RemoteProtocolError],
)
async def test_timeouts_and_connection_errors_are_retried(
    store: Store,
    make_worker: WorkerFactory,
    host_mock: respx.MockRouter,
    fake_time: FakeTime,
    error: type[Exception],
) -> None:
    """Timeouts and connection errors are retried; the pending row says what went wrong meanwhile."""
    seen: list[tuple[int | None, str | None]] = []

    def decide(call: Call) -> Answer | None:
        if len(host.calls) == 2:
            seen.extend(read_outside(store, "SELECT last_status_code, last_error FROM outbox"))
        return None

    host = serve(host_mock, Host(fake_time, [error], decide=decide))
    await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert (await settled(store))["delivered"] == 1
    assert host.attempts() == [1, 2]
    [(code, message)] = seen
    assert code is None
    assert message
    assert error.__name__ in message or "no answer" in message


async def test_a_slow_host_times_out_and_is_retried(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """An answer slower than BRIDGE_TIMEOUT_SECONDS is a timeout: the event goes again."""
    slow = {"first": True}

    async def answer(request: httpx.Request) -> httpx.Response:
        if slow.pop("first", False):
            await asyncio.sleep(5)
        return ok()

    host_mock.post(URL).mock(side_effect=answer)
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    await make_worker(bridge_timeout_seconds=0.5).start()
    assert (await settled(store))["delivered"] == 1
    assert (await row(store, event_id)).attempts == 2


@pytest.mark.parametrize("status", [400, 404, 410, 413, 422])
async def test_other_4xx_dead_letters_at_once(
    store: Store,
    make_worker: WorkerFactory,
    host_mock: respx.MockRouter,
    fake_time: FakeTime,
    status: int,
) -> None:
    """Any other 4xx is dead at once with its status and a body excerpt; the lane moves on."""
    rejection = httpx.Response(status, text="no such   channel\n" + "x" * 1000)
    host = serve(host_mock, Host(fake_time, [rejection]))
    first, second = await enqueue(store, ("peer-1", "m1"), ("peer-1", "m2"))
    await make_worker().start()
    assert await settled(store) == {"pending": 0, "delivered": 1, "dead": 1}
    assert host.events() == [first, second]
    dead = await row(store, first)
    assert dead.status == "dead"
    assert dead.attempts == 1
    assert dead.last_status_code == status
    assert dead.last_error.startswith(f"HTTP {status}: no such channel x")
    assert len(dead.last_error) < 400


async def test_409_waits_for_retry_after_without_counting_a_failure(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """409 reschedules after Retry-After; the backoff of a later failure starts from the first step."""
    conflict = httpx.Response(
        409,
        json={"accepted": False, "duplicate": True, "pending": True, "retryAfterSeconds": 7},
        headers={"Retry-After": "7"},
    )
    host = serve(host_mock, Host(fake_time, [conflict, conflict, conflict, 500]))
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    worker = make_worker()
    await worker.start()
    assert (await settled(store))["delivered"] == 1
    assert host.attempts() == [1, 2, 3, 4, 5]
    gaps = host.gaps()
    assert all(7 <= g < 7.1 for g in gaps[:3])
    assert gaps[3] <= 0.5 + 0.01  # the first failure's window: 409s are not failures
    assert worker.stats.conflicts == 3
    assert worker.stats.retried == 1
    assert (await row(store, event_id)).status == "delivered"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (httpx.Response(409, json={"pending": True, "retryAfterSeconds": 3}), 3.0),
        (httpx.Response(409, json={"pending": True}, headers={"Retry-After": "0"}), 1.0),
        (httpx.Response(409), 5.0),
    ],
    ids=["body-retryAfterSeconds", "minimum-1s", "default-5s"],
)
async def test_409_retry_after_sources(
    store: Store,
    make_worker: WorkerFactory,
    host_mock: respx.MockRouter,
    fake_time: FakeTime,
    answer: httpx.Response,
    expected: float,
) -> None:
    """A 409 waits ``retryAfterSeconds`` from the body when there is no header, at least 1 s, 5 s by default."""
    host = serve(host_mock, Host(fake_time, [answer]))
    await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert (await settled(store))["delivered"] == 1
    [gap] = host.gaps()
    assert expected <= gap < expected + 0.01


async def test_retry_after_in_seconds_and_as_http_date(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """Retry-After is honoured as delta-seconds and as an HTTP-date."""
    http_date = format_datetime(datetime.fromtimestamp(START + 120, UTC), usegmt=True)
    host = serve(
        host_mock,
        Host(
            fake_time,
            [
                httpx.Response(503, headers={"Retry-After": "30"}),
                httpx.Response(429, headers={"Retry-After": http_date}),
            ],
        ),
    )
    await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert (await settled(store))["delivered"] == 1
    first, _ = host.gaps()
    assert 30 <= first < 30.1
    assert host.calls[2].at >= START + 120  # the date is absolute


def test_parse_retry_after() -> None:
    """Retry-After parses delta-seconds and HTTP-dates; garbage and past dates do not wait."""
    now = 1_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 90, UTC), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(now - 90, UTC), usegmt=True)
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(date, now) == 90.0
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after("-3", now) is None
    assert parse_retry_after("soon", now) is None


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (200, b'{"accepted": true}', "delivered"),
        (201, b"", "delivered"),
        (202, b"[1]", "delivered"),
        (200, b'{"accepted": false}', "retry"),
        (409, b'{"pending": true}', "conflict"),
        (401, b"", "paused"),
        (403, b"", "paused"),
        (408, b"", "retry"),
        (425, b"", "retry"),
        (429, b"", "retry"),
        (500, b"", "retry"),
        (503, b"", "retry"),
        (302, b"", "retry"),
        (400, b"bad", "dead"),
        (404, b"", "dead"),
        (422, b"", "dead"),
    ],
)
def test_judge_follows_the_contract_table(status: int, body: bytes, action: str) -> None:
    """Each host answer maps to the action of docs/CONTRACT.md §5's table."""
    verdict = judge(status, httpx.Headers(), body, now=0.0)
    assert verdict.action == action
    assert verdict.status_code == status


def test_backoff_is_full_jitter_exponential_and_honours_retry_after() -> None:
    """Delays are uniform in [0, min(60, 0.5 * 2**(n-1))] and never below Retry-After."""
    random.seed(7)
    backoff = Backoff()
    first = [backoff.delay(1) for _ in range(200)]
    fourth = [backoff.delay(4) for _ in range(200)]
    late = [backoff.delay(30) for _ in range(200)]
    assert all(0 <= d <= 0.5 for d in first)
    assert all(0 <= d <= 4.0 for d in fourth)
    assert max(fourth) > 2.0  # the window really widens
    assert all(0 <= d <= 60.0 for d in late)
    assert max(late) > 30.0
    assert min(late) < 30.0  # full jitter: anywhere in the window
    assert all(backoff.delay(1, retry_after=20) >= 20 for _ in range(20))
    assert backoff.delay(1, retry_after=10**6) == 3600.0


async def test_retries_back_off_exponentially(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """Consecutive failures wait within a doubling window, capped at 60 s."""
    random.seed(3)
    host = serve(host_mock, Host(fake_time, [500] * 12))
    await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    assert (await settled(store))["delivered"] == 1
    gaps = host.gaps()
    assert len(gaps) == 12
    for failures, gap in enumerate(gaps, start=1):
        assert gap <= min(60.0, 0.5 * 2 ** (failures - 1)) + 0.01
    assert sum(gaps) > 60  # a dozen failures do wait


# -- the 401/403 pause ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_401_403_pause_the_bridge_probe_slowly_and_resume(
    store: Store,
    make_worker: WorkerFactory,
    host_mock: respx.MockRouter,
    fake_time: FakeTime,
    status: int,
) -> None:
    """401/403 pause all delivery, readiness says why, one probe per interval, then everything resumes."""
    readiness_during_probe: list[str | None] = []

    def decide(call: Call) -> Answer | None:
        if len(host.calls) == 3:  # the second probe
            readiness_during_probe.append(worker.readiness())
        return status if len(host.calls) <= 3 else None

    host = serve(host_mock, Host(fake_time, decide=decide))
    await enqueue(store, *[(f"peer-{i}", f"m{i}") for i in range(5)])
    worker = make_worker(bridge_concurrency=1, probe_seconds=30)
    await worker.start()
    assert await settled(store) == {"pending": 0, "delivered": 5, "dead": 0}
    assert len(host.calls) == 3 + 5
    first, second, third = (c.at for c in host.calls[:3])
    assert second - first >= 30
    assert third - second >= 30
    assert host.gaps()[2] >= 30  # the third probe is accepted
    assert all(gap < 30 for gap in host.gaps()[3:])  # then everything goes at full speed
    [reason] = readiness_during_probe
    assert reason is not None
    assert f"HTTP {status}" in reason
    assert "BRIDGE_TOKEN" in reason
    assert worker.readiness() is None
    assert worker.stats.pauses == 1


async def test_pause_holds_every_lane_and_dead_letters_nothing(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """While paused only probes go out and nothing is dead-lettered, even past the age limit."""
    dead_while_paused: list[int] = []

    def decide(call: Call) -> Answer | None:
        [(dead,)] = read_outside(store, "SELECT COUNT(*) FROM outbox WHERE status = 'dead'")
        dead_while_paused.append(dead)
        return 401 if len(host.calls) <= 8 else None

    host = serve(host_mock, Host(fake_time, decide=decide))
    await enqueue(store, *[(f"peer-{i}", f"m{i}") for i in range(4)])
    worker = make_worker(bridge_concurrency=4, probe_seconds=30, bridge_max_age_seconds=100)
    await worker.start()
    # Once the host accepts again the age limit applies as usual to what is left.
    assert await settled(store) == {"pending": 0, "delivered": 1, "dead": 3}
    assert len(host.calls) == 9
    assert dead_while_paused == [0] * 9
    # The first four went out together; then one probe every 30 s.
    probes = host.calls[4:9]
    assert all(b.at - a.at >= 30 for a, b in itertools.pairwise(probes))
    assert probes[-1].at - START > 100  # past the age limit, still not dead


async def _calls_at_least(host: Host, n: int) -> bool:
    return len(host.calls) >= n


# -- the age limit --------------------------------------------------------------------------------


async def test_events_older_than_max_age_are_dead_lettered(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """An event that keeps failing is dead once BRIDGE_MAX_AGE_SECONDS have passed; the lane goes on."""
    host = serve(
        host_mock,
        Host(fake_time, decide=lambda call: 503 if call.event["messageId"] == "m1" else None),
    )
    [first] = await enqueue(store, ("peer-1", "m1"))
    fake_time.now += 100
    [second] = await enqueue(store, ("peer-1", "m2"))
    await make_worker(bridge_max_age_seconds=120).start()
    assert await settled(store) == {"pending": 0, "delivered": 1, "dead": 1}
    dead = await row(store, first)
    assert dead.status == "dead"
    assert "BRIDGE_MAX_AGE_SECONDS" in dead.last_error
    assert "HTTP 503" in dead.last_error
    assert dead.last_status_code == 503
    first_attempts = [c for c in host.calls if c.event["eventId"] == first]
    assert len(first_attempts) > 3
    assert first_attempts[-1].at - START < 120
    assert host.events()[-1] == second


async def test_an_already_expired_event_is_never_sent(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """An event found older than the age limit (queued while BRIDGE_URL was unset) is dead without a POST."""
    host = serve(host_mock, Host(fake_time))
    [old] = await enqueue(store, ("peer-1", "old"))
    fake_time.now += 3600
    [new] = await enqueue(store, ("peer-1", "new"))
    await make_worker(bridge_max_age_seconds=600).start()
    assert await settled(store) == {"pending": 0, "delivered": 1, "dead": 1}
    assert host.events() == [new]
    assert (await row(store, old)).attempts == 0


# -- lanes, concurrency and the wake-up -----------------------------------------------------------


async def test_lanes_keep_order_and_concurrency_is_bounded(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """One POST per conversation at a time, in seq order, at most BRIDGE_CONCURRENCY at once."""
    rng = random.Random(11)
    host = serve(
        host_mock,
        Host(
            fake_time,
            decide=lambda call: rng.choice([None, None, None, 500, 409, httpx.ConnectError]),
            delay=0.01,
        ),
    )
    messages = [(f"peer-{p}", f"m{p}-{i}") for i in range(8) for p in range(6)]
    ids = await enqueue(store, *messages)
    await make_worker(bridge_concurrency=3).start()
    assert await settled(store, timeout=20) == {"pending": 0, "delivered": 48, "dead": 0}
    assert host.max_lane_in_flight == 1
    assert host.max_in_flight == 3
    order = {event_id: n for n, event_id in enumerate(ids)}
    for p in range(6):
        lane = [c for c in host.calls if c.event["peerId"] == f"peer-{p}"]
        first_seen = list(dict.fromkeys(c.event["eventId"] for c in lane))
        assert first_seen == sorted(first_seen, key=order.__getitem__)
        assert len(first_seen) == 8
        # Every retry of an event comes before the next event of its lane.
        sequence = [c.event["eventId"] for c in lane]
        assert sequence == sorted(sequence, key=order.__getitem__)


async def test_threads_are_separate_lanes(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A failing event blocks its own (peer, thread) lane only."""
    host = serve(
        host_mock,
        Host(fake_time, decide=lambda call: 503 if call.event["messageId"] == "t1-a" else None),
    )

    def work(c: Any, messages: list[InboundMessage]) -> None:
        connection = store.connections.get(c, "conn_1")
        assert connection is not None
        store.outbox.enqueue(c, connection, messages)

    failing = InboundMessage(message_id="t1-a", peer_id="group", thread_id="t1", content="a")
    await store.db.transaction(work, [failing])
    fake_time.now += 20
    others = [
        InboundMessage(message_id="t1-b", peer_id="group", thread_id="t1", content="b"),
        InboundMessage(message_id="t2-a", peer_id="group", thread_id="t2", content="c"),
        InboundMessage(message_id="main", peer_id="group", content="d"),
    ]
    await store.db.transaction(work, others)
    worker = make_worker(bridge_max_age_seconds=30)
    await worker.start()
    await settled(store)
    sent = [c.event["messageId"] for c in host.calls]
    assert sent.index("t2-a") < sent.index("t1-b")
    assert sent.index("main") < sent.index("t1-b")
    assert sent[-1] == "t1-b"


async def test_new_events_are_picked_up_at_once(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """notify() (Runtime.on_outbox) wakes an idle worker: no polling interval, no sleeping."""
    host = serve(host_mock, Host(fake_time))
    worker = make_worker()
    await worker.start()
    await asyncio.sleep(0.02)
    for n in range(3):
        await enqueue(store, ("peer-1", f"m{n}"))
        worker.notify()
        await until(functools.partial(_calls_at_least, host, n + 1), timeout=2, what="the wake-up")
    assert (await settled(store))["delivered"] == 3
    assert fake_time.slept == []
    assert fake_time.now == START


@pytest.mark.postgres_only
async def test_an_event_whose_seq_commits_late_is_not_skipped(
    store: Store,
    make_database: DatabaseFactory,
    make_worker: WorkerFactory,
    host_mock: respx.MockRouter,
    fake_time: FakeTime,
) -> None:
    """On PostgreSQL a ``seq`` is taken at insert and seen at commit: an event whose transaction
    commits after a later event's is found by the next look, not left to the periodic rescan."""
    host = serve(host_mock, Host(fake_time))
    worker = make_worker(rescan_polls=1_000_000)  # no periodic rescan in this test
    await worker.start()
    await until(lambda: _true(worker.stats.rescans == 1), what="the first look")

    other = Store(make_database(), fake_time)
    await other.db.open()
    inserted, release = threading.Event(), threading.Event()

    def slow(c: Any) -> None:
        connection = other.connections.get(c, "conn_1")
        assert connection is not None
        other.outbox.enqueue(
            c, connection, [InboundMessage(message_id="early", peer_id="peer-1", content="x")]
        )
        inserted.set()
        release.wait(10)

    held = asyncio.ensure_future(other.db.transaction(slow))
    try:
        assert await asyncio.to_thread(inserted.wait, 10)
        await enqueue(store, ("peer-2", "late"), connection_id="conn_2")  # a higher seq, first
        worker.notify()
        await until(functools.partial(_calls_at_least, host, 1), what="the later event")
        release.set()
        await held
        worker.notify()
        await until(functools.partial(_calls_at_least, host, 2), what="the event committed late")
    finally:
        release.set()
        await asyncio.gather(held, return_exceptions=True)
        await other.db.close()
    assert [c.event["messageId"] for c in host.calls] == ["late", "early"]
    assert worker.stats.rescans == 1


async def test_an_idle_worker_does_not_spin(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """With nothing due the worker waits on its wake-up event: no loop turns, no timers."""
    serve(host_mock, Host(fake_time))
    await enqueue(store, ("peer-1", "m1"))
    worker = make_worker()
    await worker.start()
    await settled(store)
    await asyncio.sleep(0.05)
    turns = worker.stats.wakeups
    await asyncio.sleep(0.2)
    assert worker.stats.wakeups == turns
    assert fake_time.slept == []


async def test_unset_bridge_url_queues_events(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """Without BRIDGE_URL the worker sends nothing and events stay pending."""
    host = serve(host_mock, Host(fake_time))
    worker = make_worker(bridge_url=None)
    await worker.start()
    await enqueue(store, ("peer-1", "m1"))
    worker.notify()
    await asyncio.sleep(0.05)
    assert host.calls == []
    assert (await counts(store))["pending"] == 1
    assert worker.readiness() is None


# -- attempts and crash safety --------------------------------------------------------------------


async def test_attempt_is_persisted_before_the_post(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """When the host sees deliveryAttempt n, the outbox already says attempts = n."""
    stored: list[int] = []

    def decide(call: Call) -> Answer | None:
        [(attempts,)] = read_outside(
            store, "SELECT attempts FROM outbox WHERE event_id = ?", call.event["eventId"]
        )
        stored.append(attempts)
        return 500 if len(host.calls) < 3 else None

    host = serve(host_mock, Host(fake_time, decide=decide))
    await enqueue(store, ("peer-1", "m1"))
    await make_worker().start()
    await settled(store)
    assert host.attempts() == [1, 2, 3]
    assert stored == [1, 2, 3]


async def test_an_interrupted_post_goes_again_with_the_next_attempt(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """Stopping mid-POST leaves the event pending; the next worker sends it with deliveryAttempt 2."""
    never = asyncio.Event()
    calls: list[dict[str, Any]] = []

    async def hang_then_ok(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        if len(calls) == 1:
            await never.wait()
        return ok()

    host_mock.post(URL).mock(side_effect=hang_then_ok)
    first, second = await enqueue(store, ("peer-1", "m1"), ("peer-1", "m2"))
    worker = make_worker(shutdown_grace_seconds=0.05)
    await worker.start()
    await until(lambda: _true(len(calls) == 1), what="the first POST")
    await worker.stop()
    interrupted = await row(store, first)
    assert interrupted.status == "pending"
    assert interrupted.attempts == 1
    assert len(calls) == 1

    await make_worker().start()
    await settled(store)
    assert [(c["eventId"], c["deliveryAttempt"]) for c in calls] == [
        (first, 1),
        (first, 2),
        (second, 1),
    ]


async def _true(value: bool) -> bool:
    return value


async def _forever(seconds: float) -> None:
    await asyncio.Event().wait()


async def test_stop_is_not_lost_when_it_lands_while_the_worker_tidies_up_a_wait(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A wake-up ends the worker's wait; while it cancels and awaits the timer of that wait,
    stop() cancels the worker. That cancellation must end the worker (it used to be taken for
    the timer's own and swallowed: stop() then waited for ever)."""
    serve(host_mock, Host(fake_time))
    await enqueue(store, ("peer-1", "m1"))
    await store.db.transaction(
        lambda c: c.execute("UPDATE outbox SET next_attempt_at = ?", (2**50,))
    )
    tidying, release = asyncio.Event(), asyncio.Event()

    async def slow_to_cancel(seconds: float) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            tidying.set()
            await release.wait()  # the worker is now inside its wait's clean-up
            raise

    worker = make_worker(sleep=slow_to_cancel)
    await worker.start()
    await until(lambda: _true(worker.stats.wakeups >= 1), what="the worker's first wait")
    await asyncio.sleep(0.05)  # into the wait, with the timer running
    worker.notify()
    await asyncio.wait_for(tidying.wait(), 10)
    stopping = asyncio.ensure_future(worker.stop())
    await asyncio.sleep(0.05)  # stop() has cancelled the worker, which is still tidying up
    release.set()
    await asyncio.wait_for(stopping, 10)


async def test_a_restart_continues_the_retry_schedule(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A retry time stored in the outbox is honoured by the next worker: it is not sent early."""
    host = serve(host_mock, Host(fake_time, [httpx.Response(503, headers={"Retry-After": "300"})]))
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    worker = make_worker(sleep=_forever)  # this one never reaches the retry time
    await worker.start()
    await until(lambda: _calls_at_least(host, 1), what="the first POST")

    async def rescheduled() -> bool:
        return bool((await row(store, event_id)).last_status_code == 503)

    await until(rescheduled, what="the reschedule")
    await worker.stop()
    assert (await row(store, event_id)).next_attempt_at >= int((START + 300) * 1000)

    await make_worker().start()
    await settled(store)
    assert host.calls[1].at >= START + 300


class RecordingBackoff(Backoff):
    """The real backoff, noting the failure count each delay is computed for."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[int] = []

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        self.failures.append(failures)
        return super().delay(failures, retry_after)


async def test_409s_stay_out_of_the_backoff_across_a_restart(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """After three 409s and a restart, the first real failure still backs off as a first failure."""
    conflict = httpx.Response(409, json={"pending": True}, headers={"Retry-After": "1"})
    host = serve(host_mock, Host(fake_time, [conflict, conflict, conflict, 500]))
    [event_id] = await enqueue(store, ("peer-1", "m1"))
    first = make_worker(sleep=_forever)  # it moves on only when this test moves the clock
    await first.start()
    for n in range(1, 4):

        async def answered(n: int = n) -> bool:
            # The claim of attempt n already counts it while the 409 on record is attempt n-1's:
            # only the answer moves the next attempt past the (frozen) fake now.
            current = await row(store, event_id)
            return bool(
                current.attempts == n
                and current.last_status_code == 409
                and current.next_attempt_at > int(fake_time.now * 1000)
            )

        await until(answered, what=f"409 number {n}")
        if n < 3:
            fake_time.now += 2
            first.notify()
    await first.stop()

    backoff = RecordingBackoff()
    await make_worker(backoff=backoff).start()
    await settled(store)
    assert host.attempts() == [1, 2, 3, 4, 5]
    assert backoff.failures == [1]


async def test_a_replay_keeps_created_at_and_the_age_limit_counts_from_it(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A replayed event keeps its original createdAt; the age limit counts from the replay."""
    host = serve(host_mock, Host(fake_time))
    one, many = await enqueue(store, ("peer-1", "m1"), ("peer-2", "m2"))
    created = {e: (await row(store, e)).created_at for e in (one, many)}
    await store.db.transaction(
        lambda c: c.execute("UPDATE outbox SET status = 'dead', last_error = 'HTTP 404'")
    )
    fake_time.now += 1000  # much older than the age limit below
    worker = make_worker(bridge_max_age_seconds=100)
    await worker.requeue(lambda c: store.outbox.replay_one(c, one))
    await worker.requeue(
        lambda c: store.outbox.replay_many(c, status="dead", connection_id="conn_1")
    )
    await worker.start()
    assert await settled(store) == {"pending": 0, "delivered": 2, "dead": 0}
    assert sorted(host.events()) == sorted([one, many])
    assert {e: (await row(store, e)).created_at for e in (one, many)} == created


# -- replay and retention -------------------------------------------------------------------------


async def test_replay_keeps_the_place_in_the_lane(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """A replayed event becomes its lane's head again: it goes before the later pending events."""
    host = serve(host_mock, Host(fake_time))
    first, second, third = await enqueue(
        store, ("peer-1", "m1"), ("peer-1", "m2"), ("peer-1", "m3")
    )
    await store.db.transaction(
        lambda c: c.execute(
            "UPDATE outbox SET status = 'dead', attempts = 4, last_error = 'HTTP 404'"
            " WHERE event_id = ?",
            (first,),
        )
    )
    worker = make_worker()
    result = await worker.requeue(lambda c: store.outbox.replay_one(c, first))
    assert result is not None
    before, replayed = result
    assert before == "dead"
    assert replayed.status == "pending"
    assert replayed.attempts == 0
    assert replayed.last_error is None
    await worker.start()
    await settled(store)
    assert host.events() == [first, second, third]
    assert host.attempts() == [1, 1, 1]


async def test_replay_into_a_busy_lane_is_not_lost(
    store: Store, make_worker: WorkerFactory, host_mock: respx.MockRouter, fake_time: FakeTime
) -> None:
    """Replaying while the lane has an event in flight sends the replayed event right after it."""
    gate = asyncio.Event()
    calls: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content)["messageId"])
        if len(calls) == 1:
            await gate.wait()
        return ok()

    host_mock.post(URL).mock(side_effect=answer)
    [old] = await enqueue(store, ("peer-1", "old"))
    await store.db.transaction(
        lambda c: c.execute("UPDATE outbox SET status = 'dead' WHERE event_id = ?", (old,))
    )
    await enqueue(store, ("peer-1", "m2"), ("peer-1", "m3"))
    worker = make_worker()
    await worker.start()
    await until(lambda: _true(len(calls) == 1), what="the first POST")
    count = await worker.requeue(
        lambda c: store.outbox.replay_many(c, status="dead", connection_id="conn_1")
    )
    assert count == 1
    gate.set()
    await settled(store)
    assert calls == ["m2", "old", "m3"]


async def test_bulk_replay_filters_by_status_and_connection(store: Store) -> None:
    """replay_many re-queues only the given status of the given connection."""
    ids = await enqueue(store, ("p", "a"), ("p", "b"))
    other = await enqueue(store, ("p", "c"), connection_id="conn_2")
    await store.db.transaction(
        lambda c: c.execute(
            "UPDATE outbox SET status = CASE event_id WHEN ? THEN 'delivered' ELSE 'dead' END",
            (ids[1],),
        )
    )
    replayed = await store.db.transaction(
        lambda c: store.outbox.replay_many(c, status="dead", connection_id="conn_1")
    )
    assert replayed == 1
    assert (await row(store, ids[0])).status == "pending"
    assert (await row(store, ids[1])).status == "delivered"
    assert (await row(store, other[0])).status == "dead"
    everything = await store.db.transaction(
        lambda c: store.outbox.replay_many(c, status="delivered", connection_id=None)
    )
    assert everything == 1
    assert (await row(store, ids[1])).status == "pending"


async def test_purge_deletes_only_old_delivered_events_in_batches(
    store: Store, make_worker: WorkerFactory, fake_time: FakeTime
) -> None:
    """Delivered events past the retention go, in small batches; recent, pending and dead ones stay."""
    await enqueue(store, *[("p", f"old{i}") for i in range(7)])
    dead = await enqueue(store, ("p", "dead"))
    await store.db.transaction(
        lambda c: c.execute(
            "UPDATE outbox SET status = 'delivered', delivered_at = ? WHERE status = 'pending'",
            (int(START * 1000),),
        )
    )
    await store.db.transaction(
        lambda c: c.execute("UPDATE outbox SET status = 'dead' WHERE event_id = ?", (dead[0],))
    )
    fake_time.now += 8 * 86400
    recent = await enqueue(store, ("p", "recent"), ("p", "pending"))
    await store.db.transaction(
        lambda c: c.execute(
            "UPDATE outbox SET status = 'delivered', delivered_at = ? WHERE event_id = ?",
            (int(fake_time.now * 1000), recent[0]),
        )
    )
    worker = make_worker(purge_batch=2)
    assert await worker.purge() == 7
    assert await counts(store) == {"pending": 1, "delivered": 1, "dead": 1}
    assert await worker.purge() == 0
    assert (await row(store, dead[0])).status == "dead"


async def test_delivery_counts_per_connection(store: Store) -> None:
    """Outbox.delivery_counts gives (pending, dead) per connection."""
    ids = await enqueue(store, ("p", "a"), ("p", "b"), ("p", "c"))
    await enqueue(store, ("p", "d"), connection_id="conn_2")
    await store.db.transaction(
        lambda c: c.execute("UPDATE outbox SET status = 'dead' WHERE event_id = ?", (ids[0],))
    )
    await store.db.transaction(
        lambda c: c.execute("UPDATE outbox SET status = 'delivered' WHERE event_id = ?", (ids[1],))
    )
    assert await store.db.run(store.outbox.delivery_counts) == {
        "conn_1": (1, 1),
        "conn_2": (1, 0),
    }


@pytest.mark.parametrize("status", [200, 409])
def test_a_host_answer_that_is_not_utf8_is_read_as_no_body(status: int) -> None:
    """A 2xx or 409 body in another charset is judged by its status, never raises."""
    verdict = judge(status, httpx.Headers(), b'{"accepted": "\xe9"}', now=0.0)
    assert verdict.action == ("delivered" if status == 200 else "conflict")
