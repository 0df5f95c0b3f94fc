"""The dedupe rules, once, as pure functions over one record, and what every store shares.

The rules (see the package docstring) live in :func:`claim`, :func:`finished` and
:func:`newer`. Each store only reads one record, applies them, and writes the result back
atomically in its own way (a lock, a transaction, an optimistic ``WATCH``), so a fix to a rule
is a fix for every store.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Protocol, Self, runtime_checkable

import msgspec

from connector_contracts import parse_timestamp
from connector_sdk.dedupe._purge import Purger, logger
from connector_sdk.errors import ConfigurationError, DedupeImportError, UnknownDedupeKey

DedupeStatus = Literal["processing", "completed", "failed"]

DEFAULT_PROCESSING_TTL_SECONDS: Final = 60.0
DEFAULT_RETENTION_SECONDS: Final = 7 * 24 * 3600.0
DEFAULT_PURGE_INTERVAL_SECONDS: Final = 300.0
PENDING_RETRY_AFTER_SECONDS: Final = 5
_MAX_ERROR_CHARS: Final = 2000


def dedupe_key(connection_id: str, event_id: str) -> str:
    """The key a bridge event is deduplicated on."""
    return f"{connection_id}:{event_id}"


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupeRecord:
    """What a store remembers about one event."""

    dedupe_key: str
    connection_id: str
    event_id: str
    status: DedupeStatus
    first_seen_at: datetime
    updated_at: datetime
    delivery_attempts: int
    message_id: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupeDecision:
    """The answer of :meth:`DedupeStore.begin`: process the event, or answer the sidecar."""

    should_process: bool
    dedupe_key: str
    status: DedupeStatus
    #: What to answer the sidecar when not processing: 200 (done) or 409 (in progress).
    http_status: int
    retry_after_seconds: int | None
    record: DedupeRecord


@runtime_checkable
class DedupeStore(Protocol):
    """The interface :class:`~connector_sdk.BridgeEndpoint` needs; implement it for your own."""

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the module rules."""
        ...

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        ...

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        ...


@dataclass(frozen=True, slots=True)
class Row:
    """The float-timestamped form every store keeps (epoch seconds, as the clock gives them).

    The field order is the column order of the SQL stores.
    """

    key: str
    connection_id: str
    event_id: str
    status: DedupeStatus
    first_seen_at: float
    updated_at: float
    delivery_attempts: int
    message_id: str | None
    last_error: str | None

    def record(self) -> DedupeRecord:
        return DedupeRecord(
            dedupe_key=self.key,
            connection_id=self.connection_id,
            event_id=self.event_id,
            status=self.status,
            first_seen_at=_datetime(self.first_seen_at),
            updated_at=_datetime(self.updated_at),
            delivery_attempts=self.delivery_attempts,
            message_id=self.message_id,
            last_error=self.last_error,
        )

    def values(self) -> tuple[str, str, str, str, float, float, int, str | None, str | None]:
        """The fields in column order, for an INSERT."""
        return (
            self.key,
            self.connection_id,
            self.event_id,
            self.status,
            self.first_seen_at,
            self.updated_at,
            self.delivery_attempts,
            self.message_id,
            self.last_error,
        )


# the rules ---------------------------------------------------------------------------------------


def claim(
    row: Row | None,
    *,
    connection_id: str,
    event_id: str,
    delivery_attempt: int,
    now: float,
    processing_ttl: float,
) -> tuple[Row, bool]:
    """``begin()``: the record as it is after the call, and whether to process (and write) it.

    The caller reads ``row`` and writes the result atomically (nobody else may change the record
    in between). With a processing TTL of 0, every in-flight duplicate is stale.
    """
    key = dedupe_key(connection_id, event_id)
    if row is None:
        return (
            Row(
                key=key,
                connection_id=connection_id,
                event_id=event_id,
                status="processing",
                first_seen_at=now,
                updated_at=now,
                delivery_attempts=max(1, delivery_attempt),
                message_id=None,
                last_error=None,
            ),
            True,
        )
    if row.status == "completed" or (
        row.status == "processing" and now - row.updated_at < processing_ttl
    ):
        return row, False  # done already, or another worker is on it right now
    # failed, or processing by a worker that has not been heard of for too long
    return (
        replace(
            row,
            status="processing",
            updated_at=now,
            delivery_attempts=max(row.delivery_attempts + 1, delivery_attempt),
            last_error=None,
        ),
        True,
    )


def decision(row: Row, processed: bool) -> DedupeDecision:
    """What ``begin()`` answers for the record :func:`claim` returned."""
    pending = not processed and row.status == "processing"
    return DedupeDecision(
        should_process=processed,
        dedupe_key=row.key,
        status=row.status,
        http_status=409 if pending else 200,
        retry_after_seconds=PENDING_RETRY_AFTER_SECONDS if pending else None,
        record=row.record(),
    )


def finished(
    row: Row | None, key: str, status: DedupeStatus, text: str | None, now: float
) -> Row | None:
    """``complete()`` (``text`` is the message id) or ``fail()`` (``text`` is the error).

    Returns the record to write, or None when nothing changes (a late ``fail()`` of a completed
    event). Raises :class:`UnknownDedupeKey` for a key with no record.
    """
    if row is None:
        raise UnknownDedupeKey(key)
    if status == "failed" and row.status == "completed":
        # A stale worker reporting late: the work is done, and a failed record would make the
        # next redelivery run it a second time.
        logger.warning("dedupe: ignoring fail() of completed event %s: %s", key, text)
        return None
    if status == "completed":
        return replace(row, status=status, message_id=text, last_error=None, updated_at=now)
    return replace(row, status=status, last_error=_error_text(text or ""), updated_at=now)


