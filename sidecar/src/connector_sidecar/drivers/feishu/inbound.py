"""Schema-2.0 ``im.message.receive_v1`` events → :class:`InboundMessage` (docs/protocols/feishu.md §5).

The same mapping serves both transports (a websocket DATA frame and a webhook body carry the
same envelope). A message is dropped, with a reason, when it is the bot's own, or a group
message that does not @mention the bot while ``requireMention`` is on.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import OrderedDict
from typing import Any

from connector_sidecar.drivers._common import as_dict, as_list, as_str, timestamp_from_ms
from connector_sidecar.store import InboundMessage

__all__ = [
    "MESSAGE_EVENT",
    "Dropped",
    "Envelope",
    "RecentIds",
    "flatten_post",
    "map_message",
    "parse_envelope",
    "render_content",
]

MESSAGE_EVENT = "im.message.receive_v1"

# Feishu's message_type → the contract's messageType (text and post keep their names).
_TYPES = {"audio": "voice", "media": "video"}
_PLACEHOLDERS = {
    "image": "[image]",
    "file": "[file]",
    "audio": "[voice]",
    "media": "[video]",
    "sticker": "[sticker]",
    "interactive": "[card]",
    "share_chat": "[shared chat]",
    "share_user": "[shared contact]",
    "merge_forward": "[forwarded messages]",
    "system": "[system message]",
    "location": "[location]",
}
_MENTION_ALL = "@_all"
_MEDIA_KINDS = {"image": "image", "file": "file", "audio": "voice", "media": "video"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Envelope:
    """A parsed event body: the v2 header fields we use and the raw ``event`` object."""

    event_id: str | None
    event_type: str | None
    token: str | None
    app_id: str | None
    create_time: str | None
    event: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Dropped:
    reason: str


def parse_envelope(body: dict[str, Any]) -> Envelope | None:
    """The v2 envelope of an event body; None for the legacy v1 schema (not used for messages)."""
    if body.get("schema") != "2.0":
        return None
    header = as_dict(body.get("header"))
    event = as_dict(body.get("event"))
    return Envelope(
        event_id=as_str(header.get("event_id")),
        event_type=as_str(header.get("event_type")),
        token=as_str(header.get("token")),
        app_id=as_str(header.get("app_id")),
        create_time=as_str(header.get("create_time")),
        event=event,
    )


@dataclasses.dataclass(frozen=True)
class _Mention:
    key: str
    open_id: str | None
    name: str | None


def _mentions(raw: Any) -> list[_Mention]:
    found: list[_Mention] = []
    for item in as_list(raw):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            continue
        ident = as_dict(item.get("id"))
        found.append(_Mention(item["key"], as_str(ident.get("open_id")), as_str(item.get("name"))))
    return found


# p2p and group are documented. A topic group ("话题群", every message in a topic) is "topic"
# in lark-oapi's channel types [sdk] and "topic_group" in third-party code [3rd-party]: both are
# groups with threads.
TOPIC_CHAT_TYPES = frozenset({"topic", "topic_group"})
_PEER_TYPES = {"p2p": "dm", "group": "group"} | dict.fromkeys(TOPIC_CHAT_TYPES, "group")


def map_message(
    envelope: Envelope, *, bot_open_id: str | None, require_mention: bool
) -> InboundMessage | Dropped:
    """One message event as an InboundMessage, or why it is not passed on."""
    if envelope.event_type != MESSAGE_EVENT:
        return Dropped(f"event type {envelope.event_type!r} is not a message")
    event = envelope.event
    message = as_dict(event.get("message"))
    sender = as_dict(event.get("sender"))
    sender_ids = as_dict(sender.get("sender_id"))
    message_id = as_str(message.get("message_id"))
    chat_id = as_str(message.get("chat_id"))
    if message_id is None or chat_id is None:
        return Dropped("the event has no message_id or chat_id")
    sender_open_id = as_str(sender_ids.get("open_id"))
    # sender_type "user" is documented; what bots and apps show ("app"?) is [unconfirmed], so
    # the bot's own messages are recognised by its open_id.
    if bot_open_id and sender_open_id == bot_open_id:
        return Dropped("the bot's own message")

    chat_type = as_str(message.get("chat_type")) or ""
    peer_type = _PEER_TYPES.get(chat_type, "unknown")
    thread_id = as_str(message.get("thread_id"))
    if chat_type in TOPIC_CHAT_TYPES and thread_id is None:
        # In a topic group every message belongs to a topic. Without a thread_id the topic is
        # its root message, or this message when it starts one [unconfirmed: thread_id absent].
        thread_id = as_str(message.get("root_id")) or message_id
    mentions = _mentions(message.get("mentions"))
    bot_mentioned = bool(bot_open_id) and any(m.open_id == bot_open_id for m in mentions)
    if peer_type != "dm" and require_mention and not bot_mentioned:
        return Dropped("a group message that does not mention the bot")

    feishu_type = as_str(message.get("message_type")) or "unknown"
    content, extra = render_content(
        feishu_type, message.get("content"), mentions, bot_open_id=bot_open_id
    )
    if isinstance(extra.get("media"), dict):
        extra = {**extra, "media": [media_descriptor(message_id, extra["media"])]}
    metadata: dict[str, Any] = {
        "botMentioned": bot_mentioned,
        "mentions": [
            {"key": m.key, "openId": m.open_id, "name": m.name, "isBot": m.open_id == bot_open_id}
            for m in mentions
        ],
        "chatType": chat_type,
        "feishuMessageType": feishu_type,
        **extra,
    }
    if envelope.event_id:
        metadata["eventId"] = envelope.event_id
    if mentions_all(message.get("content"), mentions):
        metadata["mentionedAll"] = True
    parent_id = as_str(message.get("parent_id"))
    if parent_id:
        metadata["quoted"] = {"messageId": parent_id, "rootId": as_str(message.get("root_id"))}
    return InboundMessage(
        message_id=message_id,
        peer_id=chat_id,
        peer_type=peer_type,
        user_id=sender_open_id
        or as_str(sender_ids.get("user_id"))
        or as_str(sender_ids.get("union_id")),
        thread_id=thread_id,
        message_type=_TYPES.get(feishu_type, feishu_type),
        content=content,
        timestamp=_timestamp(message.get("create_time")) or _timestamp(envelope.create_time),
        metadata=metadata,
    )


MEDIA_REF_PREFIX = "fsmedia:"


def media_descriptor(message_id: str, media: dict[str, Any]) -> dict[str, Any]:
    """A media descriptor with the driver's reference to fetch it: the message resource
    ``GET …/messages/{message_id}/resources/{key}?type=image|file`` [sdk]."""
    feishu_type = str(media.get("type"))
    key = media.get("image_key") if feishu_type == "image" else media.get("file_key")
    descriptor = {**media, "kind": _MEDIA_KINDS.get(feishu_type, "file")}
    if isinstance(media.get("file_name"), str):
        descriptor["fileName"] = media["file_name"]
    if isinstance(key, str) and key and feishu_type in _MEDIA_KINDS:
        resource_type = "image" if feishu_type == "image" else "file"
        descriptor["ref"] = MEDIA_REF_PREFIX + json.dumps(
            {"m": message_id, "k": key, "t": resource_type}, separators=(",", ":")
        )
    return descriptor


def mentions_all(raw_content: Any, mentions: list[_Mention]) -> bool:
    """``@_all`` shows as a placeholder; ``mentions`` may be empty for it [sdk mentions.py]."""
    if any(m.key == _MENTION_ALL for m in mentions):
        return True
    return (
        isinstance(raw_content, str)
        and re.search(r"@_all(?![A-Za-z0-9_])", raw_content) is not None
    )


def _timestamp(millis: Any) -> str | None:
    """A ``create_time`` (ms, a string on the wire; an integer is taken too) as a timestamp;
    None when it is absent, malformed or out of range."""
    if isinstance(millis, str) and millis.isascii() and millis.isdigit() and len(millis) <= 18:
        millis = int(millis)
    if not isinstance(millis, int) or isinstance(millis, bool):
        return None
    return timestamp_from_ms(millis)


def render_content(
    feishu_type: str, raw: Any, mentions: list[_Mention], *, bot_open_id: str | None
) -> tuple[str, dict[str, Any]]:
    """The text of a message and extra metadata (media descriptors) from its JSON content."""
    try:
        content = json.loads(raw) if isinstance(raw, str) else {}
    except (ValueError, RecursionError):
        content = {}
    content = as_dict(content)
    if feishu_type == "text":
        return _resolve_placeholders(as_str(content.get("text")) or "", mentions, bot_open_id), {}
    if feishu_type == "post":
        return flatten_post(content, mentions, bot_open_id=bot_open_id), {}
    placeholder = _PLACEHOLDERS.get(feishu_type, f"[{feishu_type}]")
    media = {
        k: v
        for k, v in content.items()
        if k in ("image_key", "file_key", "file_name", "duration") and isinstance(v, str | int)
    }
    if feishu_type == "file" and isinstance(content.get("file_name"), str):
        placeholder = f"[file: {content['file_name']}]"
    return placeholder, ({"media": {"type": feishu_type, **media}} if media else {})


def _resolve_placeholders(text: str, mentions: list[_Mention], bot_open_id: str | None) -> str:
    """``@_user_1`` → ``@Name``; the bot's own placeholder (and one space after it) removed."""
    by_key = {m.key: m for m in mentions if m.key}
    keys = sorted((*by_key, _MENTION_ALL), key=len, reverse=True)
    pattern = re.compile("(" + "|".join(re.escape(k) for k in keys) + r")(?![A-Za-z0-9_])( ?)")

    def replace(match: re.Match[str]) -> str:
        key, space = match.group(1), match.group(2)
        if key == _MENTION_ALL and key not in by_key:
            return "@all" + space
        mention = by_key[key]
        if bot_open_id and mention.open_id == bot_open_id:
            return ""
        return (f"@{mention.name}" if mention.name else key) + space

    return pattern.sub(replace, text).strip()


