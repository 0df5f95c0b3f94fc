"""``GET /connectors`` (docs/CONTRACT.md §1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_sidecar.api._common import json_response, services
from connector_sidecar.drivers import DRIVER_CLASSES

__all__ = ["routes"]


async def list_connectors(request: Request) -> Response:
    enabled = services(request).runtime.drivers
    return json_response(
        [cls.static_info(enabled=kind in enabled) for kind, cls in DRIVER_CLASSES.items()]
    )


routes = [Route("/connectors", list_connectors, methods=["GET"])]
