"""The background purge task, and the per-event-loop client of the network stores.

Both exist because a store may be used under one ``asyncio.run`` and then another (tests,
scripts), or from loops in several threads: a task or a connection belongs to the loop that
made it, so each is made again in the loop that needs it, and handed back to its own loop to
be closed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Final, Generic, TypeVar

logger = logging.getLogger("connector_sdk")

T = TypeVar("T")

_CLOSE_TIMEOUT_SECONDS: Final = 10.0
_STOP_TRIES: Final = 50
_STOP_WAIT_SECONDS: Final = 0.2


_closing: set[asyncio.Task[None]] = set()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Purger:
    """Calls ``purge`` every ``interval`` seconds from a task of the event loop using the store.

    The task holds no lock between rounds, so it never delays a ``begin()``. It is restarted
    when the loop it ran in has finished (a store used under one ``asyncio.run`` and then
    another), and cancelled, and awaited, by ``stop()``.
    """

    def __init__(self, purge: Callable[[], Awaitable[int]], interval: float, name: str) -> None:
        self._purge = purge
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # start and stop may come from loops in several threads

    def start(self) -> bool:
        """Make sure a task runs; False when there is no asyncio loop to run it in (trio)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        with self._lock:
            task = self._task
            if task is None or task.done() or task.get_loop().is_closed():
                self._task = loop.create_task(self._run(), name=self._name)
        return True

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended."""
        task = self._detach()
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            # A driver may turn the cancellation into its own error while a purge runs (the
            # task then stops at its next check), so cancel until it has ended, boundedly.
            for _ in range(_STOP_TRIES):
                task.cancel()
                # not `await task`: our own cancellation must still count
                await asyncio.wait([task], timeout=_STOP_WAIT_SECONDS)
                if task.done():
                    return
            logger.warning("dedupe purge task did not stop; left to the event loop")

    def stop_nowait(self) -> None:
        """Cancel the task without waiting (from synchronous code or another thread)."""
        task = self._detach()
        if task is not None:
            task.cancel()

    def _detach(self) -> asyncio.Task[None] | None:
        with self._lock:
            task, self._task = self._task, None
        if task is None or task.done():
            return None
        loop = task.get_loop()
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            return task
        with suppress(RuntimeError):  # the loop closed in between: its tasks are gone anyway
            loop.call_soon_threadsafe(task.cancel)
        return None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self._purge()
            except Exception:  # a background loop: log, and try again next round
                if _being_cancelled():
                    return  # the error was our cancellation, turned into a driver error
                logger.warning(
                    "dedupe purge failed; next try in %gs", self._interval, exc_info=True
                )
            else:
                if removed:
                    logger.debug("dedupe purge removed %d records", removed)


class LoopBound(Generic[T]):
    """A client (a connection pool) opened on first use, in and for the running event loop.

    Used from another loop, the old client is handed back to its own loop to be closed (or
    dropped when that loop has ended: close a store before its loop ends) and a new one is
    opened.
    """

    def __init__(
        self,
        open_: Callable[[], Awaitable[T]],
        close: Callable[[T], Coroutine[object, object, None]],
    ) -> None:
        self._open = open_
        self._close = close
        self._value: tuple[T, asyncio.AbstractEventLoop] | None = None
        self._opening: tuple[asyncio.Lock, asyncio.AbstractEventLoop] | None = None
        self._lock = threading.Lock()

    async def get(self) -> T:
        """The client of the running loop, opened now if needed."""
        loop = asyncio.get_running_loop()
        current = self._value
        if current is not None and current[1] is loop:
            return current[0]
        async with self._opening_lock(loop):
            current = self._value
            if current is not None and current[1] is loop:
                return current[0]
            if current is not None:
                self._value = None
                self._close_elsewhere(*current)
            value = await self._open()
            self._value = (value, loop)
            return value

    async def aclose(self) -> None:
        """Close the client (in its own loop when that is another one)."""
        with self._lock:
            current, self._value = self._value, None
        if current is None:
            return
        value, loop = current
        if loop is asyncio.get_running_loop():
            await self._close(value)
        else:
            self._close_elsewhere(value, loop)

    def close_nowait(self) -> None:
        """Close the client from synchronous code: wait for it unless that would block its loop."""
        with self._lock:
            current, self._value = self._value, None
        if current is None:
            return
        value, loop = current
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop.is_closed():
            return  # nothing can run there any more: its connections go with it
        if running is loop:
            # Called from sync code inside the loop: it cannot wait, so the loop closes it.
            task = loop.create_task(self._close(value))
            _closing.add(task)  # a reference until done: tasks are held only weakly
            task.add_done_callback(_closing.discard)
        elif loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._close(value), loop)
            with suppress(Exception):
                future.result(timeout=_CLOSE_TIMEOUT_SECONDS)
        else:
            loop.run_until_complete(self._close(value))

    def _opening_lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        with self._lock:
            if self._opening is None or self._opening[1] is not loop:
                self._opening = (asyncio.Lock(), loop)
            return self._opening[0]

    def _close_elsewhere(self, value: T, loop: asyncio.AbstractEventLoop) -> None:
        if loop.is_closed():
            return
        with suppress(RuntimeError):  # closed in between
            asyncio.run_coroutine_threadsafe(self._close(value), loop)
