"""Logging set-up: readable lines for people (``console``) or JSON lines for machines (``json``).

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

import json
import logging
import re
import sys
from datetime import UTC, datetime

__all__ = ["LOGGER_FLOORS", "configure_logging", "redact"]

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
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, floor in LOGGER_FLOORS.items():
        logger = logging.getLogger(name)
        logger.setLevel(max(floor, root.level))
