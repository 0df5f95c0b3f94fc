"""The echo host's Starlette app: the SDK's bridge endpoint, an echo handler, ``/healthz``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Final, Literal

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connector_contracts import BridgeEvent
from connector_sdk import (
    Attachment,
    BridgeEndpoint,
    BridgeHandler,
    BridgeVerifier,
    ConnectionNotReady,
    DedupeStore,
    NotFound,
    ProviderRejected,
    RequestIdConflict,
    RetryPolicy,
    SidecarClient,
    SqliteDedupeStore,
    ValidationFailed,
    request_id_for,
)
from examples.echo_host.config import BRIDGE_PATH, Settings

__all__ = ["create_app", "echo_attachments", "echo_reply", "make_echo_handler"]

logger = logging.getLogger("examples.echo_host")

# Answers about this one message: sending it again cannot help, so the event is done and the
# sidecar stops delivering it. Anything else (the sidecar down, a wrong token, a send still in
# flight) is raised: the event is marked failed, and the sidecar's redelivery tries again.
_PERMANENT = (
    ProviderRejected,  # 502: the vendor refused this message for good
    RequestIdConflict,  # 422: this requestId was already used for another reply
    ValidationFailed,  # 400/413/422: the sidecar cannot accept this request as sent
    NotFound,  # 404: the connection (or whatever the path names) does not exist
    ConnectionNotReady,  # 409: the connection needs a person to re-pair it
)

# The sidecar waits BRIDGE_TIMEOUT_SECONDS (15 s by default) for the bridge POST: the echo's
# send, retries included, ends well before that (budget + one attempt's timeout < 15 s).
SEND_TIMEOUT_SECONDS: Final = 5.0
SEND_RETRY: Final = RetryPolicy(attempts=4, total_seconds=8.0)


def echo_reply(event: BridgeEvent) -> str:
    """The reply to an event."""
    return f"echo: {event.content}"


def echo_attachments(event: BridgeEvent) -> list[Attachment]:
    """The images of an event, sent back as they came (by mediaId: the sidecar has the bytes)."""
    media = event.metadata.get("media")
    return [
        Attachment.from_media(str(item["mediaId"]), kind="image")
        for item in (media if isinstance(media, list) else [])
        if isinstance(item, dict) and item.get("kind") == "image" and item.get("url")
    ]


def _peer_type(value: str) -> Literal["dm", "group", "unknown"]:
    # The event's peerType is a plain string (newer sidecars may add kinds); a send's is not.
    if value == "dm":
        return "dm"
    if value == "group":
        return "group"
    return "unknown"


def make_echo_handler(client: SidecarClient) -> BridgeHandler:
    """A bridge handler that echoes each message back through ``client``: its text, and each
    image it carried as the same image.

    The requestId comes from :func:`request_id_for` over the conversation, the reply and the
    inbound message id: handling a redelivered event again yields the same requestId, and
    the sidecar answers it as a duplicate instead of sending a second echo.
    """

    async def echo(event: BridgeEvent) -> str | None:
        reply = echo_reply(event)
        session_id = f"{event.connection_id}:{event.peer_id}"
        request_id = request_id_for(
            event.channel_id,
            session_id,
            content=reply,
            inbound_message_id=event.message_id,
            peer_id=event.peer_id,
        )
        try:
            result = await client.send(
                request_id=request_id,
                connection_id=event.connection_id,
                channel_id=event.channel_id,
                kind=event.kind,
                peer_id=event.peer_id,
                peer_type=_peer_type(event.peer_type),
                thread_id=event.thread_id,
                content=reply,
                metadata={"inboundMessageId": event.message_id, "sessionId": session_id},
                attachments=echo_attachments(event),
            )
        except _PERMANENT as error:
            logger.warning("not echoing event %s: %s", event.event_id, error)
            return None
        logger.info("echoed event %s as %s (%s)", event.event_id, request_id, result.status)
        return result.provider_message_id

    return echo


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    store: DedupeStore | None = None,
    retry: RetryPolicy = SEND_RETRY,
) -> Starlette:
    """The echo host app. ``transport``, ``store`` and ``retry`` replace the network, the disk
    and the waits between send attempts in tests."""
    client = SidecarClient(
        settings.sidecar_url,
        token=settings.sidecar_token,
        timeout=SEND_TIMEOUT_SECONDS,
        retry=retry,
        transport=transport,
    )
    dedupe = store if store is not None else SqliteDedupeStore(settings.dedupe_path)
    verifier = BridgeVerifier(
        token=settings.bridge_token, signing_secrets=settings.bridge_signing_secrets
    )
    endpoint = BridgeEndpoint(make_echo_handler(client), verifier=verifier, store=dedupe)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(client)
            if isinstance(dedupe, AbstractAsyncContextManager):
                # Opened now, so a data directory that cannot be written stops the start; closed
                # at shutdown, which also stops the store's background purge.
                await stack.enter_async_context(dedupe)
            yield

    app = Starlette(
        routes=[
            Route(BRIDGE_PATH, endpoint, methods=["POST"]),
            Route("/healthz", _healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.sidecar = client
    app.state.dedupe = dedupe
    return app
