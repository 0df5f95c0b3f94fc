"""The outbox: every inbound message as a BridgeEvent, stored before the vendor is acknowledged.

Rows are ``pending`` until the delivery worker hands them to the host (``delivered``) or gives up
(``dead``). ``seq`` is the arrival order; the ``lane`` (connection, peer, thread) is the unit of
ordering: within a lane, events are delivered strictly in ``seq`` order. The *head* of a lane is
its pending event with the lowest ``seq``; only a head is ever sent.

The worker's queries are all index range scans: new events by ``seq`` (the primary key), the head
of one lane by the partial index on pending ``(lane, seq)``. ``attempts`` is incremented in the
transaction that claims an event, before its POST, so an attempt number is never used twice even
across a crash; ``failures`` counts the attempts that failed (not the 409s of a host still busy
with an earlier one), for the backoff. ``created_at`` is when the event was first stored;
``queued_at`` when it was last queued (then, or a replay): the age limit counts from it. A replay
restarts ``attempts`` and ``failures`` at 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from connector_contracts import AnyBridgeEvent, BridgeEvent, decode_bridge_event, format_timestamp
from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store._sql import Connection
from connector_sidecar.store.connections import ConnectionRecord
from connector_sidecar.store.replicas import Holder

__all__ = [
    "BUSY_RETRY_MS",
    "Arrivals",
    "AttemptRecord",
    "Claim",
    "EnqueueResult",
    "InboundMessage",
    "LaneHead",
    "Outbox",
    "OutboxRow",
    "PurgeBatch",
    "event_id_for",
    "lane_for",
]

_encoder = msgspec.json.Encoder()


def event_id_for(connection_id: str, message_id: str) -> str:
    """Deterministic: a vendor redelivery of the same message gets the same eventId."""
    digest = hashlib.sha256(f"{connection_id}\n{message_id}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def lane_for(connection_id: str, peer_id: str, thread_id: str | None) -> str:
    return f"{connection_id}\x1f{peer_id}\x1f{thread_id or ''}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class InboundMessage:
    """A vendor message, normalised by a driver, before it becomes a BridgeEvent."""

    message_id: str
    peer_id: str
    content: str
    peer_type: str = "dm"
    user_id: str | None = None
    thread_id: str | None = None
    message_type: str = "text"
    timestamp: str | None = None  # when the vendor says it was sent; now when it does not say
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EnqueueResult:
    event_id: str
    message: InboundMessage
    inserted: bool  # False: a redelivery of a message already in the outbox


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxRow:
    seq: int
    event_id: str
    connection_id: str
    lane: str
    status: str
    attempts: int
    event: AnyBridgeEvent
    created_at: int
    next_attempt_at: int
    delivered_at: int | None
    last_status_code: int | None
    last_error: str | None
    failures: int = 0
    queued_at: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class LaneHead:
    """A pending event as the worker schedules it: which lane, where in it, when it is due."""

    lane: str
    seq: int
    next_attempt_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Arrivals:
    """What one look for new events found: the pending ones, and every ``seq`` seen."""

    heads: list[LaneHead]
    seqs: list[int]


BUSY_RETRY_MS = 1000
_ATTEMPT_ERROR_CHARS = 500


@dataclasses.dataclass(frozen=True, kw_only=True)
class Claim:
    """What claiming the head of a lane found.

    ``row`` is set when the head was due and is now claimed (``attempts`` already incremented);
    ``head`` when the lane's head is not due yet; neither when the lane has nothing pending.
    ``expired`` lists the events dead-lettered on the way for being older than the maximum age.
    """

    lane: str
    row: OutboxRow | None = None
    head: LaneHead | None = None
    expired: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One POST of an event: when it started, how long it took, what the host answered."""

    attempt: int
    at: int
    duration_ms: int
    status_code: int | None
    error: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class PurgeBatch:
    deleted: int
    scanned: int
    last_seq: int | None


def _row(row: Any) -> OutboxRow:
    return OutboxRow(
        seq=row["seq"],
        event_id=row["event_id"],
        connection_id=row["connection_id"],
        lane=row["lane"],
        status=row["status"],
        attempts=row["attempts"],
        event=decode_bridge_event(row["payload"]),
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        failures=row["failures"],
        queued_at=row["queued_at"],
    )


