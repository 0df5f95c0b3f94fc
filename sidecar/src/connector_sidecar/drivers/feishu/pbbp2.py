"""The ``pbbp2`` frame of Feishu's long connection, encoded by hand (protobuf, proto2).

The SDK's schema (``lark_oapi/ws/pb/pbbp2_pb2.py``, see docs/protocols/feishu.md §7.2)::

    message Header { required string key = 1; required string value = 2; }
    message Frame {
      required uint64 SeqID = 1;  required uint64 LogID = 2;
      required int32 service = 3; required int32 method = 4;
      repeated Header headers = 5;
      optional string payload_encoding = 6; optional string payload_type = 7;
      optional bytes payload = 8;   optional string LogIDNew = 9;
    }

Required fields are always written, optional ones only when set, in field order (what the
official encoder does, so a ping is byte-for-byte the notes' vector). The decoder skips unknown
fields and refuses truncated or malformed input with :class:`FrameError`.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "METHOD_CONTROL",
    "METHOD_DATA",
    "Frame",
    "FrameError",
    "decode_frame",
    "encode_frame",
    "ping_frame",
]

METHOD_CONTROL = 0
METHOD_DATA = 1

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = (1 << 64) - 1


class FrameError(ValueError):
    """The bytes are not a pbbp2 frame."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frame:
    seq_id: int = 0
    log_id: int = 0
    service: int = 0
    method: int = METHOD_CONTROL
    headers: tuple[tuple[str, str], ...] = ()
    payload_encoding: str | None = None
    payload_type: str | None = None
    payload: bytes | None = None
    log_id_new: str | None = None

    def header(self, key: str) -> str | None:
        """The first header named ``key``."""
        for name, value in self.headers:
            if name == key:
                return value
        return None

    @property
    def type(self) -> str | None:
        return self.header("type")


def ping_frame(service_id: int) -> Frame:
    """The CONTROL ping the client sends right after connecting and every PingInterval."""
    return Frame(service=service_id, method=METHOD_CONTROL, headers=(("type", "ping"),))


# -- encoding ---------------------------------------------------------------------------------


def _varint(value: int, out: bytearray) -> None:
    if value < 0:
        value &= _U64  # int32/int64 negatives: two's complement, ten bytes
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _key(field: int, wire_type: int, out: bytearray) -> None:
    _varint(field << 3 | wire_type, out)


def _bytes_field(field: int, data: bytes, out: bytearray) -> None:
    _key(field, _LEN, out)
    _varint(len(data), out)
    out += data


def encode_frame(frame: Frame) -> bytes:
    out = bytearray()
    for field, value in ((1, frame.seq_id), (2, frame.log_id)):
        if not 0 <= value <= _U64:
            raise FrameError(f"field {field} must be a uint64, got {value}")
        _key(field, _VARINT, out)
        _varint(value, out)
    for field, value in ((3, frame.service), (4, frame.method)):
        if not -(2**31) <= value < 2**31:
            raise FrameError(f"field {field} must be an int32, got {value}")
        _key(field, _VARINT, out)
        _varint(value, out)
    for name, text in frame.headers:
        header = bytearray()
        _bytes_field(1, name.encode(), header)
        _bytes_field(2, text.encode(), header)
        _bytes_field(5, bytes(header), out)
    if frame.payload_encoding is not None:
        _bytes_field(6, frame.payload_encoding.encode(), out)
    if frame.payload_type is not None:
        _bytes_field(7, frame.payload_type.encode(), out)
    if frame.payload is not None:
        _bytes_field(8, frame.payload, out)
    if frame.log_id_new is not None:
        _bytes_field(9, frame.log_id_new.encode(), out)
    return bytes(out)


# -- decoding ---------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        result = shift = 0
        for _ in range(10):
            if self.pos >= len(self.data):
                raise FrameError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result & _U64
            shift += 7
        raise FrameError("varint longer than 10 bytes")

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise FrameError("truncated length-delimited field")
        chunk = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return chunk

    def field(self) -> tuple[int, int, int | bytes]:
        key = self.varint()
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise FrameError("field number 0")
        value: int | bytes
        if wire_type == _VARINT:
            value = self.varint()
        elif wire_type == _LEN:
            value = self.take(self.varint())
        elif wire_type == _I64:
            value = self.take(8)
        elif wire_type == _I32:
            value = self.take(4)
        else:
            raise FrameError(f"unsupported wire type {wire_type}")
        return field, wire_type, value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _text(value: int | bytes, name: str) -> str:
    if not isinstance(value, bytes):
        raise FrameError(f"{name} must be length-delimited")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise FrameError(f"{name} is not UTF-8") from None


def _int(value: int | bytes, name: str) -> int:
    if not isinstance(value, int):
        raise FrameError(f"{name} must be a varint")
    return value


def _header(data: bytes) -> tuple[str, str]:
    reader = _Reader(data)
    key: str | None = None
    value: str | None = None
    while not reader.done:
        field, _, raw = reader.field()
        if field == 1:
            key = _text(raw, "Header.key")
        elif field == 2:
            value = _text(raw, "Header.value")
    if key is None or value is None:
        raise FrameError("a header misses its key or value")
    return key, value


def decode_frame(data: bytes) -> Frame:
    reader = _Reader(data)
    ints = {1: 0, 2: 0, 3: 0, 4: 0}
    texts: dict[int, str] = {}
    headers: list[tuple[str, str]] = []
    payload: bytes | None = None
    seen: set[int] = set()
    names = {1: "SeqID", 2: "LogID", 3: "service", 4: "method", 6: "payload_encoding"}
    names |= {7: "payload_type", 9: "LogIDNew"}
    while not reader.done:
        field, _, raw = reader.field()
        seen.add(field)
        if field in (1, 2):
            ints[field] = _int(raw, names[field])
        elif field in (3, 4):
            ints[field] = _int32(_int(raw, names[field]))
        elif field == 5:
            if not isinstance(raw, bytes):
                raise FrameError("headers must be length-delimited")
            headers.append(_header(raw))
        elif field in (6, 7, 9):
            texts[field] = _text(raw, names[field])
        elif field == 8:
            if not isinstance(raw, bytes):
                raise FrameError("payload must be length-delimited")
            payload = raw
    missing = {1, 2, 3, 4} - seen
    if missing:
        raise FrameError(f"required fields missing: {sorted(missing)}")
    return Frame(
        seq_id=ints[1],
        log_id=ints[2],
        service=ints[3],
        method=ints[4],
        headers=tuple(headers),
        payload_encoding=texts.get(6),
        payload_type=texts.get(7),
        payload=payload,
        log_id_new=texts.get(9),
    )
