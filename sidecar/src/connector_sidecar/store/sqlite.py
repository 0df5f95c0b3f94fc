"""The embedded SQLite backend: one connection, one thread, concurrent writes group-committed.

All access goes through one thread, so asyncio tasks never contend for the file and never see
``database is locked``. WAL mode keeps readers of other processes (an operator's ``sqlite3``
shell) from blocking us. ``synchronous=FULL`` makes each commit durable against power loss, not
only against a crash of this process: an inbound message is acknowledged to the vendor only
after its commit.

Group commit
    A commit (an fsync) costs far more than the statements of a typical transaction. The thread
    takes every write transaction already queued when it starts one (up to
    :data:`MAX_GROUP`) and runs them in one ``BEGIN IMMEDIATE … COMMIT``, each inside its own
    ``SAVEPOINT``: one that raises is rolled back alone and its caller gets the exception; the
    others commit together. No caller hears of its transaction before the ``COMMIT`` returned,
    so nothing is acknowledged that is not durable; a failed ``COMMIT`` fails every transaction
    of the group. A read waits for the group queued before it, so it never sees a write that is
    not yet committed.

A lock file next to the database makes a second sidecar on the same data directory refuse to
start, instead of both delivering the same outbox.

Storage faults
    At start, :meth:`SqliteDatabase.open` writes the data directory, the lock file and the
    database (a committed write, not only an open), so a read-only file system, a directory
    owned by another user or a corrupted file stops the start with a ``StoreError`` naming the
    cause, instead of a sidecar that says it is ready and then fails every write. While
    running, SQLite's storage errors (disk full, I/O error, read-only, cannot open, locked by
    another process) become :class:`StorageUnavailableError`; a transaction that hits one fails
    with its whole group, and nothing of the group is acknowledged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from connector_sidecar.store._health import StorageHealth
from connector_sidecar.store._sql import Cursor, sqlite_sql
from connector_sidecar.store.errors import (
    DatabaseLockedError,
    SchemaTooNewError,
    StorageUnavailableError,
    StoreError,
)
from connector_sidecar.store.migrations import MIGRATIONS

__all__ = ["MAX_GROUP", "SqliteDatabase"]

log = logging.getLogger("connector_sidecar.store.db")
T = TypeVar("T")

MAX_GROUP: Final = 256  # write transactions per commit at most

# SQLite's primary result codes that mean "the storage failed", not "this query is wrong".
_FAULTS: Final = {
    5: "the database is locked by another process",  # SQLITE_BUSY, after busy_timeout
    6: "the database is locked",  # SQLITE_LOCKED
    7: "out of memory",  # SQLITE_NOMEM
    8: "the database is read-only",  # SQLITE_READONLY
    10: "a disk I/O error",  # SQLITE_IOERR
    13: "the disk is full",  # SQLITE_FULL
    14: "cannot open the database file",  # SQLITE_CANTOPEN
    15: "a locking protocol error",  # SQLITE_PROTOCOL
}
_DAMAGED: Final = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


class _SqliteConnection:
    """A :class:`~connector_sidecar.store._sql.Connection` over :mod:`sqlite3`."""

    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(sqlite_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        return self.raw.executemany(sqlite_sql(sql), parameters)


@dataclasses.dataclass(slots=True)
class _Job:
    work: Callable[[Any], Any]
    write: bool
    future: concurrent.futures.Future[Any] = dataclasses.field(
        default_factory=concurrent.futures.Future
    )


class SqliteDatabase:
    """The SQLite file at ``path``; see the module docstring for the threading and commits."""

    dialect = "sqlite"
    exclusive = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: _SqliteConnection | None = None
        self._lock_fd: int | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.health = StorageHealth()
        self.commits = 0  # how many COMMITs were run: for tests and the benchmark

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def describe(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the data directory {self.path.parent}: {exc.strerror}"
            ) from None
        self._take_lock()
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
        self._thread.start()
        try:
            await self._submit(_Job(self._connect, write=False), track=False)
        except StorageUnavailableError as exc:
            self._stop_thread()
            self._release_lock()
            raise StoreError(f"cannot write the database {self.path}: {exc.reason}") from None
        except BaseException:
            self._stop_thread()
            self._release_lock()
            raise

    async def close(self) -> None:
        if self._thread is None:
            return
        with contextlib.suppress(Exception):
            await self._submit(_Job(self._disconnect, write=False))
        await asyncio.get_running_loop().run_in_executor(None, self._stop_thread)
        self._release_lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread, outside a transaction (for reads)."""
        return await self._submit(_Job(lambda conn: fn(conn, *args), write=False))  # type: ignore[no-any-return]

    async def transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` as one write transaction; an exception rolls it back.

        It may share its ``COMMIT`` with other transactions queued at the same time; it returns
        only once that commit is durable.
        """
        return await self._submit(_Job(lambda conn: fn(conn, *args), write=True))  # type: ignore[no-any-return]

    async def probe(self) -> None:
        """One small committed write (the schema version, rewritten): does the storage take it?"""
        await self.transaction(_rewrite_version)

    # -- the database thread ----------------------------------------------------------------------

    async def _submit(self, job: _Job, *, track: bool = True) -> Any:
        if self._thread is None:
            raise RuntimeError("the database is not open")
        self._jobs.put(job)
        try:
            # Shield: once a write is handed to the thread it completes, even if the caller is
            # cancelled; otherwise a cancelled caller could not know whether it committed.
            future = asyncio.wrap_future(job.future)
            future.add_done_callback(_retrieved)  # a cancelled caller never reads its outcome
            result = await asyncio.shield(future)
        except sqlite3.Error as exc:
            reason = _fault(exc)
            if reason is None:
                raise
            error = StorageUnavailableError(f"{reason} ({self.path}: {exc})")
            if track:
                self.health.failed(error)
            raise error from exc
        if job.write:
            self.health.wrote()
        return result

    def _serve(self) -> None:
        held: _Job | None = None
        while True:
            job = held if held is not None else self._jobs.get()
            held = None
            if job is None:
                return
            if not job.write:
                _settle(job, self._conn)
                continue
            group = [job]
            while len(group) < MAX_GROUP:
                try:
                    following = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if following is None or not following.write:
                    held = following
                    if following is None:
                        self._jobs.put(None)  # stop after this group
                        held = None
                    break
                group.append(following)
            self._commit_group(group)

    def _commit_group(self, group: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn = self._connection()  # closed meanwhile: a late write fails, the thread goes on
            raw = conn.raw
            raw.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                job.future.set_exception(exc)
            return
        try:
            for job in group:
                raw.execute("SAVEPOINT tx")
                try:
                    result = job.work(conn)
                except sqlite3.Error as exc:
                    if _fault(exc) is not None:
                        raise  # SQLite may have rolled it all back: the whole group fails
                    raw.execute("ROLLBACK TO tx")
                    raw.execute("RELEASE tx")
                    outcomes.append((False, exc))
                except BaseException as exc:
                    raw.execute("ROLLBACK TO tx")
                    raw.execute("RELEASE tx")
                    outcomes.append((False, exc))
                else:
                    raw.execute("RELEASE tx")
                    outcomes.append((True, result))
            raw.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                raw.execute("ROLLBACK")
            for job in group:
                job.future.set_exception(exc)
            return
        self.commits += 1
        for job, (ok, value) in zip(group, outcomes, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _connection(self) -> _SqliteConnection:
        if self._conn is None:
            raise RuntimeError("the database is not open")
        return self._conn

    def _connect(self, _: object) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            with contextlib.suppress(OSError):
                os.chmod(self.path, 0o600)
            _migrate(conn)
            # Opening a file it cannot write, SQLite falls back to reading it: write once now,
            # so an unwritable database stops the start instead of every later request.
            conn.execute("BEGIN IMMEDIATE")
            _rewrite_version(_SqliteConnection(conn))
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            conn.close()
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _DAMAGED:
                raise StoreError(
                    f"the database {self.path} is damaged or not a SQLite database ({exc});"
                    " restore it from a backup or move it away to start empty"
                ) from None
            raise
        except BaseException:
            conn.close()  # a refused schema must not leave the file open
            raise
        self._conn = _SqliteConnection(conn)

    def _disconnect(self, _: object) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.raw.close()
            self._conn = None

    def _take_lock(self) -> None:
        lock_path = self.path.with_suffix(".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot write the lock file {lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseLockedError(
                f"another sidecar is already using {self.path.parent} (lock {lock_path.name})"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _settle(job: _Job, conn: _SqliteConnection | None) -> None:
    try:
        result = job.work(conn)
    except BaseException as exc:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)


def _fault(exc: sqlite3.Error) -> str | None:
    """What failed, if ``exc`` is the storage failing rather than a statement being wrong."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    return _FAULTS.get(code & 0xFF)


def _rewrite_version(conn: _SqliteConnection) -> None:
    version = conn.raw.execute("PRAGMA user_version").fetchone()[0]
    conn.raw.execute(f"PRAGMA user_version = {int(version)}")


def _migrate(conn: sqlite3.Connection) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise SchemaTooNewError(current, len(MIGRATIONS))
    for migration in MIGRATIONS[current:]:
        log.info("applying database migration %d", migration.number)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in migration.statements("sqlite"):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark the outcome read: the caller that would have read it may have been cancelled."""
    if not future.cancelled():
        future.exception()
