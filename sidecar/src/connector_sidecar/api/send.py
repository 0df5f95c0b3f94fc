"""``POST /send`` and ``GET /send/{requestId}`` (docs/CONTRACT.md §4); the logic lives in ``sending``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import SendRequest
from connector_sidecar._logging import log_context
from connector_sidecar.api._common import json_response, services
from connector_sidecar.problems import MAX_BODY_BYTES, read_json

__all__ = ["routes"]


def send_body_limit(media_max_bytes: int) -> int:
    """``/send`` takes one attachment of ``MEDIA_MAX_BYTES`` in base64 plus 1 MiB for the rest."""
    return -(-media_max_bytes // 3) * 4 + MAX_BODY_BYTES


async def send(request: Request) -> Response:
    svc = services(request)
    body = await read_json(
        request, SendRequest, limit=send_body_limit(svc.settings.media_max_bytes)
    )
    with log_context(requestId=body.request_id, connectionId=body.connection_id):
        outcome = await svc.sender.send(body)  # its tasks copy the context
    return json_response(outcome.result, outcome.status_code)


async def get_send(request: Request) -> Response:
    svc = services(request)
    outcome = await svc.sender.get(request.path_params["request_id"])
    return json_response(outcome.result, outcome.status_code)


routes = [
    Route("/send", send, methods=["POST"]),
    Route("/send/{request_id:path}", get_send, methods=["GET"]),
]
