"""``create_app(settings)``: the Starlette application and its lifespan.

The lifespan opens the store, starts the drivers of live connections, the delivery worker and
housekeeping, and stops them in reverse order.

A storage failure under any route (disk full, PostgreSQL gone) is one exception,
:class:`StorageUnavailableError`, answered by one handler here: 503 ``storage_unavailable`` with
``Retry-After``. ``/readyz`` says 503 from then until a write succeeds again; while the storage
is down a probe tries one small write every :data:`STORAGE_PROBE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from connector_sidecar._clock import Clock, Sleep, system_clock
from connector_sidecar._early_answers import CloseWhenBodyUnread
from connector_sidecar._secret import Secret
from connector_sidecar.api import (
    bridge,
    connections,
    connectors,
    console,
    deliveries,
    health,
    media,
    metrics,
    send,
    sessions,
    typing,
)
from connector_sidecar.api._common import Services
from connector_sidecar.api.access_log import AccessLog
from connector_sidecar.config import Settings
from connector_sidecar.delivery import DeliveryWorker
from connector_sidecar.drivers import DRIVER_CLASSES
from connector_sidecar.media import MediaCache
from connector_sidecar.metrics import Metrics
from connector_sidecar.problems import ApiProblem, problem_response
from connector_sidecar.runtime import Runtime
from connector_sidecar.sending import Sender
from connector_sidecar.store import Database, StorageUnavailableError, Store, database_for

__all__ = ["create_app"]

log = logging.getLogger(__name__)
HOUSEKEEPING_SECONDS = 600.0
SHUTDOWN_GRACE_SECONDS = 5.0  # for sends and bridge POSTs in flight; hypercorn allows 10 s
STORAGE_PROBE_SECONDS = 2.0


class BearerAuth:
    """Every route but the public ones needs ``Authorization: Bearer <token>`` (constant-time check)."""

    def __init__(self, app: ASGIApp, token: Secret, metrics_token: Secret | None = None) -> None:
        self.app = app
        self._token = token.reveal().encode()
        # METRICS_TOKEN: a scrape-only token, accepted on GET /metrics besides the API token.
        self._metrics_token = metrics_token.reveal().encode() if metrics_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = credentials.strip()
                break
        if not hmac.compare_digest(presented, self._token) and not (
            self._metrics_token is not None
            and scope["path"] == metrics.PATH
            and hmac.compare_digest(presented, self._metrics_token)
        ):
            problem = ApiProblem(
                401,
                "unauthorized",
                "send Authorization: Bearer <EXTERNAL_CONNECTOR_TOKEN>",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await problem_response(problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _is_public(path: str) -> bool:
    return (
        path in health.PUBLIC_PATHS
        or path.startswith("/webhooks/")
        or console.is_public(path)  # static pages: they hold no data, the API calls need the token
    )


async def _api_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(exc)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem_response(ApiProblem(exc.status_code, code, exc.detail, headers=exc.headers))


async def _storage_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageUnavailableError)
    return problem_response(
        ApiProblem(
            503,
            "storage_unavailable",
            f"{exc.reason}; nothing of this request was stored, retry later",
            headers={"Retry-After": str(exc.retry_after)},
        )
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        ApiProblem(500, "internal_error", "an unexpected error; see the sidecar log")
    )


def create_app(
    settings: Settings, *, clock: Clock = system_clock, sleep: Sleep = asyncio.sleep
) -> Starlette:
    """The sidecar as an ASGI app; its lifespan runs the drivers and the delivery worker.

    ``clock`` and ``sleep`` reach the store, the send retries and the delivery worker, so a
    test can run retry backoffs without waiting (a ``sleep`` that moves its ``clock``).
    """
    url = settings.database_url.reveal() if settings.database_url else None
    store = Store(
        database_for(url, settings.database_path), clock, event_types=settings.bridge_event_types
    )
    app_metrics = Metrics()
    runtime = Runtime(settings, store, clock, app_metrics)
    for kind in settings.connectors:
        runtime.add_driver(DRIVER_CLASSES[kind](runtime.ctx))
    media_cache = MediaCache(runtime)
    sender = Sender(runtime, media_cache, sleep=sleep)
    worker = DeliveryWorker(
        settings,
        store,
        clock=clock,
        sleep=sleep,
        shutdown_grace_seconds=SHUTDOWN_GRACE_SECONDS,
        metrics=app_metrics,
    )
    app_metrics.watch_bridge(lambda: worker.paused)
    runtime.on_outbox(worker.notify)
    svc = Services(
        settings=settings,
        store=store,
        runtime=runtime,
        sender=sender,
        delivery=worker,
        media=media_cache,
    )
    svc.bridge_checks.append(worker.readiness)
    svc.readiness_checks.append(store.db.health.readiness)

    driver_routes: list[BaseRoute] = [r for d in runtime.drivers.values() for r in d.routes()]
    routes: list[BaseRoute] = [
        *health.routes,
        *connectors.routes,
        *sessions.routes,
        *connections.routes,
        *send.routes,
        *media.routes,
        *typing.routes,
        *deliveries.routes,
        *bridge.routes,
        *metrics.routes,
        *console.routes,
        *driver_routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.db.open()
        try:
            await runtime.start()
            await worker.start()
            housekeeping = runtime.spawn(_housekeeping(sender, media_cache), name="housekeeping")
            svc.phase = "serving"
            storage_probe = runtime.spawn(_probe_storage(store.db), name="storage-probe")
            log.info(
                "sidecar ready on %s:%d with %s; data in %s",
                settings.host,
                settings.port,
                ", ".join(runtime.drivers),
                store.db.describe(),
            )
            yield
            svc.phase = "stopping"
            housekeeping.cancel()
            storage_probe.cancel()
        finally:
            svc.phase = "stopping"
            # Sends and bridge POSTs in flight finish (for a grace) before the drivers and the
            # store close; what is cut then stays pending, to resume after the next start.
            await asyncio.gather(sender.drain(SHUTDOWN_GRACE_SECONDS), worker.stop())
            await runtime.stop()
            await sender.files.aclose()
            await store.db.close()
            log.info("sidecar stopped")

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiProblem: _api_problem,
            StorageUnavailableError: _storage_unavailable,
            HTTPException: _http_exception,
            Exception: _unexpected,
        },
    )
    app.state.services = svc
    app.add_middleware(BearerAuth, token=settings.token, metrics_token=settings.metrics_token)
    app.add_middleware(AccessLog, routes=routes)
    app.add_middleware(CloseWhenBodyUnread)  # outermost: it sees the 401 of BearerAuth too
    return app


async def _housekeeping(sender: Sender, media_cache: MediaCache) -> None:
    while True:
        try:
            await sender.housekeeping()
            await media_cache.housekeeping()
        except Exception:
            log.exception("housekeeping failed")
        await asyncio.sleep(HOUSEKEEPING_SECONDS)


async def _probe_storage(db: Database) -> None:
    """While the storage is failing, one small write every few seconds: ready again after it."""
    while True:
        await asyncio.sleep(STORAGE_PROBE_SECONDS)
        if db.health.problem is None:
            continue
        with contextlib.suppress(StorageUnavailableError):
            await db.probe()
