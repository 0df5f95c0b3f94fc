"""The protocol notes' test vectors, and the pbbp2 codec and webhook crypto around them."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_sidecar.drivers.feishu.crypto import (
    DecryptError,
    decrypt,
    signature,
    verify_signature,
)
from connector_sidecar.drivers.feishu.pbbp2 import (
    METHOD_DATA,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    ping_frame,
)

from ...emulators import feishu as emulator

VECTOR_KEY = "test key"
VECTOR_ENCRYPT = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="
VECTOR_BODY = b'{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'
VECTOR_SIGNATURE = "0c09d96c2aef2ad08179b3967ea410bbc91dab24ce3aec05af962cf1935844af"
PING_42 = "08001000182a20002a0c0a0474797065120470696e67"


def test_decrypt_vector() -> None:
    """The official vector: key "test key" decrypts the sample to "hello world"."""
    assert decrypt(VECTOR_ENCRYPT, VECTOR_KEY) == b"hello world"


def test_decrypt_vector_key_digest() -> None:
    """The AES key is SHA-256 of the Encrypt Key (the digest the notes checked)."""
    digest = hashlib.sha256(VECTOR_KEY.encode()).hexdigest()
    assert digest.startswith("fa2bdca4")
    assert digest.endswith("aa9ab31a")


def test_decrypt_refuses_wrong_key_and_bad_input() -> None:
    """A wrong key fails the padding check; short, ragged or non-base64 input is refused."""
    with pytest.raises(DecryptError):
        decrypt(VECTOR_ENCRYPT, "another key")
    with pytest.raises(DecryptError):
        decrypt(base64.b64encode(b"x" * 16).decode(), VECTOR_KEY)
    with pytest.raises(DecryptError):
        decrypt(base64.b64encode(b"x" * 40).decode(), VECTOR_KEY)
    with pytest.raises(DecryptError):
        decrypt("not base64 !!", VECTOR_KEY)


@given(st.binary(max_size=300), st.text(min_size=1, max_size=40))
def test_decrypt_round_trips_the_emulator_encryption(plaintext: bytes, key: str) -> None:
    """Whatever the emulator (the sender side) encrypts, the driver decrypts."""
    assert decrypt(emulator.encrypt(plaintext, key), key) == plaintext


def test_signature_vector() -> None:
    """The worked vector: timestamp 1700000000, nonce abc, key "test key", the raw body."""
    assert signature("1700000000", "abc", VECTOR_KEY, VECTOR_BODY) == VECTOR_SIGNATURE
    assert verify_signature("1700000000", "abc", VECTOR_KEY, VECTOR_BODY, VECTOR_SIGNATURE)


def test_signature_covers_the_raw_bytes() -> None:
    """Re-serialised JSON (a space added), another nonce or an HMAC-style value do not verify."""
    spaced = b'{"encrypt": "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'
    assert json.loads(spaced) == json.loads(VECTOR_BODY)
    assert not verify_signature("1700000000", "abc", VECTOR_KEY, spaced, VECTOR_SIGNATURE)
    assert not verify_signature("1700000000", "abd", VECTOR_KEY, VECTOR_BODY, VECTOR_SIGNATURE)
    assert not verify_signature("1700000000", "abc", VECTOR_KEY, VECTOR_BODY, "00" * 32)


def test_signature_matches_the_emulator() -> None:
    """The driver's check agrees with the emulator's signer."""
    assert emulator.sign("1700000000", "abc", VECTOR_KEY, VECTOR_BODY) == VECTOR_SIGNATURE


def test_ping_frame_vector() -> None:
    """The SDK encoder's ping for service_id 42, byte for byte."""
    assert encode_frame(ping_frame(42)).hex() == PING_42


def test_ping_frame_decodes() -> None:
    """The vector decodes to a CONTROL ping for service 42, with no payload."""
    frame = decode_frame(bytes.fromhex(PING_42))
    assert (frame.seq_id, frame.log_id, frame.service, frame.method) == (0, 0, 42, 0)
    assert frame.type == "ping"
    assert frame.payload is None


def test_ack_frame_is_the_event_frame_plus_biz_rt() -> None:
    """An ack keeps SeqID, LogID, service, method and headers, adds biz_rt, swaps the payload."""
    event = Frame(
        seq_id=7,
        log_id=123456789012,
        service=42,
        method=METHOD_DATA,
        headers=(("type", "event"), ("message_id", "m1"), ("sum", "1"), ("seq", "0")),
        payload=b'{"schema":"2.0"}',
    )
    ack = Frame(
        seq_id=event.seq_id,
        log_id=event.log_id,
        service=event.service,
        method=event.method,
        headers=(*event.headers, ("biz_rt", "3")),
        payload=b'{"code":200}',
    )
    decoded = emulator.decode_frame(encode_frame(ack))
    assert decoded["SeqID"] == 7
    assert decoded["LogID"] == 123456789012
    assert decoded["service"] == 42
    assert decoded["method"] == 1
    assert decoded["headers"][-1] == ("biz_rt", "3")
    assert json.loads(decoded["payload"]) == {"code": 200}


frames = st.builds(
    Frame,
    seq_id=st.integers(0, 2**64 - 1),
    log_id=st.integers(0, 2**64 - 1),
    service=st.integers(-(2**31), 2**31 - 1),
    method=st.integers(0, 1),
    headers=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=5).map(tuple),
    payload_encoding=st.none() | st.text(max_size=5),
    payload_type=st.none() | st.text(max_size=5),
    payload=st.none() | st.binary(max_size=64),
    log_id_new=st.none() | st.text(max_size=8),
)


@given(frames)
def test_frames_round_trip(frame: Frame) -> None:
    """encode → decode is the identity for every field combination."""
    assert decode_frame(encode_frame(frame)) == frame


@given(frames.filter(lambda f: f.service >= 0))
def test_emulator_reads_what_the_driver_writes(frame: Frame) -> None:
    """The emulator's independent decoder sees the same fields."""
    decoded = emulator.decode_frame(encode_frame(frame))
    assert decoded["SeqID"] == frame.seq_id
    assert decoded["service"] == frame.service
    assert decoded["headers"] == list(frame.headers)
    assert decoded["payload"] == frame.payload


def test_decoder_skips_unknown_fields_and_refuses_garbage() -> None:
    """An unknown field is skipped; truncation or missing required fields raise FrameError."""
    known = encode_frame(ping_frame(1))
    extra = known + bytes([0x50, 0x05])  # field 10, varint 5
    assert decode_frame(extra) == decode_frame(known)
    with pytest.raises(FrameError):
        decode_frame(known[:-3])
    with pytest.raises(FrameError):
        decode_frame(bytes.fromhex("0800"))  # SeqID only
    with pytest.raises(FrameError):
        decode_frame(b"\xff" * 11)
