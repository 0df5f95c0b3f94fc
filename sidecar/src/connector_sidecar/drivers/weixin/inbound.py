"""Inbound: the per-account ``getupdates`` long-poll and WeixinMessage → InboundMessage.

The loop, for one connection:

1. ``getupdates`` with the stored cursor (``get_updates_buf``); a client timeout is normal and
   counts as an empty answer.
2. The batch is normalised, and the messages, the new cursor and the newest ``context_token``
   per peer go to ``ctx.ingest`` in **one** transaction. Only after that commit is the next poll
   sent with the new cursor: a crash loses nothing (the vendor replays from the stored cursor)
   and skips nothing (the cursor never runs ahead of the outbox). Redeliveries and
   duplicates get the same eventId (it derives from ``message_id``) and are stored once.
3. ``errcode``/``ret`` -14 moves the connection to ``auth_expired`` and ends the loop. Any other
   failure: ``reconnecting``, 2 s pause, 30 s after 3 failures in a row, ``connected`` again on
   the next success.

The reference pauses 60 min on -14 and then polls again with the same token; we stop instead,
because CONTRACT §3 wants a dead login to show and be re-paired, and in practice -14 means
the token is dead [3rd-party].
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from connector_contracts import format_timestamp
from connector_sidecar.drivers.weixin.client import (
    MESSAGE_TYPE_BOT,
    UPDATES_TIMEOUT,
    IlinkApiError,
    IlinkClient,
    IlinkError,
    IlinkTransportError,
    as_int,
)
from connector_sidecar.store import ConnectionRecord, InboundMessage

if TYPE_CHECKING:
    from connector_sidecar.runtime import DriverContext

__all__ = [
    "CONTEXT_TOKEN_PREFIX",
    "CURSOR_KEY",
    "PollTiming",
    "Poller",
    "Sleep",
    "context_token_key",
    "normalise",
]

log = logging.getLogger(__name__)

CURSOR_KEY = "cursor"
CONTEXT_TOKEN_PREFIX = "ctx:"  # noqa: S105 - a key prefix, not a secret
# The server holds getupdates for longpolling_timeout_ms; a little grace lets its own (empty)
# answer arrive before our client gives up.
POLL_GRACE_SECONDS = 5.0

ITEM_TYPES = {1: "text", 2: "image", 3: "voice", 4: "file", 5: "video"}
# The reference downloads one media item with this priority (voice only without transcript).
MEDIA_PRIORITY = ("image", "video", "file", "voice")
PLACEHOLDERS = {"image": "[image]", "voice": "[voice]", "video": "[video]", "file": "[file]"}

Sleep = Callable[[float], Awaitable[None]]


def context_token_key(peer_id: str) -> str:
    return CONTEXT_TOKEN_PREFIX + peer_id


@dataclasses.dataclass
class PollTiming:
    """The pauses of the loop (the reference's); tests shrink them."""

    retry_seconds: float = 2.0
    long_retry_seconds: float = 30.0
    failures_before_long_retry: int = 3
    notify_stop_timeout: float = 3.0  # at shutdown: short, the reference ignores its failures


# -- normalisation ----------------------------------------------------------------------------------


def _as_id(value: Any) -> str | None:
    """uint64 ids may exceed 2^53; json.loads keeps them exact, we keep them as strings."""
    if value is None or isinstance(value, bool) or value == "":
        return None
    return str(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _media_ref(payload: dict[str, Any]) -> str | None:
    """An opaque reference to download the media later (CDN parameter, key, URL)."""
    media = _dict(payload.get("media"))
    fields = {
        "p": media.get("encrypt_query_param"),
        "k": media.get("aes_key"),
        "t": media.get("encrypt_type"),
        "u": media.get("full_url"),
        "hk": payload.get("aeskey"),  # images: a hex key beside media.aes_key
    }
    fields = {k: v for k, v in fields.items() if v not in (None, "")}
    if not fields.keys() & {"p", "u"}:
        return None
    raw = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    return "wxmedia:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _media_descriptor(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    descriptor: dict[str, Any] = {
        "type": kind,
        "fileName": None,
        "size": None,
        "md5": None,
        "ref": _media_ref(payload),
    }
    if kind == "image":
        descriptor["size"] = as_int(payload.get("hd_size")) or as_int(payload.get("mid_size"))
    elif kind == "file":
        name = payload.get("file_name")
        descriptor["fileName"] = name if isinstance(name, str) and name else None
        descriptor["size"] = as_int(payload.get("len"))
        descriptor["md5"] = payload.get("md5") or None
    elif kind == "video":
        descriptor["size"] = as_int(payload.get("video_size"))
        descriptor["md5"] = payload.get("video_md5") or None
        if (length := as_int(payload.get("play_length"))) is not None:
            descriptor["playLength"] = length  # the unit is [unconfirmed]
    elif kind == "voice":
        if (playtime := as_int(payload.get("playtime"))) is not None:
            descriptor["durationMs"] = playtime
        if (encode_type := as_int(payload.get("encode_type"))) is not None:
            descriptor["encodeType"] = encode_type  # 6 = silk; inbound is SILK 24 kHz [unconfirmed]
        transcript = payload.get("text")
        if isinstance(transcript, str) and transcript:
            descriptor["transcript"] = transcript
    return descriptor


@dataclasses.dataclass
class _Body:
    message_type: str
    content: str
    media: list[dict[str, Any]]


def _body(items: list[dict[str, Any]]) -> _Body | None:
    """The reference's body extraction: first text wins, then a voice transcript, then media."""
    texts: list[str] = []
    transcripts: list[str] = []
    media: list[dict[str, Any]] = []
    for item in items:
        kind = ITEM_TYPES.get(as_int(item.get("type")) or 0)
        if kind is None:
            continue
        payload = _dict(item.get(f"{kind}_item"))
        if kind == "text":
            text = payload.get("text")
            if isinstance(text, str):
                texts.append(text)
            continue
        descriptor = _media_descriptor(kind, payload)
        media.append(descriptor)
        if kind == "voice" and "transcript" in descriptor:
            transcripts.append(descriptor["transcript"])
    if texts:
        return _Body("text", texts[0], media)
    if transcripts:
        return _Body("voice", transcripts[0], media)
    for kind in MEDIA_PRIORITY:
        for descriptor in media:
            if descriptor["type"] == kind:
                placeholder = PLACEHOLDERS[kind]
                if descriptor.get("fileName"):
                    placeholder = f"[file: {descriptor['fileName']}]"
                return _Body(kind, placeholder, media)
    return None


def _quoted(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``ref_msg`` of the first item that has one; newer clients may send only ``svr_id``."""
    for item in items:
        ref = _dict(item.get("ref_msg"))
        if not ref:
            continue
        quoted: dict[str, Any] = {"messageId": _as_id(ref.get("svr_id"))}
        if isinstance(ref.get("title"), str) and ref["title"]:
            quoted["title"] = ref["title"]
        inner = _dict(ref.get("message_item"))
        body = _body([inner]) if inner else None
        if body is not None:
            quoted["messageType"] = body.message_type
            quoted["content"] = body.content
            if body.media:
                quoted["media"] = body.media[0]
        partial = _dict(ref.get("partial_text"))
        if partial:
            quoted["partialText"] = partial
        return quoted
    return None


def _message_id(msg: dict[str, Any]) -> str:
    """``message_id``; else the fallbacks of open PR #240 (client_id, seq, body hash) [3rd-party]."""
    if (message_id := _as_id(msg.get("message_id"))) is not None:
        return message_id
    if (client_id := _as_id(msg.get("client_id"))) is not None:
        return f"client:{client_id}"
    digest = hashlib.sha256(json.dumps(msg, sort_keys=True, default=str).encode()).hexdigest()
    return f"hash:{digest[:32]}"


def normalise(msg: dict[str, Any], *, bot_id: str | None) -> InboundMessage | None:
    """One WeixinMessage as an InboundMessage; None for the bot's own and empty messages."""
    sender = msg.get("from_user_id")
    if not isinstance(sender, str) or not sender:
        return None
    if sender == bot_id or msg.get("message_type") == MESSAGE_TYPE_BOT:
        return None  # the bot's own messages (hermes drops them the same way) [3rd-party]
    items = [i for i in msg.get("item_list") or [] if isinstance(i, dict)]
    body = _body(items)
    if body is None:
        return None
    metadata: dict[str, Any] = {}
    if body.media:
        metadata["media"] = body.media
    if (quoted := _quoted(items)) is not None:
        metadata["quoted"] = quoted
    created = as_int(msg.get("create_time_ms"))
    return InboundMessage(
        message_id=_message_id(msg),
        peer_id=sender,
        peer_type="dm",  # iLink bots see direct chats only
        user_id=sender,
        message_type=body.message_type,
        content=body.content,
        timestamp=format_timestamp(created / 1000) if created else None,
        metadata=metadata,
    )


def newest_context_tokens(msgs: list[dict[str, Any]], *, bot_id: str | None) -> dict[str, str]:
    """``ctx:<peer>`` → the latest ``context_token`` each peer sent in this batch."""
    tokens: dict[str, str] = {}
    for msg in msgs:
        sender = msg.get("from_user_id")
        token = msg.get("context_token")
        if (
            isinstance(sender, str)
            and sender
            and sender != bot_id
            and isinstance(token, str)
            and token
        ):
            tokens[context_token_key(sender)] = token
    return tokens


# -- the loop ---------------------------------------------------------------------------------------


class Poller:
    """The inbound loop of one connection; ``run`` returns when the login is dead."""

    def __init__(
        self,
        ctx: DriverContext,
        client: IlinkClient,
        connection: ConnectionRecord,
        *,
        timing: PollTiming,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.connection_id = connection.connection_id
        self.bot_id = connection.account_id
        self.token: str = connection.credentials["bot_token"]
        self.base_url: str = connection.credentials["base_url"]
        self.timing = timing
        self.sleep = sleep
        self.status = connection.status
        self.login_dead = False

    async def run(self) -> None:
        try:
            await self.client.notify(self.base_url, self.token, "notifystart")
        except IlinkError as exc:
            log.info("%s: notifystart failed (ignored): %s", self.connection_id, exc)
        cursor = await self.ctx.get_state(self.connection_id, CURSOR_KEY) or ""
        timeout = UPDATES_TIMEOUT
        failures = 0
        while True:
            try:
                answer = await self.client.get_updates(
                    self.base_url, self.token, cursor, timeout_s=timeout + POLL_GRACE_SECONDS
                )
            except IlinkTransportError as exc:
                if exc.timeout:
                    answer = {"msgs": []}  # the reference's synthesized empty answer
                else:
                    failures = await self._failed(str(exc), failures)
                    continue
            except IlinkApiError as exc:
                if exc.stale_token:
                    await self._login_died(exc)
                    return
                failures = await self._failed(str(exc), failures)
                continue
            failures = 0
            if self.status != "connected":
                await self.ctx.set_status(self.connection_id, "connected")
                self.status = "connected"
            cursor = await self._commit(answer, cursor)
            hint = as_int(answer.get("longpolling_timeout_ms"))
            if hint is not None and hint > 0:
                timeout = hint / 1000

    async def _commit(self, answer: dict[str, Any], cursor: str) -> str:
        """Messages, cursor and reply tokens in one transaction; returns the cursor to poll with."""
        raw = [m for m in answer.get("msgs") or [] if isinstance(m, dict)]
        new_cursor = answer.get("get_updates_buf")
        # A new cursor is adopted only when non-empty (the reference's rule).
        next_cursor = new_cursor if isinstance(new_cursor, str) and new_cursor else cursor
        messages = [m for m in (normalise(r, bot_id=self.bot_id) for r in raw) if m is not None]
        state = newest_context_tokens(raw, bot_id=self.bot_id)
        if next_cursor != cursor:
            state[CURSOR_KEY] = next_cursor
        if messages or state:
            await self.ctx.ingest(self.connection_id, messages, state=state)
            if len(raw) != len(messages):
                log.debug(
                    "%s: %d of %d messages were the bot's own or empty",
                    self.connection_id,
                    len(raw) - len(messages),
                    len(raw),
                )
        return next_cursor

    async def _failed(self, error: str, failures: int) -> int:
        failures += 1
        log.warning("%s: getupdates failed (%d in a row): %s", self.connection_id, failures, error)
        await self.ctx.set_status(self.connection_id, "reconnecting", last_error=error)
        self.status = "reconnecting"
        if failures >= self.timing.failures_before_long_retry:
            await self.sleep(self.timing.long_retry_seconds)
            return 0
        await self.sleep(self.timing.retry_seconds)
        return failures

    async def _login_died(self, exc: IlinkApiError) -> None:
        self.login_dead = True
        await self.ctx.set_status(
            self.connection_id,
            "auth_expired",
            last_error=f"WeChat says the login is no longer valid ({exc}); scan a new QR code",
        )

    async def notify_stop(self) -> None:
        """``notifystop`` when the loop ends, unless the token is known to be dead."""
        if self.login_dead:
            return
        try:
            await self.client.notify(
                self.base_url, self.token, "notifystop", timeout_s=self.timing.notify_stop_timeout
            )
        except IlinkError as exc:
            log.info("%s: notifystop failed (ignored): %s", self.connection_id, exc)
