"""Dedupe stores: process each bridge event once, though the sidecar delivers at least once.

The rules, shared by every store:

- the key is ``"{connection_id}:{event_id}"``;
- a new key is processed: status ``processing``, attempts ``max(1, delivery_attempt)``;
- ``completed``: not processed again; answer 200 (a duplicate);
- ``processing`` for less than the processing TTL: not processed; answer 409, retry in 5 s;
- ``processing`` for longer (the worker died) or ``failed``: processed again, attempts
  ``max(previous + 1, delivery_attempt)``, ``last_error`` cleared;
- ``complete(key, message_id)`` marks it done; ``fail(key, error)`` marks it failed, except
  that a ``completed`` event stays completed (a late failure report must not make a
  redelivery run the work twice).

Records are kept for a retention window longer than the sidecar's retry horizon
(``BRIDGE_MAX_AGE_SECONDS``, one day by default; seven days here) and then purged by a
background task of the store, every purge interval, so it never grows without bound. The task
starts with ``async with store`` or the first ``begin()`` and stops on ``aclose()``.

:func:`_begin`, :func:`_finish` and :func:`_merge` are the one implementation of the rules;
each store only says how to read and write one record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, ParamSpec, Protocol, Self, TypeVar, cast, runtime_checkable

import msgspec

from connector_contracts import parse_timestamp
from connector_sdk.errors import (
    ConfigurationError,
    DedupeError,
    DedupeImportError,
    UnknownDedupeKey,
)

__all__ = [
    "DEFAULT_PROCESSING_TTL_SECONDS",
    "DEFAULT_PURGE_INTERVAL_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "PENDING_RETRY_AFTER_SECONDS",
    "DedupeDecision",
    "DedupeRecord",
    "DedupeStatus",
    "DedupeStore",
    "MemoryDedupeStore",
    "SqliteDedupeStore",
    "dedupe_key",
]

DedupeStatus = Literal["processing", "completed", "failed"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_PROCESSING_TTL_SECONDS: Final = 60.0
DEFAULT_RETENTION_SECONDS: Final = 7 * 24 * 3600.0
DEFAULT_PURGE_INTERVAL_SECONDS: Final = 300.0
PENDING_RETRY_AFTER_SECONDS: Final = 5
_MAX_ERROR_CHARS: Final = 2000

logger = logging.getLogger("connector_sdk")


def dedupe_key(connection_id: str, event_id: str) -> str:
    """The key a bridge event is deduplicated on."""
    return f"{connection_id}:{event_id}"


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupeRecord:
    """What a store remembers about one event."""

    dedupe_key: str
    connection_id: str
    event_id: str
    status: DedupeStatus
    first_seen_at: datetime
    updated_at: datetime
    delivery_attempts: int
    message_id: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupeDecision:
    """The answer of :meth:`DedupeStore.begin`: process the event, or answer the sidecar."""

    should_process: bool
    dedupe_key: str
    status: DedupeStatus
    #: What to answer the sidecar when not processing: 200 (done) or 409 (in progress).
    http_status: int
    retry_after_seconds: int | None
    record: DedupeRecord


@runtime_checkable
class DedupeStore(Protocol):
    """The interface :class:`~connector_sdk.BridgeEndpoint` needs; implement it for Redis etc."""

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the module rules."""
        ...

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        ...

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        ...


@dataclass(slots=True)
class _Row:
    """The mutable, float-timestamped form both stores keep."""

    key: str
    connection_id: str
    event_id: str
    status: DedupeStatus
    first_seen_at: float
    updated_at: float
    delivery_attempts: int
    message_id: str | None
    last_error: str | None

    def record(self) -> DedupeRecord:
        return DedupeRecord(
            dedupe_key=self.key,
            connection_id=self.connection_id,
            event_id=self.event_id,
            status=self.status,
            first_seen_at=_datetime(self.first_seen_at),
            updated_at=_datetime(self.updated_at),
            delivery_attempts=self.delivery_attempts,
            message_id=self.message_id,
            last_error=self.last_error,
        )


#: How a store reads one record by key, and writes one (insert or replace).
_Lookup = Callable[[str], _Row | None]
_Save = Callable[[_Row], None]


