"""WeixinMessage → InboundMessage: message types, media descriptors, quotes, ids, drops."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_sidecar.drivers.weixin.inbound import newest_context_tokens, normalise

from .._inprocess import json_values

BOT = "abc@im.bot"
USER = "u1@im.wechat"
MEDIA = {"encrypt_query_param": "eqp", "aes_key": "a2V5", "encrypt_type": 1}


def message(*items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "seq": 1,
        "message_id": 7394000000000000001,
        "from_user_id": USER,
        "to_user_id": BOT,
        "create_time_ms": 1760000000123,
        "message_type": 1,
        "message_state": 2,
        "context_token": "ctx1",
        "item_list": list(items),
        **fields,
    }


def text(value: str) -> dict[str, Any]:
    return {"type": 1, "text_item": {"text": value}}


def test_text_message() -> None:
    """A text item: content, exact uint64 id as a string, sender as peer and user, timestamp."""
    inbound = normalise(message(text("hi")), bot_id=BOT)
    assert inbound is not None
    assert inbound.message_id == "7394000000000000001"
    assert inbound.peer_id == inbound.user_id == USER
    assert inbound.peer_type == "dm"
    assert inbound.message_type == "text"
    assert inbound.content == "hi"
    assert inbound.timestamp == "2025-10-09T08:53:20.123Z"
    assert inbound.metadata == {}


def test_voice_uses_the_transcript() -> None:
    """Voice with the server's transcript: messageType voice, the transcript as content."""
    voice = {
        "type": 3,
        "voice_item": {"media": MEDIA, "encode_type": 6, "playtime": 2300, "text": "你好"},
    }
    inbound = normalise(message(voice), bot_id=BOT)
    assert inbound is not None
    assert (inbound.message_type, inbound.content) == ("voice", "你好")
    [media] = inbound.metadata["media"]
    assert media["type"] == "voice"
    assert media["durationMs"] == 2300
    assert media["encodeType"] == 6
    assert media["transcript"] == "你好"


def test_voice_without_transcript_is_a_placeholder() -> None:
    """Voice without text: a placeholder content and the descriptor."""
    inbound = normalise(message({"type": 3, "voice_item": {"media": MEDIA}}), bot_id=BOT)
    assert inbound is not None
    assert (inbound.message_type, inbound.content) == ("voice", "[voice]")


def test_image_video_file_descriptors() -> None:
    """Image, video and file items: type, file name, size, md5 and an opaque reference."""
    image = {
        "type": 2,
        "image_item": {
            "media": MEDIA,
            "aeskey": "00112233445566778899aabbccddeeff",
            "mid_size": 999,
        },
    }
    video = {
        "type": 5,
        "video_item": {"media": MEDIA, "video_size": 4096, "video_md5": "f" * 32, "play_length": 7},
    }
    file = {
        "type": 4,
        "file_item": {"media": MEDIA, "file_name": "a.pdf", "md5": "e" * 32, "len": "12345"},
    }
    image_in = normalise(message(image), bot_id=BOT)
    assert image_in is not None
    assert (image_in.message_type, image_in.content) == ("image", "[image]")
    [descriptor] = image_in.metadata["media"]
    assert descriptor == {
        "type": "image",
        "fileName": None,
        "size": 999,
        "md5": None,
        "ref": descriptor["ref"],
    }
    padded = descriptor["ref"].removeprefix("wxmedia:") + "=="
    assert json.loads(base64.urlsafe_b64decode(padded)) == {
        "p": "eqp",
        "k": "a2V5",
        "t": 1,
        "hk": "00112233445566778899aabbccddeeff",
    }
    video_in = normalise(message(video), bot_id=BOT)
    assert video_in is not None
    assert video_in.message_type == "video"
    assert video_in.metadata["media"][0]["size"] == 4096
    assert video_in.metadata["media"][0]["md5"] == "f" * 32
    file_in = normalise(message(file), bot_id=BOT)
    assert file_in is not None
    assert (file_in.message_type, file_in.content) == ("file", "[file: a.pdf]")
    assert file_in.metadata["media"][0]["size"] == 12345


