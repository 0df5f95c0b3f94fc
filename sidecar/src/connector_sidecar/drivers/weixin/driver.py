"""The WeChat (iLink bot API) driver: QR pairing, the long-poll inbound loop, truthful sends.

Vendor state per connection (``connection_state``, reset by a re-pair): ``cursor`` is the
``get_updates_buf``; ``ctx:<peer>`` the newest ``context_token`` that peer sent. Credentials
(stored on the connection, never logged): ``bot_token``, ``base_url`` (the confirm's
``baseurl``) and ``ilink_user_id`` (the user who scanned).

A send maps the server's answer onto the ledger's errors:

==========================================  ===========================================
answer                                      outcome
==========================================  ===========================================
``ret`` -14, or no ``ret`` and ``errcode``  :class:`LoginExpiredError` (409, ``auth_expired``)
-14 (the reference would say sent: see
``client.check_send_answer``)
``ret`` -2                                  :class:`DeferredSendError` (202, sent when the
                                            peer next writes) [3rd-party: reply window]
other ``ret`` ≠ 0, or no ``ret`` and        :class:`RejectedSendError` (502, code = ret or
another ``errcode`` ≠ 0                     errcode)
HTTP 4xx (not 408/425/429)                  :class:`RejectedSendError` (``http_<status>``)
network, timeout, 5xx, 408/425/429, empty   :class:`TransientSendError`: retried with the
or non-JSON body                            same ``client_id``
``{}``, or ``ret`` 0 whatever ``errcode``   sent (an ``errcode`` beside ``ret`` 0 is logged)
==========================================  ===========================================

An empty body is a failure, never a success (the reference throws on it). We cannot tell
whether the server took the message, so it is retried with the same ``client_id``; whether the
server dedupes on ``client_id`` is [unconfirmed], so a rare double delivery is possible there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, ClassVar

import httpx

from connector_contracts import SendTarget
from connector_sidecar._version import __version__
from connector_sidecar.drivers.attachments import (
    FetchedMedia,
    OutboundAttachment,
)
from connector_sidecar.drivers.base import (
    DeferredSendError,
    Driver,
    LoginExpiredError,
    OutboundChunk,
    RejectedSendError,
    TransientSendError,
)
from connector_sidecar.drivers.weixin.client import (
    ITEM_TEXT,
    MESSAGE_STATE_FINISH,
    MESSAGE_TYPE_BOT,
    RET_REPLY_WINDOW_CLOSED,
    IlinkApiError,
    IlinkClient,
    IlinkTransportError,
    as_id,
    as_int,
)
from connector_sidecar.drivers.weixin.inbound import Poller, PollTiming, Sleep, context_token_key
from connector_sidecar.drivers.weixin.markdown import wechat_safe_markdown
from connector_sidecar.drivers.weixin.media import (
    CdnError,
    download,
    encrypt,
    message_item,
    new_upload_keys,
    outbound_aes_key,
    upload_request,
    upload_to_cdn,
)
from connector_sidecar.drivers.weixin.pairing import Pairing, PairTiming, save_session
from connector_sidecar.drivers.weixin.typing import TicketCache
from connector_sidecar.store import ConnectionRecord, SessionRecord

__all__ = ["CLIENT_ID_PREFIX", "WeixinDriver"]

log = logging.getLogger(__name__)

CLIENT_ID_PREFIX = "connector-sidecar"
_RETRYABLE_4XX = frozenset({408, 425, 429})
_RUN_ID_NAMESPACE = uuid.UUID("5d0f4c1e-7b0a-4c55-9d2b-2f4f3c6d8e10")


def client_id_for(chunk: OutboundChunk) -> str:
    """The chunk's ``client_id``: from requestId + index, the same on every retry.

    The reference makes a new ``<prefix>:<epoch ms>-<8 hex>`` per request and never retries; we
    keep the shape ``<prefix>:<id>`` and derive the id so a retry cannot look like a new message.
    """
    return f"{CLIENT_ID_PREFIX}:{chunk.key}"


class WeixinDriver(Driver):
    kind: ClassVar[str] = "weixin"
    display_name: ClassVar[str] = "WeChat"
    pairing: ClassVar[str] = "qr"
    capabilities: ClassVar[tuple[str, ...]] = (
        "receive_text",
        "send_text",
        "receive_media",
        "send_media",
        "direct_messages",
        "typing",
    )
    # The reference routes video/* to video, image/* to image and the rest to file; it never
    # sends voice, and whether the server takes a voice item from a bot is [unconfirmed].
    send_media_kinds: ClassVar[frozenset[str]] = frozenset({"image", "file", "video"})
    # The server silently truncates text above about 2000 characters [3rd-party].
    chunk_limit: ClassVar[int] = 2000
    options_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Test seams: an httpx transport (an emulator in-process), the loops' pauses and sleep.
        self.transport: httpx.AsyncBaseTransport | None = None
        self.pair_timing = PairTiming()
        self.poll_timing = PollTiming()
        self.sleep: Sleep = asyncio.sleep
        self._client: IlinkClient | None = None
        self._run_locks: dict[str, asyncio.Lock] = {}
        self.tickets = TicketCache(self.ctx.clock)

    @property
    def client(self) -> IlinkClient:
        if self._client is None:
            self._client = IlinkClient(
                self.ctx.http_client(kind=self.kind, transport=self.transport),
                bot_agent=f"connector-sidecar/{__version__}",
                route_tag=self.ctx.settings.weixin_route_tag,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.http.aclose()
            self._client = None

    # -- pairing ----------------------------------------------------------------------------------

    async def pair(self, session: SessionRecord) -> None:
        await Pairing(self.ctx, self.client, session, timing=self.pair_timing).run()

    async def submit_verify_code(self, session: SessionRecord, code: str) -> None:
        # "scanned" while the code is checked; a wrong code brings verify_code_required back.
        await save_session(
            self.ctx, session.session_id, status="scanned", state={"verifyCode": code}
        )
        self.ctx.session_signal(session.session_id).set()

    # -- inbound ----------------------------------------------------------------------------------

    async def run(self, connection: ConnectionRecord) -> None:
        credentials = connection.credentials
        if not credentials.get("bot_token") or not credentials.get("base_url"):
            await self.ctx.set_status(
                connection.connection_id,
                "auth_expired",
                last_error="no stored WeChat login; scan a new QR code",
            )
            return
        # One poller per connection at a time: a re-pair's new loop starts (notifystart) only
        # after the old one has stopped (notifystop), even when both use the same token.
        lock = self._run_locks.setdefault(connection.connection_id, asyncio.Lock())
        async with lock:
            poller = Poller(
                self.ctx, self.client, connection, timing=self.poll_timing, sleep=self.sleep
            )
            try:
                await poller.run()
            finally:
                await poller.notify_stop()

    # -- sending ----------------------------------------------------------------------------------

    def prepare_text(self, content: str, message_type: str) -> str:
        return wechat_safe_markdown(content) if message_type == "markdown" else content

    async def send(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str:
        item = {"type": ITEM_TEXT, "text_item": {"text": chunk.text}}
        return await self._send_item(connection, chunk.request_id, chunk.key, chunk.target, item)

    async def _send_item(
        self,
        connection: ConnectionRecord,
        request_id: str,
        key: str,
        target: SendTarget,
        item: dict[str, Any],
    ) -> str:
        """One ``sendmessage`` with one item (the reference never sends more per request)."""
        token, base_url = _login(connection)
        if target.peer_type == "group":
            raise RejectedSendError(
                "unsupported_peer_type", "WeChat iLink bots can only message users directly"
            )
        peer_id = target.peer_id
        client_id = f"{CLIENT_ID_PREFIX}:{key}"
        msg: dict[str, Any] = {
            "from_user_id": "",
            "to_user_id": peer_id,
            "client_id": client_id,
            "message_type": MESSAGE_TYPE_BOT,
            "message_state": MESSAGE_STATE_FINISH,
            "item_list": [item],
        }
        context_token = await self.ctx.get_state(
            connection.connection_id, context_token_key(peer_id)
        )
        if context_token:
            msg["context_token"] = context_token
        else:
            # The reference only warns; the server then tends to answer -2 [3rd-party].
            log.warning("send %s: no context_token for this peer yet", request_id)
        # run_id: one UUID for all the parts of one reply.
        msg["run_id"] = str(uuid.uuid5(_RUN_ID_NAMESPACE, request_id))
        try:
            answer = await self.client.send_message(base_url, token, msg)
        except IlinkApiError as exc:
            raise _send_error(exc) from None
        except IlinkTransportError as exc:
            raise _transport_error(exc) from None
        if errcode := as_int(answer.get("errcode")):
            # ret 0 with an errcode: sent, as the reference reads it (client.check_send_answer).
            log.warning("send %s: WeChat answered ret 0 with errcode %s", request_id, errcode)
        # `{}` and a missing ret count as success (the reference); the id is then our client_id.
        return as_id(answer.get("message_id")) or client_id

    # -- media ------------------------------------------------------------------------------------

    async def upload_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment
    ) -> dict[str, Any]:
        """getuploadurl, encrypt, CDN POST (§7); the record holds what the item needs."""
        token, base_url = _login(connection)
        data = await asyncio.to_thread(part.read)
        filekey, key = new_upload_keys()
        request = upload_request(
            data, kind=part.kind, to_user=part.target.peer_id, filekey=filekey, key=key
        )
        try:
            answer = await self.client.get_upload_url(base_url, token, request)
        except IlinkApiError as exc:
            raise _send_error(exc) from None
        except IlinkTransportError as exc:
            raise _transport_error(exc) from None
        ciphertext = await asyncio.to_thread(encrypt, data, key)
        try:
            param = await upload_to_cdn(
                self.client.http,
                self.ctx.settings.weixin_cdn_base_url,
                answer,
                filekey=filekey,
                ciphertext=ciphertext,
            )
        except CdnError as exc:
            if exc.permanent:
                raise RejectedSendError(f"cdn_http_{exc.status or 'error'}", str(exc)) from None
            raise TransientSendError(str(exc)) from None
        # The key is per file and only opens what we sent; it stays in the ledger with the
        # send so a retry can post the item without uploading again.
        return {
            "param": param,
            "aesKey": outbound_aes_key(key),
            "cipherSize": len(ciphertext),
            "rawSize": len(data),
        }

    async def send_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment, upload: dict[str, Any]
    ) -> str:
        item = message_item(part.kind, upload, file_name=part.file_name)
        return await self._send_item(connection, part.request_id, part.key, part.target, item)

    async def fetch_media(
        self, connection: ConnectionRecord, ref: str, *, max_bytes: int
    ) -> FetchedMedia:
        data = await download(
            self.client.http, self.ctx.settings.weixin_cdn_base_url, ref, max_bytes=max_bytes
        )
        return FetchedMedia(data=data)

    async def typing(self, connection: ConnectionRecord, target: SendTarget, *, on: bool) -> bool:
        """getconfig (cached per user) then sendtyping; failures are ignored, as the reference."""
        token, base_url = _login(connection)
        user = target.peer_id
        context_token = await self.ctx.get_state(connection.connection_id, context_token_key(user))

        async def fetch() -> dict[str, Any]:
            return await self.client.get_config(base_url, token, user, context_token=context_token)

        ticket = await self.tickets.ticket(connection.connection_id, user, fetch)
        if ticket is None:
            log.info("typing for %s skipped: no typing_ticket from getconfig", user)
            return True
        try:
            await self.client.send_typing(base_url, token, user, ticket, typing=on)
        except IlinkApiError as exc:
            if exc.stale_token:
                raise LoginExpiredError(
                    f"WeChat says the login is no longer valid ({exc})"
                ) from None
            log.info("sendtyping failed (ignored): %s", exc)
        except IlinkTransportError as exc:
            log.info("sendtyping failed (ignored): %s", exc)
        return True


def _login(connection: ConnectionRecord) -> tuple[str, str]:
    token = connection.credentials.get("bot_token")
    base_url = connection.credentials.get("base_url")
    if not token or not base_url:
        raise LoginExpiredError("no stored WeChat login; scan a new QR code")
    return str(token), str(base_url)


def _send_error(exc: IlinkApiError) -> Exception:
    if exc.stale_token:
        return LoginExpiredError(f"WeChat says the login is no longer valid ({exc})")
    if exc.code == RET_REPLY_WINDOW_CLOSED:
        # Policy, not transport: the 24 h window, ~10 replies per inbound message, or a
        # missing context token [3rd-party]. Only a new message from the peer reopens it.
        # Hermes also reads -2 "unknown error" as a dead login; we do not [3rd-party].
        return DeferredSendError(f"WeChat refused the reply until the user writes again ({exc})")
    return RejectedSendError(str(exc.code), exc.errmsg)


def _transport_error(exc: IlinkTransportError) -> Exception:
    status = exc.status
    if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return RejectedSendError(f"http_{status}", str(exc))
    return TransientSendError(str(exc), retry_after=exc.retry_after)
