"""The Feishu / Lark driver: pairing, the long connection or webhooks, and sending.

Pairing (``qr_or_credentials``): with ``appId``/``appSecret`` the driver fetches a tenant token
and ``bot/v3/info`` (``activate_status`` must be 2) and connects as the bot's open_id; without
them it runs the scan-to-create device flow, then the same check. Events arrive over the long
connection (``mode: websocket``, the default) or at ``POST /webhooks/feishu/{connectionId}``
(``mode: webhook``); either way a message is acknowledged only after its outbox commit. Sends go
to ``im/v1/messages`` (create) or ``…/{id}/reply`` with the chunk's key as Feishu's ``uuid``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connector_contracts import SendTarget
from connector_sidecar._clock import now_ms
from connector_sidecar._qr import qr_data_url
from connector_sidecar.drivers._common import as_dict
from connector_sidecar.drivers.attachments import (
    FetchedMedia,
    MediaRejectedError,
    OutboundAttachment,
)
from connector_sidecar.drivers.base import (
    Driver,
    LoginExpiredError,
    OutboundChunk,
    RejectedSendError,
    TransientSendError,
)
from connector_sidecar.drivers.feishu.api import (
    REPLY_TARGET_GONE_CODES,
    BotInfo,
    CredentialsRejected,
    FeishuApi,
    FeishuApiError,
    FeishuUnavailable,
    TokenCache,
    WsEndpoint,
)
from connector_sidecar.drivers.feishu.inbound import (
    MEDIA_REF_PREFIX,
    Dropped,
    Envelope,
    RecentIds,
    map_message,
    parse_envelope,
    render_content,
)
from connector_sidecar.drivers.feishu.markdown import post_content
from connector_sidecar.drivers.feishu.media import (
    FILE_LIMIT,
    IMAGE_LIMIT,
    download_resource,
    message_content,
    upload_file,
    upload_image,
)
from connector_sidecar.drivers.feishu.options import (
    OPTIONS_SCHEMA,
    ConnectionConfig,
    accounts_base,
    connection_config,
    openapi_base,
    parse_options,
)
from connector_sidecar.drivers.feishu.registration import (
    Approved,
    FlowExpired,
    FlowState,
    RegistrationClient,
    RegistrationError,
    run_device_flow,
)
from connector_sidecar.drivers.feishu.webhook import WebhookSecrets, open_webhook
from connector_sidecar.drivers.feishu.ws import LongConnection
from connector_sidecar.problems import ApiProblem, read_body
from connector_sidecar.store import ConnectionRecord, InboundMessage, SessionRecord

__all__ = ["FeishuDriver"]

log = logging.getLogger(__name__)

CREDENTIALS_CHECK_SECONDS = 120  # how long a credentials session keeps trying through outages
SCANNED_ACTIVATION_SECONDS = 600  # how long a scanned app may take to get its bot enabled
MAX_QR_CODES = 3
QUOTED_FETCH_SECONDS = 1.5  # the quoted message's text is a nicety: never hold an ack for long
THREAD_STATE_PREFIX = "thread:"

_ACTIVATE_STATUS = {
    0: "is not installed yet",
    1: "is disabled by the tenant",
    3: "is installed but not enabled yet",
    4: "has an upgrade waiting to be enabled",
    5: "has an expired license",
    6: "has an expired or downgraded plan",
}


class _LoginDead(Exception):
    """The vendor refused the app's credentials while the connection ran."""


@dataclasses.dataclass
class _Live:
    """What the driver keeps per connection: its client and the ids it has seen."""

    config: ConnectionConfig
    api: FeishuApi
    seen: RecentIds = dataclasses.field(default_factory=RecentIds)