def test_text_wins_and_media_is_still_described() -> None:
    """Text beside an image: messageType text, and the image among the media."""
    inbound = normalise(
        message({"type": 2, "image_item": {"media": MEDIA}}, text("look")), bot_id=BOT
    )
    assert inbound is not None
    assert (inbound.message_type, inbound.content) == ("text", "look")
    assert [m["type"] for m in inbound.metadata["media"]] == ["image"]


def test_quotes_become_metadata_quoted() -> None:
    """ref_msg: the quoted message's id, title and text (or only svr_id from newer clients)."""
    quoting = text("I agree")
    quoting["ref_msg"] = {
        "svr_id": 9007199254740993,
        "title": "Alice",
        "message_item": text("the original"),
    }
    inbound = normalise(message(quoting), bot_id=BOT)
    assert inbound is not None
    assert inbound.content == "I agree"
    assert inbound.metadata["quoted"] == {
        "messageId": "9007199254740993",
        "title": "Alice",
        "messageType": "text",
        "content": "the original",
    }
    bare = text("yes")
    bare["ref_msg"] = {"svr_id": "123"}
    inbound = normalise(message(bare), bot_id=BOT)
    assert inbound is not None
    assert inbound.metadata["quoted"] == {"messageId": "123"}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ({"message_item": {**text("orig"), "msg_id": 7394000000000000005}}, "7394000000000000005"),
        ({"svr_id": " ", "message_item": {**text("orig"), "msg_id": " 42 "}}, "42"),
        ({"svr_id": "9", "message_item": {**text("orig"), "msg_id": "42"}}, "9"),
        ({"message_item": text("orig")}, None),
    ],
    ids=["msg_id-only", "blank-svr_id", "svr_id-wins", "neither"],
)
def test_a_quote_without_svr_id_falls_back_to_the_items_msg_id(
    ref: dict[str, Any], expected: str | None
) -> None:
    """The quoted id is svr_id, else the quoted item's msg_id (trimmed), as the reference reads it."""
    quoting = text("reply")
    quoting["ref_msg"] = ref
    inbound = normalise(message(quoting), bot_id=BOT)
    assert inbound is not None
    assert inbound.metadata["quoted"]["messageId"] == expected
    assert inbound.metadata["quoted"]["content"] == "orig"


def test_the_bots_own_and_empty_messages_are_dropped() -> None:
    """From the bot, of type BOT, without a sender or without usable items: None."""
    assert normalise(message(text("x"), from_user_id=BOT), bot_id=BOT) is None
    assert normalise(message(text("x"), message_type=2), bot_id=BOT) is None
    assert normalise(message(text("x"), from_user_id=""), bot_id=BOT) is None
    assert normalise(message(), bot_id=BOT) is None
    assert normalise(message({"type": 11, "tool_call_start_item": {}}), bot_id=BOT) is None


def test_missing_message_id_falls_back_deterministically() -> None:
    """Without message_id: client_id, else a hash of the message, the same for a redelivery."""
    with_client = message(text("x"), message_id=None, client_id="c-1")
    assert normalise(with_client, bot_id=BOT).message_id == "client:c-1"  # type: ignore[union-attr]
    bare = message(text("x"), message_id=None)
    first = normalise(bare, bot_id=BOT)
    again = normalise(dict(bare), bot_id=BOT)
    assert first is not None
    assert again is not None
    assert first.message_id == again.message_id
    assert first.message_id.startswith("hash:")


def test_newest_context_token_per_peer() -> None:
    """The latest token per sender wins; the bot's own messages carry none."""
    msgs = [
        message(text("a"), context_token="t1"),
        message(text("b"), context_token="t2", from_user_id="u2@im.wechat"),
        message(text("c"), context_token="t3"),
        message(text("d"), context_token="t4", from_user_id=BOT),
    ]
    assert newest_context_tokens(msgs, bot_id=BOT) == {
        "ctx:u1@im.wechat": "t3",
        "ctx:u2@im.wechat": "t2",
    }


