"""``GET /media/{mediaId}`` (CONTRACT §10.1): an inbound media item's bytes, from the media cache.

Errors: 404 ``media_not_found``; 413 ``media_too_large`` (over ``MEDIA_MAX_BYTES``); 502
``provider_rejected`` (the vendor refuses); 503 ``provider_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import FileResponse, Response
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


async def get_media(request: Request) -> Response:
    svc = services(request)
    media_id = request.path_params["media_id"]
    try:
        cached = await svc.media.get(media_id)
    except MediaError as exc:
        raise media_problem(exc, media_id) from None
    return FileResponse(
        cached.path,
        media_type=cached.mime_type,
        filename=cached.file_name,
        content_disposition_type="attachment",
        headers={"Cache-Control": "private, max-age=86400"},
    )


routes = [Route("/media/{media_id}", get_media, methods=["GET"])]