def newer(existing: Row | None, imported: Row) -> bool:
    """An imported record is written only over no record or an older one (``updated_at``)."""
    return existing is None or existing.updated_at < imported.updated_at


def check_windows(processing_ttl: float, retention: float, purge_interval: float) -> None:
    """Refuse windows the rules cannot work with; a processing TTL of 0 is allowed."""
    if processing_ttl < 0:
        raise ConfigurationError("processing_ttl_seconds must be zero or positive")
    if purge_interval <= 0:
        raise ConfigurationError("purge_interval_seconds must be positive")
    if retention < processing_ttl:
        raise ConfigurationError("retention_seconds must be at least processing_ttl_seconds")


def _error_text(error: str) -> str:
    return error if len(error) <= _MAX_ERROR_CHARS else error[: _MAX_ERROR_CHARS - 1] + "…"


# what every store shares -------------------------------------------------------------------------


class BaseStore(abc.ABC):
    """The windows, the clock, the background purge, ``async with``, ``close``, ``import_json``.

    A store implements the protocol's three calls plus :meth:`get`, :meth:`count`,
    :meth:`purge`, ``_import`` and, when it holds connections, ``_connect``, ``_disconnect``
    and ``_disconnect_nowait``.
    """

    def __init__(
        self,
        *,
        processing_ttl_seconds: float,
        retention_seconds: float,
        purge_interval_seconds: float,
        now: Callable[[], float],
    ) -> None:
        check_windows(processing_ttl_seconds, retention_seconds, purge_interval_seconds)
        self.processing_ttl_seconds = processing_ttl_seconds
        self.retention_seconds = retention_seconds
        self.purge_interval_seconds = purge_interval_seconds
        self._now = now
        self._purger = Purger(
            self.purge, purge_interval_seconds, name=f"dedupe-purge {type(self).__name__}"
        )

    async def __aenter__(self) -> Self:
        await self._connect()
        self._purger.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background purge and close connections (the next call opens them again)."""
        await self._purger.stop()
        await self._disconnect()

    def close(self) -> None:
        """Blocking form of :meth:`aclose`, for shutdown hooks that are not async."""
        self._purger.stop_nowait()
        self._disconnect_nowait()

    async def import_json(self, path: str | os.PathLike[str]) -> int:
        """Import an existing host's ``message_dedupe.json``; returns the records written.

        A record already in the store is replaced only by a newer one (``updated_at``), so
        importing twice, or after the store has moved on, changes nothing.
        """
        rows = await asyncio.to_thread(read_import_file, Path(path), self._now())
        return await self._import(rows)

    @abc.abstractmethod
    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the package rules."""

    @abc.abstractmethod
    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""

    @abc.abstractmethod
    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""

    @abc.abstractmethod
    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""

    @abc.abstractmethod
    async def count(self) -> int:
        """How many records the store holds."""

    @abc.abstractmethod
    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""

    @abc.abstractmethod
    async def _import(self, rows: list[Row]) -> int:
        """Write each row where :func:`newer` says so, atomically per row; returns how many."""

    async def _connect(self) -> None:  # noqa: B027 - an optional hook: nothing to open
        """Open what the store needs (``async with`` calls it; every call opens lazily too)."""

    async def _disconnect(self) -> None:  # noqa: B027 - an optional hook
        """Close what :meth:`_connect` opened."""

    def _disconnect_nowait(self) -> None:  # noqa: B027 - an optional hook
        """Close what :meth:`_connect` opened, from synchronous code."""


# importing an existing host's message_dedupe.json ------------------------------------------------


class _ImportedRecord(msgspec.Struct, kw_only=True):
    connection_id: str
    event_id: str
    status: DedupeStatus
    first_seen_at: str | None = None
    updated_at: str | None = None
    delivery_attempts: int = 1
    message_id: str | None = None
    last_error: str | None = None
    dedupe_key: str | None = None


class _ImportFile(msgspec.Struct):
    records: dict[str, _ImportedRecord]


def read_import_file(path: Path, now: float) -> list[Row]:
    """The records of a ``message_dedupe.json``; a record without times is dated ``now``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DedupeImportError(str(path), f"cannot read: {error.strerror or error}") from None
    try:
        document = msgspec.json.decode(data, type=_ImportFile)
    except msgspec.DecodeError as error:  # ValidationError is a subclass
        raise DedupeImportError(str(path), str(error)) from None
    rows = []
    for name, item in document.records.items():
        try:
            updated = parse_timestamp(item.updated_at).timestamp() if item.updated_at else now
            first_seen = (
                parse_timestamp(item.first_seen_at).timestamp() if item.first_seen_at else updated
            )
        except ValueError as error:
            raise DedupeImportError(str(path), f"record {name!r}: {error}") from None
        rows.append(
            Row(
                key=dedupe_key(item.connection_id, item.event_id),
                connection_id=item.connection_id,
                event_id=item.event_id,
                status=item.status,
                first_seen_at=first_seen,
                updated_at=updated,
                delivery_attempts=max(1, item.delivery_attempts),
                message_id=item.message_id,
                last_error=item.last_error,
            )
        )
    return rows
