"""The typing-ticket cache: one getconfig per user while the ticket is fresh, refreshed within
24 h, and after a failure a back-off from 2 s doubling up to 1 h (the reference's rules)."""

from __future__ import annotations

import random

import pytest

from connector_sidecar.drivers.weixin.client import IlinkApiError
from connector_sidecar.drivers.weixin.typing import TicketCache

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_ticket_is_cached_and_refreshed_within_a_day() -> None:
    """A success is reused until its refresh time (≤ 24 h), then fetched again."""
    clock = Clock()
    cache = TicketCache(clock, random.Random(1))
    calls: list[int] = []

    async def fetch() -> dict[str, object]:
        calls.append(1)
        return {"ret": 0, "typing_ticket": f"t{len(calls)}"}

    assert await cache.ticket("c", "u", fetch) == "t1"
    assert await cache.ticket("c", "u", fetch) == "t1"
    assert len(calls) == 1
    assert await cache.ticket("c", "other", fetch) == "t2"
    clock.now += 24 * 3600 + 1
    assert await cache.ticket("c", "u", fetch) == "t3"


async def test_failures_back_off_and_keep_an_older_ticket() -> None:
    """ret missing or non-zero, or an error, is a failure: retried after 2 s, 4 s, … ≤ 1 h."""
    clock = Clock()
    cache = TicketCache(clock)
    answers: list[dict[str, object] | Exception] = [
        {"typing_ticket": "no-ret"},  # a missing ret is a failure (the reference: ret === 0)
        IlinkApiError(-1, None, "busy"),
        {"ret": 0, "typing_ticket": "good"},
    ]
    calls = 0

    async def fetch() -> dict[str, object]:
        nonlocal calls
        calls += 1
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await cache.ticket("c", "u", fetch) is None
    assert await cache.ticket("c", "u", fetch) is None  # within the 2 s back-off: no call
    assert calls == 1
    clock.now += 2
    assert await cache.ticket("c", "u", fetch) is None
    clock.now += 3  # the back-off is now 4 s
    assert await cache.ticket("c", "u", fetch) is None
    assert calls == 2
    clock.now += 1
    assert await cache.ticket("c", "u", fetch) == "good"
    cache.forget("c")
    answers.append(IlinkApiError(-1, None, "busy"))
    assert await cache.ticket("c", "u", fetch) is None
