"""Stopping asyncio tasks without swallowing the stopper's own cancellation.

The common idiom ``task.cancel(); with suppress(CancelledError): await task`` has a trap: if
the *caller* is cancelled while it awaits, the ``CancelledError`` it receives is suppressed as
if it were the task's, and the caller carries on as though nobody had asked it to stop. A loop
that does this on every turn (the delivery worker's wait) can then never be stopped.
:func:`cancel_and_wait` waits with :func:`asyncio.wait`, which never raises what the tasks
raise, so a ``CancelledError`` that reaches the caller is always the caller's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until each has ended, whatever it raises (its outcome is
    marked retrieved). The caller's own cancellation propagates."""
    current = asyncio.current_task()
    waiting = {task for task in tasks if task is not current}
    for task in waiting:
        task.cancel()
    if not waiting:
        return
    await asyncio.wait(waiting)
    for task in waiting:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" for what we stopped
