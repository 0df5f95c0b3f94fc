"""Attachments to send, and media ids to fetch (docs/CONTRACT.md §10.1).

:class:`Attachment` is the contract's type with two constructors: ``from_path`` (reads a file,
guesses the MIME type from its name) and ``from_bytes``; the kind, when not given, follows the
MIME type (``image/*`` image, ``video/*`` video, ``audio/*`` voice, anything else file).
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import get_args

from connector_contracts import Attachment as _WireAttachment
from connector_contracts import AttachmentKind

__all__ = ["Attachment", "kind_for_mime_type", "media_id_of"]

_KINDS: tuple[str, ...] = get_args(AttachmentKind)


def kind_for_mime_type(mime_type: str | None) -> AttachmentKind:
    major = (mime_type or "").split("/", 1)[0]
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "voice"
    return "file"


def media_id_of(media: str) -> str:
    """A ``mediaId`` from itself or from a descriptor's ``url`` (``/media/med_…``)."""
    return media.rsplit("/", 1)[-1]


class Attachment(_WireAttachment):  # type: ignore[misc]  # msgspec config is inherited (frozen)
    """One file for ``SidecarClient.send(attachments=[...])``: exactly one of ``data``
    (base64), ``url`` or ``mediaId``."""

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        kind: AttachmentKind | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> Attachment:
        if mime_type is None and file_name is not None:
            mime_type = mimetypes.guess_type(file_name)[0]
        return cls(
            kind=kind or kind_for_mime_type(mime_type),
            data=base64.b64encode(data).decode("ascii"),
            file_name=file_name,
            mime_type=mime_type,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        *,
        kind: AttachmentKind | None = None,
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> Attachment:
        """Read a file now; its name (unless ``file_name``) is what the recipient sees."""
        path = Path(path)
        return cls.from_bytes(
            path.read_bytes(), kind=kind, file_name=file_name or path.name, mime_type=mime_type
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        kind: AttachmentKind = "file",
        file_name: str | None = None,
        mime_type: str | None = None,
    ) -> Attachment:
        """A file the sidecar fetches (http/https; public addresses unless allowed)."""
        return cls(kind=kind, url=url, file_name=file_name, mime_type=mime_type)

    @classmethod
    def from_media(cls, media_id: str, *, kind: AttachmentKind = "file") -> Attachment:
        """An inbound media item sent on (its ``mediaId`` or its ``url``)."""
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}")
        return cls(kind=kind, media_id=media_id_of(media_id))
