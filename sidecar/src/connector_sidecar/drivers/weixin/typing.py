"""The WeChat typing indicator: ``getconfig`` tickets cached per user, then ``sendtyping``.

docs/protocols/weixin-ilink.md §6 and the reference's ``src/api/config-cache.ts``: a ticket comes
from ``getconfig`` (with the user's latest ``context_token`` when there is one); a success needs
``ret == 0`` exactly and a non-empty ``typing_ticket``. A ticket is refreshed at a random time
within 24 h; a failure is retried after 2 s, doubling up to 1 h, and meanwhile typing is skipped.
``sendtyping`` carries status 1 (typing) or 2 (cancel); the reference does not check its answer.

[3rd-party] hermes keeps tickets only 600 s; we follow the reference. How long one ``status 1``
keeps showing is [unconfirmed]: the SDK resends it every 5 s while a handler runs.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable

from connector_sidecar._clock import Clock
from connector_sidecar.drivers._common import as_str
from connector_sidecar.drivers.weixin.client import IlinkError, as_int

__all__ = ["TicketCache"]

TICKET_MAX_AGE = 24 * 3600.0
FIRST_BACKOFF = 2.0
MAX_BACKOFF = 3600.0

FetchConfig = Callable[[], Awaitable[dict[str, object]]]


@dataclasses.dataclass
class _Entry:
    ticket: str | None = dataclasses.field(default=None, repr=False)
    refresh_at: float = 0.0
    backoff: float = 0.0


class TicketCache:
    """``typing_ticket`` per (connection, user)."""

    def __init__(self, clock: Clock, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def ticket(self, connection_id: str, user_id: str, fetch: FetchConfig) -> str | None:
        """A usable ticket, fetched when due; None while ``getconfig`` keeps failing."""
        key = (connection_id, user_id)
        entry = self._entries.setdefault(key, _Entry())
        now = self.clock()
        if now < entry.refresh_at:
            return entry.ticket
        try:
            answer = await fetch()
        except IlinkError:
            answer = {}
        ticket = as_str(answer.get("typing_ticket"))
        if as_int(answer.get("ret")) == 0 and "ret" in answer and ticket is not None:
            entry.ticket = ticket
            entry.backoff = 0.0
            entry.refresh_at = now + self.rng.uniform(0.5, 1.0) * TICKET_MAX_AGE
        else:
            entry.backoff = min(MAX_BACKOFF, entry.backoff * 2 if entry.backoff else FIRST_BACKOFF)
            entry.refresh_at = now + entry.backoff
            # A ticket fetched before stays usable until the vendor hands out another.
        return entry.ticket

    def forget(self, connection_id: str) -> None:
        for key in [k for k in self._entries if k[0] == connection_id]:
            del self._entries[key]