def _begin(
    lookup: _Lookup,
    save: _Save,
    *,
    connection_id: str,
    event_id: str,
    delivery_attempt: int,
    now: float,
    processing_ttl: float,
) -> DedupeDecision:
    """The ``begin()`` rules of the module docstring; the caller holds the store's lock."""
    key = dedupe_key(connection_id, event_id)
    row = lookup(key)
    changed = True
    if row is None:
        row = _Row(
            key=key,
            connection_id=connection_id,
            event_id=event_id,
            status="processing",
            first_seen_at=now,
            updated_at=now,
            delivery_attempts=max(1, delivery_attempt),
            message_id=None,
            last_error=None,
        )
    elif row.status == "completed" or (
        row.status == "processing" and now - row.updated_at < processing_ttl
    ):
        changed = False  # done already, or another worker is on it right now
    else:  # failed, or processing by a worker that has not been heard of for too long
        row = replace(
            row,
            status="processing",
            updated_at=now,
            delivery_attempts=max(row.delivery_attempts + 1, delivery_attempt),
            last_error=None,
        )
    if changed:
        save(row)
    pending = not changed and row.status == "processing"
    return DedupeDecision(
        should_process=changed,
        dedupe_key=key,
        status=row.status,
        http_status=409 if pending else 200,
        retry_after_seconds=PENDING_RETRY_AFTER_SECONDS if pending else None,
        record=row.record(),
    )


def _finish(
    lookup: _Lookup, save: _Save, key: str, status: DedupeStatus, text: str | None, now: float
) -> None:
    """``complete()`` (``text`` is the message id) or ``fail()`` (``text`` is the error)."""
    row = lookup(key)
    if row is None:
        raise UnknownDedupeKey(key)
    if status == "failed" and row.status == "completed":
        # A stale worker reporting late: the work is done, and a failed record would make the
        # next redelivery run it a second time.
        logger.warning("dedupe: ignoring fail() of completed event %s: %s", key, text)
        return
    if status == "completed":
        row = replace(row, status=status, message_id=text, last_error=None, updated_at=now)
    else:
        row = replace(row, status=status, last_error=_error_text(text or ""), updated_at=now)
    save(row)  # a new object: records handed out earlier stay as they were


def _merge(lookup: _Lookup, save: _Save, rows: Iterable[_Row]) -> int:
    """Write imported rows, each only over an older one; returns how many were written."""
    written = 0
    for row in rows:
        existing = lookup(row.key)
        if existing is None or existing.updated_at < row.updated_at:
            save(row)
            written += 1
    return written


def _check_windows(processing_ttl: float, retention: float, purge_interval: float) -> None:
    if processing_ttl <= 0 or purge_interval <= 0:
        raise ConfigurationError(
            "processing_ttl_seconds and purge_interval_seconds must be positive"
        )
    if retention < processing_ttl:
        raise ConfigurationError("retention_seconds must be at least processing_ttl_seconds")


def _error_text(error: str) -> str:
    return error if len(error) <= _MAX_ERROR_CHARS else error[: _MAX_ERROR_CHARS - 1] + "…"


# the background purge ----------------------------------------------------------------------------


class _Purger:
    """Calls ``purge`` every ``interval`` seconds from a task of the event loop using the store.

    The task holds no lock between rounds, so it never delays a ``begin()``. It is restarted
    when the loop it ran in has finished (a store used under one ``asyncio.run`` and then
    another), and cancelled, and awaited, by ``stop()``.
    """

    def __init__(self, purge: Callable[[], Awaitable[int]], interval: float, name: str) -> None:
        self._purge = purge
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # start and stop may come from loops in several threads

    def start(self) -> bool:
        """Make sure a task runs; False when there is no asyncio loop to run it in (trio)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        with self._lock:
            task = self._task
            if task is None or task.done() or task.get_loop().is_closed():
                self._task = loop.create_task(self._run(), name=self._name)
        return True

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended."""
        task = self._detach()
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            await asyncio.wait([task])  # not `await task`: our own cancellation still counts

    def stop_nowait(self) -> None:
        """Cancel the task without waiting (from synchronous code or another thread)."""
        self._detach()

    def _detach(self) -> asyncio.Task[None] | None:
        with self._lock:
            task, self._task = self._task, None
        if task is None or task.done():
            return None
        loop = task.get_loop()
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            return task
        with suppress(RuntimeError):  # the loop closed in between: its tasks are gone anyway
            loop.call_soon_threadsafe(task.cancel)
        return None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self._purge()
            except Exception:  # a background loop: log, and try again next round
                logger.warning(
                    "dedupe purge failed; next try in %gs", self._interval, exc_info=True
                )
            else:
                if removed:
                    logger.debug("dedupe purge removed %d records", removed)


