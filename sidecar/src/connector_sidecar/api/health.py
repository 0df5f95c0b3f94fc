"""Health, readiness and the OpenAPI document (docs/CONTRACT.md §7); no bearer token needed.

``/readyz`` answers 503 only for the sidecar's own trouble: starting, stopping, a store that is
not open or does not take a write. Bridge trouble (no ``BRIDGE_URL``, delivery paused by an
operator or by the host's 401/403) is listed in ``bridge`` of a 200: in a pod next to the host,
a failing probe would take the host out of service too. ``?strict=true`` fails on both. The 503
is a problem document (code ``not_ready``) that keeps ``ok: false`` and ``reasons`` as extension
members.
"""

from __future__ import annotations

import asyncio
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import Health, Readiness, ReadinessProblem, build_openapi, encode
from connector_sidecar.api._common import json_response, services

__all__ = ["PUBLIC_PATHS", "routes"]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
STORE_PROBE_SECONDS: Final = 3.0


async def healthz(request: Request) -> Response:
    return json_response(Health(ok=True))


async def readyz(request: Request) -> Response:
    svc = services(request)
    reasons: list[str] = []
    if svc.phase != "serving":
        reasons.append(f"the sidecar is {svc.phase}")
    if not svc.store.db.is_open:
        reasons.append("the store is not open")
    elif (trouble := await _store_trouble(request)) is not None:
        reasons.append(trouble)
    reasons.extend(reason for check in svc.readiness_checks if (reason := check()))
    bridge: list[str] = []
    if not svc.settings.bridge_url:
        bridge.append("BRIDGE_URL is not set: inbound events are queued, not delivered")
    bridge.extend(reason for check in svc.bridge_checks if (reason := check()))
    if request.query_params.get("strict", "").lower() in ("true", "1", "yes"):
        reasons.extend(bridge)
    if not reasons:
        return json_response(
            Readiness(ok=True, reasons=[], bridge=bridge, delivery_paused=svc.delivery.paused)
        )
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


async def _store_trouble(request: Request) -> str | None:
    """Why the store cannot take a write now, or None when it just did."""
    svc = services(request)
    probe = svc.store.db.transaction(svc.store.bridge.touch, svc.settings.replica_id)
    try:
        await asyncio.wait_for(probe, STORE_PROBE_SECONDS)
    except TimeoutError:
        return f"the store did not take a write within {STORE_PROBE_SECONDS:g} s"
    except Exception as exc:
        return f"the store does not take writes: {type(exc).__name__}"
    return None


async def openapi(request: Request) -> Response:
    return json_response(build_openapi())


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
