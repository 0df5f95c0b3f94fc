"""Replicas, their heartbeats and their connection leases (ARCHITECTURE "Where it runs").

A replica is alive while its heartbeat (``replicas.seen_at``) is younger than the lease time. A
connection's inbound loop runs only in the replica named by ``connections.lease_owner``, and only
while ``lease_until`` is in the future; the holder renews all its leases in one statement.
A lease whose time ran out, or whose holder's heartbeat stopped, may be taken by any replica,
with a conditional ``UPDATE`` that only one of them can win.

The same rule makes outbox claims and send owners expire with their replica: see ``outbox.py``
and ``ledger.py``.
"""

from __future__ import annotations

import dataclasses
import time

from connector_contracts import TERMINAL_SESSION_STATUSES
from connector_sidecar.store._sql import Connection

__all__ = ["LIVE_STATUSES", "Fleet", "Holder", "Replicas"]

LIVE_STATUSES = ("connected", "reconnecting")
_LIVE = "status IN ('connected', 'reconnecting')"
_EXPIRED = (
    "(lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?"
    " OR lease_owner NOT IN (SELECT replica_id FROM replicas WHERE seen_at > ?))"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """Who takes a claim, a lease or a send, in wall-clock milliseconds (compared across
    replicas): the replica, until when it holds, and since when a heartbeat counts as alive."""

    replica_id: str
    now: int
    until: int
    alive_since: int

    @classmethod
    def local(cls) -> Holder:
        """A holder for a single process: its claims hold for a minute."""
        now = int(time.time() * 1000)
        return cls("local", now, now + 60_000, now - 60_000)

    def free_params(self) -> tuple[str, int, int]:
        return (self.replica_id, self.now, self.alive_since)


@dataclasses.dataclass(frozen=True, slots=True)
class Fleet:
    """What one look at the database says: live replicas, live connections, how many are free."""

    replicas: int
    connections: int
    free: int


class Replicas:
    """Queries on ``replicas`` and on the lease columns of ``connections`` and ``sessions``."""

    def heartbeat(self, conn: Connection, replica_id: str, now: int) -> None:
        conn.execute(
            "INSERT INTO replicas (replica_id, started_at, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT (replica_id) DO UPDATE SET seen_at = excluded.seen_at",
            (replica_id, now, now),
        )

    def forget(self, conn: Connection, replica_id: str) -> None:
        """A replica that stops: its leases and claims are free at once, its heartbeat gone."""
        conn.execute(
            "UPDATE connections SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
            (replica_id,),
        )
        conn.execute(
            "UPDATE outbox SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = ?"
            " AND status = 'pending'",
            (replica_id,),
        )
        conn.execute(
            "UPDATE send_ledger SET owner = NULL, owner_until = NULL WHERE owner = ?",
            (replica_id,),
        )
        conn.execute("UPDATE sessions SET replica = NULL WHERE replica = ?", (replica_id,))
        conn.execute("DELETE FROM replicas WHERE replica_id = ?", (replica_id,))

    def forget_all_but(self, conn: Connection, replica_id: str) -> None:
        """For a database only this process can open (SQLite): every other replica is gone."""
        for (other,) in conn.execute(
            "SELECT replica_id FROM replicas WHERE replica_id <> ?", (replica_id,)
        ).fetchall():
            self.forget(conn, other)
        conn.execute(
            "UPDATE connections SET lease_owner = NULL, lease_until = NULL"
            " WHERE lease_owner IS NOT NULL AND lease_owner <> ?",
            (replica_id,),
        )
        conn.execute(
            "UPDATE outbox SET claimed_by = NULL, claim_until = NULL"
            " WHERE claimed_by IS NOT NULL AND claimed_by <> ? AND status = 'pending'",
            (replica_id,),
        )

    def is_alive(self, conn: Connection, replica_id: str, *, since: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM replicas WHERE replica_id = ? AND seen_at > ?", (replica_id, since)
        ).fetchone()
        return row is not None

    def alive(self, conn: Connection, *, since: int) -> list[str]:
        rows = conn.execute(
            "SELECT replica_id FROM replicas WHERE seen_at > ? ORDER BY replica_id", (since,)
        )
        return [r[0] for r in rows]

    # -- connection leases ------------------------------------------------------------------------

    def renew(self, conn: Connection, replica_id: str, *, until: int) -> None:
        """Every lease this replica holds, in one statement, whatever their number."""
        conn.execute(
            "UPDATE connections SET lease_until = ? WHERE lease_owner = ?", (until, replica_id)
        )

    def held(self, conn: Connection, replica_id: str) -> dict[str, str]:
        """The connections this replica holds, with their status."""
        rows = conn.execute(
            "SELECT connection_id, status FROM connections WHERE lease_owner = ?", (replica_id,)
        )
        return {r[0]: r[1] for r in rows}

    def fleet(self, conn: Connection, kinds: tuple[str, ...], *, now: int, since: int) -> Fleet:
        marks = ",".join("?" * len(kinds))
        sql = (
            "SELECT (SELECT COUNT(*) FROM replicas WHERE seen_at > ?),"  # noqa: S608 - fixed clauses
            f" (SELECT COUNT(*) FROM connections WHERE {_LIVE} AND kind IN ({marks})),"
            f" (SELECT COUNT(*) FROM connections WHERE {_LIVE} AND kind IN ({marks}) AND {_EXPIRED})"
        )
        row = conn.execute(sql, (since, *kinds, *kinds, now, since)).fetchone()
        return Fleet(replicas=int(row[0]), connections=int(row[1]), free=int(row[2]))

    def take(
        self,
        conn: Connection,
        replica_id: str,
        kinds: tuple[str, ...],
        *,
        limit: int,
        now: int,
        since: int,
        until: int,
    ) -> list[str]:
        """Take up to ``limit`` free live connections; returns the ones this replica won."""
        marks = ",".join("?" * len(kinds))
        candidates = [
            r[0]
            for r in conn.execute(
                f"SELECT connection_id FROM connections WHERE {_LIVE} AND kind IN ({marks})"  # noqa: S608 - fixed clauses
                f" AND {_EXPIRED} ORDER BY connection_id LIMIT ? FOR UPDATE SKIP LOCKED",
                (*kinds, now, since, limit),
            )
        ]
        won: list[str] = []
        for connection_id in candidates:
            cursor = conn.execute(
                "UPDATE connections SET lease_owner = ?, lease_until = ?"  # noqa: S608 - fixed clauses
                f" WHERE connection_id = ? AND {_LIVE} AND {_EXPIRED}",
                (replica_id, until, connection_id, now, since),
            )
            if cursor.rowcount == 1:
                won.append(connection_id)
        return won

    def grant(self, conn: Connection, connection_id: str, replica_id: str, *, until: int) -> None:
        """The lease of a connection this replica just paired (the old holder stops when it sees)."""
        conn.execute(
            "UPDATE connections SET lease_owner = ?, lease_until = ? WHERE connection_id = ?",
            (replica_id, until, connection_id),
        )

    def release(self, conn: Connection, connection_id: str, replica_id: str) -> None:
        conn.execute(
            "UPDATE connections SET lease_owner = NULL, lease_until = NULL"
            " WHERE connection_id = ? AND lease_owner = ?",
            (connection_id, replica_id),
        )

    # -- pairing sessions -------------------------------------------------------------------------

    def adopt_sessions(
        self, conn: Connection, replica_id: str, kinds: tuple[str, ...], *, since: int
    ) -> list[str]:
        """Take over the unfinished pairing sessions of replicas that are gone (or of none)."""
        terminal = sorted(TERMINAL_SESSION_STATUSES)
        marks = ",".join("?" * len(kinds))
        rows = conn.execute(
            "SELECT session_id FROM sessions WHERE status NOT IN"  # noqa: S608 - fixed clauses
            f" ({','.join('?' * len(terminal))}) AND kind IN ({marks}) AND (replica IS NULL"
            " OR replica NOT IN (SELECT replica_id FROM replicas WHERE seen_at > ?))"
            " ORDER BY created_at",
            (*terminal, *kinds, since),
        ).fetchall()
        adopted: list[str] = []
        for (session_id,) in rows:
            cursor = conn.execute(
                "UPDATE sessions SET replica = ? WHERE session_id = ? AND (replica IS NULL"
                " OR replica NOT IN (SELECT replica_id FROM replicas WHERE seen_at > ?))",
                (replica_id, session_id, since),
            )
            if cursor.rowcount == 1:
                adopted.append(session_id)
        return adopted
