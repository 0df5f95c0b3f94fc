"""Mapping im.message.receive_v1 events to InboundMessages, and the options that steer it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_sidecar.drivers.base import OptionsError
from connector_sidecar.drivers.feishu.inbound import (
    Dropped,
    RecentIds,
    map_message,
    parse_envelope,
)
from connector_sidecar.drivers.feishu.options import parse_options
from connector_sidecar.store import InboundMessage

from .._inprocess import json_values

BOT = "ou_bot"


def event(
    *,
    text: str | None = "hi",
    content: dict[str, Any] | None = None,
    message_type: str = "text",
    chat_type: str = "p2p",
    sender: str = "ou_alice",
    mentions: list[dict[str, Any]] | None = None,
    **message: Any,
) -> dict[str, Any]:
    body = content if content is not None else {"text": text}
    return {
        "schema": "2.0",
        "header": {
            "event_id": "ev_1",
            "event_type": "im.message.receive_v1",
            "create_time": "1700000000000",
            "token": "vt",
            "app_id": "cli_a",
        },
        "event": {
            "sender": {"sender_id": {"open_id": sender}, "sender_type": "user"},
            "message": {
                "message_id": "om_1",
                "chat_id": "oc_chat",
                "chat_type": chat_type,
                "message_type": message_type,
                "content": json.dumps(body),
                "create_time": "1700000001234",
                "mentions": mentions or [],
                **message,
            },
        },
    }


def mention(key: str, open_id: str, name: str) -> dict[str, Any]:
    return {"key": key, "id": {"open_id": open_id}, "name": name}


def mapped(body: dict[str, Any], *, require_mention: bool = True) -> InboundMessage | Dropped:
    envelope = parse_envelope(body)
    assert envelope is not None
    return map_message(envelope, bot_open_id=BOT, require_mention=require_mention)


def test_p2p_text_is_a_dm() -> None:
    """p2p → dm; peerId is the chat_id; the sender's open_id; the vendor timestamp."""
    message = mapped(event(text="hello"))
    assert isinstance(message, InboundMessage)
    assert (message.peer_id, message.peer_type, message.user_id) == ("oc_chat", "dm", "ou_alice")
    assert (message.message_id, message.message_type, message.content) == ("om_1", "text", "hello")
    assert message.timestamp == "2023-11-14T22:13:21.234Z"
    assert message.metadata["botMentioned"] is False
    assert message.metadata["eventId"] == "ev_1"


def test_group_without_mention_is_dropped_when_required() -> None:
    """requireMention (the default): a group message that does not @ the bot is not passed on."""
    result = mapped(event(chat_type="group", text="chatter"))
    assert isinstance(result, Dropped)
    kept = mapped(event(chat_type="group", text="chatter"), require_mention=False)
    assert isinstance(kept, InboundMessage)
    assert kept.peer_type == "group"
    assert kept.metadata["botMentioned"] is False


def test_group_mention_strips_the_bot_and_names_others() -> None:
    """The bot's placeholder goes (with its space); other @_user_n become @Name."""
    body = event(
        chat_type="group",
        text="@_user_1 ask @_user_2 about @_user_10 please",
        mentions=[
            mention("@_user_1", BOT, "Helper"),
            mention("@_user_2", "ou_bob", "Bob"),
            mention("@_user_10", "ou_tenth", "Tenth"),
        ],
    )
    message = mapped(body)
    assert isinstance(message, InboundMessage)
    assert message.content == "ask @Bob about @Tenth please"
    assert message.metadata["botMentioned"] is True
    assert [m["name"] for m in message.metadata["mentions"]] == ["Helper", "Bob", "Tenth"]
    assert [m["isBot"] for m in message.metadata["mentions"]] == [True, False, False]


def test_mention_of_someone_else_only_is_dropped() -> None:
    """Mentioning another person is not mentioning the bot."""
    body = event(
        chat_type="group", text="@_user_1 hi", mentions=[mention("@_user_1", "ou_bob", "Bob")]
    )
    assert isinstance(mapped(body), Dropped)


def test_mention_all_is_not_a_bot_mention() -> None:
    """@_all renders as @all and is flagged, but does not count as mentioning the bot."""
    body = event(chat_type="group", text="@_all standup")
    assert isinstance(mapped(body), Dropped)
    message = mapped(body, require_mention=False)
    assert isinstance(message, InboundMessage)
    assert message.content == "@all standup"
    assert message.metadata["mentionedAll"] is True


def test_the_bots_own_message_is_dropped() -> None:
    """A message whose sender is the bot never becomes an event."""
    result = mapped(event(sender=BOT))
    assert isinstance(result, Dropped)
    assert "own" in result.reason


