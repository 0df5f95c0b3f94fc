"""Lifecycle events: ``connection.status`` and ``send.status`` rows in the outbox (v1.1).

Rules:

- An event is enqueued in the *same transaction* as the change it reports (a status written, a
  deferred send flushed or expired), so a host never hears of a change that was rolled back,
  and never misses one that was committed.
- Only the types named in ``BRIDGE_EVENT_TYPES`` are stored; a host that enables none sees
  exactly the messages it saw before.
- They are outbox rows like messages (the same signing, retries, dead letters, replay), in a
  lane of their own per connection (:func:`lifecycle_lane`), so the status changes of one
  connection reach the host in the order they happened, and never wait behind a conversation.
- A ``connection.status`` event has a random id (the same status can recur); a ``send.status``
  event's id comes from the requestId and the status, so it is stored once per outcome.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

import msgspec

from connector_contracts import ConnectionStatusEvent, SendStatusEvent, format_timestamp
from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store._sql import Connection
from connector_sidecar.store.connections import ConnectionRecord
from connector_sidecar.store.ledger import LedgerEntry
from connector_sidecar.store.outbox import event_id_for

__all__ = ["LifecycleEvents", "lifecycle_lane"]

_encoder = msgspec.json.Encoder()


def lifecycle_lane(connection_id: str) -> str:
    """One lane per connection; a message lane always holds two ``\\x1f``, this one none."""
    return f"{connection_id}\x1elifecycle"


class LifecycleEvents:
    """Enqueues lifecycle events, when enabled; each method takes the DB thread's connection."""

    def __init__(self, clock: Clock, enabled: Iterable[str] = ("message",)) -> None:
        self.clock = clock
        self.enabled = frozenset(enabled)

    def connection_status(
        self, conn: Connection, record: ConnectionRecord, previous_status: str | None
    ) -> bool:
        """Enqueue ``record``'s status as a ``connection.status`` event, if it changed."""
        if "connection.status" not in self.enabled or record.status == previous_status:
            return False
        now = now_ms(self.clock)
        event = ConnectionStatusEvent(
            event_id=f"evt_{secrets.token_hex(16)}",
            timestamp=format_timestamp(now / 1000),
            delivery_attempt=0,
            connection_id=record.connection_id,
            channel_id=record.channel_id,
            kind=record.kind,
            account_id=record.account_id,
            status=record.status,
            previous_status=previous_status,
            last_error=record.last_error,
        )
        return self._insert(conn, record.connection_id, event.event_id, _encoder.encode(event), now)

    def send_status(self, conn: Connection, entries: Iterable[LedgerEntry]) -> int:
        """Enqueue a ``send.status`` event for each deferred send that ended; how many were new."""
        if "send.status" not in self.enabled:
            return 0
        stored = 0
        now = now_ms(self.clock)
        for entry in entries:
            record = conn.execute(
                "SELECT channel_id, kind FROM connections WHERE connection_id = ?",
                (entry.connection_id,),
            ).fetchone()
            request = entry.request
            event = SendStatusEvent(
                event_id=event_id_for(
                    entry.connection_id, f"send.status\n{entry.request_id}\n{entry.status}"
                ),
                timestamp=format_timestamp(now / 1000),
                delivery_attempt=0,
                connection_id=entry.connection_id,
                channel_id=record[0] if record else (request.channel_id or ""),
                kind=record[1] if record else (request.kind or ""),
                request_id=entry.request_id,
                status=entry.status,
                provider_message_ids=list(entry.provider_ids),
            )
            encoded = _encoder.encode(event)
            stored += self._insert(conn, entry.connection_id, event.event_id, encoded, now)
        return stored

    @staticmethod
    def _insert(
        conn: Connection, connection_id: str, event_id: str, payload: bytes, now: int
    ) -> bool:
        cursor = conn.execute(
            "INSERT INTO outbox (event_id, connection_id, lane, status, payload, created_at,"
            " queued_at, next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING",
            (event_id, connection_id, lifecycle_lane(connection_id), payload, now, now, now),
        )
        return cursor.rowcount == 1
