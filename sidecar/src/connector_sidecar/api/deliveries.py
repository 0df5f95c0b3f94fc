"""The operator API over the outbox (docs/CONTRACT.md §6): list deliveries, replay dead or delivered ones.

A replayed event keeps its place (its ``seq``) in its conversation: it becomes that lane's head
again, so it goes before any later event of the same conversation that is still pending.
Attempts restart at 0 and the age limit counts from the replay; ``createdAt`` keeps the time the
event was first stored. Every POST of an event is listed by ``/deliveries/{eventId}/attempts``
for as long as the event is kept (a replay adds to its history; it does not clear it).
"""

from __future__ import annotations

import datetime
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import (
    DeliveryAttempt,
    DeliveryAttemptList,
    DeliveryList,
    ReplayRequest,
    ReplayResult,
)
from connector_sidecar._clock import iso_ms
from connector_sidecar.api._common import json_response, services
from connector_sidecar.problems import ApiProblem, field_problem, read_body, read_json
from connector_sidecar.store._sql import Connection
from connector_sidecar.views import delivery_view

__all__ = ["routes"]

STATUSES = ("pending", "delivered", "dead")
_CURSOR = re.compile(r"s[0-9]{1,18}")
MAX_LIMIT = 500


def _query_problem(name: str, message: str) -> ApiProblem:
    return field_problem(f"$.query.{name}", message)


async def list_deliveries(request: Request) -> Response:
    svc = services(request)
    query = request.query_params
    # A parameter given blank is a bad value, as the OpenAPI document says, not an absent one.
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise _query_problem("status", f"must be one of {', '.join(STATUSES)}")
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise _query_problem("limit", "must be a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _query_problem("limit", f"must be between 1 and {MAX_LIMIT}")
    before: int | None = None
    if (cursor := query.get("cursor")) is not None:
        # ASCII digits only (str.isdigit() also takes "²", which int() refuses), and few enough
        # for a SQLite integer: a cursor is "s" and the seq of the last row of a page.
        if not _CURSOR.fullmatch(cursor):
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


async def replay_one(request: Request) -> Response:
    """Re-queue one dead or delivered event; 409 while it is still pending."""
    svc = services(request)
    await read_body(request)  # the body is ``{}`` or empty; only its size is checked
    event_id = request.path_params["event_id"]
    # Through the worker: serialised with its claims, then it rescans the lanes.
    result = await svc.delivery.requeue(lambda c: svc.store.outbox.replay_one(c, event_id))
    if result is None:
        raise ApiProblem(404, "delivery_not_found", f"no outbox event {event_id!r}")
    before, row = result
    if before == "pending":
        raise ApiProblem(
            409,
            "delivery_pending",
            f"event {event_id!r} is pending: it will be delivered without a replay",
        )
    return json_response(delivery_view(row))


async def replay_many(request: Request) -> Response:
    """Re-queue every dead (or delivered) event, of one connection or of all."""
    svc = services(request)
    body = await read_json(request, ReplayRequest, empty_ok=True)
    created_from = _time_field("from", body.from_)
    created_to = _time_field("to", body.to)
    count = await svc.delivery.requeue(
        lambda c: svc.store.outbox.replay_many(
            c,
            status=body.status,
            connection_id=body.connection_id or None,
            created_from=created_from,
            created_to=created_to,
        ),
    )
    return json_response(ReplayResult(replayed=count))


def _time_field(name: str, value: datetime.datetime | None) -> int | None:
    """A time of the body as Unix milliseconds (one without a zone is UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return int(value.timestamp() * 1000)


async def list_attempts(request: Request) -> Response:
    """Every POST of one event: when, how long, the status code and an excerpt of the error."""
    svc = services(request)
    event_id = request.path_params["event_id"]

    def work(conn: Connection) -> DeliveryAttemptList | None:
        if svc.store.outbox.get(conn, event_id) is None:
            return None
        return DeliveryAttemptList(
            items=[
                DeliveryAttempt(
                    attempt=a.attempt,
                    at=iso_ms(a.at) or "",
                    duration_ms=a.duration_ms,
                    status_code=a.status_code,
                    error=a.error,
                )
                for a in svc.store.outbox.attempts_of(conn, event_id)
            ]
        )

    result = await svc.store.db.run(work)
    if result is None:
        raise ApiProblem(404, "delivery_not_found", f"no outbox event {event_id!r}")
    return json_response(result)


routes = [
    Route("/deliveries", list_deliveries, methods=["GET"]),
    Route("/deliveries/replay", replay_many, methods=["POST"]),
    Route("/deliveries/{event_id}/replay", replay_one, methods=["POST"]),
    Route("/deliveries/{event_id}/attempts", list_attempts, methods=["GET"]),
]
