"""Health, readiness and the OpenAPI document (docs/CONTRACT.md §7); no bearer token needed.

``/readyz`` is 200 ``{"ok": true}`` when ready, else 503 with a problem document (code
``not_ready``) that keeps ``ok: false`` and ``reasons`` as extension members.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import Health, Readiness, ReadinessProblem, build_openapi, encode
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
    if not reasons:
        return json_response(Readiness(ok=True))
    # A problem document like every other error, still with ``ok`` and ``reasons`` for the
    # readers of the plain Readiness body it used to be.
    problem = ReadinessProblem(
        title="Service Unavailable",
        status=503,
        code="not_ready",
        detail="; ".join(reasons),
        reasons=reasons,
    )
    return Response(encode(problem), status_code=503, media_type="application/problem+json")


async def openapi(request: Request) -> Response:
    return json_response(build_openapi())


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
