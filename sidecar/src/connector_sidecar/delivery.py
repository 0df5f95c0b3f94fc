"""The bridge delivery worker: every outbox event reaches the host at least once, in order per
conversation, or lands in the dead-letter list (docs/CONTRACT.md §5, docs/ARCHITECTURE.md "The guarantees").

Lanes
    A lane is one conversation, (connectionId, peerId, threadId). Only the *head* of a lane (its
    pending event with the lowest ``seq``) is ever sent, and a lane has at most one POST in
    flight, so the next event of a conversation waits until the previous one is delivered or
    dead. Up to ``BRIDGE_CONCURRENCY`` lanes are in flight at once; the due heads with the
    earliest due time go first.

Scheduling
    The database is the truth; the worker keeps a small index in memory: for each idle lane a
    *hint* (a ``seq`` no greater than the lane's head, and when the head is due) in a heap by due
    time. Hints come from one pass over the pending events at start (and after a replay), from
    the events committed since the last look (``Runtime.on_outbox`` wakes the worker at once),
    and from the answer of each attempt, whose transaction also returns the lane's next head.
    Claiming re-reads the head from the database (an index range scan on ``(lane, seq)``), so a
    hint that is early is harmless. With nothing due the worker awaits its wake-up event or the
    next due time: an idle worker uses no CPU.

Attempts and answers
    Claiming an event increments ``attempts`` in the same transaction, before its POST: that is
    the body's ``deliveryAttempt``, never reused even after a crash. The host's answer decides
    (``bridge_answers.judge``): 2xx delivered unless the body says ``accepted: false``; 409
    means the host is still busy with an earlier attempt, so try again after its
    ``Retry-After`` without counting a failure; 408, 425, 429, 5xx, timeouts and connection
    errors retry with full-jitter exponential backoff (``bridge_answers.Backoff``) that never
    undercuts ``Retry-After``; 401 and 403 pause the whole bridge (``/readyz`` says why) and
    probe every ``probe_seconds`` with one event until the host accepts again, dead-lettering
    nothing; any other 4xx is dead at once. An event older than ``BRIDGE_MAX_AGE_SECONDS`` is
    dead-lettered when it next comes up. Retry times and failure counts live in the outbox
    (``next_attempt_at``, ``failures``), so a restart continues the schedule, and the 409s
    before it still do not widen the backoff.

Crash safety
    An event in flight when the process dies is still ``pending``: after a restart it is sent
    again with the next attempt number. The host dedupes on ``eventId``.

Several replicas
    Every replica runs a worker on the shared outbox. Claiming a head marks it ``claimed_by``
    this replica (``Outbox.claim``), which is the lane's lock: a lane has at most one POST in
    flight across all replicas, and its events still go strictly in order. The claim holds for
    the bridge timeout plus a margin, or until the replica's heartbeat stops, so the event of
    a replica killed mid-POST goes out again from another one, with the next attempt number.
    Events committed by other replicas wake no one here: on a shared database the worker
    looks for new events every :data:`SHARED_POLL_SECONDS` (real time), and rescans every
    lane every tenth look. A look asks for every ``seq`` above the last one seen and for the
    gaps below it that may still be filled by transactions committing late (``_track_holes``),
    so an event is never left to the rescan just because a later one committed first.

Operator pause
    ``POST /bridge/pause`` writes the pause to the database (``bridge_state``); every worker
    reads it at start and with each look for others' events, and claims nothing while it
    holds. POSTs in flight finish; nothing is dead-lettered for age meanwhile, since nothing
    is claimed.

History and retention
    Each attempt's time, duration and answer is written to ``delivery_attempts`` in the
    transaction that records the answer. Delivered events are purged after
    ``delivered_retention_seconds``, dead letters after ``DEAD_RETENTION_SECONDS``, each with
    its history.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any, Final, TypeVar

import httpx
import msgspec

from connector_contracts import encode
from connector_sidecar._bridge_client import BridgeClient
from connector_sidecar._clock import Clock, Sleep, now_ms, system_clock
from connector_sidecar._logging import bind_log_context
from connector_sidecar._tasks import cancel_and_wait
from connector_sidecar.bridge_answers import EXCERPT_CHARS, Backoff, Verdict, judge
from connector_sidecar.config import Settings
from connector_sidecar.leases import wall_ms
from connector_sidecar.metrics import Metrics
from connector_sidecar.signing import Signer
from connector_sidecar.store import Store
from connector_sidecar.store._sql import Connection
from connector_sidecar.store.outbox import Claim, LaneHead, OutboxRow
from connector_sidecar.store.replicas import Holder

__all__ = ["DeliveryWorker", "WorkerStats"]

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFLICT_DEFAULT_SECONDS: Final = 5.0  # a 409 without Retry-After: the SDK's own default
CONFLICT_MIN_SECONDS: Final = 1.0
MAX_ANSWER_BYTES: Final = 64 * 1024
CRASH_RETRY_MS: Final = 5000  # after an unexpected error in the worker itself
SHARED_POLL_SECONDS: Final = 1.0  # on a shared database: how often to look for others' events
CLAIM_MARGIN_SECONDS: Final = 30.0  # a claim outlives its POST's timeout by this much
HOLE_SECONDS: Final = 15.0  # how long a gap in ``seq`` is looked at again (see _track_holes)
MAX_HOLES: Final = 512


def _loggable_url(url: str) -> str:
    """``url`` without what may hold a credential: the user and password, the query string."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


