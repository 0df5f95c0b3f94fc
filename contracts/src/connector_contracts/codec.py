"""Module-level JSON encoder and decoders, built once (msgspec's recommended pattern)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from connector_contracts.models import AnyBridgeEvent, BridgeEvent, DeliveryList, DeliveryView

__all__ = [
    "UnknownEventType",
    "bridge_event_decoder",
    "decode",
    "decode_bridge_event",
    "encode",
    "json_decoder",
]

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
json_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
bridge_event_decoder = msgspec.json.Decoder(BridgeEvent)
_any_event_decoder = msgspec.json.Decoder(AnyBridgeEvent)
_KNOWN_TYPES = frozenset({"message", "connection.status", "send.status", "ping"})


class _EventType(msgspec.Struct):
    type: str = "message"


_type_decoder = msgspec.json.Decoder(_EventType)


class UnknownEventType(ValueError):
    """A bridge event of a ``type`` this version does not know (a newer sidecar's)."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown bridge event type {event_type!r}")
        self.event_type = event_type


def decode_bridge_event(data: bytes | str) -> AnyBridgeEvent:
    """A bridge body as its event type; no ``type`` means a message (older sidecars).

    Raises ``msgspec.DecodeError``/``ValidationError`` like :func:`decode`, and
    :class:`UnknownEventType` for a well-formed event of a type not known here.
    """
    event_type = _type_decoder.decode(data).type
    if event_type == "message":
        return bridge_event_decoder.decode(data)
    if event_type not in _KNOWN_TYPES:
        raise UnknownEventType(event_type)
    event: AnyBridgeEvent = _any_event_decoder.decode(data)
    return event


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
    try:
        result: T = decoder.decode(data)
    except msgspec.ValidationError:
        if type_ not in (DeliveryList, DeliveryView):
            raise
        # A sidecar before v1.1 stored events without ``type``: they are messages.
        converted: T = msgspec.convert(_typed_events(json_decoder.decode(data)), type_)
        return converted
    return result


def _typed_events(value: Any) -> Any:
    """A DeliveryList or DeliveryView body with ``type: "message"`` where an event lacks it."""
    if isinstance(value, dict):
        if isinstance(items := value.get("items"), list):
            value["items"] = [_typed_events(item) for item in items]
        event = value.get("event")
        if isinstance(event, dict) and "type" not in event:
            value["event"] = {"type": "message", **event}
    return value
