"""The host's bridge endpoint: verify → decode → dedupe → your handler (docs/CONTRACT.md §5).

:class:`BridgeEndpoint` is a plain ASGI app, so it mounts in Starlette, FastAPI or any ASGI
server without the SDK importing either; :func:`handle_bridge_request` is the same logic for
frameworks that are not ASGI. The answers, and what the sidecar does with them:

==========================================  ======  ===============================
case                                        status  body
==========================================  ======  ===============================
handled now                                 200     ``accepted: true``
already handled (a redelivery)              200     ``accepted, duplicate: true``
an earlier attempt is still being handled   409     ``pending: true``, Retry-After 5
the handler raised                          500     ``accepted: false`` (retried)
the dedupe store is unavailable             503     ``accepted: false`` (retried)
bad token or signature                      401     problem document
body is not JSON / not a BridgeEvent        400/422 problem document (dead-lettered)
an event type without a handler (a ping)    200     ``accepted: true`` (ignored)
==========================================  ======  ===============================

Event types (docs/CONTRACT.md §10.2): ``message`` events go to ``handler``; ``connection.status`` to
``on_connection_status`` and ``send.status`` to ``on_send_status`` when given, each deduped
like messages. A type with no handler (a ``ping`` from ``POST /bridge/test``, a type a newer
sidecar added) is accepted and ignored, so enabling new types never breaks a host.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from connector_contracts import (
    AnyBridgeEvent,
    BridgeEvent,
    ConnectionStatusEvent,
    HostAnswer,
    Problem,
    SendStatusEvent,
    encode,
)
from connector_sdk.dedupe import DedupeStore, MemoryDedupeStore
from connector_sdk.errors import BridgeRequestError, DedupeError, InvalidBridgeEvent
from connector_sdk.verify import BridgeVerifier, Headers, UnknownEvent

__all__ = [
    "BridgeEndpoint",
    "BridgeHandler",
    "BridgeResponse",
    "ConnectionStatusHandler",
    "SendStatusHandler",
    "handle_bridge_request",
]

logger = logging.getLogger("connector_sdk")

#: Your code: handle one event; return your own id for the result (stored as the record's
#: ``message_id``) or None. Raise to have the sidecar deliver the event again later.
BridgeHandler = Callable[[BridgeEvent], Awaitable[str | None]]
#: Your code for a ``connection.status`` event (a connection connected, expired, …).
ConnectionStatusHandler = Callable[[ConnectionStatusEvent], Awaitable[None]]
#: Your code for a ``send.status`` event (a deferred send finally sent, or expired).
SendStatusHandler = Callable[[SendStatusEvent], Awaitable[None]]
AnyEvent = AnyBridgeEvent | UnknownEvent

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
_JSON: Final = "application/json"
_PROBLEM_JSON: Final = "application/problem+json"


@dataclass(frozen=True, slots=True)
class BridgeResponse:
    """What to answer the sidecar: a status, headers and a JSON body."""

    status_code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: The host answer, for the 200/409/500 cases; None for a problem document.
    answer: HostAnswer | None = None
    #: The decoded event, once the request got that far.
    event: AnyEvent | None = None


def _answer(
    status: int, answer: HostAnswer, event: AnyEvent | None, **headers: str
) -> BridgeResponse:
    return BridgeResponse(
        status_code=status,
        body=encode(answer),
        headers={"content-type": _JSON, **headers},
        answer=answer,
        event=event,
    )


def _problem(status: int, code: str, title: str, detail: str, **extra: Any) -> BridgeResponse:
    problem = Problem(title=title, status=status, code=code, detail=detail, **extra)
    return BridgeResponse(
        status_code=status, body=encode(problem), headers={"content-type": _PROBLEM_JSON}
    )


def _refused(error: BridgeRequestError) -> BridgeResponse:
    errors = error.errors if isinstance(error, InvalidBridgeEvent) and error.errors else None
    title = "Unauthorized" if error.status == 401 else "Invalid bridge event"
    return _problem(error.status, error.code, title, error.reason, errors=errors)


async def handle_bridge_request(
    headers: Headers,
    body: bytes,
    handler: BridgeHandler,
    *,
    verifier: BridgeVerifier,
    store: DedupeStore,
    on_connection_status: ConnectionStatusHandler | None = None,
    on_send_status: SendStatusHandler | None = None,
) -> BridgeResponse:
    """Handle one bridge POST given its headers and raw body; never raises for a bad request.

    For frameworks that are not ASGI: call it from your route and send the response back::

        result = await handle_bridge_request(request.headers, raw_body, handler,
                                             verifier=verifier, store=store)
        return YourResponse(result.body, status=result.status_code, headers=result.headers)
    """
    try:
        event = verifier.verify(headers, body)
    except BridgeRequestError as error:
        logger.warning("bridge request refused: %s", error)
        return _refused(error)

    work: Callable[[], Awaitable[str | None]]
    if isinstance(event, BridgeEvent):
        message = event

        async def work() -> str | None:
            return await handler(message)

    elif isinstance(event, ConnectionStatusEvent) and on_connection_status is not None:
        status_event, status_handler = event, on_connection_status

        async def work() -> str | None:
            await status_handler(status_event)
            return None

    elif isinstance(event, SendStatusEvent) and on_send_status is not None:
        send_event, send_handler = event, on_send_status

        async def work() -> str | None:
            await send_handler(send_event)
            return None

    else:
        # A ping, or a type this host has no handler for: accepted, so the sidecar moves on.
        return _answer(200, HostAnswer(accepted=True), event)
    return await _process(event, work, store)


async def _process(
    event: BridgeEvent | ConnectionStatusEvent | SendStatusEvent,
    work: Callable[[], Awaitable[str | None]],
    store: DedupeStore,
) -> BridgeResponse:
    """Dedupe, run the handler, record the outcome."""
    try:
        decision = await store.begin(event.connection_id, event.event_id, event.delivery_attempt)
    except DedupeError:
        # Without the store we cannot promise "once": let the sidecar try again later.
        logger.exception("dedupe store failed for event %s", event.event_id)
        return _answer(503, HostAnswer(accepted=False), event)
    if not decision.should_process:
        if decision.http_status == 409:
            seconds = decision.retry_after_seconds or 5
            answer = HostAnswer(
                accepted=False, duplicate=True, pending=True, retry_after_seconds=seconds
            )
            return _answer(409, answer, event, **{"retry-after": str(seconds)})
        return _answer(200, HostAnswer(accepted=True, duplicate=True), event)

    try:
        message_id = await work()
    except Exception as error:  # the host's own code: any failure means "deliver it again"
        logger.exception("bridge handler failed for event %s", event.event_id)
        try:
            await store.fail(decision.dedupe_key, f"{type(error).__name__}: {error}")
        except DedupeError:
            # The record stays "processing" and is taken over once the processing TTL passes.
            logger.exception("could not mark event %s failed", event.event_id)
        return _answer(500, HostAnswer(accepted=False), event)
    try:
        await store.complete(
            decision.dedupe_key, message_id if isinstance(message_id, str) else None
        )
    except DedupeError:
        # The work is done, so the answer is still 200; a redelivery within the processing TTL
        # gets 409 and then, at worst, is handled again, which a deterministic requestId absorbs.
        logger.exception("could not mark event %s completed", event.event_id)
    return _answer(200, HostAnswer(accepted=True), event)


class BridgeEndpoint:
    """An ASGI app that receives bridge events and hands each one to ``handler`` once.

    Starlette: ``Route("/api/channel-connector-bridge/events", endpoint, methods=["POST"])``;
    FastAPI: ``app.add_route("/api/channel-connector-bridge/events", endpoint, methods=["POST"])``.
    (A ``Mount`` at the full path would answer the exact path with a redirect to ``…/``;
    mount the parent path instead if you prefer ``Mount``.)

    ``store`` defaults to a :class:`MemoryDedupeStore`, which forgets on restart; pass a
    :class:`SqliteDedupeStore` (or your own :class:`DedupeStore`) in production.
    """

    def __init__(
        self,
        handler: BridgeHandler,
        *,
        verifier: BridgeVerifier,
        store: DedupeStore | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        on_connection_status: ConnectionStatusHandler | None = None,
        on_send_status: SendStatusHandler | None = None,
    ) -> None:
        self.handler = handler
        self.on_connection_status = on_connection_status
        self.on_send_status = on_send_status
        self.verifier = verifier
        self.store: DedupeStore = store if store is not None else MemoryDedupeStore()
        self.max_body_bytes = max_body_bytes

    def __repr__(self) -> str:
        return f"BridgeEndpoint({self.verifier!r}, store={self.store!r})"

    async def handle(self, headers: Headers, body: bytes) -> BridgeResponse:
        """:func:`handle_bridge_request` with this endpoint's handler, verifier and store."""
        return await handle_bridge_request(
            headers,
            body,
            self.handler,
            verifier=self.verifier,
            store=self.store,
            on_connection_status=self.on_connection_status,
            on_send_status=self.on_send_status,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["method"] != "POST":
            response = _problem(405, "method_not_allowed", "Method not allowed", "use POST")
            response.headers["allow"] = "POST"
            await _respond(send, response)
            return
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ]
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            detail = f"the body is larger than {self.max_body_bytes} bytes"
            await _respond(send, _problem(413, "body_too_large", "Body too large", detail))
            return
        await _respond(send, await self.handle(headers, body))


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, response: BridgeResponse) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
    ]
    headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Mounted as the top-level app, there is nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
