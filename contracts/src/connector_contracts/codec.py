"""Module-level JSON encoder and decoders, built once (msgspec's recommended pattern)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from connector_contracts.models import BridgeEvent

__all__ = ["bridge_event_decoder", "decode", "encode", "json_decoder"]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
bridge_event_decoder = msgspec.json.Decoder(BridgeEvent)

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def encode(value: Any) -> bytes:
    """Encode any contract value (or plain JSON data) to compact UTF-8 JSON bytes."""
    return _encoder.encode(value)


def decode(data: bytes | str, type_: type[T]) -> T:
    """Decode ``data`` as ``type_``, reusing one cached decoder per type.

    Raises ``msgspec.DecodeError`` for malformed JSON and ``msgspec.ValidationError`` (a
    subclass) for a well-formed document of the wrong shape; callers at HTTP boundaries map
    those to 400 and 422.
    """
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    result: T = decoder.decode(data)
    return result
