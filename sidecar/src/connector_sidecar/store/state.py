"""Per-connection vendor state: cursors, reply tokens. Reset on a re-pair."""

from __future__ import annotations

from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store._sql import Connection

__all__ = ["ConnectionState"]


class ConnectionState:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def get(self, conn: Connection, connection_id: str, key: str) -> str | None:
        row = conn.execute(
            "SELECT value FROM connection_state WHERE connection_id = ? AND key = ?",
            (connection_id, key),
        ).fetchone()
        return None if row is None else str(row[0])

    def set(self, conn: Connection, connection_id: str, key: str, value: str) -> None:
        conn.execute(
            "INSERT INTO connection_state (connection_id, key, value, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (connection_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (connection_id, key, value, now_ms(self.clock)),
        )

    def set_many(self, conn: Connection, connection_id: str, values: dict[str, str]) -> None:
        for key, value in values.items():
            self.set(conn, connection_id, key, value)

    def reset(self, conn: Connection, connection_id: str) -> None:
        conn.execute("DELETE FROM connection_state WHERE connection_id = ?", (connection_id,))
