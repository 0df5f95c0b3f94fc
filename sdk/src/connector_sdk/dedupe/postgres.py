"""The dedupe store in PostgreSQL, for hosts with several replicas (psycopg 3, async).

Needs the ``postgres`` extra: ``pip install 'connector-sdk[postgres]'``.

Each call is one transaction that locks the event's row (``SELECT … FOR UPDATE``) before the
package's rules read it, so any number of processes on any number of machines process each
event once. A new key is inserted with ``ON CONFLICT DO NOTHING``: when another process
inserted it first, the call reads it again (now locked) and follows the rules on that record.
A call returns once PostgreSQL has committed its transaction.

The store creates its table (``table``, default ``connector_dedupe``) and an index on
``updated_at`` on first use, under an advisory lock so replicas starting together do not
race. Times are stored as epoch seconds (``double precision``), exactly as the clock gave
them, like the SQLite store.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, cast

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
)
from connector_sdk.dedupe._purge import LoopBound
from connector_sdk.errors import ConfigurationError, DedupeError

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresDedupeStore"]

DEFAULT_TABLE: Final = "connector_dedupe"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,47}")  # + "_updated_at" stays within 63 bytes
_COLUMNS: Final = (
    "dedupe_key, connection_id, event_id, status, first_seen_at, updated_at, "
    "delivery_attempts, message_id, last_error"
)
#: A new key lost to another process this many times in a row is an error, not a loop.
_MAX_INSERT_RACES: Final = 3


def _require_driver() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "PostgresDedupeStore needs psycopg 3 and psycopg-pool: "
            "pip install 'connector-sdk[postgres]'"
        ) from error


def _redacted(dsn: str) -> str:
    """The DSN without its password, for reprs and errors."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # an unreadable DSN: say nothing of it
        return "<unreadable dsn>"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or 5432
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


