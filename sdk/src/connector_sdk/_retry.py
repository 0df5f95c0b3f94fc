"""The one place that decides when a call to the sidecar is tried again (tenacity).

Retried: no answer (connection error, timeout), 5xx other than ``provider_rejected``, 429,
and 409 ``request_in_progress``. Everything else is an answer about the request itself and is
raised at once. Waits are exponential with full jitter, except that a ``Retry-After`` from the
sidecar is honoured. Bounded twice: by the number of attempts and by the total time, where a
wait that would end past the time budget is not started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from connector_sdk.errors import (
    ConfigurationError,
    RateLimited,
    RequestInProgress,
    ServerError,
    SidecarError,
    SidecarHTTPError,
    SidecarUnavailable,
)

__all__ = ["RetryPolicy", "is_retryable", "retrying_call"]

T = TypeVar("T")

logger = logging.getLogger("connector_sdk")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How :class:`~connector_sdk.SidecarClient` retries.

    ``sleep`` and ``clock`` are injectable so tests run without waiting; a test passes a
    sleep that advances its fake clock.
    """

    #: Attempts in all, the first included. ``1`` turns retries off.
    attempts: int = 5
    #: No wait is started that would end later than this many seconds after the first try.
    total_seconds: float = 30.0
    #: Full-jitter exponential backoff: a random wait in ``[0, min(max, initial * 2**n)]``.
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    #: A ``Retry-After`` longer than this is cut to it (the total budget still applies).
    max_retry_after: float = 30.0
    #: None: tenacity's own sleep, which works under asyncio and trio alike.
    sleep: Callable[[float], Awaitable[None]] | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigurationError("RetryPolicy.attempts must be at least 1")
        if self.total_seconds < 0 or self.initial_backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError("RetryPolicy times must not be negative")


def is_retryable(error: BaseException) -> bool:
    """True for failures that a later, identical attempt may get past."""
    # ProviderRejected (502) is deliberately not a ServerError: the vendor said no for good.
    return isinstance(error, SidecarUnavailable | RequestInProgress | RateLimited | ServerError)


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, SidecarHTTPError) and error.retry_after is not None:
            return max(0.0, min(error.retry_after, policy.max_retry_after))
        return float(backoff(state))

    return wait


def _stop(policy: RetryPolicy, started: float) -> Callable[[RetryCallState], bool]:
    def stop(state: RetryCallState) -> bool:
        if state.attempt_number >= policy.attempts:
            return True
        elapsed = policy.clock() - started
        return elapsed + state.upcoming_sleep > policy.total_seconds

    return stop


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    logger.warning(
        "sidecar call failed, retrying in %.2fs (attempt %d): %s",
        state.upcoming_sleep,
        state.attempt_number,
        error,
    )


async def retrying_call(policy: RetryPolicy, call: Callable[[], Awaitable[T]]) -> T:
    """Run ``call`` under ``policy``; the last error is raised with ``attempts`` set on it."""
    attempts = 0

    async def attempt() -> T:
        nonlocal attempts
        attempts += 1
        return await call()

    options: dict[str, Any] = {} if policy.sleep is None else {"sleep": policy.sleep}
    retrying = AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=_wait(policy),
        stop=_stop(policy, policy.clock()),
        before_sleep=_log_retry,
        reraise=True,
        **options,
    )
    try:
        return await retrying(attempt)
    except SidecarError as error:
        error.attempts = attempts
        raise
