"""The dynamic ``UPDATE`` that the connection and session tables share."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Collection
from typing import Any

import msgspec

__all__ = ["update_row"]

_json = msgspec.json.Encoder()


def update_row(
    conn: sqlite3.Connection,
    *,
    table: str,
    key: tuple[str, str],
    record: type[Any],
    json_fields: Collection[str],
    changes: dict[str, Any],
    now: int,
) -> None:
    """Set ``changes`` (fields of the dataclass ``record``) on the row of ``table`` whose key
    column, value is ``key``; JSON fields are encoded and ``updated_at`` becomes ``now``.

    Column names come from the dataclass, never from the caller's data: an unknown field is a
    ``ValueError``, and so is the key or ``created_at``.
    """
    column, value = key
    allowed = {f.name for f in dataclasses.fields(record)} - {column, "created_at"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"unknown {record.__name__} fields: {sorted(unknown)}")
    values = {**changes, "updated_at": now}
    for name in json_fields:
        if name in values:
            values[name] = _json.encode(values[name]).decode()
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(
        f"UPDATE {table} SET {assignments} WHERE {column} = ?",  # noqa: S608 - names from the dataclass
        (*values.values(), value),
    )
