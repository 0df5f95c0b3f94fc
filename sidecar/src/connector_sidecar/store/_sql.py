"""One SQL dialect for the query modules, spoken to SQLite and PostgreSQL alike.

The query classes (``connections.py``, ``outbox.py``, …) are plain functions of a
:class:`Connection` that run on a database thread. They write one portable SQL: ``?``
placeholders, ``INSERT … ON CONFLICT``, no ``rowid`` and no bare columns beside an aggregate, and
``FOR UPDATE`` / ``FOR UPDATE SKIP LOCKED`` where PostgreSQL needs a row lock. Each backend wraps
its driver's connection in a :class:`Connection` that translates once per statement text (cached):

- SQLite drops the row-lock clauses: a write transaction there is ``BEGIN IMMEDIATE``, which
  already excludes every other writer.
- PostgreSQL gets ``%s`` placeholders (and ``%%`` for a literal ``%``), and a text value holding
  NUL, which PostgreSQL cannot store, gets U+FFFD in its place.

Rows answer both ``row[0]`` and ``row["name"]``, and ``dict(row)``, on both backends.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

__all__ = ["Connection", "Cursor", "Row", "postgres_sql", "row_class", "sqlite_sql"]

_LOCKING = re.compile(r"\s+FOR\s+UPDATE(\s+SKIP\s+LOCKED)?", re.IGNORECASE)


class Cursor(Protocol):
    """What a statement returns: its rows and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A database connection in the portable dialect; only ever used on its database thread."""

    dialect: str

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor: ...


@functools.lru_cache(maxsize=1024)
def sqlite_sql(sql: str) -> str:
    return _LOCKING.sub("", sql)


@functools.lru_cache(maxsize=1024)
def postgres_sql(sql: str) -> str:
    # The statements are our own: a ``?`` is always a placeholder, never inside a literal.
    return sql.replace("%", "%%").replace("?", "%s")


class Row(tuple[Any, ...]):
    """A result row by position or by column name, like :class:`sqlite3.Row`."""

    __slots__ = ()
    _index: dict[str, int] = {}  # noqa: RUF012 - set per column list by :func:`row_class`

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@functools.lru_cache(maxsize=256)
def row_class(names: tuple[str, ...]) -> type[Row]:
    """The :class:`Row` subclass for one list of result columns."""
    return type("Row", (Row,), {"__slots__": (), "_index": {n: i for i, n in enumerate(names)}})
