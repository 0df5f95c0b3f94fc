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
because docs/CONTRACT.md §3 wants a dead login to show and be re-paired, and in practice -14 means
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

from connector_sidecar.drivers._common import as_dict, as_list, as_str, timestamp_from_ms
from connector_sidecar.drivers.weixin.client import (
    MESSAGE_TYPE_BOT,
    UPDATES_TIMEOUT,
    IlinkApiError,
    IlinkClient,
    IlinkError,
    IlinkTransportError,
    as_id,
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
# answer arrive before our client gives up. The reference times out at exactly the hint (our
# choice; either way a timeout is only an empty answer).
POLL_GRACE_SECONDS = 5.0

ITEM_TYPES = {1: "text", 2: "image", 3: "voice", 4: "file", 5: "video"}
OUTBOUND_ONLY_ITEM_TYPES = frozenset({11, 12})  # tool-call progress items
UNSUPPORTED_PLACEHOLDER = "[unsupported message]"
# The reference takes longpolling_timeout_ms as it comes; a bound keeps an absurd value from
# wedging the loop (our choice).
MAX_POLL_TIMEOUT_MS = 300_000
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


def _media_ref(payload: dict[str, Any]) -> str | None:
    """An opaque reference to download the media later (CDN parameter, key, URL)."""
    media = as_dict(payload.get("media"))
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
        descriptor["fileName"] = as_str(payload.get("file_name"))
        descriptor["size"] = as_int(payload.get("len"))
        descriptor["md5"] = as_str(payload.get("md5"))
    elif kind == "video":
        descriptor["size"] = as_int(payload.get("video_size"))
        descriptor["md5"] = as_str(payload.get("video_md5"))
        if (length := as_int(payload.get("play_length"))) is not None:
            descriptor["playLength"] = length  # the unit is [unconfirmed]
    elif kind == "voice":
        if (playtime := as_int(payload.get("playtime"))) is not None:
            descriptor["durationMs"] = playtime
        if (encode_type := as_int(payload.get("encode_type"))) is not None:
            descriptor["encodeType"] = encode_type  # 6 = silk; inbound is SILK 24 kHz [unconfirmed]
        if transcript := as_str(payload.get("text")):
            descriptor["transcript"] = transcript
    return descriptor


@dataclasses.dataclass
class _Body:
    message_type: str
    content: str
    media: list[dict[str, Any]]
    unknown_types: list[int] = dataclasses.field(default_factory=list)


def _body(items: list[dict[str, Any]]) -> _Body | None:
    """The reference's body extraction: first text wins, then a voice transcript, then media.

    Items of a type this driver does not know still make a message (``unknown``), so a new
    kind of message is passed on rather than lost; empty messages and the outbound-only
    tool-call items make none.
    """
    texts: list[str] = []
    transcripts: list[str] = []
    media: list[dict[str, Any]] = []
    unknown: list[int] = []
    for item in items:
        item_type = as_int(item.get("type"))
        kind = ITEM_TYPES.get(item_type) if item_type is not None else None
        if kind is None:
            if item_type is not None and item_type not in OUTBOUND_ONLY_ITEM_TYPES:
                unknown.append(item_type)
            continue
        payload = as_dict(item.get(f"{kind}_item"))
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
    if unknown:
        return _Body("unknown", UNSUPPORTED_PLACEHOLDER, [], unknown)
    return None


def _trimmed_id(value: Any) -> str | None:
    text = as_id(value)
    if text is None:
        return None
    return text.strip() or None


def _quoted(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``ref_msg`` of the first item that has one; newer clients may send only ``svr_id``.

    The quoted message's id is ``svr_id``, else the quoted item's own ``msg_id``: the
    reference's order (``inbound.ts``), both trimmed.
    """
    for item in items:
        ref = as_dict(item.get("ref_msg"))
        if not ref:
            continue
        inner = as_dict(ref.get("message_item"))
        message_id = _trimmed_id(ref.get("svr_id")) or _trimmed_id(inner.get("msg_id"))
        quoted: dict[str, Any] = {"messageId": message_id}
        if title := as_str(ref.get("title")):
            quoted["title"] = title
        body = _body([inner]) if inner else None
        if body is not None:
            quoted["messageType"] = body.message_type
            quoted["content"] = body.content
            if body.media:
                quoted["media"] = body.media[0]
        partial = as_dict(ref.get("partial_text"))
        if partial:
            quoted["partialText"] = partial
        return quoted
    return None


def _message_id(msg: dict[str, Any]) -> str:
    """``message_id``; else, like open PR #240, ``client_id`` and then a hash of the message
    [3rd-party]. The PR's ``seq`` step is left out: whether seq is unique is [unconfirmed]."""
    if (message_id := as_id(msg.get("message_id"))) is not None:
        return message_id
    if (client_id := as_id(msg.get("client_id"))) is not None:
        return f"client:{client_id}"
    digest = hashlib.sha256(json.dumps(msg, sort_keys=True, default=str).encode()).hexdigest()
    return f"hash:{digest[:32]}"


def is_own_message(msg: dict[str, Any], *, bot_id: str | None) -> bool:
    """The bot's own messages (hermes drops them the same way) [3rd-party]."""
    if as_int(msg.get("message_type")) == MESSAGE_TYPE_BOT:
        return True
    return bot_id is not None and msg.get("from_user_id") == bot_id


def normalise(msg: dict[str, Any], *, bot_id: str | None) -> InboundMessage | None:
    """One WeixinMessage as an InboundMessage; None for the bot's own messages and for those
    with no sender or nothing readable. Any JSON shape is taken: what cannot be read is left
    out, nothing raises."""
    sender = as_str(msg.get("from_user_id"))
    if sender is None or is_own_message(msg, bot_id=bot_id):
        return None
    items = [i for i in as_list(msg.get("item_list")) if isinstance(i, dict)]
    body = _body(items)
    if body is None:
        return None
    metadata: dict[str, Any] = {}
    if body.media:
        metadata["media"] = body.media
    if body.unknown_types:
        metadata["itemTypes"] = body.unknown_types
    if (quoted := _quoted(items)) is not None:
        metadata["quoted"] = quoted
    return InboundMessage(
        message_id=_message_id(msg),
        peer_id=sender,
        peer_type="dm",  # iLink bots see direct chats only
        user_id=sender,
        message_type=body.message_type,
        content=body.content,
        timestamp=timestamp_from_ms(as_int(msg.get("create_time_ms"))),
        metadata=metadata,
    )


def newest_context_tokens(msgs: list[dict[str, Any]], *, bot_id: str | None) -> dict[str, str]:
    """``ctx:<peer>`` → the latest ``context_token`` each peer sent in this batch."""
    tokens: dict[str, str] = {}
    for msg in msgs:
        sender = as_str(msg.get("from_user_id"))
        token = as_str(msg.get("context_token"))
        if sender is not None and sender != bot_id and token is not None:
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
            msgs = answer.get("msgs")
            if msgs is not None and not isinstance(msgs, list):
                # Whatever it holds cannot be stored, so its cursor must not be adopted either.
                failures = await self._failed(
                    "getupdates answered msgs that is not a list", failures
                )
                continue
            failures = 0
            if self.status != "connected":
                await self.ctx.set_status(self.connection_id, "connected")
                self.status = "connected"
            cursor = await self._commit(msgs or [], answer.get("get_updates_buf"), cursor)
            hint = as_int(answer.get("longpolling_timeout_ms"))
            if hint is not None and hint > 0:
                timeout = min(hint, MAX_POLL_TIMEOUT_MS) / 1000

    async def _commit(self, msgs: list[Any], new_cursor: Any, cursor: str) -> str:
        """Messages, cursor and reply tokens in one transaction; returns the cursor to poll with.

        Every entry of the batch is stored, or skipped on purpose with a reason in the log (the
        bot's own messages; entries with no sender or nothing readable), before the cursor moves.
        """
        raw: list[dict[str, Any]] = []
        messages: list[InboundMessage] = []
        for index, entry in enumerate(msgs):
            if not isinstance(entry, dict):
                log.warning(
                    "%s: entry %d of the batch is not a message; skipped", self.connection_id, index
                )
                continue
            raw.append(entry)
            message = normalise(entry, bot_id=self.bot_id)
            if message is not None:
                messages.append(message)
            elif not is_own_message(entry, bot_id=self.bot_id):
                log.warning(
                    "%s: message %s has no sender or nothing readable; skipped",
                    self.connection_id,
                    as_id(entry.get("message_id")) or f"#{index}",
                )
        # A new cursor is adopted only when non-empty (the reference's rule).
        next_cursor = new_cursor if isinstance(new_cursor, str) and new_cursor else cursor
        state = newest_context_tokens(raw, bot_id=self.bot_id)
        if next_cursor != cursor:
            state[CURSOR_KEY] = next_cursor
        if messages or state:
            await self.ctx.ingest(self.connection_id, messages, state=state)
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
