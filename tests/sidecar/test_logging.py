"""JSON log lines: the context fields that apply (bound per task or passed with ``extra=``),
access fields as they are, and no leak of one task's context into another."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from connector_sidecar._logging import bind_log_context, configure_logging, log_context

pytestmark = pytest.mark.anyio
log = logging.getLogger("connector_sidecar.test")


@pytest.fixture
def json_lines() -> Iterator[Any]:
    """Configure JSON logging into a buffer; restore the root logger afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("debug", "json")
    buffer = io.StringIO()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    try:
        yield lines
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        logging.captureWarnings(False)


def test_context_fields_and_extra(json_lines: Any) -> None:
    """Fields bound in a ``with`` block appear on its records only; ``extra=`` adds its own."""
    with log_context(connectionId="conn_1", sessionId=None):
        log.info("inside")
        with log_context(eventId="evt_1"):
            log.warning("nested %s", "arg")
    log.info("outside", extra={"requestId": "req-1", "status": 204})
    inside, nested, outside = json_lines()
    assert inside["connectionId"] == "conn_1"
    assert "sessionId" not in inside  # a None value is left out
    assert (nested["connectionId"], nested["eventId"], nested["message"]) == (
        "conn_1",
        "evt_1",
        "nested arg",
    )
    assert nested["level"] == "warning"
    assert "connectionId" not in outside
    assert (outside["requestId"], outside["status"]) == ("req-1", 204)
    assert outside["logger"] == "connector_sidecar.test"
    assert outside["ts"].endswith("Z")


async def test_a_task_binds_its_own_context(json_lines: Any) -> None:
    """What a task binds stays in that task (and the tasks it starts), never in its parent."""

    async def loop(connection_id: str) -> None:
        bind_log_context(connectionId=connection_id)
        await asyncio.sleep(0)
        log.info("polling")

    await asyncio.gather(loop("a"), loop("b"))
    log.info("parent")
    records = json_lines()
    assert sorted(r["connectionId"] for r in records if r["message"] == "polling") == ["a", "b"]
    [parent] = [r for r in records if r["message"] == "parent"]
    assert "connectionId" not in parent


def test_exceptions_and_warnings_stay_json(json_lines: Any) -> None:
    """A traceback is a field of its line; a Python warning becomes a JSON line too."""
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # pytest's config turns warnings into errors
        warnings.warn("careful", UserWarning, stacklevel=1)
    failed, warned = json_lines()
    assert "ValueError: boom" in failed["exception"]
    assert warned["logger"] == "py.warnings"
    assert "careful" in warned["message"]