class PostgresDedupeStore(BaseStore):
    """A dedupe store in PostgreSQL, shared by every replica and process of a host.

    ``dsn`` is a libpq connection string or URL (``postgresql://user@host:5432/db``); its
    password never appears in the store's repr or errors. ``table`` is a plain lower-case name
    in the connection's search path. The store keeps a pool of up to ``pool_max_size``
    connections, opened on first use in the running asyncio loop; close it (``aclose()`` or
    ``async with``) to stop its background purge and close the pool.
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        processing_ttl_seconds: float = DEFAULT_PROCESSING_TTL_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        purge_interval_seconds: float = DEFAULT_PURGE_INTERVAL_SECONDS,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout_seconds: float = 10.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        _require_driver()
        super().__init__(
            processing_ttl_seconds=processing_ttl_seconds,
            retention_seconds=retention_seconds,
            purge_interval_seconds=purge_interval_seconds,
            now=now,
        )
        if not _TABLE_NAME.fullmatch(table):
            raise ConfigurationError(
                f"table must be a lower-case SQL name of at most 48 characters, not {table!r}"
            )
        if not 1 <= pool_min_size <= pool_max_size:
            raise ConfigurationError("pool sizes must satisfy 1 <= pool_min_size <= pool_max_size")
        if connect_timeout_seconds <= 0:
            raise ConfigurationError("connect_timeout_seconds must be positive")
        self.table = table
        self.pool_min_size = pool_min_size
        self.pool_max_size = pool_max_size
        self.connect_timeout_seconds = connect_timeout_seconds
        self._dsn = dsn
        self._where = _redacted(dsn)
        self._pool: LoopBound[AsyncConnectionPool[AsyncConnection[Any]]] = LoopBound(
            self._open_pool, self._close_pool
        )
        # The table name is checked above: these are the only statements, built once.
        t = table
        self._sql_select = f"SELECT {_COLUMNS} FROM {t} WHERE dedupe_key = %s"  # noqa: S608
        self._sql_lock = self._sql_select + " FOR UPDATE"
        self._sql_insert = (
            f"INSERT INTO {t} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
            "ON CONFLICT (dedupe_key) DO NOTHING"
        )
        self._sql_update = (
            f"UPDATE {t} SET status = %s, updated_at = %s, delivery_attempts = %s, "  # noqa: S608
            "message_id = %s, last_error = %s WHERE dedupe_key = %s"
        )
        # import_json: written only over no record or an older one, in one statement.
        self._sql_merge = (
            f"INSERT INTO {t} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
            "ON CONFLICT (dedupe_key) DO UPDATE SET connection_id = EXCLUDED.connection_id, "
            "event_id = EXCLUDED.event_id, status = EXCLUDED.status, "
            "first_seen_at = EXCLUDED.first_seen_at, updated_at = EXCLUDED.updated_at, "
            "delivery_attempts = EXCLUDED.delivery_attempts, message_id = EXCLUDED.message_id, "
            f"last_error = EXCLUDED.last_error WHERE {t}.updated_at < EXCLUDED.updated_at"
        )
        self._sql_count = f"SELECT count(*) FROM {t}"  # noqa: S608
        self._sql_purge = f"DELETE FROM {t} WHERE updated_at < %s"  # noqa: S608
        self._sql_schema = (
            f"""
            CREATE TABLE IF NOT EXISTS {t} (
                dedupe_key        text PRIMARY KEY,
                connection_id     text NOT NULL,
                event_id          text NOT NULL,
                status            text NOT NULL
                                  CHECK (status IN ('processing', 'completed', 'failed')),
                first_seen_at     double precision NOT NULL,
                updated_at        double precision NOT NULL,
                delivery_attempts integer NOT NULL,
                message_id        text,
                last_error        text
            )
            """,
            f"CREATE INDEX IF NOT EXISTS {t}_updated_at ON {t} (updated_at)",
        )

    def __repr__(self) -> str:
        return f"PostgresDedupeStore({self._where!r}, table={self.table!r})"

    # public, async ---------------------------------------------------------------------------

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the package rules."""
        self._purger.start()
        key = dedupe_key(connection_id, event_id)
        for _ in range(_MAX_INSERT_RACES):
            async with self._transaction() as connection:
                found = await self._locked_row(connection, key)
                row, processed = claim(
                    found,
                    connection_id=connection_id,
                    event_id=event_id,
                    delivery_attempt=delivery_attempt,
                    now=self._now(),  # read once the row lock is held
                    processing_ttl=self.processing_ttl_seconds,
                )
                if not processed:
                    return decision(row, processed)
                if found is not None:
                    await self._update(connection, row)
                    return decision(row, processed)
                cursor = await connection.execute(self._sql_insert, row.values())
                if cursor.rowcount == 1:
                    return decision(row, processed)
            # Another process inserted the key between our read and our insert: read it again.
        raise DedupeError(f"dedupe store {self!r}: {key} kept changing under begin()")

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        await self._finish(dedupe_key, "completed", message_id)

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        await self._finish(dedupe_key, "failed", error)

    async def _finish(self, key: str, status: DedupeStatus, text: str | None) -> None:
        async with self._transaction() as connection:
            found = await self._locked_row(connection, key)
            row = finished(found, key, status, text, self._now())
            if row is not None:
                await self._update(connection, row)

    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""
        async with self._transaction() as connection:
            cursor = await connection.execute(self._sql_select, (dedupe_key,))
            found = await cursor.fetchone()
        return None if found is None else _row(found).record()

    async def count(self) -> int:
        """How many records the table holds."""
        async with self._transaction() as connection:
            cursor = await connection.execute(self._sql_count)
            found = await cursor.fetchone()
        assert found is not None
        return int(found[0])

    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""
        async with self._transaction() as connection:
            cursor = await connection.execute(
                self._sql_purge, (self._now() - self.retention_seconds,)
            )
            return max(cursor.rowcount, 0)

    async def _import(self, rows: list[Row]) -> int:
        written = 0
        async with self._transaction() as connection:
            for row in rows:
                cursor = await connection.execute(self._sql_merge, row.values())
                written += max(cursor.rowcount, 0)
        return written

    # the connection pool ---------------------------------------------------------------------

    async def _locked_row(self, connection: AsyncConnection[Any], key: str) -> Row | None:
        cursor = await connection.execute(self._sql_lock, (key,))
        found = await cursor.fetchone()
        return None if found is None else _row(found)

    async def _update(self, connection: AsyncConnection[Any], row: Row) -> None:
        await connection.execute(
            self._sql_update,
            (
                row.status,
                row.updated_at,
                row.delivery_attempts,
                row.message_id,
                row.last_error,
                row.key,
            ),
        )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection in a transaction, committed on leaving; errors become DedupeError."""
        import psycopg

        try:
            pool = await self._pool.get()
            async with pool.connection() as connection, connection.transaction():
                yield connection
        except (psycopg.Error, OSError) as error:
            raise DedupeError(f"dedupe store {self!r}: {error}") from error

    async def _open_pool(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        from psycopg_pool import AsyncConnectionPool

        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            self._dsn,
            min_size=self.pool_min_size,
            max_size=self.pool_max_size,
            kwargs={
                "autocommit": True,  # transactions are explicit: connection.transaction()
                "connect_timeout": max(1, round(self.connect_timeout_seconds)),
            },
            timeout=self.connect_timeout_seconds,
            open=False,
            name=f"dedupe {self.table}",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout_seconds)
            async with pool.connection() as connection, connection.transaction():
                # One creator at a time: concurrent CREATE TABLE IF NOT EXISTS can still fail.
                await connection.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"connector_sdk:{self.table}",)
                )
                for statement in self._sql_schema:
                    await connection.execute(statement)
        except BaseException:
            await pool.close()
            raise
        return pool

    @staticmethod
    async def _close_pool(pool: AsyncConnectionPool[AsyncConnection[Any]]) -> None:
        await pool.close()

    async def _connect(self) -> None:
        async with self._transaction():
            pass

    async def _disconnect(self) -> None:
        await self._pool.aclose()

    def _disconnect_nowait(self) -> None:
        self._pool.close_nowait()


_PgRow = tuple[str, str, str, DedupeStatus, float, float, int, str | None, str | None]


def _row(values: tuple[Any, ...]) -> Row:
    # The table's types and CHECK constraint guarantee the shape.
    return Row(*cast(_PgRow, values))
