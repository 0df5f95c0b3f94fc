"""Vendor text made storable: lone surrogates become U+FFFD, at any depth, with a note."""

from __future__ import annotations

import msgspec

from connector_sidecar._text import repaired, storable_message, storable_text
from connector_sidecar.store import InboundMessage


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
