"""Logging set-up: readable lines for people (``console``) or JSON lines for machines (``json``).

Context fields
    :func:`bind_log_context` attaches fields (``connectionId``, ``sessionId``, ``eventId``,
    ``requestId``) to every record logged afterwards in the current task, through a context
    variable: a task copies its creator's context, so an inbound loop or a pairing task binds
    once and everything it (and the tasks it spawns) logs carries the field. A record can also
    carry them directly with ``extra={"eventId": ...}``. The JSON formatter writes the fields
    that apply, one JSON object per line; the console format ignores them (its messages say it).

The access log (one line per API request) comes from ``api.access_log``. Nothing here logs
request bodies, headers or query strings: those are where tokens travel.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

__all__ = ["CONTEXT_FIELDS", "bind_log_context", "configure_logging", "log_context"]

CONTEXT_FIELDS = ("connectionId", "sessionId", "eventId", "requestId")
# Set by the access log on its record; written as they are.
ACCESS_FIELDS = ("method", "path", "status", "duration_ms")

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "connector_log_context", default=None
)


def bind_log_context(**fields: str | None) -> contextvars.Token[dict[str, str] | None]:
    """Add fields to the log context of the current task (a ``None`` value is left out)."""
    merged = {**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    return _context.set(merged)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Fields for the records logged inside the ``with`` block."""
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        _context.reset(token)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get() or {})
        for name in (*CONTEXT_FIELDS, *ACCESS_FIELDS):
            field = getattr(record, name, None)
            if field is not None:
                entry[name] = field
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
        # Python warnings would otherwise be printed as bare text in the middle of the JSON.
        logging.captureWarnings(True)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO; vendor URLs can carry tokens in query strings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
