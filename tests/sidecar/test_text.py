"""Vendor text made storable: lone surrogates become U+FFFD, at any depth, with a note."""

from __future__ import annotations

import json

import msgspec
import pytest

from connector_sidecar._text import repaired, storable_message, storable_text
from connector_sidecar.store import InboundMessage

from .conftest import Sidecar


def test_lone_surrogates_become_replacement_characters() -> None:
    """High and low surrogates alike; text without one is returned as it is."""
    assert storable_text("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    text = "héllo 😀"
    assert storable_text(text) is text


def test_every_string_of_a_message_is_repaired_and_flagged() -> None:
    """Ids, names, content and nested metadata keys and values; the event notes the repair."""
    message = InboundMessage(
        message_id="m\ud800",
        peer_id="p\udc00",
        user_id="u\ud800",
        content="c\ud800",
        metadata={"quoted": {"title\ud800": ["x\udfff", 1, None]}, "sender": ("n\ud800",)},
    )
    fixed = storable_message(message)
    assert (fixed.message_id, fixed.peer_id, fixed.user_id, fixed.content) == (
        "m\ufffd",
        "p\ufffd",
        "u\ufffd",
        "c\ufffd",
    )
    assert fixed.metadata == {
        "quoted": {"title\ufffd": ["x\ufffd", 1, None]},
        "sender": ["n\ufffd"],
        "textRepaired": True,
    }
    msgspec.json.encode(fixed.metadata)  # storable now


def test_a_clean_message_is_left_alone() -> None:
    """No flag, no copy, when nothing needed repair."""
    message = InboundMessage(message_id="m", peer_id="p", content="ok", metadata={"a": [1]})
    assert storable_message(message) is message
    assert repaired({"a": ["b"]}) == ({"a": ["b"]}, False)


@pytest.mark.anyio
async def test_the_sim_stores_a_lone_surrogate_like_any_vendor(paired: Sidecar) -> None:
    """A sim message whose ids and text hold "\\ud800" escapes is accepted and stored repaired,
    flagged textRepaired; the next message is stored too."""
    body = json.dumps(
        {"peerId": "peer-\ud800", "content": "bad \udfff", "messageId": "m-\ud800", "userId": "u"}
    )
    response = await paired.client.post(
        "/sim/connections/conn_1/messages",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["messageId"] == "m-\ufffd"
    assert (await paired.inbound(content="good", messageId="m-2")).status_code == 202
    items = (await paired.client.get("/deliveries", params={"connectionId": "conn_1"})).json()
    events = {item["event"]["messageId"]: item["event"] for item in items["items"]}
    assert events["m-\ufffd"]["content"] == "bad \ufffd"
    assert events["m-\ufffd"]["peerId"] == "peer-\ufffd"
    assert events["m-\ufffd"]["metadata"] == {"textRepaired": True}
    assert events["m-2"]["content"] == "good"


@pytest.mark.anyio
async def test_other_routes_still_refuse_a_lone_surrogate(paired: Sidecar) -> None:
    """Outside the vendor-playing sim route a lone surrogate escape is malformed JSON: 400."""
    body = json.dumps({"kind": "sim", "connectionId": "c\ud800", "channelId": "x"})
    response = await paired.client.post(
        "/connector-sessions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_json"


def test_metadata_json_cannot_hold_is_dropped_not_the_message() -> None:
    """A driver's metadata the encoder refuses (a bug) is replaced by a note; the message stays."""
    message = InboundMessage(
        message_id="m", peer_id="p", content="c\ud800", metadata={"x": object()}
    )
    fixed = storable_message(message)
    assert fixed.content == "c\ufffd"
    assert set(fixed.metadata) == {"metadataDropped", "textRepaired"}
    msgspec.json.encode(fixed.metadata)


@pytest.mark.anyio
async def test_one_unstorable_message_does_not_hold_up_its_batch(paired: Sidecar) -> None:
    """A batch through the driver boundary: a message with a lone surrogate and one with metadata
    JSON cannot hold are stored beside the good one, and the cursor of the batch is stored."""
    runtime = paired.app.state.services.runtime
    batch = [
        InboundMessage(message_id="m1", peer_id="p", content="bad \ud800"),
        InboundMessage(message_id="m2", peer_id="p", content="odd", metadata={"x": object()}),
        InboundMessage(message_id="m3", peer_id="p", content="good"),
    ]
    results = await runtime.ctx.ingest("conn_1", batch, state={"cursor": "c-\udfff"})
    assert [r.inserted for r in results] == [True, True, True]
    assert await runtime.ctx.get_state("conn_1", "cursor") == "c-\ufffd"
    items = (await paired.client.get("/deliveries", params={"connectionId": "conn_1"})).json()
    contents = sorted(item["event"]["content"] for item in items["items"])
    assert contents == ["bad \ufffd", "good", "odd"]
