"""Connections: a paired vendor account and its login."""

from __future__ import annotations

import dataclasses
from typing import Any

from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store._rows import record_from_row, update_row
from connector_sidecar.store._sql import Connection

__all__ = ["ConnectionRecord", "Connections"]

_JSON_FIELDS = ("credentials", "options")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionRecord:
    connection_id: str
    channel_id: str
    kind: str
    status: str
    account_id: str | None = None
    display_name: str | None = None
    credentials: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    options: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    last_error: str | None = None
    last_inbound_at: int | None = None
    last_outbound_at: int | None = None
    created_at: int = 0
    updated_at: int = 0
    lease_owner: str | None = None  # the replica running the inbound loop
    lease_until: int | None = None

    @property
    def is_live(self) -> bool:
        """Whether the inbound loop should run (connected, or reconnecting by itself)."""
        return self.status in ("connected", "reconnecting")


def _row(row: Any) -> ConnectionRecord:
    return record_from_row(ConnectionRecord, row, _JSON_FIELDS)


class Connections:
    """Queries on the ``connections`` table; each takes the connection of the DB thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def get(self, conn: Connection, connection_id: str) -> ConnectionRecord | None:
        row = conn.execute(
            "SELECT * FROM connections WHERE connection_id = ?", (connection_id,)
        ).fetchone()
        return _row(row) if row else None

    def all(self, conn: Connection) -> list[ConnectionRecord]:
        return [
            _row(r)
            for r in conn.execute("SELECT * FROM connections ORDER BY created_at, connection_id")
        ]

    def ensure(
        self, conn: Connection, *, connection_id: str, channel_id: str, kind: str
    ) -> ConnectionRecord:
        """The connection, created in status ``pairing`` if it does not exist yet."""
        now = now_ms(self.clock)
        conn.execute(
            "INSERT INTO connections (connection_id, channel_id, kind, status, created_at, updated_at)"
            " VALUES (?, ?, ?, 'pairing', ?, ?) ON CONFLICT (connection_id) DO NOTHING",
            (connection_id, channel_id, kind, now, now),
        )
        record = self.get(conn, connection_id)
        assert record is not None
        return record

    def lock(self, conn: Connection, connection_id: str) -> None:
        """Hold the connection's row until the transaction ends: the per-connection turn that
        PostgreSQL transactions take (SQLite's write transactions already take turns)."""
        conn.execute(
            "SELECT connection_id FROM connections WHERE connection_id = ? FOR UPDATE",
            (connection_id,),
        ).fetchall()

    def delete(self, conn: Connection, connection_id: str) -> bool:
        """Remove the connection and its login; its outbox events stay, to be delivered."""
        cursor = conn.execute("DELETE FROM connections WHERE connection_id = ?", (connection_id,))
        return cursor.rowcount == 1

    def update(self, conn: Connection, connection_id: str, **changes: Any) -> ConnectionRecord:
        return update_row(
            conn,
            table="connections",
            key=("connection_id", connection_id),
            record=ConnectionRecord,
            json_fields=_JSON_FIELDS,
            changes=changes,
            now=now_ms(self.clock),
        )
