"""The PostgreSQL backend, for several sidecar replicas on one database.

The query modules are the same functions of a connection as on SQLite (``_sql.py`` translates
the dialect); here they run on a small pool of threads, each borrowing a connection of a
:mod:`psycopg_pool` pool, so transactions of different tasks run side by side and PostgreSQL
groups their WAL flushes itself. Transactions are ``READ COMMITTED``: a query that must not race
with another replica says so with a conditional ``UPDATE`` or a ``FOR UPDATE`` row lock.

Why psycopg 3 in threads and not asyncpg: it keeps one set of query functions for both
backends (a transaction is a plain function of a connection, as on SQLite's thread), and the
measured cost of the thread hop is small next to a commit (README "Performance").

Migrations run at start under ``pg_advisory_lock``, so replicas that start together apply each
migration once; the applied number is kept in ``schema_version``. The start then writes once
(the version row, rewritten), so a read-only database or a role that may not write stops the
start with one line instead of failing every request later.

Storage faults
    While running, psycopg's ``OperationalError`` (the server gone, a connection cut, the disk
    full, no connection free within :data:`POOL_TIMEOUT`) and a read-only transaction become
    :class:`StorageUnavailableError`. The pool checks a connection before lending it, so once
    the server is back the next transaction gets a fresh connection.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import psycopg
import psycopg_pool
from psycopg.rows import RowMaker

from connector_sidecar.store._health import StorageHealth
from connector_sidecar.store._sql import Cursor, postgres_sql, row_class
from connector_sidecar.store.errors import (
    SchemaTooNewError,
    StorageUnavailableError,
    StoreError,
)
from connector_sidecar.store.migrations import MIGRATIONS

__all__ = ["PostgresDatabase", "loggable_dsn"]

log = logging.getLogger("connector_sidecar.store.db")
T = TypeVar("T")

POOL_SIZE: Final = 8
POOL_TIMEOUT: Final = 5.0  # seconds a transaction waits for a connection before a 503
_PROBE = (
    "UPDATE schema_version SET version = version"
    " WHERE version = (SELECT MAX(version) FROM schema_version)"
)
_MIGRATION_LOCK: Final = 0x5C1DECA5  # pg_advisory_lock key: "sidecar" migrations


def loggable_dsn(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _rows(cursor: psycopg.Cursor[Any]) -> RowMaker[Any]:
    names = tuple(c.name for c in cursor.description or ())
    return row_class(names)


def _clean(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; SQLite can. Store what the vendor sent, minus the NUL.
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()  # psycopg's first line says what failed; the next ones are hints
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _connect_once(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, connect_timeout=10)


class _PostgresConnection:
    """A :class:`~connector_sidecar.store._sql.Connection` over a psycopg connection."""

    dialect = "postgres"

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        return self.raw.execute(postgres_sql(sql), [_clean(p) for p in parameters])

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(postgres_sql(sql), [[_clean(p) for p in row] for row in parameters])
        return cursor


class PostgresDatabase:
    """The database at ``url`` (``postgresql://…``), shared with other replicas."""

    dialect = "postgres"
    exclusive = False

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.pool_size = pool_size
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.health = StorageHealth()

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    def describe(self) -> str:
        return loggable_dsn(self.url)

    async def open(self) -> None:
        try:
            # One direct connection first: a wrong URL fails at once, in one line.
            probe = await asyncio.to_thread(_connect_once, self.url)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot use PostgreSQL at {self.describe()}: {_first_line(exc)}"
            ) from None
        await asyncio.to_thread(probe.close)
        executor = ThreadPoolExecutor(max_workers=self.pool_size, thread_name_prefix="postgres")
        pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True, "row_factory": _rows, "connect_timeout": 10},
            timeout=POOL_TIMEOUT,
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
            name="sidecar",
        )
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, lambda: pool.open(wait=True, timeout=10))
            await loop.run_in_executor(executor, self._migrate, pool)
        except (psycopg.errors.ReadOnlySqlTransaction, psycopg.errors.InsufficientPrivilege) as exc:
            await loop.run_in_executor(executor, pool.close)
            executor.shutdown(wait=True)
            raise StoreError(
                f"cannot write to PostgreSQL at {self.describe()}: {_first_line(exc)}"
            ) from None
        except psycopg.Error as exc:
            await loop.run_in_executor(executor, pool.close)
            executor.shutdown(wait=True)
            raise StoreError(
                f"cannot use PostgreSQL at {self.describe()}: {_first_line(exc)}"
            ) from None
        except BaseException:
            await loop.run_in_executor(executor, pool.close)
            executor.shutdown(wait=True)
            raise
        self._pool, self._executor = pool, executor

    async def close(self) -> None:
        pool, executor = self._pool, self._executor
        if pool is None or executor is None:
            return
        self._pool = self._executor = None
        # Transactions already handed to a thread finish first (as on SQLite's queue).
        await asyncio.to_thread(executor.shutdown, wait=True)
        await asyncio.to_thread(pool.close)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a pooled connection, each statement on its own."""

        def work(pool: psycopg_pool.ConnectionPool[Any]) -> T:
            with pool.connection() as raw:
                return fn(_PostgresConnection(raw), *args)

        return await self._submit(work)

    async def transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` as one transaction; an exception rolls it back."""

        def work(pool: psycopg_pool.ConnectionPool[Any]) -> T:
            with pool.connection() as raw, raw.transaction():
                return fn(_PostgresConnection(raw), *args)

        return await self._submit(work, write=True)

    async def probe(self) -> None:
        """One small committed write (the schema version row, rewritten): does it take it?"""
        await self.transaction(lambda conn: conn.execute(_PROBE))

    # -- internals --------------------------------------------------------------------------------

    async def _submit(
        self, work: Callable[[psycopg_pool.ConnectionPool[Any]], T], *, write: bool = False
    ) -> T:
        pool, executor = self._pool, self._executor
        if pool is None or executor is None:
            raise RuntimeError("the database is not open")
        loop = asyncio.get_running_loop()
        try:
            # Shield: a cancelled caller must not abandon a transaction half-way (see SQLite's).
            future = loop.run_in_executor(executor, work, pool)
            future.add_done_callback(_retrieved)  # a cancelled caller never reads its outcome
            result = await asyncio.shield(future)
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            psycopg.errors.ReadOnlySqlTransaction,
        ) as exc:
            error = StorageUnavailableError(f"PostgreSQL at {self.describe()}: {_first_line(exc)}")
            self.health.failed(error)
            raise error from exc
        if write:
            self.health.wrote()
        return result

    def _migrate(self, pool: psycopg_pool.ConnectionPool[Any]) -> None:
        with pool.connection() as raw:
            raw.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                raw.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = raw.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = int(row[0] or 0) if row else 0
                if current > len(MIGRATIONS):
                    raise SchemaTooNewError(current, len(MIGRATIONS))
                for migration in MIGRATIONS[current:]:
                    log.info("applying database migration %d", migration.number)
                    with raw.transaction():
                        for statement in migration.statements("postgres"):
                            raw.execute(statement)
                        raw.execute(
                            "INSERT INTO schema_version (version) VALUES (%s)", (migration.number,)
                        )
                with raw.transaction():
                    raw.execute(_PROBE)
            finally:
                raw.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark the outcome read: the caller that would have read it may have been cancelled."""
    if not future.cancelled():
        future.exception()
