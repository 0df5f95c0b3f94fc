"""The host's answer to one bridge POST and what it means for the event: the table of
docs/CONTRACT.md §5 (:func:`judge`), ``Retry-After`` in both forms, and the full-jitter backoff
between failed attempts (:class:`Backoff`).

Pure functions of the answer: no I/O, no clock of their own (``now`` is passed in), so the
delivery worker (``delivery.py``) and the tests read the same rules.
"""

from __future__ import annotations

import dataclasses
import email.utils
from typing import Any, Final, Literal

import httpx
import msgspec
from tenacity import RetryCallState, Retrying, wait_random_exponential

__all__ = [
    "EXCERPT_CHARS",
    "Action",
    "Backoff",
    "Verdict",
    "excerpt",
    "judge",
    "parse_retry_after",
]

BACKOFF_BASE_SECONDS: Final = 0.5
BACKOFF_CAP_SECONDS: Final = 60.0
MAX_RETRY_AFTER_SECONDS: Final = 3600.0  # a host asking for more is capped: we still try hourly
EXCERPT_CHARS: Final = 300

Action = Literal["delivered", "retry", "conflict", "paused", "dead"]


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What one attempt's outcome means for the event (the table of docs/CONTRACT.md §5)."""

    action: Action
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the host asked us to wait, when it said


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP-date; None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an obsolete date form without a zone: HTTP dates are GMT
            return None
        return max(0.0, when.timestamp() - now)
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return seconds


def excerpt(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def _answer(body: bytes) -> dict[str, Any]:
    """The host's JSON answer, or ``{}`` when the body is not a JSON object."""
    if not body.strip():
        return {}
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec reports bad UTF-8 with the latter
        return {}
    return value if isinstance(value, dict) else {}


def _host_retry_after(headers: httpx.Headers, answer: dict[str, Any], now: float) -> float | None:
    header = parse_retry_after(headers.get("retry-after"), now)
    if header is not None:
        return header
    seconds = answer.get("retryAfterSeconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds)
    return None


def judge(status: int, headers: httpx.Headers, body: bytes, *, now: float) -> Verdict:
    """Map one HTTP answer of the host to what happens to the event (docs/CONTRACT.md §5)."""
    if 200 <= status < 300:
        answer = _answer(body)
        if answer.get("accepted") is False:
            return Verdict(
                "retry",
                status,
                "the host answered accepted: false",
                _host_retry_after(headers, answer, now),
            )
        return Verdict("delivered", status)
    if status == 409:
        answer = _answer(body)
        return Verdict(
            "conflict",
            status,
            "the host is still processing an earlier attempt (409)",
            _host_retry_after(headers, answer, now),
        )
    if status in (401, 403):
        return Verdict(
            "paused",
            status,
            f"the host refused the bridge credentials (HTTP {status}); check BRIDGE_TOKEN and"
            f" BRIDGE_SIGNING_SECRET: {excerpt(body)}",
        )
    if status in (408, 425, 429) or status >= 500:
        return Verdict(
            "retry", status, f"HTTP {status}: {excerpt(body)}", _host_retry_after(headers, {}, now)
        )
    if 400 <= status < 500:
        return Verdict("dead", status, f"HTTP {status}: {excerpt(body)}")
    # 1xx/3xx: not in the table. Most likely a misconfigured URL; retrying loses nothing and the
    # age limit ends it.
    return Verdict("retry", status, f"unexpected HTTP {status}: {excerpt(body)}")


class Backoff:
    """Full-jitter exponential backoff (tenacity's ``wait_random_exponential``), configured once.

    The n-th consecutive failure waits a random time in ``[0, min(cap, base * 2**(n-1))]``, but
    never less than what the host asked for with ``Retry-After`` (itself capped).
    """

    def __init__(
        self,
        *,
        base: float = BACKOFF_BASE_SECONDS,
        cap: float = BACKOFF_CAP_SECONDS,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
    ) -> None:
        self.wait = wait_random_exponential(multiplier=base, max=cap)
        self.max_retry_after = max_retry_after
        # tenacity computes waits from a RetryCallState; the attempts themselves are counted in
        # the outbox, so this Retrying object only carries the policy.
        self._policy = Retrying(wait=self.wait, reraise=True)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        state = RetryCallState(self._policy, None, (), {})
        state.attempt_number = max(1, failures)
        delay = float(self.wait(state))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay
