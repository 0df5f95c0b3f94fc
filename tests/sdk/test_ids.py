"""``request_id_for`` builds requestIds exactly as existing hosts do."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_sdk import request_id_for


def _reference(content: str, inbound: str | None, peer: str, finish: str) -> str:
    """The existing hosts' formula, written out independently of the SDK."""
    text = f"{content}|{inbound or ''}|{peer}|{finish}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def test_explicit_message_id_is_used_verbatim() -> None:
    """A given message id goes into the requestId unchanged."""
    rid = request_id_for("weixin-main", "s1", "out-msg-1", content="reply", peer_id="peer-1")
    assert rid == "out_weixin-main:s1:out-msg-1"


def test_known_vector() -> None:
    """A fixed input yields the fixed id existing hosts compute for it."""
    rid = request_id_for(
        "weixin-main", "s1", content="reply", inbound_message_id="in-msg-1", peer_id="peer-1"
    )
    assert rid == "out_weixin-main:s1:fea5e6dbd236b5bafc184924"


def test_vector_computed_here_with_hashlib() -> None:
    """The derived id is sha256 over ``content|inbound|peer|finish`` in UTF-8, first 24 hex."""
    joined = "回复 | x|in-msg-7|peer-9|length"  # a '|' in the content is hashed as is
    expected = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:24]
    rid = request_id_for(
        "feishu-main",
        "sess:7",
        None,
        content="回复 | x",
        inbound_message_id="in-msg-7",
        peer_id="peer-9",
        finish_reason="length",
    )
    assert rid == f"out_feishu-main:sess:7:{expected}"
    assert len(expected) == 24


def test_channel_and_session_are_not_hashed() -> None:
    """Only the reply's parts are hashed: the same reply in another session keeps its digest."""
    a = request_id_for("c1", "s1", content="x", peer_id="p")
    b = request_id_for("c2", "s2", content="x", peer_id="p")
    assert a.removeprefix("out_c1:s1:") == b.removeprefix("out_c2:s2:")


def test_default_finish_reason_is_stop() -> None:
    """Leaving finish_reason out is the same as passing ``"stop"``."""
    assert request_id_for("c", "s", content="x", peer_id="p") == request_id_for(
        "c", "s", content="x", peer_id="p", finish_reason="stop"
    )


def test_none_inbound_id_hashes_as_empty() -> None:
    """A missing inbound message id is hashed as the empty string."""
    rid = request_id_for("c", "s", None, content="hello", peer_id="peer-1")
    assert rid == "out_c:s:f2c682540b2bdd70e86ecc51"


def test_utf8_content_and_finish_reason() -> None:
    """Non-ASCII content is hashed as UTF-8 and the finish reason takes part."""
    rid = request_id_for(
        "c", "s", content="你好", inbound_message_id="m1", peer_id="p1", finish_reason="length"
    )
    assert rid == "out_c:s:fbf766d39d941227990bba39"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_message_id_is_derived(blank: str) -> None:
    """A blank message id is treated like None: the id is derived from the content."""
    derived = request_id_for("c", "s", blank, content="x", peer_id="p")
    assert derived == request_id_for("c", "s", None, content="x", peer_id="p")
    assert derived.rsplit(":", 1)[1] == _reference("x", None, "p", "stop")


def test_none_parts_hash_as_empty() -> None:
    """None content, peer and finish reason count as empty strings."""
    rid = request_id_for("c", "s", content=None, peer_id=None, finish_reason=None)
    assert rid == f"out_c:s:{hashlib.sha256(b'|||').hexdigest()[:24]}"


def test_different_replies_get_different_ids() -> None:
    """Two replies that differ in content, inbound id or peer do not share an id."""
    base = {"content": "a", "inbound_message_id": "m", "peer_id": "p"}
    ids = {
        request_id_for("c", "s", **base),
        request_id_for("c", "s", **{**base, "content": "b"}),
        request_id_for("c", "s", **{**base, "inbound_message_id": "n"}),
        request_id_for("c", "s", **{**base, "peer_id": "q"}),
        request_id_for("c", "s", **base, finish_reason="length"),
    }
    assert len(ids) == 5


@given(
    content=st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    inbound=st.none() | st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    peer=st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    finish=st.sampled_from(["stop", "length", "tool_calls"]),
)
def test_matches_reference_formula(
    content: str, inbound: str | None, peer: str, finish: str
) -> None:
    """For any text, the derived part equals the reference formula and is 24 hex chars."""
    rid = request_id_for(
        "ch",
        "sess",
        content=content,
        inbound_message_id=inbound,
        peer_id=peer,
        finish_reason=finish,
    )
    prefix, digest = rid.rsplit(":", 1)
    assert prefix == "out_ch:sess"
    assert digest == _reference(content, inbound, peer, finish)
    assert len(digest) == 24
    assert int(digest, 16) >= 0
