"""The runtime: drivers, their background tasks, and the callbacks drivers use (DriverContext).

It owns one task per live connection (the driver's inbound loop, supervised: an unexpected crash
is logged and the loop restarted after a pause) and one task per pairing session.

Every change of a connection's status goes through :meth:`Runtime.change_status` (or the login
transaction), which enqueues its ``connection.status`` event in the same transaction. A pairing
that fails (``expired``, ``error``) moves a connection that never logged in from ``pairing`` to
``error``, so it does not look like it is still pairing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from connector_sidecar._clock import Clock
from connector_sidecar._logging import bind_log_context
from connector_sidecar._secret import without_secrets
from connector_sidecar._tasks import cancel_and_wait
from connector_sidecar._text import repaired, storable_message, storable_text
from connector_sidecar.config import Settings
from connector_sidecar.drivers.base import Driver, SessionClosedError
from connector_sidecar.leases import LeaseKeeper
from connector_sidecar.media import with_media_ids
from connector_sidecar.metrics import CountingClient, Metrics
from connector_sidecar.store import (
    ConnectionRecord,
    EnqueueResult,
    InboundMessage,
    SessionRecord,
    Store,
)

__all__ = ["DriverContext", "Runtime"]

log = logging.getLogger(__name__)

OutboxListener = Callable[[], None]
InboundListener = Callable[[ConnectionRecord, Sequence[EnqueueResult]], Awaitable[None]]


class DriverContext:
    """What a driver may use: settings, the store, the clock, and callbacks into the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self.settings: Settings = runtime.settings
        self.store: Store = runtime.store
        self.clock: Clock = runtime.clock

    def http_client(self, *, kind: str = "unknown", **kwargs: Any) -> httpx.AsyncClient:
        """A new vendor HTTP client (its calls counted in metrics); the driver closes it in ``aclose``."""
        kwargs.setdefault("timeout", httpx.Timeout(15.0))
        kwargs.setdefault("headers", {"User-Agent": "connector-sidecar"})
        metrics = self._runtime.metrics
        return CountingClient(on_call=lambda outcome: metrics.vendor_call(kind, outcome), **kwargs)

    async def get_session(self, session_id: str) -> SessionRecord | None:
        return await self.store.db.run(self.store.sessions.get, session_id)

    async def update_session(self, session_id: str, **changes: Any) -> SessionRecord:
        """Change a running session; one that has ended (possibly on another replica: a scan,
        a cancel) stays as it ended, and the driver gets :class:`SessionClosedError`."""
        changes, _ = repaired(changes)  # vendor names and errors (see _text)
        return await self._runtime.update_session(session_id, **changes)

    def session_signal(self, session_id: str) -> asyncio.Event:
        """Set when the host acts on a session (a verify code); the driver clears it."""
        return self._runtime.session_signal(session_id)

    async def session_connected(
        self,
        session_id: str,
        *,
        account_id: str,
        display_name: str | None,
        credentials: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> ConnectionRecord:
        """Store the new login, finish the session, and (re)start the connection's inbound loop."""
        return await self._runtime.session_connected(
            session_id,
            account_id=storable_text(account_id),
            display_name=display_name and storable_text(display_name),
            credentials=credentials,
            metadata=repaired(metadata or {})[0],
        )

    async def cancel_pairing(self, session_id: str) -> None:
        """End the background pairing task of a session (after the driver finished it otherwise)."""
        await self._runtime.cancel_session(session_id)

    async def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        return await self.store.db.run(self.store.connections.get, connection_id)

    async def set_status(
        self, connection_id: str, status: str, *, last_error: str | None = None
    ) -> ConnectionRecord:
        """Move a connection to ``status``; ``auth_expired`` also stops its inbound loop."""
        if last_error is not None:
            last_error = storable_text(last_error)  # it may quote the vendor's errmsg
        return await self._runtime.set_status(connection_id, status, last_error=last_error)

    async def ingest(
        self,
        connection_id: str,
        messages: Sequence[InboundMessage],
        *,
        state: dict[str, str] | None = None,
        check: Callable[[ConnectionRecord | None], None] | None = None,
    ) -> list[EnqueueResult]:
        """Commit messages to the outbox and the vendor state (cursor, tokens) in one transaction.

        Returns once the commit is durable: only then may the driver acknowledge the vendor or
        poll with the new cursor. Every string is made storable first (``_text``): a lone
        surrogate from the vendor becomes U+FFFD, so no message can fail its whole batch.
        ``check`` sees the connection (None: unknown) inside the transaction, before anything is
        written; what it raises ends the transaction with nothing written and reaches the caller.
        """
        storable = [storable_message(message) for message in messages]
        if state:
            state = repaired(state)[0]
        return await self._runtime.ingest(connection_id, storable, state=state, check=check)

    async def get_state(self, connection_id: str, key: str) -> str | None:
        return await self.store.db.run(self.store.state.get, connection_id, key)


class Runtime:
    SUPERVISOR_PAUSE_SECONDS = 5.0

    def __init__(
        self, settings: Settings, store: Store, clock: Clock, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.ctx = DriverContext(self)
        self.drivers: dict[str, Driver] = {}
        self._connection_tasks: dict[str, asyncio.Task[None]] = {}
        self._session_tasks: dict[str, asyncio.Task[None]] = {}
        self._session_signals: dict[str, asyncio.Event] = {}
        self._outbox_listeners: list[OutboxListener] = []
        self._inbound_listeners: list[InboundListener] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._ingesting: dict[str, set[asyncio.Future[Any]]] = {}
        self.leases = LeaseKeeper(self)

    # -- wiring -----------------------------------------------------------------------------------

    def add_driver(self, driver: Driver) -> None:
        self.drivers[driver.kind] = driver

    def on_outbox(self, listener: OutboxListener) -> None:
        """Called after new events are committed to the outbox (the delivery worker's wake-up)."""
        self._outbox_listeners.append(listener)

    def on_inbound(self, listener: InboundListener) -> None:
        """Called after a batch of messages is committed (flushes deferred sends)."""
        self._inbound_listeners.append(listener)

    def spawn(self, coro: Awaitable[Any], *, name: str) -> asyncio.Task[Any]:
        """A background task kept alive until it ends or the runtime stops."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        if self._stopping:
            task.cancel()  # stop() has already collected its tasks; this one would outlive it
            return task
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)
        return task

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take this replica's share of the live connections and adopt orphaned pairings."""
        for session in await self.store.db.run(self.store.sessions.non_terminal):
            if session.kind not in self.drivers:
                await self.ctx.update_session(
                    session.session_id,
                    status="error",
                    error=f"connector {session.kind!r} is not enabled",
                )
        await self.leases.start()

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._connection_tasks.values(), *self._session_tasks.values(), *self._background]
        await cancel_and_wait(tasks)
        self._connection_tasks.clear()
        self._session_tasks.clear()
        await self.leases.stop()
        for driver in self.drivers.values():
            with contextlib.suppress(Exception):
                await driver.aclose()

    # -- connections ------------------------------------------------------------------------------

    def start_connection(self, connection: ConnectionRecord) -> None:
        self.stop_connection_nowait(connection.connection_id)
        if self._stopping:
            return
        task = asyncio.create_task(
            self._supervise(connection.connection_id), name=f"inbound:{connection.connection_id}"
        )
        self._connection_tasks[connection.connection_id] = task

    def stop_connection_nowait(self, connection_id: str) -> asyncio.Task[None] | None:
        task = self._connection_tasks.pop(connection_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        return task

    async def stop_connection(self, connection_id: str) -> None:
        """Stop the inbound loop, and wait for the ingest it had handed to the store: on
        PostgreSQL that transaction runs beside the caller's next one, not before it."""
        task = self.stop_connection_nowait(connection_id)
        if task is not None:
            await cancel_and_wait([task])
        pending = self._ingesting.pop(connection_id, set())
        await asyncio.gather(*pending, return_exceptions=True)

    def running_connections(self) -> set[str]:
        return {c for c, task in self._connection_tasks.items() if not task.done()}

    async def start_connection_by_id(self, connection_id: str) -> None:
        connection = await self.ctx.get_connection(connection_id)
        if connection is not None and connection.is_live and connection.kind in self.drivers:
            self.start_connection(connection)

    def connection_running(self, connection_id: str) -> bool:
        task = self._connection_tasks.get(connection_id)
        return task is not None and not task.done()

    async def _supervise(self, connection_id: str) -> None:
        bind_log_context(connectionId=connection_id)  # this task's own context
        while True:
            connection = await self.ctx.get_connection(connection_id)
            if connection is None or not connection.is_live:
                return
            driver = self.drivers[connection.kind]
            try:
                await driver.run(connection)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "inbound loop of %s crashed; restarting in %.0f s",
                    connection_id,
                    self.SUPERVISOR_PAUSE_SECONDS,
                )
            await asyncio.sleep(self.SUPERVISOR_PAUSE_SECONDS)

    def change_status(
        self, conn: Any, connection_id: str, status: str, **changes: Any
    ) -> ConnectionRecord:
        """In a transaction: move a connection to ``status`` and enqueue its event."""
        self.store.connections.lock(conn, connection_id)
        before = self.store.connections.get(conn, connection_id)
        if before is None:
            raise KeyError(connection_id)
        record = self.store.connections.update(conn, connection_id, status=status, **changes)
        self.store.events.connection_status(conn, record, before.status)
        return record

    def outbox_changed(self) -> None:
        """New events were committed: wake the delivery worker."""
        for listener in self._outbox_listeners:
            listener()

    async def update_session(self, session_id: str, **changes: Any) -> SessionRecord:
        """Update a session; a failed pairing also marks its never-connected connection."""

        def work(conn: Any) -> tuple[SessionRecord, bool]:
            current = self.store.sessions.get(conn, session_id)
            if current is not None and current.is_terminal:
                raise SessionClosedError(current)  # it ended as it ended, on any replica
            session = self.store.sessions.update(conn, session_id, **changes)
            if session.status not in ("expired", "error"):
                return session, False
            connection = self.store.connections.get(conn, session.connection_id)
            if connection is None or connection.status != "pairing":
                return session, False
            self.change_status(
                conn,
                session.connection_id,
                "error",
                last_error=f"pairing {session.status}: {session.error or 'no reason given'}",
            )
            return session, True

        session, changed = await self.store.db.transaction(work)
        if changed:
            self.outbox_changed()
        return session

    async def set_status(
        self, connection_id: str, status: str, *, last_error: str | None = None
    ) -> ConnectionRecord:
        changes: dict[str, Any] = {}
        if last_error is not None or status == "connected":
            changes["last_error"] = last_error

        def work(conn: Any) -> tuple[ConnectionRecord, bool]:
            self.store.connections.lock(conn, connection_id)
            current = self.store.connections.get(conn, connection_id)
            if current is None:
                raise KeyError(connection_id)
            if current.status == "paused" and status != "auth_expired":
                # An operator paused it: a loop still winding down must not undo that.
                return current, False
            return self.change_status(conn, connection_id, status, **changes), True

        record, changed = await self.store.db.transaction(work)
        if not changed:
            self.stop_connection_nowait(connection_id)
            return record
        self.outbox_changed()
        if not record.is_live:
            self.stop_connection_nowait(connection_id)
        log.info(
            "connection %s is %s%s", connection_id, status, f" ({last_error})" if last_error else ""
        )
        return record

    async def resume(self, connection_id: str) -> ConnectionRecord | None:
        """Resume a paused connection here (it takes the lease); None if it was not paused.

        Raises :class:`KeyError` for an unknown connection, :class:`ValueError` for one that is
        neither paused nor live.
        """

        def work(conn: Any) -> ConnectionRecord | None:
            self.store.connections.lock(conn, connection_id)
            current = self.store.connections.get(conn, connection_id)
            if current is None:
                raise KeyError(connection_id)
            if current.is_live:
                return None
            if current.status != "paused":
                raise ValueError(current.status)
            self.store.replicas.grant(
                conn, connection_id, self.settings.replica_id, until=self.leases.until()
            )
            return self.change_status(conn, connection_id, "connected", last_error=None)

        record = await self.store.db.transaction(work)
        if record is not None:
            self.outbox_changed()
            if record.kind in self.drivers:
                self.start_connection(record)
        return record

    async def ingest(
        self,
        connection_id: str,
        messages: Sequence[InboundMessage],
        *,
        state: dict[str, str] | None,
        check: Callable[[ConnectionRecord | None], None] | None = None,
    ) -> list[EnqueueResult]:
        # Media descriptors get their mediaId before the event is stored (docs/CONTRACT.md §10.1).
        messages = [with_media_ids(connection_id, m) for m in messages]

        def work(conn: Any) -> tuple[ConnectionRecord, list[EnqueueResult]]:
            connection = self.store.connections.get(conn, connection_id)
            if check is not None:
                check(connection)
            if connection is None:
                raise KeyError(connection_id)
            results = self.store.outbox.enqueue(conn, connection, messages) if messages else []
            for message in messages:
                media = message.metadata.get("media")
                for descriptor in media if isinstance(media, list) else []:
                    if descriptor.get("url"):
                        self.store.media.register(
                            conn, connection_id, message.message_id, descriptor
                        )
            if state:
                self.store.state.set_many(conn, connection_id, state)
            return connection, results

        stored = asyncio.ensure_future(self.store.db.transaction(work))
        pending = self._ingesting.setdefault(connection_id, set())
        pending.add(stored)
        stored.add_done_callback(pending.discard)
        stored.add_done_callback(_mark_seen)  # its caller (an inbound loop) may be cancelled
        connection, results = await asyncio.shield(stored)
        self.metrics.inbound(connection.kind, results)
        if any(r.inserted for r in results):
            for listener in self._outbox_listeners:
                listener()
        if results:
            for inbound_listener in self._inbound_listeners:
                await inbound_listener(connection, results)
        return results

    # -- sessions ---------------------------------------------------------------------------------

    def session_signal(self, session_id: str) -> asyncio.Event:
        return self._session_signals.setdefault(session_id, asyncio.Event())

    async def resume_session(self, session_id: str) -> None:
        """Continue a pairing this replica adopted (after a restart, or from a replica gone)."""
        session = await self.ctx.get_session(session_id)
        if session is not None and not session.is_terminal and session.kind in self.drivers:
            log.info("continuing pairing session %s", session_id)
            self.start_session_task(session)

    def start_session_task(self, session: SessionRecord) -> None:
        if self._stopping or session.session_id in self._session_tasks:
            return
        driver = self.drivers[session.kind]
        task = asyncio.create_task(
            self._run_pairing(driver, session), name=f"pairing:{session.session_id}"
        )
        self._session_tasks[session.session_id] = task

    async def _run_pairing(self, driver: Driver, session: SessionRecord) -> None:
        bind_log_context(sessionId=session.session_id, connectionId=session.connection_id)
        try:
            await driver.pair(session)
        except asyncio.CancelledError:
            raise
        except SessionClosedError as exc:
            log.info("%s", exc)
        except Exception as exc:
            log.exception("pairing session %s failed", session.session_id)
            current = await self.ctx.get_session(session.session_id)
            if current is not None and not current.is_terminal:
                await self.ctx.update_session(
                    session.session_id, status="error", error=f"pairing failed: {exc}"
                )
        finally:
            self._session_tasks.pop(session.session_id, None)
            self._session_signals.pop(session.session_id, None)

    async def cancel_session(self, session_id: str) -> None:
        task = self._session_tasks.pop(session_id, None)
        if task is not None:
            await cancel_and_wait([task])

    async def close_session(self, session_id: str, *, error: str) -> SessionRecord | None:
        """Stop a session's pairing task and mark it ``cancelled``, unless it ended meanwhile.

        The read and the write share one transaction, so a login confirmed just before the
        cancel stays ``connected`` instead of being overwritten.
        """
        await self.cancel_session(session_id)

        def work(conn: Any) -> SessionRecord | None:
            current = self.store.sessions.get(conn, session_id)
            if current is None or current.is_terminal:
                return current
            return self.store.sessions.update(conn, session_id, status="cancelled", error=error)

        return await self.store.db.transaction(work)

    async def session_connected(
        self,
        session_id: str,
        *,
        account_id: str,
        display_name: str | None,
        credentials: dict[str, Any],
        metadata: dict[str, Any],
    ) -> ConnectionRecord:
        # Shielded: once the new login is stored, its inbound loop must start even if the
        # pairing task that confirmed it is cancelled meanwhile (a host's cancel, a re-pair).
        # stop() still cancels it: the next start finds the connection live in the store.
        login = _Login(account_id, display_name, credentials, metadata)
        task = asyncio.ensure_future(self._store_login(session_id, login))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_mark_seen)
        return await asyncio.shield(task)

    async def _store_login(self, session_id: str, login: _Login) -> ConnectionRecord:
        def work(conn: Any) -> tuple[ConnectionRecord, bool]:
            session = self.store.sessions.get(conn, session_id)
            if session is None:
                raise KeyError(session_id)
            if session.is_terminal:
                raise SessionClosedError(session)
            previous = self.store.connections.get(conn, session.connection_id)
            repair = previous is not None and bool(previous.credentials)
            if repair:
                # The new login replaces the old: vendor cursor and reply tokens belong to it.
                self.store.state.reset(conn, session.connection_id)
            self.store.replicas.grant(
                conn, session.connection_id, self.settings.replica_id, until=self.leases.until()
            )
            record = self.store.connections.update(
                conn,
                session.connection_id,
                status="connected",
                account_id=login.account_id,
                display_name=login.display_name,
                credentials=login.credentials,
                options=without_secrets(session.options),
                last_error=None,
            )
            self.store.sessions.update(
                conn,
                session_id,
                status="connected",
                account_id=login.account_id,
                vendor_name=login.display_name,
                error=None,
                metadata={
                    "stateRef": f"sqlite:connections/{session.connection_id}",
                    **login.metadata,
                },
            )
            self.store.events.connection_status(
                conn, record, previous.status if previous is not None else "pairing"
            )
            return record, repair

        session = await self.ctx.get_session(session_id)
        if session is None:
            raise KeyError(session_id)
        bind_log_context(sessionId=session_id, connectionId=session.connection_id)  # own task
        if session.is_terminal:
            raise SessionClosedError(session)
        previous = await self.ctx.get_connection(session.connection_id)
        # The old login's inbound loop stops before the reset: a poll it has in hand could
        # otherwise store the old login's cursor on top of the reset state.
        await self.stop_connection(session.connection_id)
        try:
            record, repair = await self.store.db.transaction(work)
        except Exception:
            if previous is not None and previous.is_live:
                self.start_connection(previous)  # refused: the old login goes on
            raise
        log.info(
            "connection %s %s as %s",
            record.connection_id,
            "re-paired" if repair else "connected",
            login.account_id,
        )
        self.outbox_changed()
        self.start_connection(record)
        return record


@dataclasses.dataclass(frozen=True)
class _Login:
    """A vendor login a pairing session confirmed, on its way to the store."""

    account_id: str
    display_name: str | None
    credentials: dict[str, Any] = dataclasses.field(repr=False)
    metadata: dict[str, Any]


def _mark_seen(task: asyncio.Future[Any]) -> None:
    """Retrieve a shielded task's exception: its caller may have been cancelled meanwhile."""
    if not task.cancelled():
        task.exception()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())
