"""The operator API over the outbox (CONTRACT §6)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import DeliveryList, ProblemError
from connector_sidecar.api._common import json_response, services
from connector_sidecar.problems import ApiProblem
from connector_sidecar.views import delivery_view

__all__ = ["routes"]

STATUSES = ("pending", "delivered", "dead")
MAX_LIMIT = 500


def _query_problem(name: str, message: str) -> ApiProblem:
    path = f"$.query.{name}"
    return ApiProblem(
        422,
        "validation_failed",
        f"{path}: {message}",
        errors=[ProblemError(path=path, message=message)],
    )


async def list_deliveries(request: Request) -> Response:
    svc = services(request)
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise _query_problem("status", f"must be one of {', '.join(STATUSES)}")
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise _query_problem("limit", "must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _query_problem("limit", f"must be between 1 and {MAX_LIMIT}")
    before: int | None = None
    if cursor := query.get("cursor"):
        if not cursor.startswith("s") or not cursor[1:].isdigit():
            raise _query_problem("cursor", "is not a cursor this sidecar gave out")
        before = int(cursor[1:])
    rows = await svc.store.db.run(
        lambda c: svc.store.outbox.page(
            c,
            status=status,
            connection_id=query.get("connectionId") or None,
            limit=limit + 1,
            before_seq=before,
        )
    )
    next_cursor = f"s{rows[limit - 1].seq}" if len(rows) > limit else None
    return json_response(
        DeliveryList(items=[delivery_view(r) for r in rows[:limit]], next_cursor=next_cursor)
    )


routes = [Route("/deliveries", list_deliveries, methods=["GET"])]