def test_thread_and_quoted_parent() -> None:
    """threadId from thread_id; the parent and root ids in metadata.quoted."""
    message = mapped(event(thread_id="omt_9", parent_id="om_p", root_id="om_r"))
    assert isinstance(message, InboundMessage)
    assert message.thread_id == "omt_9"
    assert message.metadata["quoted"] == {"messageId": "om_p", "rootId": "om_r"}


@pytest.mark.parametrize("chat_type", ["topic", "topic_group"])
def test_topic_chats_are_groups_with_threads(chat_type: str) -> None:
    """Both names of a topic group map to a group; each message is in a thread: its thread_id,
    else the topic's root message, else itself (it starts the topic)."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"thread_id": "omt_9", "root_id": "om_r"}, "omt_9"),
        ({"root_id": "om_r"}, "om_r"),
        ({}, "om_1"),
    ]
    for fields, thread in cases:
        message = mapped(event(chat_type=chat_type, text="hi", **fields), require_mention=False)
        assert isinstance(message, InboundMessage)
        assert (message.peer_type, message.thread_id) == ("group", thread)
        assert message.metadata["chatType"] == chat_type
    dropped = mapped(event(chat_type=chat_type, text="no mention"))
    assert isinstance(dropped, Dropped)  # a group: requireMention applies


@pytest.mark.parametrize("wrapped", [False, True])
def test_post_is_flattened_with_or_without_locale(wrapped: bool) -> None:
    """A post's title and paragraphs become lines; links, mentions and code blocks readable."""
    post = {
        "title": "Report",
        "content": [
            [
                {"tag": "at", "user_id": "@_user_1", "user_name": "Helper"},
                {"tag": "text", "text": " see "},
                {"tag": "a", "text": "the doc", "href": "https://d.example"},
            ],
            [
                {"tag": "text", "text": "ping "},
                {"tag": "at", "user_id": "@_user_2", "user_name": "Bob"},
            ],
            [{"tag": "code_block", "language": "PYTHON", "text": "print(1)"}],
            [{"tag": "img", "image_key": "img_1"}],
        ],
    }
    body = event(
        chat_type="group",
        message_type="post",
        content={"zh_cn": post} if wrapped else post,
        mentions=[mention("@_user_1", BOT, "Helper"), mention("@_user_2", "ou_bob", "Bob")],
    )
    message = mapped(body)
    assert isinstance(message, InboundMessage)
    assert message.message_type == "post"
    assert message.content == (
        "Report\nsee the doc (https://d.example)\nping @Bob\n```python\nprint(1)\n```\n[image]"
    )


def test_media_messages_get_a_placeholder_and_descriptor() -> None:
    """An image is "[image]" with a descriptor in metadata.media (a list) naming the message
    resource to fetch; audio maps to voice."""
    image = mapped(event(message_type="image", content={"image_key": "img_7"}))
    assert isinstance(image, InboundMessage)
    assert (image.message_type, image.content) == ("image", "[image]")
    [descriptor] = image.metadata["media"]
    assert descriptor["kind"] == "image"
    assert descriptor["image_key"] == "img_7"
    ref = json.loads(descriptor["ref"].removeprefix("fsmedia:"))
    assert ref == {"m": image.message_id, "k": "img_7", "t": "image"}
    audio = mapped(event(message_type="audio", content={"file_key": "f", "duration": 3}))
    assert isinstance(audio, InboundMessage)
    assert (audio.message_type, audio.content) == ("voice", "[voice]")
    [voice] = audio.metadata["media"]
    assert voice["kind"] == "voice"
    assert json.loads(voice["ref"].removeprefix("fsmedia:"))["t"] == "file"


def test_other_event_types_and_v1_are_not_messages() -> None:
    """Only im.message.receive_v1 maps; a legacy v1 body has no v2 envelope."""
    body = event()
    body["header"]["event_type"] = "im.chat.member.bot.added_v1"
    assert isinstance(mapped(body), Dropped)
    assert (
        parse_envelope({"uuid": "x", "token": "t", "ts": "1", "event": {"type": "message"}}) is None
    )


def test_recent_ids_are_bounded() -> None:
    """The dedupe memory answers for both keys and forgets the oldest beyond its size."""
    seen = RecentIds(size=3)
    seen.add("evt:1", "msg:1")
    assert seen.seen("evt:2", "msg:1")
    seen.add("evt:2", "evt:3")
    assert not seen.seen("evt:1")
    assert seen.seen("evt:3")


# -- options ---------------------------------------------------------------------------------


def test_options_defaults() -> None:
    """No options: scan-to-create on feishu, websocket mode, mentions required in groups."""
    assert parse_options({}) == {"domain": "feishu", "mode": "websocket", "requireMention": True}


