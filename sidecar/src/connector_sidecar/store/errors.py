"""What opening the store can fail with; each ``str()`` is the one line the CLI prints.

::

    StoreError
    ├── DatabaseLockedError       another sidecar owns this SQLite data directory
    ├── SchemaTooNewError         the database was written by a newer sidecar
    └── StorageUnavailableError   the storage failed under a running sidecar (disk full, an I/O
                                  error, a read-only file system, PostgreSQL gone): transient,
                                  answered 503 ``storage_unavailable`` with ``Retry-After``

A backend raises :class:`StorageUnavailableError` in place of its driver's error (sqlite3's
``OperationalError``, psycopg's ``OperationalError``), so nothing above the store depends on
which backend failed.
"""

from __future__ import annotations

__all__ = [
    "DatabaseLockedError",
    "SchemaTooNewError",
    "StorageUnavailableError",
    "StoreError",
]


class StoreError(RuntimeError):
    """The store cannot be used as it is."""


class DatabaseLockedError(StoreError):
    """Another sidecar process already owns this data directory."""


class SchemaTooNewError(StoreError):
    """The schema's version is newer than the migrations this sidecar knows: never downgrade."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the database schema is version {found}, newer than this sidecar knows ({known})"
        )
        self.found = found
        self.known = known


class StorageUnavailableError(StoreError):
    """The storage refused a read or a write; nothing of that transaction was stored.

    ``reason`` is one line for a person (no credentials); ``retry_after`` is how many seconds
    a client should wait before trying again.
    """

    def __init__(self, reason: str, *, retry_after: int = 5) -> None:
        super().__init__(f"storage unavailable: {reason}")
        self.reason = reason
        self.retry_after = retry_after
