"""What every replica must agree on about the bridge: an operator's pause of delivery.

One row per key in ``bridge_state``. The delivery worker of each replica reads it at start and
then every few seconds (at once on the replica that took the call), so a pause holds across
all of them.
"""

from __future__ import annotations

from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store._sql import Connection

__all__ = ["BridgeState"]

_PAUSED = "paused"


class BridgeState:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def paused(self, conn: Connection) -> bool:
        """Whether an operator paused delivery (``POST /bridge/pause``)."""
        row = conn.execute("SELECT value FROM bridge_state WHERE key = ?", (_PAUSED,)).fetchone()
        return row is not None and row[0] == "true"

    def touch(self, conn: Connection, replica_id: str) -> None:
        """A tiny write, for ``/readyz`` to prove the store takes writes."""
        conn.execute(
            "INSERT INTO bridge_state (key, value, updated_at) VALUES ('readyz', ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (replica_id, now_ms(self.clock)),
        )

    def set_paused(self, conn: Connection, paused: bool) -> None:
        conn.execute(
            "INSERT INTO bridge_state (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (_PAUSED, "true" if paused else "false", now_ms(self.clock)),
        )
