"""Outbound attachments of ``POST /send``: checked, resolved to bytes, and kept until sent.

Rules:

- Each attachment has exactly one source: ``data`` (base64), ``url`` (fetched by
  :mod:`url_fetch`) or ``mediaId`` (an inbound item from the media cache); anything else is a
  422 naming ``$.attachments[i]``.
- The requestId fingerprint covers each attachment by its kind, name, type and source: the
  sha256 of the decoded ``data``, the ``url`` as given, or the ``mediaId``. (A ``url`` is not
  fetched again only to compare a repeat; the same URL is the same attachment.)
- Before anything is uploaded, every attachment is resolved and checked: ``MEDIA_MAX_BYTES``
  and the vendor's own size limit (413 ``attachment_too_large``), the kinds and types the vendor
  takes (422 naming the field). Its bytes are then written once to
  ``<data dir>/media/out/<sha256>``, so a retry or a deferred send reads them from there and
  the ledger row only keeps their description (:class:`PreparedAttachment`).
- Those files are removed by housekeeping once no send can need them (older than the ledger's
  retention).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from connector_contracts import Attachment, ProblemError, SendRequest
from connector_sidecar.api.media import media_problem
from connector_sidecar.drivers.attachments import MediaError, guess_mime_type
from connector_sidecar.problems import ApiProblem
from connector_sidecar.url_fetch import UrlFetchError, UrlTooLargeError, fetch_url

if TYPE_CHECKING:
    from connector_sidecar.config import Settings
    from connector_sidecar.drivers.base import Driver
    from connector_sidecar.media import MediaCache

__all__ = ["AttachmentFiles", "PreparedAttachment", "attachment_digests", "strip_data"]

_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "video/mp4": "mp4",
    "audio/ogg": "ogg",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedAttachment:
    """An attachment resolved to bytes (in a file named by its sha256) and checked."""

    kind: str
    file_name: str
    mime_type: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fileName": self.file_name,
            "mimeType": self.mime_type,
            "size": self.size,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> PreparedAttachment:
        return cls(
            kind=str(value["kind"]),
            file_name=str(value["fileName"]),
            mime_type=str(value["mimeType"]),
            size=int(value["size"]),
            sha256=str(value["sha256"]),
        )


def _invalid(path: str, message: str, request_id: str) -> ApiProblem:
    problem = ApiProblem(422, "validation_failed", f"{path}: {message}", request_id=request_id)
    problem.errors = [ProblemError(path=path, message=message)]
    return problem


def _decode(data: str, path: str, request_id: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:  # base64url, or without padding, is still plainly base64
            return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            raise _invalid(f"{path}.data", "is not base64", request_id) from None


def _check_source(attachment: Attachment, path: str, request_id: str) -> None:
    sources = [s for s in (attachment.data, attachment.url, attachment.media_id) if s is not None]
    if len(sources) != 1:
        raise _invalid(path, "needs exactly one of data, url or mediaId", request_id)
    if attachment.url is not None and not attachment.url.lower().startswith(
        ("http://", "https://")
    ):
        raise _invalid(f"{path}.url", "must be an http or https URL", request_id)
    if attachment.media_id is not None and not attachment.media_id.startswith("med_"):
        raise _invalid(f"{path}.mediaId", "must be a mediaId (med_…)", request_id)


def attachment_digests(request: SendRequest) -> list[str]:
    """What the fingerprint covers per attachment; raises a 422 for a malformed one.

    Decodes each ``data`` (the hash is of the bytes): call it off the event loop for large ones.
    """
    digests: list[str] = []
    for index, attachment in enumerate(request.attachments or []):
        path = f"$.attachments[{index}]"
        _check_source(attachment, path, request.request_id)
        if attachment.data is not None:
            raw = _decode(attachment.data, path, request.request_id)
            source = "sha256:" + hashlib.sha256(raw).hexdigest()
        elif attachment.url is not None:
            source = "url:" + attachment.url
        else:
            source = "media:" + str(attachment.media_id)
        digests.append(
            "\x1f".join(
                (attachment.kind, attachment.file_name or "", attachment.mime_type or "", source)
            )
        )
    return digests


def strip_data(request: SendRequest) -> SendRequest:
    """The request as the ledger keeps it: attachments without their base64 bytes."""
    if not request.attachments:
        return request
    return msgspec.structs.replace(
        request,
        attachments=[
            msgspec.structs.replace(a, data=None) if a.data is not None else a
            for a in request.attachments
        ],
    )


class AttachmentFiles:
    """The bytes of outbound attachments, one file per sha256 under ``media/out``."""

    def __init__(self, settings: Settings, media: MediaCache) -> None:
        self.settings = settings
        self.media = media
        self.directory = settings.media_dir / "out"
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(headers={"User-Agent": "connector-sidecar"})
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def path(self, sha256: str) -> Path:
        return self.directory / sha256

    async def prepare(self, request: SendRequest, driver: Driver) -> list[PreparedAttachment]:
        """Resolve and check every attachment, then keep its bytes; nothing is uploaded yet."""
        prepared: list[PreparedAttachment] = []
        for index, attachment in enumerate(request.attachments or []):
            path = f"$.attachments[{index}]"
            data, mime, name = await self._bytes(attachment, path, request.request_id)
            limit = self.settings.media_max_bytes
            if len(data) > limit:
                raise ApiProblem(
                    413,
                    "attachment_too_large",
                    f"{path}: {len(data)} bytes; MEDIA_MAX_BYTES is {limit}",
                    request_id=request.request_id,
                )
            mime = guess_mime_type(data, attachment.kind, attachment.mime_type or mime)
            problem = driver.attachment_problem(attachment.kind, mime, len(data))
            if problem is not None:
                status, reason = problem
                if status == 413:
                    raise ApiProblem(
                        413,
                        "attachment_too_large",
                        f"{path}: {reason}",
                        request_id=request.request_id,
                    )
                raise _invalid(f"{path}.kind", reason, request.request_id)
            sha256 = await asyncio.to_thread(self._write, data)
            file_name = attachment.file_name or name or _default_name(attachment.kind, mime)
            prepared.append(
                PreparedAttachment(
                    kind=attachment.kind,
                    file_name=file_name,
                    mime_type=mime,
                    size=len(data),
                    sha256=sha256,
                )
            )
        return prepared

    async def _bytes(
        self, attachment: Attachment, path: str, request_id: str
    ) -> tuple[bytes, str | None, str | None]:
        if attachment.data is not None:
            return _decode(attachment.data, path, request_id), None, None
        if attachment.url is not None:
            try:
                fetched = await fetch_url(
                    self.http,
                    attachment.url,
                    max_bytes=self.settings.media_max_bytes,
                    allow_private=self.settings.media_fetch_allow_private,
                )
            except UrlTooLargeError as exc:
                raise ApiProblem(
                    413, "attachment_too_large", f"{path}.url: {exc}", request_id=request_id
                ) from None
            except UrlFetchError as exc:
                raise _invalid(f"{path}.url", f"cannot be fetched: {exc}", request_id) from None
            return fetched.data, fetched.mime_type, fetched.file_name
        from connector_sidecar.media import MediaNotFoundError

        media_id = str(attachment.media_id)
        try:
            cached = await self.media.get(media_id)
        except MediaNotFoundError:
            raise _invalid(f"{path}.mediaId", f"no media item {media_id!r}", request_id) from None
        except MediaError as exc:
            problem = media_problem(exc, media_id)
            problem.request_id = request_id
            raise problem from None
        data = await asyncio.to_thread(cached.path.read_bytes)
        return data, cached.mime_type, cached.file_name

    def _write(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path(sha256)
        if path.exists() and path.stat().st_size == len(data):
            os.utime(path)  # in use again: housekeeping keeps it
            return sha256
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{sha256}.{os.getpid()}.part")
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        return sha256

    def purge(self, older_than_seconds: float) -> int:
        """Delete attachment files untouched for that long (no send can need them any more)."""
        if not self.directory.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.directory.iterdir():
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed


def _default_name(kind: str, mime: str) -> str:
    extension = _EXTENSIONS.get(mime)
    return f"{kind}.{extension}" if extension else kind
