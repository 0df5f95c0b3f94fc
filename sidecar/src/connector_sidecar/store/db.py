"""The store's one interface, :class:`Database`, and the backend a setting selects.

Two backends implement it: :class:`~connector_sidecar.store.sqlite.SqliteDatabase`, a file
under ``SIDECAR_DATA_DIR`` for a single sidecar (the default), and
:class:`~connector_sidecar.store.postgres.PostgresDatabase` for several replicas on one
PostgreSQL (``SIDECAR_DATABASE_URL``). Both run the same query functions (``_sql.py``), the same
numbered migrations (``migrations.py``) and the same test suite.

A transaction is a plain function ``fn(conn, *args)`` run on a database thread: it must not
await, and must not act outside the database, because it may be retried or rolled back.

When the storage fails under a running sidecar, ``run`` and ``transaction`` raise
:class:`~connector_sidecar.store.errors.StorageUnavailableError` (never the driver's own
error) and ``health`` holds the reason until a write transaction commits again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from connector_sidecar.store._health import StorageHealth
from connector_sidecar.store.errors import DatabaseLockedError
from connector_sidecar.store.sqlite import SqliteDatabase

__all__ = ["Database", "DatabaseLockedError", "database_for"]

T = TypeVar("T")


class Database(Protocol):
    dialect: str  # "sqlite" or "postgres"
    # Only this process can open it (SQLite's data-directory lock): after a start, whatever
    # other replicas held is free at once instead of when their leases run out.
    exclusive: bool
    health: StorageHealth

    @property
    def is_open(self) -> bool: ...

    def describe(self) -> str:
        """Where the data lives, without credentials (for logs)."""
        ...

    async def open(self) -> None:
        """Connect and apply pending migrations; raises a ``StoreError`` it cannot."""
        ...

    async def close(self) -> None: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` outside a transaction: for reads."""
        ...

    async def transaction(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` as one write transaction, durable when this returns."""
        ...

    async def probe(self) -> None:
        """One small committed write, to learn whether the storage takes writes again."""
        ...


def database_for(url: str | None, sqlite_path: Any) -> Database:
    """PostgreSQL when ``url`` is set, else the SQLite file at ``sqlite_path``."""
    if url:
        from connector_sidecar.store.postgres import PostgresDatabase

        return PostgresDatabase(url)
    return SqliteDatabase(sqlite_path)