class _BaseStore:
    """What both stores share: the windows, the clock, the background purge, ``async with``."""

    def __init__(
        self,
        *,
        processing_ttl_seconds: float,
        retention_seconds: float,
        purge_interval_seconds: float,
        now: Callable[[], float],
    ) -> None:
        _check_windows(processing_ttl_seconds, retention_seconds, purge_interval_seconds)
        self.processing_ttl_seconds = processing_ttl_seconds
        self.retention_seconds = retention_seconds
        self.purge_interval_seconds = purge_interval_seconds
        self._now = now
        self._purger = _Purger(
            self.purge, purge_interval_seconds, name=f"dedupe-purge {type(self).__name__}"
        )

    async def __aenter__(self) -> Self:
        self._purger.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background purge (a later ``begin()`` starts it again)."""
        await self._purger.stop()

    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""
        raise NotImplementedError


# memory ------------------------------------------------------------------------------------------


class MemoryDedupeStore(_BaseStore):
    """A dedupe store in this process's memory: for one-process hosts, tests and demos.

    A restart forgets everything, so an event delivered again after a restart is processed
    again; use :class:`SqliteDedupeStore` when that matters. Close it (``aclose()`` or
    ``async with``) to stop its background purge.
    """

    def __init__(
        self,
        *,
        processing_ttl_seconds: float = DEFAULT_PROCESSING_TTL_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        purge_interval_seconds: float = DEFAULT_PURGE_INTERVAL_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            processing_ttl_seconds=processing_ttl_seconds,
            retention_seconds=retention_seconds,
            purge_interval_seconds=purge_interval_seconds,
            now=now,
        )
        self._rows: dict[str, _Row] = {}
        # A plain lock, never held across an await: safe for tasks and for threads alike.
        self._lock = threading.Lock()
        self._last_inline_purge = now()

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"MemoryDedupeStore(records={len(self._rows)})"

    def _save(self, row: _Row) -> None:
        self._rows[row.key] = row

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the module rules."""
        now = self._now()
        if (
            not self._purger.start()
            and now - self._last_inline_purge >= self.purge_interval_seconds
        ):
            # No asyncio loop (trio): purge here instead, at most once per interval.
            self._last_inline_purge = now
            await self.purge()
        with self._lock:
            return _begin(
                self._rows.get,
                self._save,
                connection_id=connection_id,
                event_id=event_id,
                delivery_attempt=delivery_attempt,
                now=now,
                processing_ttl=self.processing_ttl_seconds,
            )

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        with self._lock:
            _finish(self._rows.get, self._save, dedupe_key, "completed", message_id, self._now())

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        with self._lock:
            _finish(self._rows.get, self._save, dedupe_key, "failed", error, self._now())

    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""
        with self._lock:
            row = self._rows.get(dedupe_key)
            return row.record() if row is not None else None

    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""
        with self._lock:
            cutoff = self._now() - self.retention_seconds
            expired = [key for key, row in self._rows.items() if row.updated_at < cutoff]
            for key in expired:
                del self._rows[key]
            return len(expired)

    async def import_json(self, path: str | os.PathLike[str]) -> int:
        """Import an existing host's ``message_dedupe.json``; returns the records written.

        A record already in the store is replaced only by a newer one (``updated_at``).
        """
        rows = _read_import_file(Path(path), self._now())
        with self._lock:
            return _merge(self._rows.get, self._save, rows)


