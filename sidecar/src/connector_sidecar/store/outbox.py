"""The outbox: every inbound message as a BridgeEvent, stored before the vendor is acknowledged.

Rows are ``pending`` until the delivery worker hands them to the host (``delivered``) or gives up
(``dead``). ``seq`` is the arrival order; the ``lane`` (connection, peer, thread) is the unit of
ordering: within a lane, events are delivered strictly in ``seq`` order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from connector_contracts import BridgeEvent, format_timestamp
from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store.connections import ConnectionRecord

__all__ = [
    "EnqueueResult",
    "InboundMessage",
    "Outbox",
    "OutboxRow",
    "event_id_for",
    "lane_for",
]

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(BridgeEvent)


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
    event: BridgeEvent
    created_at: int
    next_attempt_at: int
    delivered_at: int | None
    last_status_code: int | None
    last_error: str | None


def row_to_outbox(row: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        seq=row["seq"],
        event_id=row["event_id"],
        connection_id=row["connection_id"],
        lane=row["lane"],
        status=row["status"],
        attempts=row["attempts"],
        event=_event_decoder.decode(row["payload"]),
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        delivered_at=row["delivered_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
    )


class Outbox:
    """Queries on the ``outbox`` table; each takes the connection of the DB thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def enqueue(
        self,
        conn: sqlite3.Connection,
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
                "INSERT INTO outbox (event_id, connection_id, lane, status, payload, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                (
                    event_id,
                    connection.connection_id,
                    lane_for(connection.connection_id, message.peer_id, message.thread_id),
                    _encoder.encode(event),
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

    def get(self, conn: sqlite3.Connection, event_id: str) -> OutboxRow | None:
        row = conn.execute("SELECT * FROM outbox WHERE event_id = ?", (event_id,)).fetchone()
        return row_to_outbox(row) if row else None

    def page(
        self,
        conn: sqlite3.Connection,
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
        return [row_to_outbox(r) for r in rows]
