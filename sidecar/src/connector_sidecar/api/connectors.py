"""``GET /connectors`` (CONTRACT §1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_sidecar.api._common import json_response, services
from connector_sidecar.drivers import DRIVER_CLASSES

__all__ = ["routes"]


async def list_connectors(request: Request) -> Response:
    svc = services(request)
    infos = []
    for kind, cls in DRIVER_CLASSES.items():
        driver = svc.runtime.drivers.get(kind)
        if driver is not None:
            infos.append(driver.info(enabled=True))
        else:
            infos.append(cls.static_info(enabled=False))
    return json_response(infos)


routes = [Route("/connectors", list_connectors, methods=["GET"])]
