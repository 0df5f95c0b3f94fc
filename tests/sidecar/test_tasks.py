"""``_tasks.cancel_and_wait``: stopping tasks without swallowing the stopper's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from connector_sidecar._tasks import cancel_and_wait

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_it_waits_for_every_task_and_reads_their_outcomes() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    failing = asyncio.ensure_future(fails())
    sleeping = asyncio.ensure_future(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_and_wait([failing, sleeping])
    assert failing.done()
    assert sleeping.cancelled()


async def test_the_callers_own_cancellation_propagates() -> None:
    """The caller is cancelled while a task it stops is still cleaning up: the caller ends
    cancelled, where ``suppress(CancelledError): await task`` would have swallowed it."""
    cleaning, release = asyncio.Event(), asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()
            raise

    async def stopper(task: asyncio.Task[None]) -> str:
        await cancel_and_wait([task])
        return "carried on"

    task = asyncio.ensure_future(slow_to_stop())
    await asyncio.sleep(0)
    caller = asyncio.ensure_future(stopper(task))
    await asyncio.wait_for(cleaning.wait(), 5)
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert task.cancelled()


async def test_it_never_waits_for_the_calling_task_itself() -> None:
    async def stop_myself() -> str:
        me = asyncio.current_task()
        assert me is not None
        await cancel_and_wait([me])
        return "returned"

    # cancel_and_wait skips the current task: nothing to wait for, no deadlock.
    assert await asyncio.wait_for(stop_myself(), 5) == "returned"
