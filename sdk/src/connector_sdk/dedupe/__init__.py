"""Dedupe stores: process each bridge event once, though the sidecar delivers at least once.

The rules, shared by every store (one implementation, in ``_base``):

- the key is ``"{connection_id}:{event_id}"``;
- a new key is processed: status ``processing``, attempts ``max(1, delivery_attempt)``;
- ``completed``: not processed again; answer 200 (a duplicate);
- ``processing`` for less than the processing TTL: not processed; answer 409, retry in 5 s;
- ``processing`` for the TTL or longer (the worker died) or ``failed``: processed again,
  attempts ``max(previous + 1, delivery_attempt)``, ``last_error`` cleared. A TTL of 0 makes
  every in-flight duplicate stale;
- ``complete(key, message_id)`` marks it done; ``fail(key, error)`` marks it failed, except
  that a ``completed`` event stays completed (a late failure report must not make a
  redelivery run the work twice).

Records are kept for a retention window longer than the sidecar's retry horizon
(``BRIDGE_MAX_AGE_SECONDS``, one day by default; seven days here) and then purged by a
background task of the store, every purge interval, so it never grows without bound. The task
starts with ``async with store`` or the first ``begin()`` and stops on ``aclose()``.

The stores:

- :class:`MemoryDedupeStore`: this process only, forgotten on restart;
- :class:`SqliteDedupeStore`: a file, shared by the processes of one machine; group commit;
- :class:`PostgresDedupeStore` (extra ``postgres``) and :class:`RedisDedupeStore` (extra
  ``redis``): shared by every replica of a host, on any machine.
"""

from connector_sdk.dedupe._base import (
    DEFAULT_PROCESSING_TTL_SECONDS,
    DEFAULT_PURGE_INTERVAL_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    PENDING_RETRY_AFTER_SECONDS,
    DedupeDecision,
    DedupeRecord,
    DedupeStatus,
    DedupeStore,
    dedupe_key,
)
from connector_sdk.dedupe.memory import MemoryDedupeStore
from connector_sdk.dedupe.postgres import PostgresDedupeStore
from connector_sdk.dedupe.redis import RedisDedupeStore
from connector_sdk.dedupe.sqlite import SqliteDedupeStore

__all__ = [
    "DEFAULT_PROCESSING_TTL_SECONDS",
    "DEFAULT_PURGE_INTERVAL_SECONDS",
    "DEFAULT_RETENTION_SECONDS",
    "PENDING_RETRY_AFTER_SECONDS",
    "DedupeDecision",
    "DedupeRecord",
    "DedupeStatus",
    "DedupeStore",
    "MemoryDedupeStore",
    "PostgresDedupeStore",
    "RedisDedupeStore",
    "SqliteDedupeStore",
    "dedupe_key",
]
