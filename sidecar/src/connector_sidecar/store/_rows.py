"""Row to record and the dynamic ``UPDATE``, shared by the connection and session tables.

Their records are dataclasses whose fields are exactly the table's columns; JSON columns hold
objects, stored as text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from connector_sidecar.store._sql import Connection

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["record_from_row", "update_row"]

R = TypeVar("R", bound="DataclassInstance")

_json = msgspec.json.Encoder()
_dict = msgspec.json.Decoder(dict[str, Any])


def record_from_row(record: type[R], row: Any, json_fields: Collection[str]) -> R:
    """The ``record`` of a ``SELECT *`` row; a NULL or empty JSON column becomes ``{}``."""
    values = dict(row)
    for name in json_fields:
        values[name] = _dict.decode(values[name]) if values[name] else {}
    return record(**values)


def update_row(
    conn: Connection,
    *,
    table: str,
    key: tuple[str, str],
    record: type[R],
    json_fields: Collection[str],
    changes: dict[str, Any],
    now: int,
) -> R:
    """Set ``changes`` (fields of the dataclass ``record``) on the row of ``table`` whose key
    column, value is ``key``; JSON fields are encoded and ``updated_at`` becomes ``now``.
    Returns the row as it is now; ``KeyError`` if there is none.

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
    row = conn.execute(
        f"SELECT * FROM {table} WHERE {column} = ?",  # noqa: S608 - names from the caller's code
        (value,),
    ).fetchone()
    if row is None:
        raise KeyError(value)
    return record_from_row(record, row, json_fields)
