"""``POST /send`` and ``GET /send/{requestId}`` (docs/CONTRACT.md §4); the logic lives in ``sending``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import SendRequest
from connector_sidecar.api._common import json_response, services
from connector_sidecar.problems import read_json

__all__ = ["routes"]


async def send(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, SendRequest)
    outcome = await svc.sender.send(body)
    return json_response(outcome.result, outcome.status_code)


async def get_send(request: Request) -> Response:
    svc = services(request)
    outcome = await svc.sender.get(request.path_params["request_id"])
    return json_response(outcome.result, outcome.status_code)


routes = [
    Route("/send", send, methods=["POST"]),
    Route("/send/{request_id:path}", get_send, methods=["GET"]),
]
