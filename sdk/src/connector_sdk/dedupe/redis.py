"""The dedupe store in Redis, for hosts with several replicas (redis-py's asyncio client).

Needs the ``redis`` extra: ``pip install 'connector-sdk[redis]'``.

Each record is one JSON string at ``{prefix}record:{dedupe_key}``; a sorted set
``{prefix}updated`` holds every key scored by its ``updated_at``, for :meth:`purge` and
:meth:`count`. Every call reads the record (``GET``), applies the package's rules in Python,
and writes the record and its score with a compare-and-set script: the write happens only if
the record is still exactly what was read; otherwise the call reads it again (bounded). So
any number of processes process each event once, in two round trips per call. A call returns once Redis has executed it: whether that
survives a crash of the Redis server is the server's persistence setting (``appendonly yes``
with ``appendfsync always`` or ``everysec``).

Times are the store's clock (``now=``), not Redis's: records are purged by the store's
background purge, never by key expiry. Use a single Redis server (or a primary with
replicas), not Redis Cluster: the purge touches keys it does not name up front.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlsplit

import msgspec

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
)
from connector_sdk.dedupe._purge import LoopBound
from connector_sdk.errors import ConfigurationError, DedupeError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisDedupeStore"]

R = TypeVar("R")

DEFAULT_PREFIX: Final = "connector-dedupe:"
#: Other clients changed the record this many times in a row: an error, not a loop.
_MAX_WRITE_RACES: Final = 200
_PURGE_BATCH: Final = 1000
# Removes up to ARGV[2] members scored below ARGV[1] from the index KEYS[1], and their records
# (ARGV[3] .. member), atomically: a record touched meanwhile has a new score and stays.
_PURGE_SCRIPT: Final = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, key in ipairs(keys) do
    redis.call('DEL', ARGV[3] .. key)
    redis.call('ZREM', KEYS[1], key)
end
return #keys
"""

# Writes ARGV[3] at KEYS[1] and scores ARGV[5] as ARGV[4] in the index KEYS[2], only if
# KEYS[1] still holds ARGV[2] (ARGV[1] == "1") or nothing (ARGV[1] == "0"). Returns 1 if written.
_COMPARE_AND_SET_SCRIPT: Final = """
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
    if current ~= ARGV[2] then return 0 end
elseif current then
    return 0
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Row)


@dataclass(frozen=True, slots=True)
class _Client:
    """The client of one event loop, with its scripts (sent by SHA, loaded when missing)."""

    redis: Redis
    compare_and_set: AsyncScript
    purge: AsyncScript


def _require_driver() -> None:
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "RedisDedupeStore needs redis-py 5 or newer: pip install 'connector-sdk[redis]'"
        ) from error


def _redacted(url: str) -> str:
    """The URL without user or password, for reprs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "<unreadable url>"
    return f"{parts.scheme}://{host}:{port}{parts.path}"


