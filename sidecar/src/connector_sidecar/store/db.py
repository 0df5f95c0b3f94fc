"""The embedded SQLite database: one connection, one thread, every call serialised.

All access goes through a single-thread executor, so asyncio tasks never contend for the file
and never see ``database is locked``; a transaction is one function run on that thread between
``BEGIN IMMEDIATE`` and ``COMMIT``. WAL mode keeps readers of other processes (an operator's
``sqlite3`` shell) from blocking us. ``synchronous=FULL`` makes each commit durable against power
loss, not only against a crash of this process: an inbound message is acknowledged to the vendor
only after its commit.

A lock file next to the database makes a second sidecar on the same data directory refuse to
start, instead of both delivering the same outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from connector_sidecar.store.migrations import MIGRATIONS

__all__ = ["Database", "DatabaseLockedError", "check_unlocked"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseLockedError(RuntimeError):
    """Another sidecar process already owns this data directory."""


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        try:
            await self._submit(self._connect)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            self._release_lock()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        with contextlib.suppress(Exception):
            await self._submit(self._disconnect)
        self._executor.shutdown(wait=True)
        self._executor = None
        self._release_lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread (autocommit: for reads)."""
        return await self._submit(lambda: fn(self._connection(), *args))

    async def transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` inside one write transaction; an exception rolls it back."""

        def work() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._submit(work)

    # -- internals --------------------------------------------------------------------------------

    async def _submit(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the database is not open")
        loop = asyncio.get_running_loop()
        # Shield: once a write is handed to the thread it completes, even if the caller is
        # cancelled; otherwise a cancelled caller could not know whether it committed.
        return await asyncio.shield(loop.run_in_executor(self._executor, work))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("the database is not open")
        return self._conn

    def _connect(self) -> None:
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
        except BaseException:
            conn.close()  # a refused schema must not leave the file open
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def _take_lock(self) -> None:
        lock_path = self.path.with_suffix(".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
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


def check_unlocked(path: Path) -> None:
    """Raise :class:`DatabaseLockedError` if another process owns the database at ``path``.

    A check before serving, so the CLI can refuse in one line instead of a start-up traceback;
    :meth:`Database.open` still takes the lock for real.
    """
    if not path.parent.is_dir():
        return
    probe = Database(path)
    probe._take_lock()
    probe._release_lock()


def _migrate(conn: sqlite3.Connection) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"the database schema is version {current}, newer than this sidecar knows ({len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        log.info("applying database migration %d", number)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]
