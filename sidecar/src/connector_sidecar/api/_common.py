"""What every route module shares: the services container and JSON responses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from connector_contracts import encode
from connector_sidecar.config import Settings
from connector_sidecar.delivery import DeliveryWorker
from connector_sidecar.runtime import Runtime
from connector_sidecar.store import Store

if TYPE_CHECKING:
    from connector_sidecar.media import MediaCache
    from connector_sidecar.sending import Sender

__all__ = ["ReadinessCheck", "Services", "json_response", "services"]

ReadinessCheck = Callable[[], str | None]
"""Returns why the sidecar is not ready, or None."""


@dataclasses.dataclass(kw_only=True)
class Services:
    """What the routes use, built once by ``create_app``."""

    settings: Settings
    store: Store
    runtime: Runtime
    sender: Sender
    delivery: DeliveryWorker
    media: MediaCache
    readiness_checks: list[ReadinessCheck] = dataclasses.field(default_factory=list)
    bridge_checks: list[ReadinessCheck] = dataclasses.field(default_factory=list)
    phase: str = "starting"  # "starting", "serving", "stopping": set by the app's lifespan


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        encode(value),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )
