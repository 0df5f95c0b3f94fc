"""Time, passed in so time-window logic can be tested without sleeping."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from connector_contracts import format_timestamp

__all__ = ["Clock", "Sleep", "iso_ms", "now_ms", "system_clock"]

Clock = Callable[[], float]
"""Returns Unix seconds, like ``time.time``."""

system_clock: Clock = time.time

Sleep = Callable[[float], Awaitable[None]]
"""Waits that many seconds, like ``asyncio.sleep``; a test's may move its clock instead."""


def now_ms(clock: Clock = system_clock) -> int:
    return int(clock() * 1000)


def iso_ms(value: int | None) -> str | None:
    """A stored millisecond timestamp as a contract timestamp string."""
    return None if value is None else format_timestamp(value / 1000)