def test_options_normalise_credentials_and_domain() -> None:
    """Domains are lower-cased, a custom https URL loses its trailing slash."""
    parsed = parse_options(
        {
            "domain": "https://open.example.com/",
            "appId": "cli_1",
            "appSecret": "s",
            "mode": "webhook",
            "verificationToken": "vt",
        }
    )
    assert parsed["domain"] == "https://open.example.com"
    assert (parsed["appId"], parsed["mode"], parsed["verificationToken"]) == (
        "cli_1",
        "webhook",
        "vt",
    )
    assert parse_options({"domain": "LARK"})["domain"] == "lark"


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"mode": "polling"}, "$.options.mode"),
        ({"mode": "webhook", "appId": "cli", "appSecret": "s"}, "$.options.verificationToken"),
        (
            {"domain": "http://open.example.com", "appId": "cli", "appSecret": "s"},
            "$.options.domain",
        ),
        ({"domain": "example"}, "$.options.domain"),
        ({"appId": "cli_1"}, "$.options.appSecret"),
        ({"appSecret": "s"}, "$.options.appId"),
        ({"appId": 7, "appSecret": "s"}, "$.options.appId"),
        ({"requireMention": "yes"}, "$.options.requireMention"),
        ({"domain": "https://open.example.com"}, "$.options.appId"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], path: str) -> None:
    """Each bad value raises OptionsError with the JSON path of the field."""
    with pytest.raises(OptionsError) as caught:
        parse_options(options)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("message", "content"),
    [
        ({"create_time": "9" * 30}, "hi"),
        ({"create_time": "17²"}, "hi"),  # isdigit() is true for "²", int() refuses it
        ({"create_time": 1700000001234}, "hi"),
        ({"content": json.dumps(["a", "list"])}, ""),
        ({"content": "{not json"}, ""),
        ({"content": 42}, ""),
        ({"mentions": "nobody"}, "hi"),
        ({"mentions": [5, None, {"key": 7}, {"key": "@_user_1", "id": "x", "name": 3}]}, "hi"),
        ({"message_type": "post", "content": json.dumps({"title": 5, "content": 7})}, ""),
        ({"message_type": "post", "content": json.dumps({"content": [[5, {"tag": 3}], "x"]})}, ""),
        ({"message_type": "post", "content": json.dumps({"zh_cn": 1, "en_us": []})}, ""),
        ({"message_type": 9}, "[unknown]"),
        (
            {
                "message_type": "post",
                "content": json.dumps({"content": [[{"tag": "text", "text": "ok"}]]}),
            },
            "ok",
        ),
        ({"parent_id": 5, "thread_id": ["omt"]}, "hi"),
    ],
)
def test_malformed_fields_keep_what_can_be_read(message: dict[str, Any], content: str) -> None:
    """Wrong types, huge numbers and junk never raise: the message is mapped with what is readable."""
    body = event()
    body["event"]["message"].update(message)
    result = mapped(body)
    assert isinstance(result, InboundMessage)
    assert result.message_id == "om_1"
    assert result.peer_id == "oc_chat"
    assert result.content == content
    # The message's own create_time when it can be read, else the envelope's.
    assert result.timestamp in ("2023-11-14T22:13:21.234Z", "2023-11-14T22:13:20Z")
    if message.get("create_time") == 1700000001234:
        assert result.timestamp == "2023-11-14T22:13:21.234Z"


contents = st.builds(json.dumps, json_values) | json_values
mentions = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["@_user_1", "@_all"]) | json_values},
        optional={
            "id": st.fixed_dictionaries({}, optional={"open_id": st.just(BOT) | json_values})
        },
    )
    | json_values,
    max_size=3,
)
messages = st.fixed_dictionaries(
    {"message_id": st.just("om_1"), "chat_id": st.just("oc_chat")},
    optional={
        "chat_type": st.sampled_from(["p2p", "group"]) | json_values,
        "message_type": st.sampled_from(["text", "post", "image", "file"]) | json_values,
        "content": contents,
        "mentions": mentions | json_values,
        "create_time": st.text(alphabet="0123456789", max_size=40) | json_values,
        "parent_id": json_values,
        "root_id": json_values,
        "thread_id": json_values,
    },
)


@settings(max_examples=300)
@given(messages, json_values)
def test_map_message_never_raises(message: dict[str, Any], sender: Any) -> None:
    """Any JSON shape of a message event maps to an InboundMessage or a Dropped, never raises."""
    body = {
        "schema": "2.0",
        "header": {"event_id": "ev_1", "event_type": "im.message.receive_v1"},
        "event": {"sender": {"sender_id": sender}, "message": message},
    }
    result = mapped(body, require_mention=False)
    assert isinstance(result, InboundMessage | Dropped)
    if isinstance(result, InboundMessage):
        assert isinstance(result.content, str)
        assert result.thread_id is None or isinstance(result.thread_id, str)