# SQLite ------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dedupe_records (
    dedupe_key        TEXT PRIMARY KEY,
    connection_id     TEXT NOT NULL,
    event_id          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('processing', 'completed', 'failed')),
    first_seen_at     REAL NOT NULL,
    updated_at        REAL NOT NULL,
    delivery_attempts INTEGER NOT NULL,
    message_id        TEXT,
    last_error        TEXT
);
CREATE INDEX IF NOT EXISTS dedupe_records_updated_at ON dedupe_records (updated_at);
"""
# Literal statements (no string building): column order matches _Row's fields.
_UPSERT = """
INSERT OR REPLACE INTO dedupe_records (dedupe_key, connection_id, event_id, status, first_seen_at,
                                       updated_at, delivery_attempts, message_id, last_error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT = """
SELECT dedupe_key, connection_id, event_id, status, first_seen_at, updated_at, delivery_attempts,
       message_id, last_error
FROM dedupe_records WHERE dedupe_key = ?
"""


def _values(row: _Row) -> tuple[object, ...]:
    return (
        row.key,
        row.connection_id,
        row.event_id,
        row.status,
        row.first_seen_at,
        row.updated_at,
        row.delivery_attempts,
        row.message_id,
        row.last_error,
    )


_SqlRow = tuple[str, str, str, DedupeStatus, float, float, int, str | None, str | None]


def _from_sql(values: tuple[object, ...]) -> _Row:
    # The table's types and CHECK constraint guarantee the shape.
    return _Row(*cast(_SqlRow, values))


class _ImportedRecord(msgspec.Struct, kw_only=True):
    connection_id: str
    event_id: str
    status: DedupeStatus
    first_seen_at: str | None = None
    updated_at: str | None = None
    delivery_attempts: int = 1
    message_id: str | None = None
    last_error: str | None = None
    dedupe_key: str | None = None


class _ImportFile(msgspec.Struct):
    records: dict[str, _ImportedRecord]


class SqliteDedupeStore(_BaseStore):
    """A dedupe store in a SQLite file, shared safely by tasks, threads and processes.

    Each decision is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken before the
    read), and a busy connection waits up to ``busy_timeout_seconds`` for the lock, so several
    worker processes of one host can share the file. The database runs in WAL mode.

    The blocking SQLite calls run in worker threads (``asyncio.to_thread``): use the store
    under asyncio, which is what Starlette, FastAPI and Hypercorn run on by default. Close it
    (``aclose()`` or ``async with``) to stop its background purge and close the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        processing_ttl_seconds: float = DEFAULT_PROCESSING_TTL_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        purge_interval_seconds: float = DEFAULT_PURGE_INTERVAL_SECONDS,
        busy_timeout_seconds: float = 10.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            processing_ttl_seconds=processing_ttl_seconds,
            retention_seconds=retention_seconds,
            purge_interval_seconds=purge_interval_seconds,
            now=now,
        )
        self.path = Path(path)
        self.busy_timeout_seconds = busy_timeout_seconds
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteDedupeStore({str(self.path)!r})"

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self._locked, self._open)
        return await super().__aenter__()

    async def aclose(self) -> None:
        """Stop the background purge and close the database (the next call opens it again)."""
        await super().aclose()
        await asyncio.to_thread(self._close_connection)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for shutdown hooks that are not async."""
        self._purger.stop_nowait()
        self._close_connection()

    def _close_connection(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # public, async -------------------------------------------------------------------------

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the module rules."""
        self._purger.start()
        return await asyncio.to_thread(
            self._locked, self._begin, connection_id, event_id, delivery_attempt
        )

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        await asyncio.to_thread(self._locked, self._finish, dedupe_key, "completed", message_id)

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        await asyncio.to_thread(self._locked, self._finish, dedupe_key, "failed", error)

    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""
        return await asyncio.to_thread(self._locked, self._get, dedupe_key)

    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""
        return await asyncio.to_thread(self._locked, self._purge)

    async def count(self) -> int:
        """How many records the file holds."""
        return await asyncio.to_thread(self._locked, self._count)

    async def import_json(self, path: str | os.PathLike[str]) -> int:
        """Import an existing host's ``message_dedupe.json``; returns the records written.

        A record already in the store is replaced only by a newer one (``updated_at``), so
        importing twice, or after the store has moved on, changes nothing.
        """
        rows = await asyncio.to_thread(_read_import_file, Path(path), self._now())
        return await asyncio.to_thread(self._locked, self._import, rows)

    # blocking, run in a worker thread --------------------------------------------------------

    def _locked(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        with self._lock:
            try:
                return fn(*args, **kwargs)
            except (sqlite3.Error, OSError) as error:
                raise DedupeError(f"dedupe store {self.path}: {error}") from error

    def _open(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_seconds,
            isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
            check_same_thread=False,  # used from worker threads, one at a time (self._lock)
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
            _enable_wal(connection, self.busy_timeout_seconds)
            with _transaction(connection):
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    @staticmethod
    def _select(connection: sqlite3.Connection, key: str) -> _Row | None:
        found = connection.execute(_SELECT, (key,)).fetchone()
        return None if found is None else _from_sql(tuple(found))

    @staticmethod
    def _save(connection: sqlite3.Connection, row: _Row) -> None:
        connection.execute(_UPSERT, _values(row))

    def _begin(self, connection_id: str, event_id: str, delivery_attempt: int) -> DedupeDecision:
        connection = self._open()
        with _transaction(connection):
            # The clock is read once the write lock is held, not before waiting for it.
            return _begin(
                partial(self._select, connection),
                partial(self._save, connection),
                connection_id=connection_id,
                event_id=event_id,
                delivery_attempt=delivery_attempt,
                now=self._now(),
                processing_ttl=self.processing_ttl_seconds,
            )

    def _finish(self, key: str, status: DedupeStatus, text: str | None) -> None:
        connection = self._open()
        with _transaction(connection):
            _finish(
                partial(self._select, connection),
                partial(self._save, connection),
                key,
                status,
                text,
                self._now(),
            )

    def _get(self, key: str) -> DedupeRecord | None:
        row = self._select(self._open(), key)
        return row.record() if row is not None else None

    def _count(self) -> int:
        (count,) = self._open().execute("SELECT count(*) FROM dedupe_records").fetchone()
        assert isinstance(count, int)
        return count

    def _purge(self) -> int:
        connection = self._open()
        with _transaction(connection):
            cursor = connection.execute(
                "DELETE FROM dedupe_records WHERE updated_at < ?",
                (self._now() - self.retention_seconds,),
            )
        return cursor.rowcount

    def _import(self, rows: list[_Row]) -> int:
        connection = self._open()
        with _transaction(connection):
            return _merge(partial(self._select, connection), partial(self._save, connection), rows)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock before the first read, so two processes cannot both
    # read "new key" and both decide to process it.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _read_import_file(path: Path, now: float) -> list[_Row]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DedupeImportError(str(path), f"cannot read: {error.strerror or error}") from None
    try:
        document = msgspec.json.decode(data, type=_ImportFile)
    except msgspec.DecodeError as error:  # ValidationError is a subclass
        raise DedupeImportError(str(path), str(error)) from None
    rows = []
    for name, item in document.records.items():
        try:
            updated = parse_timestamp(item.updated_at).timestamp() if item.updated_at else now
            first_seen = (
                parse_timestamp(item.first_seen_at).timestamp() if item.first_seen_at else updated
            )
        except ValueError as error:
            raise DedupeImportError(str(path), f"record {name!r}: {error}") from None
        rows.append(
            _Row(
                key=dedupe_key(item.connection_id, item.event_id),
                connection_id=item.connection_id,
                event_id=item.event_id,
                status=item.status,
                first_seen_at=first_seen,
                updated_at=updated,
                delivery_attempts=max(1, item.delivery_attempts),
                message_id=item.message_id,
                last_error=item.last_error,
            )
        )
    return rows


def _enable_wal(connection: sqlite3.Connection, timeout_seconds: float) -> None:
    """Switch the file to WAL, waiting for another process that is doing the same.

    Changing the journal mode needs an exclusive lock, and SQLite can answer SQLITE_BUSY at once
    for it, without the busy handler, while a second process opens a new file at the same time.
    """
    deadline = time.monotonic() + timeout_seconds
    delay = 0.005
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        if str(mode).lower() == "wal":
            return
        raise sqlite3.OperationalError(f"could not switch to WAL (journal_mode is {mode})")