class Outbox:
    """Queries on the ``outbox`` table; each takes the connection of the DB thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def enqueue(
        self,
        conn: Connection,
        connection: ConnectionRecord,
        messages: Sequence[InboundMessage],
    ) -> list[EnqueueResult]:
        """Insert each message once (by eventId); call inside the transaction that moves the cursor."""
        now = now_ms(self.clock)
        results: list[EnqueueResult] = []
        for message in messages:
            event_id = event_id_for(connection.connection_id, message.message_id)
            event = BridgeEvent(
                event_id=event_id,
                timestamp=message.timestamp or format_timestamp(now / 1000),
                delivery_attempt=0,
                connection_id=connection.connection_id,
                channel_id=connection.channel_id,
                kind=connection.kind,
                account_id=connection.account_id or "",
                peer_id=message.peer_id,
                peer_type=message.peer_type,
                user_id=message.user_id,
                thread_id=message.thread_id,
                message_id=message.message_id,
                message_type=message.message_type,
                content=message.content,
                metadata=message.metadata,
            )
            cursor = conn.execute(
                "INSERT INTO outbox (event_id, connection_id, lane, status, payload, created_at,"
                " queued_at, next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)"
                " ON CONFLICT (event_id) DO NOTHING",
                (
                    event_id,
                    connection.connection_id,
                    lane_for(connection.connection_id, message.peer_id, message.thread_id),
                    _encoder.encode(event),
                    now,
                    now,
                    now,
                ),
            )
            results.append(EnqueueResult(event_id, message, cursor.rowcount == 1))
        if any(r.inserted for r in results):
            conn.execute(
                "UPDATE connections SET last_inbound_at = ? WHERE connection_id = ?",
                (now, connection.connection_id),
            )
        return results

    def get(self, conn: Connection, event_id: str) -> OutboxRow | None:
        row = conn.execute("SELECT * FROM outbox WHERE event_id = ?", (event_id,)).fetchone()
        return _row(row) if row else None

    def page(
        self,
        conn: Connection,
        *,
        status: str | None,
        connection_id: str | None,
        limit: int,
        before_seq: int | None,
    ) -> list[OutboxRow]:
        """Newest first, ``limit`` rows with ``seq < before_seq`` (the cursor)."""
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if connection_id is not None:
            clauses.append("connection_id = ?")
            params.append(connection_id)
        if before_seq is not None:
            clauses.append("seq < ?")
            params.append(before_seq)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = conn.execute(
            f"SELECT * FROM outbox {where} ORDER BY seq DESC LIMIT ?",  # noqa: S608 - fixed clauses
            (*params, limit),
        )
        return [_row(r) for r in rows]

    # -- the delivery worker ----------------------------------------------------------------------

    def arrivals(self, conn: Connection, after_seq: int, holes: Sequence[int] = ()) -> Arrivals:
        """Events with ``seq > after_seq`` or ``seq`` in ``holes`` (each below ``after_seq``),
        whatever their status: what arrived since the worker's last look, and the gaps it is
        still waiting on.

        Only the pending ones are returned as heads to schedule; every ``seq`` found is returned
        so the worker can tell a gap (a ``seq`` taken by a transaction not committed yet, or
        rolled back) from an event already delivered.
        """
        columns = "SELECT lane, seq, next_attempt_at, status FROM outbox"
        sql = f"{columns} WHERE seq > ?"
        if holes:  # a union, not OR: SQLite would scan the whole table for an OR
            sql += f" UNION ALL {columns} WHERE seq IN ({', '.join('?' * len(holes))})"
        rows = conn.execute(sql + " ORDER BY seq", (after_seq, *holes))
        heads: list[LaneHead] = []
        seqs: list[int] = []
        for lane, seq, due, status in rows:
            seqs.append(seq)
            if status == "pending":
                heads.append(LaneHead(lane, seq, due))
        return Arrivals(heads, seqs)

    def lane_heads(self, conn: Connection) -> tuple[list[LaneHead], int]:
        """The head of every lane with pending events, and the highest ``seq`` in the table.

        One pass over the pending events: run at start and after a replay, not per event. The
        highest ``seq`` is read first: on PostgreSQL each statement sees the commits made
        before it, so read after the heads it could count an event committed in between, one
        the heads do not hold, as already seen.
        """
        top = conn.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
        rows = conn.execute(
            "SELECT o.lane, o.seq, o.next_attempt_at FROM outbox o JOIN"
            " (SELECT MIN(seq) AS seq FROM outbox WHERE status = 'pending' GROUP BY lane) h"
            " ON o.seq = h.seq"
        )
        heads = sorted((LaneHead(r[0], r[1], r[2]) for r in rows), key=lambda h: h.seq)
        return heads, int(top or 0)

    def first_pending(self, conn: Connection, lane: str, from_seq: int) -> OutboxRow | None:
        """The pending event of ``lane`` with the lowest ``seq >= from_seq``."""
        row = conn.execute(
            "SELECT * FROM outbox WHERE lane = ? AND seq >= ? AND status = 'pending'"
            " ORDER BY seq LIMIT 1",
            (lane, from_seq),
        ).fetchone()
        return _row(row) if row else None

    def claim(
        self,
        conn: Connection,
        lane: str,
        from_seq: int,
        *,
        now: int,
        max_age_ms: int | None,
        force: bool = False,
        holder: Holder | None = None,
    ) -> Claim:
        """Claim the head of ``lane`` for one POST: count the attempt before it is made.

        ``from_seq`` must not exceed the lane's lowest pending ``seq``. Heads older than
        ``max_age_ms`` are dead-lettered first (``None``: no age limit now). ``force`` claims
        the head even when it is not due (the probe of a paused bridge).

        The claim is also the lane's lock across replicas: the head is marked ``claimed_by``
        the ``holder`` until its ``claim_until``. A head another live replica has claimed is
        left alone (the answer is ``head``, due again after :data:`BUSY_RETRY_MS`); a claim
        whose time ran out, or whose replica's heartbeat stopped, is taken over.
        """
        holder = holder or Holder.local()
        expired: list[str] = []
        while True:
            row = self.first_pending(conn, lane, from_seq)
            if row is None:
                return Claim(lane=lane, expired=tuple(expired))
            if max_age_ms is not None and now - row.queued_at >= max_age_ms:
                cursor = conn.execute(
                    _EXPIRE_HEAD,
                    (now, _expired_error(row, max_age_ms), row.seq, *holder.free_params()),
                )
                if cursor.rowcount == 0:
                    return self._busy(lane, row, now, expired)
                expired.append(row.event_id)
                from_seq = row.seq + 1
                continue
            if row.next_attempt_at > now and not force:
                return Claim(
                    lane=lane,
                    head=LaneHead(lane, row.seq, row.next_attempt_at),
                    expired=tuple(expired),
                )
            cursor = conn.execute(
                _CLAIM_HEAD,
                (holder.replica_id, holder.until, row.seq, *holder.free_params()),
            )
            if cursor.rowcount == 0:
                return self._busy(lane, row, now, expired)
            claimed = dataclasses.replace(row, attempts=row.attempts + 1)
            return Claim(lane=lane, row=claimed, expired=tuple(expired))

    @staticmethod
    def _busy(lane: str, row: OutboxRow, now: int, expired: list[str]) -> Claim:
        """Another replica has the head in flight: look again a little later."""
        head = LaneHead(lane, row.seq, max(row.next_attempt_at, now + BUSY_RETRY_MS))
        return Claim(lane=lane, head=head, expired=tuple(expired))

    def finish(
        self,
        conn: Connection,
        row: OutboxRow,
        *,
        status: str,
        status_code: int | None,
        error: str | None,
        next_attempt_at: int | None = None,
        failed: bool = False,
        holder: Holder | None = None,
        started_at: int | None = None,
    ) -> LaneHead | None:
        """Record the answer to one attempt and end its claim; return the lane's head afterwards.

        ``status`` ``delivered`` or ``dead`` ends the event; ``pending`` reschedules it at
        ``next_attempt_at`` (it stays the head of its lane), counting a failure when ``failed``.
        An answer that comes after another replica took the claim over changes nothing to the
        event. The attempt itself (started at ``started_at``) goes to its history either way.
        """
        now = now_ms(self.clock)
        mine = (holder or Holder.local()).replica_id
        if started_at is not None:
            conn.execute(
                "INSERT INTO delivery_attempts (event_id, attempt, at, duration_ms, status_code,"
                " error) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.event_id,
                    row.attempts,
                    started_at,
                    max(0, now - started_at),
                    status_code,
                    error[:_ATTEMPT_ERROR_CHARS] if error else None,
                ),
            )
        if status == "delivered":
            conn.execute(_FINISH_DELIVERED, (now, status_code, row.seq, mine))
        elif status == "dead":
            conn.execute(_FINISH_DEAD, (now, status_code, error, row.seq, mine))
        elif status == "pending":
            next_at = next_attempt_at if next_attempt_at is not None else now
            conn.execute(_FINISH_PENDING, (next_at, status_code, error, int(failed), row.seq, mine))
        else:
            raise ValueError(f"unknown outbox status {status!r}")
        # The next head's schedule only: its payload is decoded when it is claimed.
        head = conn.execute(
            "SELECT lane, seq, next_attempt_at FROM outbox WHERE lane = ? AND seq >= ?"
            " AND status = 'pending' ORDER BY seq LIMIT 1",
            (row.lane, row.seq),
        ).fetchone()
        return None if head is None else LaneHead(head[0], head[1], head[2])

    # -- replay and retention ---------------------------------------------------------------------

    def replay_one(self, conn: Connection, event_id: str) -> tuple[str, OutboxRow] | None:
        """Re-queue one dead or delivered event; returns its status before and the row now.

        A pending event is left alone (its status before is ``pending``). The event keeps its
        ``seq``, so it becomes the head of its lane again, and its ``created_at``; attempts
        restart at 0 and the age limit counts from now (``queued_at``).
        """
        row = self.get(conn, event_id)
        if row is None:
            return None
        if row.status == "pending":
            return row.status, row
        now = now_ms(self.clock)
        conn.execute(_REQUEUE + " WHERE seq = ?", (now, now, row.seq))
        after = self.get(conn, event_id)
        assert after is not None
        return row.status, after

    def replay_many(
        self,
        conn: Connection,
        *,
        status: str,
        connection_id: str | None,
        created_from: int | None = None,
        created_to: int | None = None,
    ) -> int:
        """Re-queue every ``status`` (dead or delivered) event, of one connection or all, with
        ``created_from <= createdAt < created_to`` when those are given."""
        if status not in ("dead", "delivered"):
            raise ValueError(f"only dead or delivered events can be replayed, not {status!r}")
        now = now_ms(self.clock)
        clauses, params = ["status = ?"], [now, now, status]
        if connection_id is not None:
            clauses.append("connection_id = ?")
            params.append(connection_id)
        if created_from is not None:
            clauses.append("created_at >= ?")
            params.append(created_from)
        if created_to is not None:
            clauses.append("created_at < ?")
            params.append(created_to)
        cursor = conn.execute(f"{_REQUEUE} WHERE {' AND '.join(clauses)}", params)
        return cursor.rowcount

    def attempts_of(self, conn: Connection, event_id: str) -> list[AttemptRecord]:
        """Every recorded POST of one event, oldest first."""
        rows = conn.execute(
            "SELECT attempt, at, duration_ms, status_code, error FROM delivery_attempts"
            " WHERE event_id = ? ORDER BY id",
            (event_id,),
        )
        return [AttemptRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def purge_delivered(
        self, conn: Connection, *, before: int, after_seq: int, limit: int
    ) -> PurgeBatch:
        """Delete delivered events older than ``before`` among the next ``limit`` by ``seq``.

        Bounded work per call, so the database thread is never held long; the caller walks on
        from ``last_seq``.
        """
        rows = conn.execute(
            "SELECT seq, delivered_at FROM outbox WHERE status = 'delivered' AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        old = [r[0] for r in rows if r[1] is not None and r[1] < before]
        self._delete(conn, old)
        return PurgeBatch(
            deleted=len(old), scanned=len(rows), last_seq=rows[-1][0] if rows else None
        )

    def purge_dead(self, conn: Connection, *, before: int, limit: int) -> int:
        """Delete up to ``limit`` dead letters dead-lettered before ``before`` (their history too)."""
        rows = conn.execute(
            "SELECT seq FROM outbox WHERE status = 'dead' AND dead_at < ? ORDER BY seq LIMIT ?",
            (before, limit),
        ).fetchall()
        self._delete(conn, [r[0] for r in rows])
        return len(rows)

    @staticmethod
    def _delete(conn: Connection, seqs: list[int]) -> None:
        """Delete events and their attempt history: the history lives as long as the event."""
        if not seqs:
            return
        conn.executemany(
            "DELETE FROM delivery_attempts WHERE event_id IN"
            " (SELECT event_id FROM outbox WHERE seq = ?)",
            [(s,) for s in seqs],
        )
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def status_counts(self, conn: Connection, connection_id: str | None = None) -> dict[str, int]:
        """How many events are pending, delivered and dead (of one connection, or all)."""
        counts = dict.fromkeys(("pending", "delivered", "dead"), 0)
        if connection_id is None:
            rows = conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status")
        else:
            rows = conn.execute(
                "SELECT status, COUNT(*) FROM outbox WHERE connection_id = ? GROUP BY status",
                (connection_id,),
            )
        counts.update({r[0]: r[1] for r in rows})
        return counts

    def delivery_counts(
        self, conn: Connection, connection_id: str | None = None
    ) -> dict[str, tuple[int, int]]:
        """(pending, dead) per connection (or of one), reading only pending and dead index entries."""
        counts: dict[str, tuple[int, int]] = {}
        where, params = "status IN ('pending', 'dead')", []
        if connection_id is not None:
            where, params = f"connection_id = ? AND {where}", [connection_id]
        for connection_id_, status, count in conn.execute(
            f"SELECT connection_id, status, COUNT(*) FROM outbox WHERE {where}"  # noqa: S608 - fixed clauses
            " GROUP BY connection_id, status",
            params,
        ):
            pending, dead = counts.get(connection_id_, (0, 0))
            counts[connection_id_] = (count, dead) if status == "pending" else (pending, count)
        return counts


_REQUEUE = (
    "UPDATE outbox SET status = 'pending', attempts = 0, failures = 0, next_attempt_at = ?,"
    " queued_at = ?, delivered_at = NULL, last_status_code = NULL, last_error = NULL,"
    " claimed_by = NULL, claim_until = NULL"
)
# The head is free to claim: nobody's, this holder's own, or its claim's time or replica gone.
_UNCLAIMED = (
    "(claimed_by IS NULL OR claimed_by = ? OR claim_until <= ?"
    " OR claimed_by NOT IN (SELECT replica_id FROM replicas WHERE seen_at > ?))"
)
_EXPIRE_HEAD = (
    "UPDATE outbox SET status = 'dead', dead_at = ?, last_error = ?, claimed_by = NULL, claim_until = NULL"  # noqa: S608 - constant clauses
    " WHERE seq = ? AND " + _UNCLAIMED
)
# An answer ends the claim; one that comes after another replica took the claim over is dropped.
_FINISH = (
    ", claimed_by = NULL, claim_until = NULL"
    " WHERE seq = ? AND status = 'pending' AND (claimed_by = ? OR claimed_by IS NULL)"
)
_FINISH_DELIVERED = (
    "UPDATE outbox SET status = 'delivered', delivered_at = ?, last_status_code = ?,"  # noqa: S608 - constant clauses
    " last_error = NULL" + _FINISH
)
_FINISH_DEAD = (
    "UPDATE outbox SET status = 'dead', dead_at = ?, last_status_code = ?, last_error = ?"  # noqa: S608 - constant clauses
    + _FINISH
)
_FINISH_PENDING = (
    "UPDATE outbox SET next_attempt_at = ?, last_status_code = ?, last_error = ?,"  # noqa: S608 - constant clauses
    " failures = failures + ?" + _FINISH
)
_CLAIM_HEAD = (
    "UPDATE outbox SET attempts = attempts + 1, claimed_by = ?, claim_until = ?"  # noqa: S608 - constant clauses
    " WHERE seq = ? AND status = 'pending' AND " + _UNCLAIMED
)


def _expired_error(row: OutboxRow, max_age_ms: int) -> str:
    last = f"; last answer: {row.last_error}" if row.last_error else ""
    return f"not delivered within BRIDGE_MAX_AGE_SECONDS ({max_age_ms // 1000} s){last}"