def test_unknown_item_types_are_kept_as_unknown() -> None:
    """A user message of an item type this driver does not know is stored, not dropped."""
    inbound = normalise(message({"type": 42, "location_item": {"x": 1}}), bot_id=BOT)
    assert inbound is not None
    assert (inbound.message_type, inbound.content) == ("unknown", "[unsupported message]")
    assert inbound.metadata == {"itemTypes": [42]}


@pytest.mark.parametrize(
    ("fields", "content"),
    [
        ({"create_time_ms": 10**20}, "hi"),
        ({"create_time_ms": -(10**20)}, "hi"),
        ({"create_time_ms": 10**400}, "hi"),
        ({"create_time_ms": "soon"}, "hi"),
        ({"message_id": {"nested": 1}}, "hi"),
        ({"message_id": 10**40}, "hi"),
        (
            {"item_list": [text("hi"), 5, "x", None, {"type": "1"}, {"type": 1, "text_item": 3}]},
            "hi",
        ),
        ({"item_list": [{"type": 1, "text_item": {"text": 7}}, text("hi")]}, "hi"),
        ({"item_list": [{**text("hi"), "ref_msg": ["not", "a", "dict"]}]}, "hi"),
        ({"item_list": [{**text("hi"), "ref_msg": {"svr_id": 10**30, "partial_text": 4}}]}, "hi"),
        (
            {"item_list": [{"type": 2, "image_item": {"media": "eqp", "hd_size": 10**400}}]},
            "[image]",
        ),
        ({"item_list": [{"type": 4, "file_item": {"file_name": 5, "len": "9" * 5000}}]}, "[file]"),
    ],
)
def test_malformed_fields_keep_what_can_be_read(fields: dict[str, Any], content: str) -> None:
    """Wrong types, huge numbers and junk items never raise: the readable part is kept."""
    inbound = normalise(message(text("hi"), **fields), bot_id=BOT)
    assert inbound is not None
    assert inbound.content == content
    assert inbound.peer_id == USER
    assert isinstance(inbound.message_id, str)
    assert inbound.message_id
    if "create_time_ms" in fields:
        assert inbound.timestamp is None
    if "message_id" in fields and isinstance(fields["message_id"], int):
        assert inbound.message_id == str(fields["message_id"])


@pytest.mark.parametrize("items", [5, "text", {"type": 1}, None, []])
def test_messages_without_readable_items_are_dropped(items: Any) -> None:
    """An item_list that is not a list of items yields nothing to store (the poller warns)."""
    assert normalise(message(item_list=items), bot_id=BOT) is None


item_fields = (
    "type",
    "text_item",
    "image_item",
    "voice_item",
    "file_item",
    "video_item",
    "ref_msg",
)
items = st.fixed_dictionaries(
    {"type": st.integers(0, 12) | json_values},
    optional={
        name: st.fixed_dictionaries(
            {},
            optional={
                key: json_values
                for key in ("text", "media", "file_name", "len", "playtime", "hd_size", "aeskey")
            },
        )
        | json_values
        for name in item_fields[1:]
    },
)
messages = st.fixed_dictionaries(
    {"from_user_id": st.just(USER)},
    optional={
        "message_id": json_values,
        "client_id": json_values,
        "create_time_ms": json_values,
        "message_type": st.just(1) | json_values,
        "context_token": json_values,
        "item_list": st.lists(items | json_values, max_size=4) | json_values,
    },
)


@settings(max_examples=300)
@given(messages)
def test_normalise_never_raises(msg: dict[str, Any]) -> None:
    """Any JSON shape of a WeixinMessage gives an InboundMessage or None, never an exception."""
    inbound = normalise(msg, bot_id=BOT)
    if inbound is not None:
        assert isinstance(inbound.message_id, str)
        assert isinstance(inbound.content, str)
        assert inbound.peer_id == msg["from_user_id"]
    assert isinstance(newest_context_tokens([msg], bot_id=BOT), dict)
