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

No secret in the log at any level. The sidecar's own code never logs one (secrets are wrapped,
URLs are logged without their query), but third-party libraries log what they hold at DEBUG:
``websockets`` writes the whole handshake, and the Feishu long-connection URL carries its
ticket, a credential, in the query string. Two layers keep those out:

- Noisy third-party loggers are held at a floor whatever ``LOG_LEVEL`` says: ``httpx`` and
  ``httpcore`` at WARNING (every request URL at INFO), ``websockets`` at INFO (the handshake
  and every frame at DEBUG).
- Every line the sidecar's handler writes goes through :func:`redact` last, whoever logged it:
  credential-like query parameters (``ticket``, ``token``, ``secret``, ``key``, ``sign``,
  ``code``, ``password``, …), the password of a URL, ``Authorization``/``Cookie`` header values
  and ``Bearer`` credentials become ``***``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CONTEXT_FIELDS",
    "LOGGER_FLOORS",
    "bind_log_context",
    "configure_logging",
    "log_context",
    "redact",
]

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


LOGGER_FLOORS = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "websockets": logging.INFO}

_MASK = "***"
_CREDENTIAL_NAME = r"[\w.-]*(?:ticket|token|secret|key|password|passwd|sig|sign|signature|auth|credential|code)[\w.-]*"
_QUERY_CREDENTIAL = re.compile(rf"(?i)([?&;]{_CREDENTIAL_NAME}=)[^&;#\s\"'<>]*")
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@")
_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-lark-signature)(\s*[:=]\s*)[^\r\n\"]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',]+")


def redact(text: str) -> str:
    """``text`` with credentials in URLs, headers and bearer values replaced by ``***``."""
    text = _QUERY_CREDENTIAL.sub(rf"\g<1>{_MASK}", text)
    text = _URL_PASSWORD.sub(rf"\g<1>{_MASK}@", text)
    text = _HEADER.sub(rf"\g<1>\g<2>{_MASK}", text)
    return _BEARER.sub(rf"\g<1>{_MASK}", text)


class _ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_context.get() or {})
        for name in (*CONTEXT_FIELDS, *ACCESS_FIELDS):
            field = getattr(record, name, None)
            if field is not None:
                entry[name] = field
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
        # Python warnings would otherwise be printed as bare text in the middle of the JSON.
        logging.captureWarnings(True)
    else:
        handler.setFormatter(_ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, floor in LOGGER_FLOORS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(floor, root.level))
