"""Pairing sessions (docs/CONTRACT.md §2)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connector_contracts import CancelSessionRequest, StartSessionRequest, VerifyCodeRequest
from connector_sidecar.api._common import Services, json_response, services
from connector_sidecar.drivers.base import OptionsError
from connector_sidecar.problems import ApiProblem, field_problem, read_json
from connector_sidecar.store import SessionRecord, new_session_id
from connector_sidecar.views import session_view

__all__ = ["routes"]

# How long POST /connector-sessions waits for the driver's first step (a QR code) before answering.
FIRST_STEP_WAIT_SECONDS = 5.0


async def start_session(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, StartSessionRequest)
    driver = svc.runtime.drivers.get(body.kind)
    if driver is None:
        raise ApiProblem(
            404, "connector_not_found", f"connector kind {body.kind!r} is not available here"
        )
    try:
        options = driver.parse_options(dict(body.options or {}))
    except OptionsError as exc:
        raise field_problem(exc.path, exc.message) from None

    def work(conn: Any) -> tuple[SessionRecord, bool]:
        # Created if new (rolled back below on a conflict), then locked: concurrent starts for
        # one connection, on any replica, take turns here and the later ones find the session.
        svc.store.connections.ensure(
            conn, connection_id=body.connection_id, channel_id=body.channel_id, kind=body.kind
        )
        svc.store.connections.lock(conn, body.connection_id)
        existing = svc.store.sessions.active_for(conn, body.connection_id)
        if existing is not None:
            if existing.kind != body.kind:
                raise ApiProblem(
                    409,
                    "connection_kind_conflict",
                    f"connection {body.connection_id!r} is pairing as {existing.kind!r}",
                )
            return existing, False
        connection = svc.store.connections.get(conn, body.connection_id)
        if connection is not None and connection.kind != body.kind:
            raise ApiProblem(
                409,
                "connection_kind_conflict",
                f"connection {body.connection_id!r} is a {connection.kind!r} connection",
            )
        if connection is not None and connection.status == "error" and not connection.credentials:
            # An earlier pairing failed before any login: this one is pairing it again.
            svc.store.connections.update(conn, body.connection_id, status="pairing")
        session = SessionRecord(
            session_id=new_session_id(),
            kind=body.kind,
            connection_id=body.connection_id,
            channel_id=body.channel_id,
            status="pending",
            display_name=body.display_name or None,
            callback_base_url=body.callback_base_url or None,
            options=options,
            replica=svc.settings.replica_id,
        )
        return svc.store.sessions.insert(conn, session), True

    session, created = await svc.store.db.transaction(work)
    if created:
        svc.runtime.start_session_task(session)
        session = await _first_step(svc, session)
    return json_response(session_view(session), 201 if created else 200)


async def _first_step(svc: Services, session: SessionRecord) -> SessionRecord:
    """Wait briefly for the driver to leave ``pending`` so the answer already carries the QR."""
    deadline = asyncio.get_running_loop().time() + FIRST_STEP_WAIT_SECONDS
    while session.status == "pending" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
        current = await svc.store.db.run(svc.store.sessions.get, session.session_id)
        if current is None:
            break
        session = current
    return session


async def _session(svc: Services, request: Request) -> SessionRecord:
    session_id = request.path_params["session_id"]
    session = await svc.store.db.run(svc.store.sessions.get, session_id)
    if session is None:
        raise ApiProblem(404, "session_not_found", f"no pairing session {session_id!r}")
    return session


async def _reload(svc: Services, session: SessionRecord) -> SessionRecord:
    current = await svc.store.db.run(svc.store.sessions.get, session.session_id)
    return session if current is None else current


async def get_session(request: Request) -> Response:
    svc = services(request)
    return json_response(session_view(await _session(svc, request)))


async def cancel_session(request: Request) -> Response:
    svc = services(request)
    await read_json(request, CancelSessionRequest, empty_ok=True)
    session = await _session(svc, request)
    if not session.is_terminal:
        closed = await svc.runtime.close_session(session.session_id, error="cancelled by the host")
        session = closed or session
    return json_response(session_view(session))


async def verify_code(request: Request) -> Response:
    svc = services(request)
    body = await read_json(request, VerifyCodeRequest)
    session = await _session(svc, request)
    if session.status != "verify_code_required":
        raise ApiProblem(
            409,
            "session_not_awaiting_code",
            f"the session is {session.status}, not verify_code_required",
        )
    driver = svc.runtime.drivers[session.kind]
    await driver.submit_verify_code(session, body.code.strip())
    return json_response(session_view(await _reload(svc, session)))


routes = [
    Route("/connector-sessions", start_session, methods=["POST"]),
    Route("/connector-sessions/{session_id}", get_session, methods=["GET"]),
    Route("/connector-sessions/{session_id}/cancel", cancel_session, methods=["POST"]),
    Route("/connector-sessions/{session_id}/verify-code", verify_code, methods=["POST"]),
]
