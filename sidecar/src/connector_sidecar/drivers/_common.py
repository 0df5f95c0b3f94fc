"""Reading vendor JSON defensively, as both drivers' inbound mapping does.

A field of the wrong type reads as absent, and a time out of range as none, so a malformed
payload never raises.
"""

from __future__ import annotations

from typing import Any

from connector_contracts import format_timestamp

__all__ = ["as_dict", "as_list", "as_str", "timestamp_from_ms"]


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def timestamp_from_ms(millis: int | None) -> str | None:
    """Epoch milliseconds as a contract timestamp; None when absent, not positive or out of range."""
    if millis is None or millis <= 0:
        return None
    try:
        return format_timestamp(millis / 1000)
    except (OverflowError, ValueError, OSError):
        return None
