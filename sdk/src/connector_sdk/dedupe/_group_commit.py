"""Group commit for one SQLite connection: many callers, one transaction, one fsync.

Rules:

- every operation runs in a thread of its own (the committer), never in the event loop;
- operations that arrive while a transaction is being committed wait, and all of them run in
  the next single transaction (at most ``max_batch`` per transaction), each under a SAVEPOINT
  so that one raising rolls back only its own writes;
- a caller is answered only after the COMMIT of its transaction has returned, so nothing is
  acknowledged before it is durable; when the BEGIN or the COMMIT fails, every operation of
  the batch fails with that error, and none of them took effect;
- the thread starts with the first operation and ends after ``idle_seconds`` without one, so
  a store that is never closed leaves no thread behind.

A caller that is cancelled while waiting does not undo its operation: it may still commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Final, Generic, TypeVar, cast

__all__ = ["GroupCommit"]

R = TypeVar("R")

_IDLE_SECONDS: Final = 2.0


@dataclass(eq=False, slots=True)
class _Request(Generic[R]):
    operation: Callable[[sqlite3.Connection], R]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[R]
    result: R | None = None
    error: BaseException | None = None


def _resolve(request: _Request[R]) -> None:
    if request.future.done():  # the caller was cancelled
        return
    if request.error is not None:
        request.future.set_exception(request.error)
    else:
        request.future.set_result(cast(R, request.result))


class GroupCommit:
    """Runs operations on a SQLite connection, many per transaction (see the module rules).

    ``connect`` opens the connection (called in the committer thread while ``lock`` is held,
    whenever there is none), ``wrap`` turns a database error into the store's own error.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        lock: threading.Lock,
        wrap: Callable[[Exception], Exception],
        *,
        name: str,
        max_batch: int = 512,
        idle_seconds: float = _IDLE_SECONDS,
    ) -> None:
        self._connect = connect
        self._lock = lock
        self._wrap = wrap
        self._name = name
        self._max_batch = max_batch
        self._idle_seconds = idle_seconds
        self._wakeup = threading.Condition()
        self._queue: list[_Request[object]] = []
        self._running = False
        #: Transactions committed so far (for tests and the benchmark: ops / commits).
        self.commits = 0

    async def run(self, operation: Callable[[sqlite3.Connection], R]) -> R:
        """Run ``operation(connection)`` in the next transaction; its result once committed."""
        loop = asyncio.get_running_loop()
        request: _Request[R] = _Request(operation, loop, loop.create_future())
        with self._wakeup:
            self._queue.append(cast(_Request[object], request))
            if self._running:
                self._wakeup.notify()
            else:
                self._running = True
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
        return await request.future

    def _work(self) -> None:
        while True:
            with self._wakeup:
                if not self._queue:
                    self._wakeup.wait(timeout=self._idle_seconds)
                if not self._queue:
                    self._running = False
                    return
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
            try:
                self._commit(batch)
            except Exception as error:  # a bug, not a database error: still answer everyone
                self._fail_all(batch, error, wrap=False)
            for request in batch:
                with suppress(RuntimeError):  # its loop has closed: nobody waits any more
                    request.loop.call_soon_threadsafe(_resolve, request)

    def _commit(self, batch: list[_Request[object]]) -> None:
        with self._lock:
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, OSError) as error:
                self._fail_all(batch, error)
                return
            try:
                for request in batch:
                    connection.execute("SAVEPOINT operation")
                    try:
                        request.result = request.operation(connection)
                    except Exception as error:  # handed to its caller, not swallowed
                        connection.execute("ROLLBACK TO operation")
                        request.error = (
                            self._wrap(error)
                            if isinstance(error, sqlite3.Error | OSError)
                            else error
                        )
                    connection.execute("RELEASE operation")
                # The caller is answered after this returns: nothing is acknowledged before it
                # is on disk (WAL, synchronous=FULL).
                connection.execute("COMMIT")
                self.commits += 1
            except (sqlite3.Error, OSError) as error:
                with suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                self._fail_all(batch, error)

    def _fail_all(
        self, batch: list[_Request[object]], error: Exception, *, wrap: bool = True
    ) -> None:
        for request in batch:
            request.result = None
            # One exception object per caller: each raises it with its own traceback.
            request.error = self._wrap(error) if wrap else error
