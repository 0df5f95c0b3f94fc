"""The operator's controls over the bridge (docs/CONTRACT.md §10.3): pause, resume, send a test event.

A pause is written to the database, so it holds on every replica (and across restarts) until
``resume``; while it holds, events are stored as usual and nothing is claimed or dead-lettered.
``/readyz`` and the ``connector_bridge_paused`` metric show it.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import OkResult
from connector_sidecar.api._common import json_response, services
from connector_sidecar.bridge_ping import ping_host
from connector_sidecar.problems import ApiProblem, read_body

__all__ = ["routes"]


async def pause(request: Request) -> Response:
    await read_body(request)
    await services(request).delivery.set_operator_pause(True)
    return json_response(OkResult(ok=True))


async def resume(request: Request) -> Response:
    await read_body(request)
    await services(request).delivery.set_operator_pause(False)
    return json_response(OkResult(ok=True))


async def test_event(request: Request) -> Response:
    """POST a signed ``ping`` to the host now and answer what it said."""
    svc = services(request)
    await read_body(request)
    if not svc.settings.bridge_url:
        raise ApiProblem(409, "bridge_not_configured", "BRIDGE_URL is not set: there is no host")
    result = await ping_host(
        svc.settings, clock=svc.runtime.clock, transport=svc.delivery.transport
    )
    return json_response(result)


routes = [
    Route("/bridge/pause", pause, methods=["POST"]),
    Route("/bridge/resume", resume, methods=["POST"]),
    Route("/bridge/test", test_event, methods=["POST"]),
]
