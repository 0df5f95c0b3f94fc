"""A watchdog for a block of test code: run an action if the block is still running after a
while (print where things wait, end a run that would otherwise hang)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def after(seconds: float, action: Callable[[], Any]) -> Iterator[None]:
    """Call ``action`` (from a timer thread) if the block has not ended after ``seconds``."""
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
