"""Which replica runs which connection: leases in the database, kept by every replica.

Every :data:`TICK_SECONDS` a replica's :class:`LeaseKeeper`

1. beats its heart and renews every lease it holds, in one statement each, every third of the
   lease time (``SIDECAR_LEASE_SECONDS``, default 15 s);
2. stops the inbound loops it runs but no longer holds, or whose connection is no longer live
   (logged out, paused or re-paired on another replica), and starts those it holds but does
   not run;
3. takes free leases (never held, expired, or held by a replica whose heartbeat stopped) up to
   its fair share, ``ceil(live connections / live replicas)``, and hands back what it holds
   beyond that share, so leases spread over the replicas;
4. adopts the unfinished pairing sessions of replicas that are gone, and continues them from
   the state they saved (``Driver.pair`` resumes, as after a restart).

A replica that stops gracefully releases everything at once, so the others take over at their
next tick; one that dies loses its leases when its heartbeat is older than the lease time. One
cut off from the database for longer than the lease time stops its inbound loops itself (the
others may hold those leases by then, and it could not store what it read anyway), and starts
again what it still holds once a renewal succeeds.

The times here are wall-clock milliseconds (``time.time``), never a test's injected clock: they
are compared across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Final

from connector_sidecar._tasks import cancel_and_wait
from connector_sidecar.store._sql import Connection
from connector_sidecar.store.errors import StorageUnavailableError
from connector_sidecar.store.replicas import LIVE_STATUSES

if TYPE_CHECKING:
    from connector_sidecar.runtime import Runtime

__all__ = ["TICK_SECONDS", "LeaseKeeper", "wall_ms"]

log = logging.getLogger(__name__)

TICK_SECONDS: Final = 1.0


def wall_ms() -> int:
    return int(time.time() * 1000)


class LeaseKeeper:
    def __init__(self, runtime: Runtime, *, tick_seconds: float = TICK_SECONDS) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.replica_id = runtime.settings.replica_id
        self.lease_ms = int(runtime.settings.lease_seconds * 1000)
        self.tick_seconds = min(tick_seconds, runtime.settings.lease_seconds / 3)
        self._renewed_at = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.runtime.drivers)

    def until(self) -> int:
        return wall_ms() + self.lease_ms

    async def start(self) -> None:
        """Register this replica, forget what a previous life of it held, then tick once."""
        replicas = self.store.replicas
        exclusive = self.store.db.exclusive

        def work(conn: Connection) -> None:
            # A restart with the same replica id holds nothing: its loops are gone.
            replicas.forget(conn, self.replica_id)
            if exclusive:  # no other process can use this database: all others are gone
                replicas.forget_all_but(conn, self.replica_id)
            replicas.heartbeat(conn, self.replica_id, wall_ms())

        await self.store.db.transaction(work)
        self._renewed_at = wall_ms()
        await self.tick()
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def stop(self) -> None:
        """Stop ticking; release every lease (call once the inbound loops have stopped)."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        with contextlib.suppress(Exception):
            await self.store.db.transaction(self.store.replicas.forget, self.replica_id)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except StorageUnavailableError as exc:
                log.warning("lease keeping: %s; trying again in %.0f s", exc, self.tick_seconds)
                await self._let_go_if_expired()
            except Exception:
                log.exception("lease keeping failed; trying again in %.0f s", self.tick_seconds)
                await self._let_go_if_expired()

    async def _let_go_if_expired(self) -> None:
        if self.store.db.exclusive or wall_ms() - self._renewed_at < self.lease_ms:
            return  # SQLite: no other replica can take over; or the leases still hold
        for connection_id in sorted(self.runtime.running_connections()):
            log.warning(
                "connection %s: its lease ran out while the database was unreachable; stopping"
                " its inbound loop",
                connection_id,
            )
            await self.runtime.stop_connection(connection_id)

    async def tick(self) -> None:
        replicas, me, runtime = self.store.replicas, self.replica_id, self.runtime
        now = wall_ms()
        since = now - self.lease_ms
        if now - self._renewed_at >= self.lease_ms / 3:

            def renew(conn: Connection) -> None:
                replicas.heartbeat(conn, me, now)
                replicas.renew(conn, me, until=now + self.lease_ms)

            await self.store.db.transaction(renew)
            self._renewed_at = now

        held = await self.store.db.run(replicas.held, me)
        live = {c for c, status in held.items() if status in LIVE_STATUSES}
        for connection_id in runtime.running_connections() - live:
            log.info("connection %s is no longer this replica's to run; stopping it", connection_id)
            await runtime.stop_connection(connection_id)
        for connection_id in held.keys() - live:  # logged out, expired, paused: nothing to run
            await self.store.db.transaction(replicas.release, connection_id, me)
        if not self.kinds:
            return
        fleet = await self.store.db.run(
            lambda c: replicas.fleet(c, self.kinds, now=now, since=since)
        )
        share = math.ceil(fleet.connections / max(1, fleet.replicas))
        if len(live) < share and fleet.free:
            won = await self.store.db.transaction(
                lambda c: replicas.take(
                    c,
                    me,
                    self.kinds,
                    limit=share - len(live),
                    now=now,
                    since=since,
                    until=now + self.lease_ms,
                )
            )
            live.update(won)
        elif len(live) > share and fleet.replicas > 1:
            for connection_id in sorted(live)[share:]:
                await runtime.stop_connection(connection_id)
                await self.store.db.transaction(replicas.release, connection_id, me)
                live.discard(connection_id)
                log.info("connection %s handed over to spread the load", connection_id)
        for connection_id in live - runtime.running_connections():
            await runtime.start_connection_by_id(connection_id)
        adopted = await self.store.db.transaction(
            lambda c: replicas.adopt_sessions(c, me, self.kinds, since=since)
        )
        for session_id in adopted:
            await runtime.resume_session(session_id)
