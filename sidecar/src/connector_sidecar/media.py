"""Inbound media: ``mediaId``s, the media cache behind ``GET /media/{mediaId}``, and prefetch.

Rules:

- Every media descriptor a driver puts in ``metadata.media`` gets, before the message is stored,
  a ``mediaId`` (``med_`` + a hash of connection, vendor message id and the item's position, so
  a redelivery of the same vendor item has the same id), ``kind``, ``mimeType``, ``fileName``,
  ``size`` (null when unknown) and ``url`` (``/media/{mediaId}``). Its row in the ``media``
  table is written in the same transaction as the message.
- The bytes are fetched from the vendor once (concurrent requests for one item share one
  fetch) and kept as a file ``<data dir>/media/in/<mediaId>``, written to a temporary name and
  renamed, so a reader never sees half a file. ``MEDIA_MAX_BYTES`` bounds each item: a larger
  known size is refused before any download, a larger download is cut off. ``MEDIA_CACHE_BYTES``
  bounds the files together; the oldest fetched go first, and come back by a new fetch.
- An item is served for as long as delivered events are kept (``delivered_retention_seconds``,
  7 days): housekeeping then forgets it and removes its file, and any file a crash left half
  written.
- With ``MEDIA_PREFETCH`` (default on) each new item is fetched in the background right after
  the message is committed: the commit never waits for it, and a failure only means the host's
  ``GET`` fetches it later.

Several replicas: the files live on each replica's data directory, so a replica that has not
fetched an item fetches it again from the vendor (correct, at the cost of a second download).
Where the bytes live when replicas share PostgreSQL is the store's decision (ARCHITECTURE).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import mimetypes
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector_sidecar._clock import now_ms
from connector_sidecar.drivers.attachments import (
    MEDIA_KINDS,
    FetchedMedia,
    MediaError,
    MediaTooLargeError,
    guess_mime_type,
)
from connector_sidecar.store import ConnectionRecord, EnqueueResult, InboundMessage, MediaRecord

if TYPE_CHECKING:
    from connector_sidecar.runtime import Runtime

__all__ = [
    "CachedMedia",
    "MediaCache",
    "MediaNotFoundError",
    "media_id_for",
    "with_media_ids",
]

log = logging.getLogger(__name__)

EVICT_BATCH = 100
PURGE_BATCH = 500
PURGE_MAX_BATCHES = 200
PARTIAL_MAX_AGE_SECONDS = 3600.0
_KIND_ALIASES = {"audio": "voice", "media": "video"}
_DEFAULT_NAMES = {"image": "image", "voice": "voice", "video": "video", "file": "file"}
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "audio/ogg": ".ogg",
    "audio/amr": ".amr",
    "audio/silk": ".silk",
    "video/mp4": ".mp4",
}


class MediaNotFoundError(MediaError):
    """No media item has this id (or it cannot be fetched: no reference, no connection)."""


def media_id_for(connection_id: str, message_id: str, index: int) -> str:
    digest = hashlib.sha256(f"{connection_id}\n{message_id}\n{index}".encode()).hexdigest()
    return f"med_{digest[:32]}"


def _descriptor(connection_id: str, message_id: str, index: int, raw: Any) -> dict[str, Any]:
    item = dict(raw) if isinstance(raw, dict) else {}
    kind = item.get("kind") or item.get("type")
    kind = _KIND_ALIASES.get(str(kind), str(kind))
    if kind not in MEDIA_KINDS:
        kind = "file"
    media_id = media_id_for(connection_id, message_id, index)
    size = item.get("size")
    file_name = item.get("fileName") if isinstance(item.get("fileName"), str) else None
    mime_type = item.get("mimeType") if isinstance(item.get("mimeType"), str) else None
    if mime_type is None and file_name:
        mime_type = mimetypes.guess_type(file_name)[0]  # else known once fetched
    item.update(
        mediaId=media_id,
        kind=kind,
        mimeType=mime_type,
        fileName=file_name,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        url=f"/media/{media_id}" if isinstance(item.get("ref"), str) else None,
    )
    return item


def with_media_ids(connection_id: str, message: InboundMessage) -> InboundMessage:
    """The message with each ``metadata.media`` descriptor completed (a list, always)."""
    media = message.metadata.get("media")
    if media is None:
        return message
    items = media if isinstance(media, list) else [media]
    descriptors = [
        _descriptor(connection_id, message.message_id, i, raw) for i, raw in enumerate(items)
    ]
    return dataclasses.replace(message, metadata={**message.metadata, "media": descriptors})


@dataclasses.dataclass(frozen=True, kw_only=True)
class CachedMedia:
    """A cached item, ready to serve: its file and what to say about it."""

    media_id: str
    path: Path
    size: int
    mime_type: str
    file_name: str
    sha256: str


class MediaCache:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.settings = runtime.settings
        self.directory = self.settings.media_dir / "in"
        self._fetches: dict[str, asyncio.Future[CachedMedia]] = {}
        self._evict_lock = asyncio.Lock()
        runtime.on_inbound(self._on_inbound)

    # -- serving ----------------------------------------------------------------------------------

    async def get(self, media_id: str) -> CachedMedia:
        """The cached item, fetched from the vendor first when it is not cached (or evicted)."""
        record = await self.store.db.run(self.store.media.get, media_id)
        if record is None:
            raise MediaNotFoundError(f"no media item {media_id!r}")
        if record.cached:
            cached = self._cached(record)
            if cached is not None:
                return cached
        running = self._fetches.get(media_id)
        if running is None:
            running = asyncio.ensure_future(self._fetch(record))
            self._fetches[media_id] = running
            running.add_done_callback(lambda _: self._fetches.pop(media_id, None))
            running.add_done_callback(_mark_seen)
        # Shield: a host that hangs up does not waste a download others may want.
        return await asyncio.shield(running)

    def path_for(self, media_id: str) -> Path:
        return self.directory / media_id

    def _cached(self, record: MediaRecord) -> CachedMedia | None:
        path = self.path_for(record.media_id)
        try:
            size = path.stat().st_size
        except OSError:
            return None  # the file went (an operator cleaned up): fetch it again
        if size != record.cached_bytes or record.sha256 is None:
            return None
        mime = record.mime_type or "application/octet-stream"
        return CachedMedia(
            media_id=record.media_id,
            path=path,
            size=size,
            mime_type=mime,
            file_name=record.file_name or _default_name(record.kind, mime),
            sha256=record.sha256,
        )

    async def _fetch(self, record: MediaRecord) -> CachedMedia:
        limit = self.settings.media_max_bytes
        if record.size is not None and record.size > limit:
            raise MediaTooLargeError(
                f"the item is {record.size} bytes; MEDIA_MAX_BYTES is {limit}", size=record.size
            )
        connection = await self.store.db.run(self.store.connections.get, record.connection_id)
        driver = self.runtime.drivers.get(connection.kind) if connection else None
        if connection is None or driver is None:
            raise MediaNotFoundError(
                f"media item {record.media_id!r} belongs to a connection that is gone or disabled"
            )
        fetched: FetchedMedia = await driver.fetch_media(connection, record.ref, max_bytes=limit)
        if len(fetched.data) > limit:
            raise MediaTooLargeError(f"the item is larger than {limit} bytes")
        sha256, path = await asyncio.to_thread(self._write, record.media_id, fetched.data)
        mime = record.mime_type or guess_mime_type(fetched.data, record.kind, fetched.mime_type)
        updated = await self.store.db.transaction(
            lambda c: self.store.media.mark_cached(
                c,
                record.media_id,
                cached_bytes=len(fetched.data),
                sha256=sha256,
                mime_type=mime,
                file_name=fetched.file_name,
            )
        )
        await self._evict(keep=record.media_id)
        assert updated is not None
        return CachedMedia(
            media_id=record.media_id,
            path=path,
            size=len(fetched.data),
            mime_type=updated.mime_type or mime,
            file_name=updated.file_name or _default_name(record.kind, mime),
            sha256=sha256,
        )

    def _write(self, media_id: str, data: bytes) -> tuple[str, Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(media_id)
        partial = path.with_name(f".{media_id}.{os.getpid()}.part")
        with open(partial, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        return hashlib.sha256(data).hexdigest(), path

    async def _evict(self, *, keep: str | None = None) -> None:
        """Delete the oldest files until the total fits ``MEDIA_CACHE_BYTES`` (bounded)."""
        budget = self.settings.media_cache_bytes
        async with self._evict_lock:
            for _ in range(1000):
                total = await self.store.db.run(self.store.media.cached_total)
                if total <= budget:
                    return
                oldest = await self.store.db.run(self.store.media.oldest_cached, EVICT_BATCH)
                victims: list[str] = []
                for record in oldest:
                    if record.media_id == keep and len(oldest) > 1:
                        continue
                    victims.append(record.media_id)
                    total -= record.cached_bytes or 0
                    if total <= budget:
                        break
                if not victims:
                    return
                await self.store.db.transaction(self.store.media.mark_evicted, victims)
                for media_id in victims:
                    with contextlib.suppress(FileNotFoundError):
                        await asyncio.to_thread(self.path_for(media_id).unlink)
                log.info("media cache: evicted %d items", len(victims))

    # -- housekeeping -----------------------------------------------------------------------------

    async def housekeeping(self) -> int:
        """Forget items older than the retention of delivered events, with their files."""
        now = now_ms(self.runtime.clock)
        cutoff = now - int(self.settings.delivered_retention_seconds * 1000)
        purged = 0
        for _ in range(PURGE_MAX_BATCHES):
            ids = await self.store.db.transaction(
                lambda c: self.store.media.purge(c, cutoff, limit=PURGE_BATCH)
            )
            await asyncio.to_thread(self._remove, ids)
            purged += len(ids)
            if len(ids) < PURGE_BATCH:
                break
        await asyncio.to_thread(self._remove_partials)
        if purged:
            log.info("media housekeeping: %d old items forgotten", purged)
        return purged

    def _remove(self, media_ids: list[str]) -> None:
        for media_id in media_ids:
            with contextlib.suppress(FileNotFoundError):
                self.path_for(media_id).unlink()

    def _remove_partials(self) -> None:
        if not self.directory.is_dir():
            return
        cutoff = time.time() - PARTIAL_MAX_AGE_SECONDS
        for path in self.directory.glob(".*.part"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    # -- prefetch ---------------------------------------------------------------------------------

    async def _on_inbound(
        self, connection: ConnectionRecord, results: Sequence[EnqueueResult]
    ) -> None:
        if not self.settings.media_prefetch:
            return
        for result in results:
            if not result.inserted:
                continue
            media = result.message.metadata.get("media")
            for descriptor in media if isinstance(media, list) else []:
                if isinstance(descriptor, dict) and descriptor.get("url"):
                    media_id = str(descriptor["mediaId"])
                    self.runtime.spawn(self._prefetch(media_id), name=f"prefetch:{media_id}")

    async def _prefetch(self, media_id: str) -> None:
        try:
            await self.get(media_id)
        except MediaError as exc:
            log.info("prefetch of %s failed (a GET fetches it later): %s", media_id, exc)


def _default_name(kind: str, mime_type: str) -> str:
    return _DEFAULT_NAMES.get(kind, "file") + _EXTENSIONS.get(mime_type, "")


def _mark_seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
