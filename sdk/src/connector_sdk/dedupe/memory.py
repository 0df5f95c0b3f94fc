"""The dedupe store in this process's memory: for one-process hosts, tests and demos."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

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
    read_import_file,
)

__all__ = ["MemoryDedupeStore"]


class MemoryDedupeStore(BaseStore):
    """A dedupe store in this process's memory: for one-process hosts, tests and demos.

    A restart forgets everything, so an event delivered again after a restart is processed
    again; use :class:`~connector_sdk.SqliteDedupeStore` when that matters. Close it
    (``aclose()`` or ``async with``) to stop its background purge. It never suspends, so it
    also works under loops that are not asyncio (trio), where it purges inside ``begin()``.
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
        self._rows: dict[str, Row] = {}
        # A plain lock, never held across an await: safe for tasks and for threads alike.
        self._lock = threading.Lock()
        self._last_inline_purge = now()

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"MemoryDedupeStore(records={len(self._rows)})"

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the package rules."""
        now = self._now()
        if (
            not self._purger.start()
            and now - self._last_inline_purge >= self.purge_interval_seconds
        ):
            # No asyncio loop (trio): purge here instead, at most once per interval.
            self._last_inline_purge = now
            await self.purge()
        with self._lock:
            row, processed = claim(
                self._rows.get(dedupe_key(connection_id, event_id)),
                connection_id=connection_id,
                event_id=event_id,
                delivery_attempt=delivery_attempt,
                now=now,
                processing_ttl=self.processing_ttl_seconds,
            )
            if processed:
                self._rows[row.key] = row
        return decision(row, processed)

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        self._finish(dedupe_key, "completed", message_id)

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        self._finish(dedupe_key, "failed", error)

    def _finish(self, key: str, status: DedupeStatus, text: str | None) -> None:
        with self._lock:
            row = finished(self._rows.get(key), key, status, text, self._now())
            if row is not None:
                self._rows[key] = row  # a new object: records handed out earlier stay as they were

    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""
        with self._lock:
            row = self._rows.get(dedupe_key)
        return row.record() if row is not None else None

    async def count(self) -> int:
        """How many records the store holds."""
        return len(self._rows)

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
        The file is read in the calling thread, so this works without asyncio too.
        """
        return await self._import(read_import_file(Path(path), self._now()))

    async def _import(self, rows: list[Row]) -> int:
        written = 0
        with self._lock:
            for row in rows:
                if newer(self._rows.get(row.key), row):
                    self._rows[row.key] = row
                    written += 1
        return written
