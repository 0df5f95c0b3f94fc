"""``POST /typing`` (docs/CONTRACT.md §10.1): show or stop the typing indicator in one conversation.

200 ``{"ok": true}`` once the vendor was asked (vendors do not confirm it, and a failure there is
only logged); 200 ``{"ok": false, "reason": "unsupported"}`` for a connector without ``typing``
in its capabilities. 404 ``connection_not_found``; 409 ``connection_not_ready``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import TypingRequest, TypingResult
from connector_sidecar.api._common import json_response, services
from connector_sidecar.drivers.base import LoginExpiredError
from connector_sidecar.problems import ApiProblem, read_json

__all__ = ["routes"]


async def typing(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, TypingRequest)
    connection = await svc.store.db.run(svc.store.connections.get, body.connection_id)
    if connection is None:
        raise ApiProblem(404, "connection_not_found", f"no connection {body.connection_id!r}")
    driver = svc.runtime.drivers.get(connection.kind)
    if driver is None or "typing" not in driver.capabilities:
        return json_response(TypingResult(ok=False, reason="unsupported"))
    if connection.status not in ("connected", "reconnecting"):
        raise ApiProblem(
            409,
            "connection_not_ready",
            f"connection {connection.connection_id!r} is {connection.status}",
        )
    try:
        await driver.typing(connection, body.target, on=body.status == "typing")
    except LoginExpiredError as exc:
        await svc.runtime.set_status(connection.connection_id, "auth_expired", last_error=str(exc))
        raise ApiProblem(
            409,
            "connection_not_ready",
            f"the login of {connection.connection_id!r} has expired; pair again ({exc})",
        ) from None
    return json_response(TypingResult(ok=True))


routes = [Route("/typing", typing, methods=["POST"])]