class FeishuDriver(Driver):
    kind: ClassVar[str] = "feishu"
    display_name: ClassVar[str] = "Feishu / Lark"
    pairing: ClassVar[str] = "qr_or_credentials"
    capabilities: ClassVar[tuple[str, ...]] = (
        "receive_text",
        "send_text",
        "receive_media",
        "send_media",
        "direct_messages",
        "groups",
        "threads",
    )
    send_media_kinds: ClassVar[frozenset[str]] = frozenset({"image", "file", "voice", "video"})
    chunk_limit: ClassVar[int] = 4000
    options_schema: ClassVar[dict[str, Any]] = OPTIONS_SCHEMA
    # Feishu's uuid: at most 50 characters, deduped for 1 h [doc text quoted in 3rd-party SDKs].
    # Whether a repeat answers code 0 with the first message_id or an error is [unconfirmed]:
    # a repeat only happens after a lost answer, and either way the ledger moves on.
    key_max_length: ClassVar[int] = 50

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: httpx.AsyncClient | None = None
        self.tokens = TokenCache()
        self._live: dict[str, _Live] = {}
        # Tests point these elsewhere: an emulator over ASGI, pauses without waiting.
        self.transport: httpx.AsyncBaseTransport | None = None
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.rng = random.Random()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = self.ctx.http_client(kind=self.kind, transport=self.transport)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return parse_options(options)

    def _api(self, domain: str, app_id: str, app_secret: str) -> FeishuApi:
        base = openapi_base(domain, self.ctx.settings)
        return FeishuApi(self.http, base, app_id, app_secret, tokens=self.tokens)

    def _live_for(self, connection: ConnectionRecord) -> _Live:
        config = connection_config(connection.options, connection.credentials)
        live = self._live.get(connection.connection_id)
        if live is None or live.config != config:
            live = _Live(config, self._api(config.domain, config.app_id, config.app_secret))
            self._live[connection.connection_id] = live
        return live

    # -- pairing ----------------------------------------------------------------------------------

    async def pair(self, session: SessionRecord) -> None:
        options = session.options
        metadata = dict(session.metadata)
        metadata["mode"] = options.get("mode", "websocket")
        if options.get("mode") == "webhook":
            path = f"/webhooks/feishu/{session.connection_id}"
            metadata["callbackPath"] = path
            if session.callback_base_url:
                metadata["callbackUrl"] = session.callback_base_url.rstrip("/") + path
        if metadata != session.metadata:
            session = await self.ctx.update_session(session.session_id, metadata=metadata)
        if options.get("appId"):
            await self._pair_with_credentials(session, metadata)
        else:
            await self._pair_by_scan(session, metadata)

    async def _pair_with_credentials(
        self, session: SessionRecord, metadata: dict[str, Any]
    ) -> None:
        options = session.options
        expires_at = session.expires_at or now_ms(self.ctx.clock) + CREDENTIALS_CHECK_SECONDS * 1000
        if session.expires_at is None:
            await self.ctx.update_session(session.session_id, expires_at=expires_at)
        api = self._api(options["domain"], options["appId"], options["appSecret"])
        bot = await self._check_bot(session, api, expires_at=expires_at, patient=False)
        if bot is not None:
            await self._connected(
                session, bot, options["domain"], options["appId"], options["appSecret"], metadata
            )

    async def _check_bot(
        self, session: SessionRecord, api: FeishuApi, *, expires_at: int, patient: bool
    ) -> BotInfo | None:
        """Token, then bot info; a terminal session status (and None) when it cannot work.

        Outages are retried until ``expires_at``. ``patient`` (after a scan) also waits for a bot
        that is not readable or enabled yet: the person may still be publishing the new app.
        """
        delay = 1.0
        last = "Feishu did not answer"
        while True:
            try:
                await api.check_credentials()
                bot = await api.bot_info()
            except CredentialsRejected as exc:
                await self._session_error(session, f"Feishu refused the app credentials: {exc}")
                return None
            except FeishuApiError as exc:
                last = f"reading the bot failed: {exc}"
                if not patient:
                    await self._session_error(session, last)
                    return None
            except FeishuUnavailable as exc:
                last = f"Feishu is unavailable: {exc}"
                log.warning("pairing %s: %s", session.session_id, last)
            else:
                if bot.activate_status in (2, None):
                    return bot
                last = (
                    f"the bot of app {api.app_id} "
                    f"{_ACTIVATE_STATUS.get(bot.activate_status, f'has activate_status {bot.activate_status}')}"
                    "; enable and publish it in the developer console"
                )
                if not patient:
                    await self._session_error(session, last)
                    return None
            if now_ms(self.ctx.clock) + delay * 1000 >= expires_at:
                await self._session_error(session, last)
                return None
            await self.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _session_error(self, session: SessionRecord, error: str) -> None:
        log.warning("pairing %s failed: %s", session.session_id, error)
        await self.ctx.update_session(
            session.session_id, status="error", error=error, qr_image=None
        )

    async def _connected(
        self,
        session: SessionRecord,
        bot: BotInfo,
        domain: str,
        app_id: str,
        app_secret: str,
        metadata: dict[str, Any],
    ) -> None:
        options = session.options
        credentials = {"appId": app_id, "appSecret": app_secret, "domain": domain}
        for name in ("encryptKey", "verificationToken"):
            if options.get(name):
                credentials[name] = options[name]
        self._live.pop(session.connection_id, None)
        await self.ctx.session_connected(
            session.session_id,
            account_id=bot.open_id,
            display_name=bot.app_name or None,
            credentials=credentials,
            metadata={**metadata, "appId": app_id, "domain": domain},
        )

    async def _pair_by_scan(self, session: SessionRecord, metadata: dict[str, Any]) -> None:
        saved = session.state
        approved = saved.get("approved")
        if isinstance(approved, dict):  # a restart after the scan: only the check is left
            result = Approved(
                app_id=approved["appId"],
                app_secret=approved["appSecret"],
                owner_open_id=approved.get("ownerOpenId"),
                tenant_brand=approved.get("brand"),
            )
        else:
            state = FlowState.from_dict(saved.get("flow") or {})
            if not saved.get("flow"):
                state.brand = session.options.get("domain", "feishu")

            async def on_code(flow: FlowState) -> None:
                assert flow.url is not None
                assert flow.expires_at is not None
                await self.ctx.update_session(
                    session.session_id,
                    status="qr_ready",
                    qr_content=flow.url,
                    qr_image=qr_data_url(flow.url),
                    expires_at=int(flow.expires_at * 1000),
                    state={"flow": flow.to_dict()},
                )

            async def on_change(flow: FlowState) -> None:
                await self.ctx.update_session(session.session_id, state={"flow": flow.to_dict()})

            try:
                result = await run_device_flow(
                    state,
                    client_for=lambda brand: RegistrationClient(
                        self.http, accounts_base(brand, self.ctx.settings)
                    ),
                    on_code=on_code,
                    on_change=on_change,
                    clock=self.ctx.clock,
                    sleep=self.sleep,
                    max_codes=MAX_QR_CODES,
                )
            except FlowExpired as exc:
                await self.ctx.update_session(
                    session.session_id, status="expired", error=str(exc), qr_image=None
                )
                return
            except RegistrationError as exc:
                reason = {
                    "access_denied": "the person who scanned declined to create the app",
                }.get(exc.error, f"the app registration failed: {exc}")
                await self._session_error(session, reason)
                return
            result = dataclasses.replace(
                result, tenant_brand="lark" if state.brand == "lark" else result.tenant_brand
            )
        domain = "lark" if result.tenant_brand == "lark" else "feishu"
        if session.options.get("domain") == "lark":
            domain = "lark"
        metadata = {**metadata, "appId": result.app_id}
        if result.owner_open_id:
            metadata["ownerOpenId"] = result.owner_open_id
        expires_at = now_ms(self.ctx.clock) + SCANNED_ACTIVATION_SECONDS * 1000
        session = await self.ctx.update_session(
            session.session_id,
            status="scanned",
            qr_image=None,
            metadata=metadata,
            expires_at=expires_at,
            state={
                "approved": {
                    "appId": result.app_id,
                    "appSecret": result.app_secret,
                    "ownerOpenId": result.owner_open_id,
                    "brand": domain,
                }
            },
        )
        api = self._api(domain, result.app_id, result.app_secret)
        try:
            bot = await self._check_bot(session, api, expires_at=expires_at, patient=True)
            if bot is not None:
                await self._connected(
                    session, bot, domain, result.app_id, result.app_secret, metadata
                )
        except Exception:
            # The session ends here (an error, or the host closed it meanwhile): drop the secret.
            await self.ctx.update_session(session.session_id, state={})
            raise
        # Connected, the secret lives with the connection's login; failed, it is of no more use:
        # either way the session keeps no copy. (A shutdown keeps it, to resume after a restart.)
        await self.ctx.update_session(session.session_id, state={})

    # -- the inbound loop -------------------------------------------------------------------------

    async def run(self, connection: ConnectionRecord) -> None:
        live = self._live_for(connection)
        connection_id = connection.connection_id
        if live.config.mode == "webhook":
            # Events come to the route; the loop only checks the login once, at start.
            try:
                await live.api.check_credentials()
            except CredentialsRejected as exc:
                await self._login_dead(connection_id, exc)
                return
            except FeishuUnavailable:
                pass  # an outage is no verdict on the login
            await asyncio.Event().wait()

        async def fetch_endpoint() -> WsEndpoint:
            try:
                return await live.api.ws_endpoint()
            except FeishuApiError:
                # A client error: if the credentials are what is wrong, the login is dead.
                try:
                    await live.api.check_credentials()
                except CredentialsRejected as exc:
                    raise _LoginDead(str(exc)) from None
                raise

        # Only a live connection's status is ours to change: a logout or an auth_expired from
        # the send path may have happened meanwhile, and must not be overwritten.
        async def on_connected() -> None:
            current = await self.ctx.get_connection(connection_id)
            if current is None or not current.is_live:
                return
            if current.status != "connected" or current.last_error:
                await self.ctx.set_status(connection_id, "connected")

        async def on_disconnected(reason: str) -> None:
            current = await self.ctx.get_connection(connection_id)
            if current is not None and current.is_live:
                await self.ctx.set_status(connection_id, "reconnecting", last_error=reason)

        async def handle_event(payload: bytes) -> None:
            # An event nobody can read is acked and dropped: a redelivery would not read better.
            try:
                body = json.loads(payload)
            except (ValueError, RecursionError):
                log.warning("%s: an event that is not JSON was dropped", connection_id)
                return
            envelope = parse_envelope(body) if isinstance(body, dict) else None
            if envelope is None:
                log.warning("%s: an event without a v2 envelope was dropped", connection_id)
                return
            await self.handle_envelope(connection, envelope)

        client = LongConnection(
            fetch_endpoint=fetch_endpoint,
            handle_event=handle_event,
            on_connected=on_connected,
            on_disconnected=on_disconnected,
            fatal=(_LoginDead, CredentialsRejected),
            name=connection_id,
            rng=self.rng,
            sleep=self.sleep,
        )
        try:
            await client.run()
        except (_LoginDead, CredentialsRejected) as exc:
            await self._login_dead(connection_id, exc)

    async def _login_dead(self, connection_id: str, exc: Exception) -> None:
        await self.ctx.set_status(
            connection_id, "auth_expired", last_error=f"Feishu refused the app credentials: {exc}"
        )

    async def handle_envelope(self, connection: ConnectionRecord, envelope: Envelope) -> None:
        """Map one event and commit it to the outbox; returns once it is durable (or dropped).

        ``connection`` is the caller's record, read once per loop or per webhook request, not
        again per event: a re-pair stops a connection's loop before it stores the new login.
        """
        connection_id = connection.connection_id
        live = self._live_for(connection)
        message = envelope.event.get("message")
        message_id = message.get("message_id") if isinstance(message, dict) else None
        keys = (
            f"evt:{envelope.event_id}" if envelope.event_id else None,
            f"msg:{message_id}" if isinstance(message_id, str) else None,
        )
        if live.seen.seen(*keys):
            return  # a redelivery (maybe under a new event_id) of what is already handled
        result = map_message(
            envelope,
            bot_open_id=connection.account_id,
            require_mention=live.config.require_mention,
        )
        if isinstance(result, Dropped):
            log.debug("%s: event %s dropped: %s", connection_id, envelope.event_id, result.reason)
            live.seen.add(*keys)
            return
        inbound = await self._with_quoted(live, connection, result)
        state = None
        if inbound.thread_id:
            state = {THREAD_STATE_PREFIX + inbound.thread_id: inbound.message_id}
        await self.ctx.ingest(connection_id, [inbound], state=state)
        live.seen.add(*keys)

    async def _with_quoted(
        self, live: _Live, connection: ConnectionRecord, message: InboundMessage
    ) -> InboundMessage:
        """Add the quoted parent's text, best effort and briefly (the ack waits for it)."""
        quoted = message.metadata.get("quoted")
        if not isinstance(quoted, dict) or not quoted.get("messageId"):
            return message
        try:
            item = await asyncio.wait_for(
                live.api.get_message(quoted["messageId"]), QUOTED_FETCH_SECONDS
            )
        except (TimeoutError, FeishuUnavailable, FeishuApiError, CredentialsRejected) as exc:
            log.info("%s: the quoted message is not available: %s", connection.connection_id, exc)
            return message
        if item is None:
            return message
        body = as_dict(item.get("body"))
        sender = as_dict(item.get("sender"))
        msg_type = str(item.get("msg_type") or "text")
        text, _ = render_content(msg_type, body.get("content"), [], bot_open_id=None)
        enriched = {
            **quoted,
            "content": text,
            "messageType": msg_type,
            "senderId": sender.get("id"),
            "senderType": sender.get("sender_type"),
            # A bot's own message names it by app_id (id_type app_id) [unconfirmed].
            "fromSelf": sender.get("id") in (live.config.app_id, connection.account_id),
        }
        return dataclasses.replace(message, metadata={**message.metadata, "quoted": enriched})

    # -- webhooks ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [Route("/webhooks/feishu/{connection_id}", self._webhook, methods=["POST"])]

    async def _webhook(self, request: Request) -> Response:
        connection_id = request.path_params["connection_id"]
        body = await read_body(request)
        connection = await self.ctx.get_connection(connection_id)
        if connection is None or connection.kind != self.kind:
            raise ApiProblem(404, "connection_not_found", f"no feishu connection {connection_id!r}")
        settings: dict[str, Any] = {**connection.options, **connection.credentials}
        if not connection.credentials:
            # Pairing: the console's URL check may come before the login is stored.
            session = await self.ctx.store.db.run(self.ctx.store.sessions.active_for, connection_id)
            if session is not None and session.kind == self.kind:
                settings = dict(session.options)
        if settings.get("mode") != "webhook" or not settings.get("verificationToken"):
            raise ApiProblem(
                404,
                "connection_not_found",
                f"{connection_id!r} takes no webhooks (not in webhook mode)",
            )
        opened = open_webhook(
            body,
            request.headers,
            WebhookSecrets(
                encrypt_key=settings.get("encryptKey"),
                verification_token=settings.get("verificationToken"),
            ),
        )
        if opened.challenge is not None:
            # Escaped to ASCII: the challenge is echoed as it came, even a lone surrogate.
            challenge = json.dumps({"challenge": opened.challenge})
            return Response(challenge, media_type="application/json")
        envelope = parse_envelope(opened.body)
        if envelope is None:
            return JSONResponse({"msg": "success"})  # legacy v1 events are not messages
        if not connection.credentials or connection.account_id is None:
            raise ApiProblem(
                503,
                "connection_not_ready",
                "the connection is not paired yet; Feishu will retry",
                headers={"Retry-After": "5"},
            )
        await self.handle_envelope(connection, envelope)
        return JSONResponse({"msg": "success"})

    # -- sending ----------------------------------------------------------------------------------

    async def send(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str:
        msg_type, content = _content(chunk.text, chunk.message_type)
        return await self._post(
            connection,
            request_id=chunk.request_id,
            index=chunk.index,
            key=chunk.key,
            target=chunk.target,
            reply_to=chunk.reply_to_message_id,
            msg_type=msg_type,
            content=content,
        )

    async def _post(
        self,
        connection: ConnectionRecord,
        *,
        request_id: str,
        index: int,
        key: str,
        target: SendTarget,
        reply_to: str | None,
        msg_type: str,
        content: str,
    ) -> str:
        """One message (a chunk or an attachment part) with its key as Feishu's ``uuid``."""
        live = self._live_for(connection)
        in_thread = bool(target.thread_id)
        if reply_to is None and target.thread_id:
            # Feishu posts into a thread only as a reply: to the latest message seen there.
            reply_to = await self.ctx.get_state(
                connection.connection_id, THREAD_STATE_PREFIX + target.thread_id
            )
        if reply_to is not None and index > 0 and not in_thread:
            reply_to = None  # quote once; the rest of a long answer follows as plain messages
        uuid = key
        try:
            if reply_to is not None:
                try:
                    sent = await live.api.reply_message(
                        message_id=reply_to,
                        msg_type=msg_type,
                        content=content,
                        uuid=uuid,
                        reply_in_thread=in_thread,
                    )
                    return sent.message_id
                except FeishuApiError as exc:
                    if not _reply_target_gone(exc):
                        raise
                    # Withdrawn or deleted: post to the chat instead (OpenClaw does this unless
                    # a thread was required; a thread that lost its message is still better
                    # served by an answer in the chat than by none).
                    log.info(
                        "send %s: reply target %s is gone (%s); sending to the chat",
                        request_id,
                        reply_to,
                        exc,
                    )
                    uuid = _fallback_uuid(key)
            sent = await live.api.create_message(
                receive_id_type=_receive_id_type(target.peer_id),
                receive_id=target.peer_id,
                msg_type=msg_type,
                content=content,
                uuid=uuid,
            )
            return sent.message_id
        except CredentialsRejected as exc:
            raise LoginExpiredError(f"Feishu refused the app credentials: {exc}") from None
        except FeishuUnavailable as exc:
            raise TransientSendError(str(exc), retry_after=exc.retry_after) from None
        except FeishuApiError as exc:
            raise RejectedSendError(str(exc.code), exc.msg or str(exc)) from None

    # -- media ------------------------------------------------------------------------------------

    def attachment_problem(self, kind: str, mime_type: str, size: int) -> tuple[int, str] | None:
        problem = super().attachment_problem(kind, mime_type, size)
        if problem is not None:
            return problem
        limit = IMAGE_LIMIT if kind == "image" else FILE_LIMIT
        if size > limit:
            return 413, f"Feishu takes {kind} uploads of at most {limit} bytes; this is {size}"
        if size == 0:
            return 422, "Feishu does not take empty files"
        if kind == "voice" and mime_type not in ("audio/ogg", "audio/opus"):
            return 422, "Feishu voice messages must be Opus audio (audio/ogg or audio/opus)"
        if kind == "video" and mime_type != "video/mp4":
            return 422, "Feishu video messages must be MP4 (video/mp4)"
        return None

    async def upload_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment
    ) -> dict[str, Any]:
        live = self._live_for(connection)
        data = await asyncio.to_thread(part.read)
        try:
            if part.kind == "image":
                key = await upload_image(
                    live.api, data, file_name=part.file_name, mime_type=part.mime_type
                )
            else:
                key = await upload_file(
                    live.api,
                    data,
                    kind=part.kind,
                    file_name=part.file_name,
                    mime_type=part.mime_type,
                )
        except CredentialsRejected as exc:
            raise LoginExpiredError(f"Feishu refused the app credentials: {exc}") from None
        except FeishuUnavailable as exc:
            raise TransientSendError(str(exc), retry_after=exc.retry_after) from None
        except FeishuApiError as exc:
            raise RejectedSendError(str(exc.code), exc.msg or str(exc)) from None
        return {"key": key}

    async def send_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment, upload: dict[str, Any]
    ) -> str:
        msg_type, content = message_content(part.kind, str(upload["key"]))
        return await self._post(
            connection,
            request_id=part.request_id,
            index=part.index,
            key=part.key,
            target=part.target,
            reply_to=part.reply_to_message_id,
            msg_type=msg_type,
            content=json.dumps(content),
        )

    async def fetch_media(
        self, connection: ConnectionRecord, ref: str, *, max_bytes: int
    ) -> FetchedMedia:
        try:
            fields = json.loads(ref.removeprefix(MEDIA_REF_PREFIX))
            message_id, key, resource_type = fields["m"], fields["k"], fields["t"]
        except (ValueError, KeyError, TypeError):
            raise MediaRejectedError(
                "bad_media_reference", "not a Feishu media reference"
            ) from None
        live = self._live_for(connection)
        return await download_resource(
            live.api, str(message_id), str(key), str(resource_type), max_bytes=max_bytes
        )

    async def logout(self, connection: ConnectionRecord) -> None:
        # Feishu has no logout for a tenant token; forget what this process holds.
        live = self._live.pop(connection.connection_id, None)
        if live is not None:
            self.tokens.forget(live.api.base_url, live.api.app_id)


def _content(text: str, message_type: str) -> tuple[str, str]:
    """``msg_type`` and the JSON *string* ``content`` of a chunk."""
    if message_type == "markdown":
        return "post", post_content(text)  # md rows, split at code fences (markdown.py)
    return "text", json.dumps({"text": text}, ensure_ascii=False)


def _receive_id_type(peer_id: str) -> str:
    """Like both SDKs, by prefix; a chat (``oc_``, what inbound events give as peerId) by default."""
    if peer_id.startswith("ou_"):
        return "open_id"
    if peer_id.startswith("on_"):
        return "union_id"
    if "@" in peer_id:
        return "email"
    return "chat_id"


def _reply_target_gone(exc: FeishuApiError) -> bool:
    text = exc.msg.lower()
    return exc.code in REPLY_TARGET_GONE_CODES or "withdrawn" in text or "not found" in text


def _fallback_uuid(key: str) -> str:
    """A different, still deterministic uuid for the create that replaces a failed reply."""
    return "f" + hashlib.sha256(key.encode()).hexdigest()[:40]
