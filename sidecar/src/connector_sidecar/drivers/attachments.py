"""What drivers exchange with the media cache and the sender: media bytes, attachment parts, errors.

Inbound, a driver names each media item of a message with a descriptor in
``metadata.media`` whose ``ref`` is the driver's own opaque reference (a CDN parameter and key,
a message id and file key); the runtime gives it a ``mediaId`` and keeps the ref in the media
table. ``Driver.fetch_media(connection, ref, max_bytes)`` later turns the ref into bytes.

Outbound, every attachment of a send is one :class:`OutboundAttachment` part, sent in two steps
the ledger records separately: ``Driver.upload_attachment`` (returns a small JSON-able record:
the vendor's key for the uploaded bytes) and ``Driver.send_attachment`` (posts the message that
carries it). A retry skips an upload already recorded.

Fetch errors, by what the API answers::

    MediaError
    ├── MediaTooLargeError     413 media_too_large (known before or found while downloading)
    ├── MediaRejectedError     502 provider_rejected: the vendor refuses (gone, no permission)
    └── MediaUnavailableError  503 provider_unavailable with Retry-After: try again later
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from connector_contracts import SendTarget

__all__ = [
    "MEDIA_KINDS",
    "FetchedMedia",
    "MediaError",
    "MediaRejectedError",
    "MediaTooLargeError",
    "MediaUnavailableError",
    "OutboundAttachment",
    "guess_mime_type",
]

MEDIA_KINDS = ("image", "voice", "file", "video")

_DEFAULT_MIME = {
    "image": "image/jpeg",
    "voice": "audio/silk",
    "video": "video/mp4",
    "file": "application/octet-stream",
}
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"OggS", "audio/ogg"),
    (b"#!AMR", "audio/amr"),
    (b"\x02#!SILK_V3", "audio/silk"),
    (b"#!SILK_V3", "audio/silk"),
    (b"PK\x03\x04", "application/zip"),
)


def guess_mime_type(data: bytes, kind: str, declared: str | None = None) -> str:
    """The MIME type of some bytes: what was declared, else the magic number, else by kind."""
    if declared:
        return declared
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return _DEFAULT_MIME.get(kind, "application/octet-stream")


class MediaError(Exception):
    """Base of what ``Driver.fetch_media`` raises; ``str()`` is safe to show to a host."""


class MediaTooLargeError(MediaError):
    def __init__(self, detail: str, *, size: int | None = None) -> None:
        super().__init__(detail)
        self.size = size


class MediaRejectedError(MediaError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


class MediaUnavailableError(MediaError):
    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True, kw_only=True)
class FetchedMedia:
    """Decrypted media bytes, and what the vendor said about them (if anything)."""

    data: bytes = dataclasses.field(repr=False)
    mime_type: str | None = None
    file_name: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboundAttachment:
    """One attachment part of a send: its bytes are in a file the sender keeps until it is done."""

    request_id: str
    index: int  # the part index: text chunks first, then the attachments in order
    count: int
    key: str  # the vendor idempotency key of this part, the same on every retry
    target: SendTarget
    kind: str
    file_name: str
    mime_type: str
    size: int
    sha256: str
    path: Path
    reply_to_message_id: str | None = None

    def read(self) -> bytes:
        """The bytes, checked against the hash the send was accepted with."""
        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise OSError(f"attachment bytes at {self.path} do not match their sha256")
        return data