def flatten_post(
    content: dict[str, Any], mentions: list[_Mention], *, bot_open_id: str | None
) -> str:
    """A post as plain text. Inbound posts usually come as ``{"title", "content"}``, without a
    locale wrapper [3rd-party]; the SDK converters accept both shapes, and so does this."""
    document = content
    if "content" not in content:
        document = next((v for v in content.values() if isinstance(v, dict)), {})
    lines: list[str] = []
    title = document.get("title")
    if isinstance(title, str) and title.strip():
        lines.append(title.strip())
    by_key = {m.key: m for m in mentions}
    for paragraph in as_list(document.get("content")):
        parts: list[str] = []
        for element in as_list(paragraph):
            if isinstance(element, dict):
                parts.append(_post_element(element, by_key, bot_open_id))
        line = "".join(parts).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def _post_element(element: dict[str, Any], by_key: dict[str, _Mention], bot: str | None) -> str:
    tag = element.get("tag")
    text = as_str(element.get("text")) or ""
    if tag in ("text", "md"):
        return text
    if tag == "a":
        href = as_str(element.get("href")) or ""
        return f"{text} ({href})" if href and href != text else text or href
    if tag == "at":
        user_id = as_str(element.get("user_id")) or ""
        mention = by_key.get(user_id)
        open_id = mention.open_id if mention else user_id
        if bot and open_id == bot:
            return ""
        if user_id in ("all", _MENTION_ALL):
            return "@all"
        name = as_str(element.get("user_name")) or (mention.name if mention else None) or user_id
        return f"@{name}"
    if tag == "img":
        return "[image]"
    if tag == "media":
        return "[video]"
    if tag == "emotion":
        return f":{as_str(element.get('emoji_type')) or ''}:"
    if tag == "code_block":
        return f"\n```{(as_str(element.get('language')) or '').lower()}\n{text}\n```\n"
    if tag == "hr":
        return "---"
    return text


class RecentIds:
    """A bounded memory of event and message ids already handled (both: §9)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def seen(self, *keys: str | None) -> bool:
        return any(k is not None and k in self._seen for k in keys)

    def add(self, *keys: str | None) -> None:
        for key in keys:
            if key is None:
                continue
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
