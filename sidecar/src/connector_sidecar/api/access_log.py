"""The access log: one line per HTTP request, with the route's path template, never the raw path.

Logged by ``connector_sidecar.access`` with the fields ``method``, ``path`` (the template, such
as ``/connections/{connection_id}``, so no id or query string, where tokens may travel),
``status`` and ``duration_ms``. The request's path parameters become log context fields
(``connectionId``, ``sessionId``, ``eventId``, ``requestId``) for everything logged while it
runs. Health probes are logged at DEBUG, everything else at INFO.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector_sidecar._logging import log_context

__all__ = ["AccessLog"]

log = logging.getLogger("connector_sidecar.access")

QUIET_PATHS = frozenset({"/healthz", "/readyz"})
_PARAM_FIELDS = {
    "connection_id": "connectionId",
    "session_id": "sessionId",
    "event_id": "eventId",
    "request_id": "requestId",
}
_CONVERTOR = re.compile(r":[a-z]+}")


class AccessLog:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    def _template(self, scope: Scope) -> tuple[str, dict[str, str]]:
        for route in self.routes:
            match, child = route.matches(scope)
            if match is not Match.NONE:
                params = child.get("path_params", {})
                path = _CONVERTOR.sub("}", str(getattr(route, "path", "")))
                return path or "unmatched", {
                    field: str(params[name])
                    for name, field in _PARAM_FIELDS.items()
                    if name in params
                }
        return "unmatched", {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        template, fields = self._template(scope)
        status = 500  # unless the app answers
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with log_context(**fields):
            try:
                await self.app(scope, receive, send_and_record)
            finally:
                duration_ms = round((time.perf_counter() - started) * 1000, 2)
                log.log(
                    logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO,
                    "%s %s %d in %.1f ms",
                    scope["method"],
                    template,
                    status,
                    duration_ms,
                    extra={
                        "method": scope["method"],
                        "path": template,
                        "status": status,
                        "duration_ms": duration_ms,
                    },
                )
