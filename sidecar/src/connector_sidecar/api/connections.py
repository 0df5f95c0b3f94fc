"""Connections (docs/CONTRACT.md §3) and the operator's controls over them (§10.3).

- ``logout`` and ``DELETE`` stop the inbound loop, tell the vendor where it can be told, and
  forget the login; events already accepted are still delivered. ``DELETE`` also removes the
  connection (then 404). On another replica the loop stops at that replica's next lease tick.
- ``pause`` sets status ``paused``: the inbound loop stops (the vendor keeps the messages and
  the cursor stays), the lease is released, sends answer 409 ``connection_not_ready``;
  ``resume`` sets ``connected`` and starts the loop here. Both are idempotent.
- Every status change enqueues its ``connection.status`` event in the same transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import (
    ConnectionList,
    ConnectionView,
    LogoutRequest,
    LogoutResult,
    OkResult,
)
from connector_sidecar.api._common import Services, json_response, services
from connector_sidecar.problems import ApiProblem, read_body, read_json
from connector_sidecar.store import ConnectionRecord
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


def _not_found(connection_id: str) -> ApiProblem:
    return ApiProblem(404, "connection_not_found", f"no connection {connection_id!r}")


async def _existing(svc: Services, connection_id: str) -> ConnectionRecord:
    connection = await svc.store.db.run(svc.store.connections.get, connection_id)
    if connection is None:
        raise _not_found(connection_id)
    return connection


async def _view(svc: Services, connection_id: str) -> ConnectionView:
    def work(conn: Any) -> ConnectionView | None:
        connection = svc.store.connections.get(conn, connection_id)
        if connection is None:
            return None
        counts = svc.store.outbox.delivery_counts(conn, connection_id)
        return connection_view(connection, counts.get(connection_id, (0, 0)))

    view = await svc.store.db.run(work)
    if view is None:
        raise _not_found(connection_id)
    return view


async def _stop_and_logout(svc: Services, connection: ConnectionRecord) -> None:
    """Stop pairing and the inbound loop here, then log out at the vendor (a courtesy)."""
    connection_id = connection.connection_id
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
    await _stop_and_logout(svc, connection)

    def work(conn: Any) -> None:
        svc.store.state.reset(conn, connection_id)
        svc.runtime.change_status(
            conn, connection_id, "logged_out", credentials={}, last_error=None
        )

    try:
        await svc.store.db.transaction(work)
    except KeyError:
        return json_response(LogoutResult(ok=True))  # deleted meanwhile: logged out as well
    svc.runtime.outbox_changed()
    log.info("connection %s logged out", connection_id)
    return json_response(LogoutResult(ok=True))


async def _connection(request: Request) -> Response:
    if request.method == "DELETE":
        return await delete_connection(request)
    return await get_connection(request)


async def get_connection(request: Request) -> Response:
    svc = services(request)
    return json_response(await _view(svc, request.path_params["connection_id"]))


async def delete_connection(request: Request) -> Response:
    """Log out and remove the connection; its accepted events are still delivered."""
    svc = services(request)
    connection_id = request.path_params["connection_id"]
    connection = await _existing(svc, connection_id)
    await _stop_and_logout(svc, connection)

    def work(conn: Any) -> bool:
        current = svc.store.connections.get(conn, connection_id)
        if current is None:
            return False
        if current.status != "logged_out":
            # The host hears that the connection is gone, as after a logout.
            svc.runtime.change_status(
                conn, connection_id, "logged_out", credentials={}, last_error="deleted"
            )
        svc.store.state.reset(conn, connection_id)
        svc.store.connections.delete(conn, connection_id)
        return True

    if not await svc.store.db.transaction(work):
        raise _not_found(connection_id)
    svc.runtime.outbox_changed()
    log.info("connection %s deleted", connection_id)
    return json_response(OkResult(ok=True))


async def pause_connection(request: Request) -> Response:
    """Stop the inbound loop and refuse sends until ``resume``; the vendor keeps the messages."""
    svc = services(request)
    await read_body(request)
    connection_id = request.path_params["connection_id"]

    def work(conn: Any) -> ConnectionRecord | None:
        svc.store.connections.lock(conn, connection_id)
        current = svc.store.connections.get(conn, connection_id)
        if current is None:
            raise _not_found(connection_id)
        if current.status == "paused":
            return None
        if not current.is_live:
            raise ApiProblem(
                409,
                "connection_not_ready",
                f"connection {connection_id!r} is {current.status}: only a connected"
                " connection can be paused",
            )
        return svc.runtime.change_status(conn, connection_id, "paused")

    changed = await svc.store.db.transaction(work)
    # After the write: the loop's own status changes leave a paused connection alone.
    await svc.runtime.stop_connection(connection_id)
    if changed is not None:
        svc.runtime.outbox_changed()
        log.info("connection %s paused by an operator", connection_id)
    return json_response(await _view(svc, connection_id))


async def resume_connection(request: Request) -> Response:
    """Start a paused connection's inbound loop again, from the cursor it kept."""
    svc = services(request)
    await read_body(request)
    connection_id = request.path_params["connection_id"]
    try:
        changed = await svc.runtime.resume(connection_id)
    except KeyError:
        raise _not_found(connection_id) from None
    except ValueError as exc:
        raise ApiProblem(
            409,
            "connection_not_ready",
            f"connection {connection_id!r} is {exc}: only a paused connection can be resumed",
        ) from None
    if changed is not None:
        log.info("connection %s resumed by an operator", connection_id)
    return json_response(await _view(svc, connection_id))


routes = [
    Route("/connections", list_connections, methods=["GET"]),
    # One route for both methods, so a 405 there names both in its Allow header.
    Route("/connections/{connection_id}", _connection, methods=["GET", "DELETE"]),
    Route("/connections/{connection_id}/logout", logout, methods=["POST"]),
    Route("/connections/{connection_id}/pause", pause_connection, methods=["POST"]),
    Route("/connections/{connection_id}/resume", resume_connection, methods=["POST"]),
]
