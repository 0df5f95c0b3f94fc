"""Connections (docs/CONTRACT.md §3)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import ConnectionList, ConnectionView, LogoutRequest, LogoutResult
from connector_sidecar.api._common import json_response, services
from connector_sidecar.problems import ApiProblem, read_json
from connector_sidecar.views import connection_view

__all__ = ["routes"]

log = logging.getLogger(__name__)


async def list_connections(request: Request) -> Response:
    svc = services(request)

    def work(conn: Any) -> ConnectionList:
        counts = svc.store.outbox.delivery_counts(conn)
        return ConnectionList(
            items=[
                connection_view(c, counts.get(c.connection_id, (0, 0)))
                for c in svc.store.connections.all(conn)
            ]
        )

    return json_response(await svc.store.db.run(work))


async def get_connection(request: Request) -> Response:
    svc = services(request)
    connection_id = request.path_params["connection_id"]

    def work(conn: Any) -> ConnectionView | None:
        connection = svc.store.connections.get(conn, connection_id)
        if connection is None:
            return None
        counts = svc.store.outbox.delivery_counts(conn, connection_id)
        return connection_view(connection, counts.get(connection_id, (0, 0)))

    view = await svc.store.db.run(work)
    if view is None:
        raise ApiProblem(404, "connection_not_found", f"no connection {connection_id!r}")
    return json_response(view)


async def logout(request: Request) -> Response:
    """Stop the connection, tell the vendor, forget the login. Accepted events are still delivered.

    Idempotent (docs/CONTRACT.md §3, §10.3): an unknown id is already logged out, so it is
    ``{"ok": true}`` too; hosts call logout to revoke and take any error as a failure to revoke.
    """
    svc = services(request)
    await read_json(request, LogoutRequest, empty_ok=True)
    connection_id = request.path_params["connection_id"]
    connection = await svc.store.db.run(svc.store.connections.get, connection_id)
    if connection is None:
        log.info("logout of unknown connection %s: nothing to do", connection_id)
        return json_response(LogoutResult(ok=True))
    # The pairing first: a login it confirmed now would start the inbound loop again.
    active = await svc.store.db.run(svc.store.sessions.active_for, connection_id)
    if active is not None:
        await svc.runtime.close_session(active.session_id, error="the connection logged out")
    await svc.runtime.stop_connection(connection_id)
    driver = svc.runtime.drivers.get(connection.kind)
    if driver is not None and connection.credentials:
        try:
            await driver.logout(connection)
        except Exception as exc:  # the vendor's logout is a courtesy; ours must still happen
            log.warning("vendor logout of %s failed: %s", connection_id, exc)

    def work(conn: Any) -> None:
        svc.store.state.reset(conn, connection_id)
        svc.store.connections.update(
            conn, connection_id, status="logged_out", credentials={}, last_error=None
        )

    await svc.store.db.transaction(work)
    log.info("connection %s logged out", connection_id)
    return json_response(LogoutResult(ok=True))


routes = [
    Route("/connections", list_connections, methods=["GET"]),
    Route("/connections/{connection_id}", get_connection, methods=["GET"]),
    Route("/connections/{connection_id}/logout", logout, methods=["POST"]),
]