# -- the worker ------------------------------------------------------------------------------------


@dataclasses.dataclass
class WorkerStats:
    """Counters for tests, benchmarks and logs (this process only)."""

    wakeups: int = 0
    attempts: int = 0
    delivered: int = 0
    retried: int = 0
    conflicts: int = 0
    dead: int = 0
    pauses: int = 0
    rescans: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    """One attempt's outcome, waiting to be written."""

    row: OutboxRow
    status: str
    status_code: int | None
    error: str | None
    next_attempt_at: int | None
    failed: bool
    started_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Done:
    """One finished lane task, applied to the schedule by the main loop."""

    lane: str
    verdict: Verdict | None
    head: LaneHead | None  # the lane's head after the answer was recorded
    started_ms: int


class DeliveryWorker:
    """Delivers the outbox to ``BRIDGE_URL``; started and stopped by the app lifespan.

    ``clock`` and ``sleep`` are injectable so tests can run backoffs without waiting;
    ``transport`` lets a benchmark or test talk to an in-process host.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock = system_clock,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: Backoff | None = None,
        probe_seconds: float = 30.0,
        shutdown_grace_seconds: float = 5.0,
        purge_interval_seconds: float | None = 900.0,
        purge_batch: int = 500,
        purge_pause_seconds: float = 0.05,
        metrics: Metrics | None = None,
        rescan_polls: int = 10,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.stats = WorkerStats()
        self._clock = clock
        self._sleep = sleep
        self._transport = transport
        self._backoff = backoff or Backoff()
        self._probe_ms = int(probe_seconds * 1000)
        self._grace = shutdown_grace_seconds
        self._purge_interval = purge_interval_seconds
        self._purge_batch = purge_batch
        self._purge_pause = purge_pause_seconds
        self._max_age_ms = int(settings.bridge_max_age_seconds * 1000)
        self._concurrency = settings.bridge_concurrency
        self._signer = Signer(settings.bridge_signing_secrets)
        self._headers = {"Content-Type": "application/json", "User-Agent": "connector-sidecar"}
        if settings.bridge_token:
            self._headers["Authorization"] = f"Bearer {settings.bridge_token.reveal()}"

        self._client: BridgeClient | None = None
        self._main: asyncio.Task[None] | None = None
        self._retention: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # claims and replays never interleave
        self._hints: dict[str, tuple[int, int]] = {}  # idle lane -> (seq <= its head, due ms)
        self._heap: list[tuple[int, int, str]] = []  # (due ms, seq, lane); stale entries skipped
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._floors: dict[str, int] = {}  # in-flight lane -> lowest pending seq seen meanwhile
        self._done: list[_Done] = []
        self._answers: list[tuple[_Answer, asyncio.Future[LaneHead | None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._high_seq = 0
        self._holes: dict[int, float] = {}  # seq not seen yet below _high_seq -> since (loop time)
        self._scan_all = True
        self._scan_new = False
        self._paused: str | None = None
        self._operator_paused = False
        self._check_pause = True
        self._paused_at = 0
        self._probe_at = 0
        self._shared = not store.db.exclusive
        self._poll_at = 0.0
        self._polls = 0
        self._rescan_polls = rescan_polls

    # -- public -----------------------------------------------------------------------------------

    @property
    def configured(self) -> bool:
        return bool(self.settings.bridge_url)

    @property
    def transport(self) -> httpx.AsyncBaseTransport | None:
        """The transport bridge POSTs use (a test's in-process host, or None: the network)."""
        return self._transport

    @property
    def operator_paused(self) -> bool:
        """Whether an operator paused delivery (as this replica last read it)."""
        return self._operator_paused

    @property
    def paused(self) -> bool:
        """Whether delivery is paused, by an operator or by the host's 401/403."""
        return self._operator_paused or self._paused is not None

    async def set_operator_pause(self, paused: bool) -> None:
        """Pause or resume delivery on every replica (``POST /bridge/pause|resume``)."""
        await self.store.db.transaction(self.store.bridge.set_paused, paused)
        self._operator_paused = paused
        log.warning("bridge delivery %s by an operator", "paused" if paused else "resumed")
        self._wake.set()

    def readiness(self) -> str | None:
        """A readiness check for ``/readyz``."""
        if self._operator_paused:
            return "bridge delivery is paused by an operator (POST /bridge/resume resumes it)"
        if self._paused is None:
            return None
        return (
            f"bridge delivery is paused: {self._paused}; probing every {self._probe_ms / 1000:g} s"
        )

    def notify(self) -> None:
        """New events were committed (``Runtime.on_outbox``): look at once."""
        self._scan_new = True
        self._wake.set()

    async def requeue(self, work: Callable[[Connection], T]) -> T:
        """Run a transaction that makes events pending again (a replay), then rescan the lanes.

        Holding the claim lock means no claim reads a lane between the replay and the rescan.
        """
        async with self._lock:
            result = await self.store.db.transaction(work)
            self._scan_all = True
            self._wake.set()
        return result

    async def start(self) -> None:
        self._operator_paused = await self.store.db.run(self.store.bridge.paused)
        if self._purge_interval is not None and self._retention is None:
            self._retention = asyncio.create_task(self._retention_loop(), name="outbox-retention")
        if not self.configured:
            log.warning("BRIDGE_URL is not set: inbound events are queued, not delivered")
            return
        if self._main is not None:
            return
        self._client = BridgeClient(
            self._concurrency,
            url=self.settings.bridge_url or "",
            timeout=self.settings.bridge_timeout_seconds,
            transport=self._transport,
        )
        self._main = asyncio.create_task(self._run(), name="delivery")
        log.info(
            "delivering to %s, %d conversations at a time%s",
            _loggable_url(self.settings.bridge_url or ""),
            self._concurrency,
            ", signed" if self._signer else "",
        )

    async def stop(self) -> None:
        """Stop claiming; let POSTs in flight finish for a short grace, then cancel them.

        A cancelled POST leaves its event pending: it is sent again after the restart.
        """
        await cancel_and_wait(t for t in (self._main, self._retention) if t is not None)
        self._main = self._retention = None
        lanes = list(self._in_flight.values())
        if lanes:
            _, unfinished = await asyncio.wait(lanes, timeout=self._grace)
            for task in unfinished:
                task.cancel()
            for task in lanes:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._in_flight.clear()
        if self._writer is not None:
            # Answers already handed over are written before the store closes.
            with contextlib.suppress(Exception):
                await self._writer
            self._writer = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        # A later start() rebuilds the schedule from the outbox.
        self._hints.clear()
        self._heap.clear()
        self._floors.clear()
        self._done.clear()
        self._scan_all = True
        self._high_seq = 0
        self._holes.clear()

    async def purge(self) -> int:
        """Delete delivered events older than the retention, in small batches; returns how many.

        Walks the delivered events oldest ``seq`` first and stops at the first batch with nothing
        old enough; dead and pending events are never touched.
        """
        before = now_ms(self._clock) - int(self.settings.delivered_retention_seconds * 1000)
        after_seq, total = 0, 0
        for _ in range(100_000):  # a bound, not a plan: 50 million rows per sweep
            batch = await self.store.db.transaction(
                lambda c, a=after_seq: self.store.outbox.purge_delivered(
                    c, before=before, after_seq=a, limit=self._purge_batch
                )
            )
            total += batch.deleted
            if batch.deleted == 0 or batch.scanned < self._purge_batch or batch.last_seq is None:
                break
            after_seq = batch.last_seq
            await asyncio.sleep(self._purge_pause)  # let ingest and delivery use the database
        dead_before = now_ms(self._clock) - int(self.settings.dead_retention_seconds * 1000)
        dead = 0
        for _ in range(100_000):
            count = await self.store.db.transaction(
                lambda c: self.store.outbox.purge_dead(
                    c, before=dead_before, limit=self._purge_batch
                )
            )
            dead += count
            if count < self._purge_batch:
                break
            await asyncio.sleep(self._purge_pause)
        if total or dead:
            log.info(
                "purged %d delivered events and %d dead letters older than their retention",
                total,
                dead,
            )
        return total + dead

    # -- the main loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self.stats.wakeups += 1
            self._poll_shared()
            try:
                claimed = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the delivery worker failed; retrying in 5 s")
                self._scan_all = True
                await self._sleep(CRASH_RETRY_MS / 1000)
                continue
            if claimed:
                continue
            await self._wait(self._next_delay(now_ms(self._clock)))

    async def _step(self) -> bool:
        """Apply finished attempts, look for new events, claim due heads; True if it claimed."""
        self._apply_done()
        if self._check_pause:
            self._check_pause = False
            self._operator_paused = await self.store.db.run(self.store.bridge.paused)
        async with self._lock:
            if self._scan_all:
                self._scan_all = False
                self.stats.rescans += 1
                heads, high = await self.store.db.run(self.store.outbox.lane_heads)
                if self._high_seq == 0:  # the first look: below its top, nothing is a gap
                    self._high_seq = high
                self._scan_new = True  # what arrived since (or meanwhile) is read below
                self._absorb(heads)
            if self._scan_new:
                self._scan_new = False
                found = await self.store.db.run(
                    self.store.outbox.arrivals, self._high_seq, sorted(self._holes)
                )
                self._track_holes(found.seqs)
                self._absorb(found.heads)
            now = now_ms(self._clock)
            picks, force = self._pick(now)
            if not picks:
                return False
            max_age = None if self._paused else self._max_age_ms
            claims = await self.store.db.transaction(self._claim_all, picks, now, max_age, force)
        for claim in claims:
            self._apply_claim(claim)
        if force and not any(c.row for c in claims):
            self._probe_at = now  # that lane had nothing left: probe with another one now
        return True

    def _poll_shared(self) -> None:
        """On a shared database, look for events other replicas committed, now and then."""
        if not self._shared:
            return
        now = asyncio.get_running_loop().time()
        if now >= self._poll_at:
            self._poll_at = now + SHARED_POLL_SECONDS
            self._polls += 1
            self._scan_new = True
            self._check_pause = True
            if self._polls % self._rescan_polls == 0:
                self._scan_all = True

    def _track_holes(self, seqs: list[int]) -> None:
        """Remember the gaps below the newest ``seq`` seen, and look at them again next time.

        On PostgreSQL a ``seq`` is taken when a row is inserted and becomes visible when its
        transaction commits, so a look can see seq 12 while 11 is still being committed by
        another transaction; moving past 11 for good would leave that event to the next full
        rescan. Each such gap is asked for by number in the following looks until it shows up
        or :data:`HOLE_SECONDS` pass (a rolled-back insert, or a redelivery that inserted
        nothing, leaves a gap that never fills; the periodic rescan covers the rest).
        """
        for seq in seqs:
            self._holes.pop(seq, None)
        top = seqs[-1] if seqs else self._high_seq
        if top > self._high_seq:
            # With one writer (SQLite) a look sees every commit made before it: a gap there is
            # for good (a rollback, a redelivery that inserted nothing), nothing to wait for.
            if self._shared:
                self._note_gaps({s for s in seqs if s > self._high_seq}, top)
            self._high_seq = top
        if self._holes:
            expired = asyncio.get_running_loop().time() - HOLE_SECONDS
            self._holes = {seq: since for seq, since in self._holes.items() if since >= expired}

    def _note_gaps(self, seen: set[int], top: int) -> None:
        """Every ``seq`` between the last one seen and ``top`` that this look did not find."""
        if top - self._high_seq - 1 - len(seen) > MAX_HOLES:
            self._scan_all = True  # more gaps than are worth naming: rescan once instead
        now = asyncio.get_running_loop().time()
        for seq in range(max(self._high_seq + 1, top - MAX_HOLES), top):
            if seq not in seen:
                self._holes[seq] = now
        if len(self._holes) > MAX_HOLES:  # keep the newest; the rescan covers the rest
            for seq in sorted(self._holes)[: len(self._holes) - MAX_HOLES]:
                del self._holes[seq]
            self._scan_all = True

    def _holder(self) -> Holder:
        wall = wall_ms()
        claim_ms = int((self.settings.bridge_timeout_seconds + CLAIM_MARGIN_SECONDS) * 1000)
        return Holder(
            self.settings.replica_id,
            wall,
            wall + claim_ms,
            wall - int(self.settings.lease_seconds * 1000),
        )

    def _claim_all(
        self,
        conn: Connection,
        picks: list[tuple[str, int]],
        now: int,
        max_age_ms: int | None,
        force: bool,
    ) -> list[Claim]:
        holder = self._holder()
        return [
            self.store.outbox.claim(
                conn, lane, seq, now=now, max_age_ms=max_age_ms, force=force, holder=holder
            )
            for lane, seq in picks
        ]

    def _pick(self, now: int) -> tuple[list[tuple[str, int]], bool]:
        """The due lanes to claim now, and whether they are forced (a probe)."""
        if self._operator_paused:
            return [], False
        if self._paused is not None:
            if self._in_flight or now < self._probe_at:
                return [], False
            probe = self._pop(now, any_due=True)
            if probe is None:
                return [], False
            self._probe_at = now + self._probe_ms
            return [probe], True
        picks: list[tuple[str, int]] = []
        while len(self._in_flight) + len(picks) < self._concurrency:
            pick = self._pop(now, any_due=False)
            if pick is None:
                break
            picks.append(pick)
        return picks, False

    def _pop(self, now: int, *, any_due: bool) -> tuple[str, int] | None:
        while self._heap:
            due, seq, lane = self._heap[0]
            if self._hints.get(lane) != (seq, due):
                heapq.heappop(self._heap)
                continue
            if due > now and not any_due:
                return None
            heapq.heappop(self._heap)
            del self._hints[lane]
            return lane, seq
        return None

    def _peek_due(self) -> int | None:
        while self._heap:
            due, seq, lane = self._heap[0]
            if self._hints.get(lane) == (seq, due):
                return due
            heapq.heappop(self._heap)
        return None

    def _hint(self, lane: str, seq: int, due: int) -> None:
        self._hints[lane] = (seq, due)
        heapq.heappush(self._heap, (due, seq, lane))
        if len(self._heap) > 4 * len(self._hints) + 64:
            self._heap = [(d, s, ln) for ln, (s, d) in self._hints.items()]
            heapq.heapify(self._heap)

    def _absorb(self, heads: list[LaneHead]) -> None:
        """Merge pending events found by a scan into the schedule."""
        for head in heads:
            if head.lane in self._in_flight:
                # Looked at when the POST in flight is answered.
                floor = self._floors.get(head.lane)
                self._floors[head.lane] = head.seq if floor is None else min(floor, head.seq)
                continue
            current = self._hints.get(head.lane)
            if current is None or head.seq < current[0]:
                self._hint(head.lane, head.seq, head.next_attempt_at)

    def _apply_claim(self, claim: Claim) -> None:
        self.stats.dead += len(claim.expired)
        self.metrics.delivery("expired", count=len(claim.expired))
        for event_id in claim.expired:
            log.warning("event %s dead-lettered: older than BRIDGE_MAX_AGE_SECONDS", event_id)
        if claim.row is not None:
            self._in_flight[claim.lane] = asyncio.create_task(
                self._deliver(claim.row), name=f"deliver:{claim.row.event_id}"
            )
        elif claim.head is not None:
            self._hint(claim.lane, claim.head.seq, claim.head.next_attempt_at)

    def _apply_done(self) -> None:
        done, self._done = self._done, []
        now = now_ms(self._clock)
        for item in done:
            self._in_flight.pop(item.lane, None)
            floor = self._floors.pop(item.lane, None)
            head = item.head
            if floor is not None and (head is None or floor < head.seq):
                self._hint(item.lane, floor, now)  # the claim finds the real head
            elif head is not None:
                self._hint(item.lane, head.seq, head.next_attempt_at)
            verdict = item.verdict
            if verdict is None:
                continue
            if verdict.action == "paused":
                self._pause(verdict.error or "the host refused the bridge credentials", now)
            elif (
                self._paused is not None
                and verdict.status_code is not None
                and item.started_ms >= self._paused_at
            ):
                log.info("the host accepts bridge deliveries again; resuming")
                self._paused = None

    def _pause(self, reason: str, now: int) -> None:
        if self._paused is None:
            self.stats.pauses += 1
            self._paused_at = now
            log.error("bridge delivery paused: %s", reason)
        self._paused = reason
        self._probe_at = now + self._probe_ms

    def _next_delay(self, now: int) -> float | None:
        """Seconds until something is due, or None to wait for a wake-up only."""
        if self._operator_paused:
            return None
        if self._paused is not None:
            if self._in_flight or self._peek_due() is None:
                return None
            return max(0.0, (self._probe_at - now) / 1000)
        if len(self._in_flight) >= self._concurrency:
            return None
        due = self._peek_due()
        return None if due is None else max(0.0, (due - now) / 1000)

    async def _wait(self, delay: float | None) -> None:
        if self._wake.is_set():
            return
        tasks: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._wake.wait())}
        if delay is not None:
            tasks.add(asyncio.ensure_future(self._sleep(delay)))
        if self._shared:  # in real time, whatever clock the schedule runs on
            left = self._poll_at - asyncio.get_running_loop().time()
            tasks.add(asyncio.ensure_future(asyncio.sleep(max(0.0, left))))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Not ``suppress(CancelledError): await task``: a stop() arriving meanwhile would be
            # swallowed there, and the worker would never stop (_tasks.py).
            await cancel_and_wait(tasks)

    # -- one attempt ------------------------------------------------------------------------------

    async def _deliver(self, row: OutboxRow) -> None:
        bind_log_context(eventId=row.event_id, connectionId=row.connection_id)  # its own task
        started = now_ms(self._clock)
        verdict: Verdict | None = None
        try:
            verdict = await self._post(row)
            head = await self._record(row, verdict, started)
        except Exception:
            log.exception("delivering %s failed unexpectedly; retrying in 5 s", row.event_id)
            head = LaneHead(row.lane, row.seq, now_ms(self._clock) + CRASH_RETRY_MS)
            verdict = None
        self._done.append(_Done(row.lane, verdict, head, started))
        self._wake.set()

    async def _post(self, row: OutboxRow) -> Verdict:
        assert self._client is not None
        assert self.settings.bridge_url
        self.stats.attempts += 1
        body = encode(msgspec.structs.replace(row.event, delivery_attempt=row.attempts))
        headers = dict(self._headers)
        headers.update(self._signer.headers(row.event_id, int(self._clock()), body))
        timeout = self.settings.bridge_timeout_seconds
        try:
            async with (
                asyncio.timeout(timeout),
                self._client.stream(
                    "POST", self.settings.bridge_url, content=body, headers=headers
                ) as response,
            ):
                answer = bytearray()
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) >= MAX_ANSWER_BYTES:
                        break
        except (httpx.TimeoutException, TimeoutError):
            return Verdict("retry", None, f"no answer within {timeout:g} s")
        except httpx.RequestError as exc:
            return Verdict("retry", None, f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS])
        return judge(response.status_code, response.headers, bytes(answer), now=self._clock())

    async def _record(self, row: OutboxRow, verdict: Verdict, started: int) -> LaneHead | None:
        now = now_ms(self._clock)
        self.metrics.delivery(verdict.action, (now - (row.queued_at or row.created_at)) / 1000)
        status, next_at, failed = "pending", None, False
        if verdict.action == "delivered":
            status = "delivered"
            self.stats.delivered += 1
        elif verdict.action == "dead":
            status = "dead"
            self.stats.dead += 1
            log.warning("event %s dead-lettered: %s", row.event_id, verdict.error)
        elif verdict.action == "paused":
            next_at = now  # the pause holds it back; once the host accepts again it goes first
        else:
            if verdict.action == "conflict":
                # Not a failure: the host is busy with an earlier attempt.
                self.stats.conflicts += 1
                delay = max(
                    CONFLICT_MIN_SECONDS,
                    min(
                        verdict.retry_after
                        if verdict.retry_after is not None
                        else CONFLICT_DEFAULT_SECONDS,
                        self._backoff.max_retry_after,
                    ),
                )
            else:
                self.stats.retried += 1
                failed = True
                delay = self._backoff.delay(row.failures + 1, verdict.retry_after)
            # Never later than the age limit, so an event is dead-lettered on time.
            next_at = min(now + int(delay * 1000), row.queued_at + self._max_age_ms)
        answer = _Answer(row, status, verdict.status_code, verdict.error, next_at, failed, started)
        result: asyncio.Future[LaneHead | None] = asyncio.get_running_loop().create_future()
        self._answers.append((answer, result))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_answers(), name="delivery-answers")
        return await asyncio.shield(result)

    async def _write_answers(self) -> None:
        """Group commit: the answers that arrive while one transaction runs share the next one.

        Each answer is still committed before its lane moves on; there are just fewer fsyncs.
        """
        while self._answers:
            batch, self._answers = self._answers, []
            try:
                heads = await self.store.db.transaction(self._finish_all, [a for a, _ in batch])
            except Exception as exc:
                for _, result in batch:
                    if not result.done():
                        result.set_exception(exc)
                continue
            for (_, result), head in zip(batch, heads, strict=True):
                if not result.done():
                    result.set_result(head)

    def _finish_all(self, conn: Connection, answers: list[_Answer]) -> list[LaneHead | None]:
        holder = self._holder()
        return [
            self.store.outbox.finish(
                conn,
                a.row,
                status=a.status,
                status_code=a.status_code,
                error=a.error,
                next_attempt_at=a.next_attempt_at,
                failed=a.failed,
                holder=holder,
                started_at=a.started_at,
            )
            for a in answers
        ]

    # -- retention --------------------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        assert self._purge_interval is not None
        while True:
            try:
                await self.purge()
            except Exception:
                log.exception("purging delivered events failed")
            await asyncio.sleep(self._purge_interval)
