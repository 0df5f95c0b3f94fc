"""The dedupe store kinds the tests run on, and how to open one of each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connector_sdk import (
    MemoryDedupeStore,
    PostgresDedupeStore,
    RedisDedupeStore,
    SqliteDedupeStore,
)

Store = MemoryDedupeStore | SqliteDedupeStore | PostgresDedupeStore | RedisDedupeStore
#: ``make_store(**options)``: a store of the test's kind on the test's file, table or prefix.
MakeStore = Callable[..., Store]

KINDS = ["memory", "sqlite", "postgres", "redis"]
#: The stores several processes can share.
SHARED_KINDS = ["sqlite", "postgres", "redis"]


def open_store(kind: str, target: str, name: str, **options: Any) -> Store:
    """A store of ``kind`` on ``target`` (file, DSN or URL) under ``name`` (table or prefix)."""
    if kind == "memory":
        return MemoryDedupeStore(**options)
    if kind == "sqlite":
        return SqliteDedupeStore(target, **options)
    if kind == "postgres":
        return PostgresDedupeStore(target, table=name, **options)
    if kind == "redis":
        return RedisDedupeStore(target, prefix=name, **options)
    raise ValueError(kind)
