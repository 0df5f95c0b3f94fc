"""Whether the storage takes writes: the state behind ``/readyz``'s storage reason.

A backend calls :meth:`StorageHealth.failed` when its storage refuses a transaction (the error
it raises then is :class:`~connector_sidecar.store.errors.StorageUnavailableError`) and
:meth:`StorageHealth.wrote` when a write transaction commits. The sidecar is not ready from the
first failure until a write succeeds again: an ordinary write of the sidecar's own, or the
probe the app runs every few seconds while the storage is down (``Database.probe``).
"""

from __future__ import annotations

import logging

from connector_sidecar.store.errors import StorageUnavailableError

__all__ = ["StorageHealth"]

log = logging.getLogger("connector_sidecar.store.db")


class StorageHealth:
    """The reason the storage failed last, until a write succeeds; None while it works."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def failed(self, error: StorageUnavailableError) -> None:
        if self.problem is None:
            log.error("%s", error)
        self.problem = error.reason

    def wrote(self) -> None:
        if self.problem is not None:
            log.warning("storage available again: a write succeeded")
            self.problem = None

    def readiness(self) -> str | None:
        """Why the sidecar is not ready (for ``/readyz``), or None."""
        if self.problem is None:
            return None
        return f"storage unavailable: {self.problem}"
