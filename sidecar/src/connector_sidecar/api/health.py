"""Health, readiness and the OpenAPI document (docs/CONTRACT.md §7); no bearer token needed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import Health, Readiness, build_openapi
from connector_sidecar.api._common import json_response, services

__all__ = ["PUBLIC_PATHS", "routes"]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})


async def healthz(request: Request) -> Response:
    return json_response(Health(ok=True))


async def readyz(request: Request) -> Response:
    svc = services(request)
    reasons: list[str] = []
    if not svc.store.db.is_open:
        reasons.append("the store is not open")
    if not svc.settings.bridge_url:
        reasons.append("BRIDGE_URL is not set: inbound events are queued, not delivered")
    reasons.extend(reason for check in svc.readiness_checks if (reason := check()))
    ready = not reasons
    return json_response(Readiness(ok=ready, reasons=reasons), 200 if ready else 503)


async def openapi(request: Request) -> Response:
    return json_response(build_openapi())


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
