"""What opening the store can fail with; each ``str()`` is the one line the CLI prints.

::

    StoreError
    ├── DatabaseLockedError   another sidecar owns this SQLite data directory
    └── SchemaTooNewError     the database was written by a newer sidecar
"""

from __future__ import annotations

__all__ = ["DatabaseLockedError", "SchemaTooNewError", "StoreError"]


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
