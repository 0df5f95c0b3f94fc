"""``GET /media/{mediaId}`` (docs/CONTRACT.md §10.1): an inbound media item's bytes, from the media cache.

Errors: 404 ``media_not_found``; 413 ``media_too_large`` (over ``MEDIA_MAX_BYTES``); 502
``provider_rejected`` (the vendor refuses); 503 ``provider_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import BinaryIO
from urllib.parse import quote

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from connector_sidecar.api._common import services
from connector_sidecar.drivers.attachments import (
    MediaError,
    MediaRejectedError,
    MediaTooLargeError,
    MediaUnavailableError,
)
from connector_sidecar.media import MediaNotFoundError
from connector_sidecar.problems import ApiProblem

__all__ = ["media_problem", "routes"]

UNAVAILABLE_RETRY_AFTER = 10
CHUNK_BYTES = 64 * 1024


def media_problem(exc: MediaError, media_id: str) -> ApiProblem:
    """The API answer for a media item that cannot be served."""
    if isinstance(exc, MediaNotFoundError):
        return ApiProblem(404, "media_not_found", str(exc))
    if isinstance(exc, MediaTooLargeError):
        return ApiProblem(413, "media_too_large", f"media {media_id}: {exc}")
    if isinstance(exc, MediaUnavailableError):
        seconds = UNAVAILABLE_RETRY_AFTER
        if exc.retry_after is not None:
            seconds = max(1, math.ceil(min(exc.retry_after, 3600.0)))
        return ApiProblem(
            503,
            "provider_unavailable",
            f"the vendor did not hand out media {media_id}: {exc}; retry later",
            headers={"Retry-After": str(seconds)},
        )
    if isinstance(exc, MediaRejectedError):
        return ApiProblem(502, "provider_rejected", f"the vendor refused media {media_id}: {exc}")
    return ApiProblem(502, "provider_rejected", f"media {media_id}: {exc}")


def content_disposition(file_name: str) -> str:
    """``attachment`` with the file name, RFC 6266 style (``filename*`` when not ASCII)."""
    if file_name.isascii() and '"' not in file_name and "\\" not in file_name:
        return f'attachment; filename="{file_name}"'
    return f"attachment; filename*=utf-8''{quote(file_name, safe='')}"


async def get_media(request: Request) -> Response:
    svc = services(request)
    media_id = request.path_params["media_id"]
    try:
        cached = await svc.media.get(media_id)
    except MediaError as exc:
        raise media_problem(exc, media_id) from None
    try:
        # Opened now: an eviction that removes the file meanwhile cannot cut the answer short.
        handle: BinaryIO = await anyio.to_thread.run_sync(cached.path.open, "rb")
    except FileNotFoundError:
        raise ApiProblem(
            503,
            "provider_unavailable",
            f"media {media_id} was evicted while it was requested; retry",
            headers={"Retry-After": "1"},
        ) from None

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := await anyio.to_thread.run_sync(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    return StreamingResponse(
        body(),
        media_type=cached.mime_type,
        headers={
            "Content-Length": str(cached.size),
            "Content-Disposition": content_disposition(cached.file_name),
            "Cache-Control": "private, max-age=86400",
        },
    )


routes = [Route("/media/{media_id}", get_media, methods=["GET"])]
