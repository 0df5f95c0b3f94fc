"""The dedupe store in a SQLite file, shared safely by tasks, threads and processes.

Every call is one operation of a group commit (:mod:`._group_commit`): calls that arrive
while a transaction is being committed are run together in the next one, so sixteen
concurrent ``begin()``/``complete()`` calls cost about one fsync instead of sixteen. A call is
answered only once its transaction is committed (WAL, ``synchronous=FULL``), so an
acknowledged ``complete()`` survives the process being killed right after. Each transaction is
``BEGIN IMMEDIATE`` (the write lock is taken before the first read), and a busy file is waited
for up to ``busy_timeout_seconds``, so several worker processes can share one file.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from connector_sdk.dedupe._base import (
    DEFAULT_PROCESSING_TTL_SECONDS,
    DEFAULT_PURGE_INTERVAL_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    BaseStore,
    DedupeDecision,
    DedupeRecord,
    DedupeStatus,
    Row,
    claim,
    decision,
    dedupe_key,
    finished,
    newer,
)
from connector_sdk.dedupe._group_commit import GroupCommit
from connector_sdk.errors import DedupeError

__all__ = ["SqliteDedupeStore"]

_SCHEMA = (
    """
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
    )
    """,
    "CREATE INDEX IF NOT EXISTS dedupe_records_updated_at ON dedupe_records (updated_at)",
)
# Literal statements (no string building): column order matches Row's fields.
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

_SqlRow = tuple[str, str, str, DedupeStatus, float, float, int, str | None, str | None]


def _select(connection: sqlite3.Connection, key: str) -> Row | None:
    found = connection.execute(_SELECT, (key,)).fetchone()
    # The table's types and CHECK constraint guarantee the shape.
    return None if found is None else Row(*cast(_SqlRow, tuple(found)))


def _save(connection: sqlite3.Connection, row: Row) -> None:
    connection.execute(_UPSERT, row.values())


class SqliteDedupeStore(BaseStore):
    """A dedupe store in a SQLite file, shared safely by tasks, threads and processes.

    Concurrent calls are group-committed (one transaction and one fsync for all the calls that
    arrive while the previous commit runs); each call returns only once its transaction is
    durable. Several processes can share the file: each transaction takes the write lock
    before reading (``BEGIN IMMEDIATE``) and waits up to ``busy_timeout_seconds`` for it.

    The SQLite calls run in a thread of the store, never in the event loop: use the store
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
        self._lock = threading.Lock()  # the connection: held by a commit, and by close()
        self._connection: sqlite3.Connection | None = None
        self._group = GroupCommit(
            self._open, self._lock, self._error, name=f"dedupe-sqlite {self.path.name}"
        )

    def __repr__(self) -> str:
        return f"SqliteDedupeStore({str(self.path)!r})"

    @property
    def commits(self) -> int:
        """Transactions committed by this store object so far (group commit makes it < calls)."""
        return self._group.commits

    # public, async ---------------------------------------------------------------------------

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the package rules."""
        self._purger.start()

        def operation(connection: sqlite3.Connection) -> DedupeDecision:
            # The clock is read once the write lock is held, not before waiting for it.
            row, processed = claim(
                _select(connection, dedupe_key(connection_id, event_id)),
                connection_id=connection_id,
                event_id=event_id,
                delivery_attempt=delivery_attempt,
                now=self._now(),
                processing_ttl=self.processing_ttl_seconds,
            )
            if processed:
                _save(connection, row)
            return decision(row, processed)

        return await self._group.run(operation)

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        await self._finish(dedupe_key, "completed", message_id)

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        await self._finish(dedupe_key, "failed", error)

    async def _finish(self, key: str, status: DedupeStatus, text: str | None) -> None:
        def operation(connection: sqlite3.Connection) -> None:
            row = finished(_select(connection, key), key, status, text, self._now())
            if row is not None:
                _save(connection, row)

        await self._group.run(operation)

    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""

        def operation(connection: sqlite3.Connection) -> DedupeRecord | None:
            row = _select(connection, dedupe_key)
            return row.record() if row is not None else None

        return await self._group.run(operation)

    async def count(self) -> int:
        """How many records the file holds."""

        def operation(connection: sqlite3.Connection) -> int:
            (count,) = connection.execute("SELECT count(*) FROM dedupe_records").fetchone()
            return int(count)

        return await self._group.run(operation)

    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""

        def operation(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "DELETE FROM dedupe_records WHERE updated_at < ?",
                (self._now() - self.retention_seconds,),
            )
            return cursor.rowcount

        return await self._group.run(operation)

    async def _import(self, rows: list[Row]) -> int:
        def operation(connection: sqlite3.Connection) -> int:
            written = 0
            for row in rows:
                if newer(_select(connection, row.key), row):
                    _save(connection, row)
                    written += 1
            return written

        return await self._group.run(operation)

    # the connection --------------------------------------------------------------------------

    async def _connect(self) -> None:
        await self._group.run(lambda connection: None)

    async def _disconnect(self) -> None:
        await asyncio.to_thread(self._disconnect_nowait)

    def _disconnect_nowait(self) -> None:
        with self._lock:  # waits for a commit in progress
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _error(self, error: Exception) -> DedupeError:
        wrapped = DedupeError(f"dedupe store {self.path}: {error}")
        wrapped.__cause__ = error
        return wrapped

    def _open(self) -> sqlite3.Connection:
        """The connection, opened now if needed (in the committer thread, under the lock)."""
        if self._connection is not None:
            return self._connection
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_seconds,
            isolation_level=None,  # the group commit issues BEGIN IMMEDIATE / COMMIT itself
            check_same_thread=False,  # the committer thread may be a new one after idling
        )
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_seconds * 1000)}")
            _enable_wal(connection, self.busy_timeout_seconds)
            # FULL: a commit is on disk when COMMIT returns, not only in the OS's cache.
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    connection.execute(statement)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection


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
