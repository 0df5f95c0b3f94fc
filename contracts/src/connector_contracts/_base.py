"""The one base Struct that carries the wire policy, and time helpers shared by both sides."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

__all__ = ["Wire", "format_timestamp", "parse_timestamp", "utc_now"]


class Wire(msgspec.Struct, kw_only=True, frozen=True, rename="camel", omit_defaults=False):
    """Base of every wire type.

    - ``rename="camel"``: Python code uses snake_case, the wire uses camelCase (docs/CONTRACT.md §0).
    - ``kw_only``: fields with defaults can be added at the end of any type without breaking
      positional construction, which is how new optional fields arrive.
    - ``frozen``: a decoded message is a value; code that wants another one builds it.
    - Unknown fields are *not* forbidden: an older peer must skip fields a newer peer sends.
    """


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime | float) -> str:
    """ISO-8601 UTC with a ``Z`` suffix and millisecond precision at most (docs/CONTRACT.md §0)."""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` or an offset); naive values are taken as UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