class RedisDedupeStore(BaseStore):
    """A dedupe store in Redis, shared by every replica and process of a host.

    ``url`` is a redis-py URL (``redis://[:password@]host:6379/0``, ``rediss://`` for TLS);
    its password never appears in the store's repr or errors. Every key starts with
    ``prefix``. The store keeps a pool of up to ``max_connections`` connections, opened on
    first use in the running asyncio loop; close it (``aclose()`` or ``async with``) to stop
    its background purge and close the pool.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        processing_ttl_seconds: float = DEFAULT_PROCESSING_TTL_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        purge_interval_seconds: float = DEFAULT_PURGE_INTERVAL_SECONDS,
        max_connections: int = 20,
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
        if not prefix:
            raise ConfigurationError("prefix must not be empty: the store shares the database")
        if max_connections < 1:
            raise ConfigurationError("max_connections must be at least 1")
        if connect_timeout_seconds <= 0:
            raise ConfigurationError("connect_timeout_seconds must be positive")
        self.prefix = prefix
        self.max_connections = max_connections
        self.connect_timeout_seconds = connect_timeout_seconds
        self._url = url
        self._where = _redacted(url)
        self._index = f"{prefix}updated"
        self._client: LoopBound[_Client] = LoopBound(self._open_client, self._close_client)

    def __repr__(self) -> str:
        return f"RedisDedupeStore({self._where!r}, prefix={self.prefix!r})"

    def _record(self, key: str) -> str:
        return f"{self.prefix}record:{key}"

    # public, async ---------------------------------------------------------------------------

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        """Claim the event if it should be processed now; see the package rules."""
        self._purger.start()

        def change(found: Row | None) -> tuple[Row | None, DedupeDecision]:
            row, processed = claim(
                found,
                connection_id=connection_id,
                event_id=event_id,
                delivery_attempt=delivery_attempt,
                now=self._now(),
                processing_ttl=self.processing_ttl_seconds,
            )
            return (row if processed else None), decision(row, processed)

        return await self._atomically(dedupe_key(connection_id, event_id), change)

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        """Mark the event processed; ``message_id`` is the host's own id for the result."""
        await self._finish(dedupe_key, "completed", message_id)

    async def fail(self, dedupe_key: str, error: str) -> None:
        """Mark the event failed, so its next delivery processes it again."""
        await self._finish(dedupe_key, "failed", error)

    async def _finish(self, key: str, status: DedupeStatus, text: str | None) -> None:
        def change(found: Row | None) -> tuple[Row | None, None]:
            return finished(found, key, status, text, self._now()), None

        await self._atomically(key, change)

    async def get(self, dedupe_key: str) -> DedupeRecord | None:
        """The record of a key, or None."""
        async with self._errors():
            client = await self._client.get()
            raw = await client.redis.get(self._record(dedupe_key))
        return None if raw is None else _decoder.decode(raw).record()

    async def count(self) -> int:
        """How many records the store holds under its prefix."""
        async with self._errors():
            client = await self._client.get()
            return int(await client.redis.zcard(self._index))

    async def purge(self) -> int:
        """Drop records not touched for ``retention_seconds``; returns how many."""
        cutoff = repr(self._now() - self.retention_seconds)
        removed = 0
        async with self._errors():
            client = await self._client.get()
            for _ in range(1_000_000):  # bounded: each round removes a full batch or ends
                batch = int(
                    await client.purge(
                        keys=[self._index], args=[cutoff, _PURGE_BATCH, self._record("")]
                    )
                )
                removed += batch
                if batch < _PURGE_BATCH:
                    break
        return removed

    async def _import(self, rows: list[Row]) -> int:
        written = 0
        for row in rows:

            def change(found: Row | None, row: Row = row) -> tuple[Row | None, bool]:
                write = newer(found, row)
                return (row if write else None), write

            written += await self._atomically(row.key, change)
        return written

    # one record, read and written atomically --------------------------------------------------

    async def _atomically(
        self, key: str, change: Callable[[Row | None], tuple[Row | None, R]]
    ) -> R:
        """Read ``key``, write what ``change`` returns (None: nothing) if it is unchanged."""
        record = self._record(key)
        async with self._errors():
            client = await self._client.get()
            for _ in range(_MAX_WRITE_RACES):
                raw = await client.redis.get(record)
                write, result = change(None if raw is None else _decoder.decode(raw))
                if write is None:
                    return result  # the read was one atomic GET: nothing to write
                written = await client.compare_and_set(
                    keys=[record, self._index],
                    args=[
                        "0" if raw is None else "1",
                        b"" if raw is None else raw,
                        _encoder.encode(write),
                        repr(write.updated_at),
                        key,
                    ],
                )
                if int(written) == 1:
                    return result
                # another client wrote the record since our read: apply the rules again
        raise DedupeError(
            f"dedupe store {self!r}: {key} kept changing, gave up after {_MAX_WRITE_RACES} tries"
        )

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        from redis.exceptions import RedisError

        try:
            yield
        except (RedisError, OSError) as error:
            raise DedupeError(f"dedupe store {self!r}: {error}") from error

    # the connection pool ---------------------------------------------------------------------

    async def _open_client(self) -> _Client:
        from redis.asyncio import BlockingConnectionPool, Redis

        pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=self.max_connections,
            timeout=30,  # seconds a call waits for a free connection of the pool
            socket_connect_timeout=self.connect_timeout_seconds,
        )
        client = Redis.from_pool(pool)  # the client owns the pool: aclose() closes both
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        return _Client(
            client,
            client.register_script(_COMPARE_AND_SET_SCRIPT),
            client.register_script(_PURGE_SCRIPT),
        )

    @staticmethod
    async def _close_client(client: _Client) -> None:
        await client.redis.aclose()

    async def _connect(self) -> None:
        async with self._errors():
            await self._client.get()

    async def _disconnect(self) -> None:
        await self._client.aclose()

    def _disconnect_nowait(self) -> None:
        self._client.close_nowait()
