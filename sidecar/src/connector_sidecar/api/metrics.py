"""``GET /metrics``: Prometheus text exposition (bearer token, or ``METRICS_TOKEN`` when set).

The store gauges are read at scrape time (one database round trip); see ``metrics``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_sidecar.api._common import services
from connector_sidecar.metrics import CONTENT_TYPE, StoreSnapshot

__all__ = ["PATH", "routes"]

PATH = "/metrics"


async def metrics(request: Request) -> Response:
    svc = services(request)
    snapshot = await svc.store.db.run(StoreSnapshot.read) if svc.store.db.is_open else None
    return Response(svc.runtime.metrics.render(snapshot), media_type=CONTENT_TYPE)


routes = [Route(PATH, metrics, methods=["GET"])]
