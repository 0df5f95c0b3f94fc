"""Feishu media: ``im/v1/images`` and ``im/v1/files`` uploads, and message resource downloads.

From lark-oapi 1.7.5 (``api/im/v1/model/create_{image,file}_request*.py``,
``get_message_resource_request.py``, ``resource/message_resource.py``) and docs/protocols/feishu.md:

- ``POST /open-apis/im/v1/images``, multipart: ``image_type=message`` and ``image`` (the
  file) → ``data.image_key``.
- ``POST /open-apis/im/v1/files``, multipart: ``file_type`` (``opus``, ``mp4``, ``pdf``, ``doc``,
  ``xls``, ``ppt`` or ``stream``), ``file_name``, optional ``duration`` (ms) and ``file`` →
  ``data.file_key``.
- ``GET /open-apis/im/v1/messages/{message_id}/resources/{file_key}?type=image|file``: the
  bytes on a 2xx (file name in ``Content-Disposition``); a JSON body with ``code`` otherwise.
- Messages: ``image`` ``{"image_key"}``, ``file`` ``{"file_key"}``, ``audio`` ``{"file_key"}``
  (an opus upload), ``media`` ``{"file_key"}`` (an mp4 upload).

[unconfirmed] The size limits (images 10 MB, files 30 MB, resources 100 MB: the Feishu doc text
as quoted by third parties, not in the SDK), whether a ``media`` message needs a cover
``image_key`` (we send none), and which ``type`` a resource of an audio or video message takes
(the SDK only names ``image`` and ``file``; we use ``file`` for everything but images).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from email.message import Message
from typing import Any

import httpx

from connector_sidecar.drivers._common import as_dict
from connector_sidecar.drivers.attachments import (
    FetchedMedia,
    MediaRejectedError,
    MediaTooLargeError,
    MediaUnavailableError,
)
from connector_sidecar.drivers.feishu.api import (
    RATE_LIMIT_CODES,
    TOKEN_INVALID_CODES,
    FeishuApi,
    FeishuApiError,
    FeishuUnavailable,
)

__all__ = [
    "FILE_LIMIT",
    "IMAGE_LIMIT",
    "download_resource",
    "file_type_for",
    "message_content",
    "upload_file",
    "upload_image",
]

log = logging.getLogger(__name__)

IMAGE_LIMIT = 10 * 1024 * 1024
FILE_LIMIT = 30 * 1024 * 1024
UPLOAD_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
_FILE_TYPES = {
    "application/pdf": "pdf",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "doc",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "ppt",
}
MSG_TYPES = {"image": "image", "file": "file", "voice": "audio", "video": "media"}


def file_type_for(kind: str, mime_type: str) -> str:
    """The ``file_type`` of an ``im/v1/files`` upload."""
    if kind == "voice":
        return "opus"
    if kind == "video":
        return "mp4"
    return _FILE_TYPES.get(mime_type, "stream")


def message_content(kind: str, key: str) -> tuple[str, dict[str, str]]:
    """``msg_type`` and content of the message that carries an upload."""
    if kind == "image":
        return "image", {"image_key": key}
    return MSG_TYPES[kind], {"file_key": key}


async def _authorised(
    api: FeishuApi, method: str, path: str, *, what: str, **kwargs: Any
) -> tuple[httpx.Response, dict[str, Any]]:
    """A call whose answer is JSON with ``code``; a token-invalid code is retried once."""
    token = await api.tenant_token()
    for attempt in (1, 2):
        try:
            response = await api.http.request(
                method,
                f"{api.base_url}{path}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=UPLOAD_TIMEOUT,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise FeishuUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
        body = _json(response)
        code = body.get("code") if isinstance(body.get("code"), int) else None
        if code in TOKEN_INVALID_CODES and attempt == 1:
            token = await api.tenant_token(stale=token)
            continue
        _raise_for(response, body, code, what)
        return response, body
    raise AssertionError("unreachable")  # pragma: no cover


def _raise_for(response: httpx.Response, body: dict[str, Any], code: int | None, what: str) -> None:
    status = response.status_code
    msg = str(body.get("msg") or "")
    if status == 429 or code in RATE_LIMIT_CODES:
        raise FeishuUnavailable(
            f"{what}: rate limited (HTTP {status}, code {code})",
            retry_after=_retry_after(response),
            code=code,
        )
    if code is None and 400 <= status < 500 and status != 408:
        raise FeishuApiError(-1, f"{what}: HTTP {status} without a code", http_status=status)
    if code is None or (status >= 500 and code != 0):
        raise FeishuUnavailable(
            f"{what}: HTTP {status}" + (f", code {code}" if code is not None else ""),
            retry_after=_retry_after(response),
            code=code,
        )
    if code in TOKEN_INVALID_CODES:
        raise FeishuUnavailable(f"{what}: a fresh tenant token was refused too", code=code)
    if code != 0:
        raise FeishuApiError(code, msg, http_status=status)


async def upload_image(api: FeishuApi, data: bytes, *, file_name: str, mime_type: str) -> str:
    """``im/v1/images`` → ``image_key``."""
    _, body = await _authorised(
        api,
        "POST",
        "/open-apis/im/v1/images",
        what="image upload",
        data={"image_type": "message"},
        files={"image": (file_name, data, mime_type)},
    )
    key = as_dict(body.get("data")).get("image_key")
    if not isinstance(key, str) or not key:
        raise FeishuUnavailable("image upload: the answer named no image_key")
    return key


async def upload_file(
    api: FeishuApi, data: bytes, *, kind: str, file_name: str, mime_type: str
) -> str:
    """``im/v1/files`` → ``file_key``."""
    form = {"file_type": file_type_for(kind, mime_type), "file_name": file_name}
    _, body = await _authorised(
        api,
        "POST",
        "/open-apis/im/v1/files",
        what="file upload",
        data=form,
        files={"file": (file_name, data, mime_type)},
    )
    key = as_dict(body.get("data")).get("file_key")
    if not isinstance(key, str) or not key:
        raise FeishuUnavailable("file upload: the answer named no file_key")
    return key


async def download_resource(
    api: FeishuApi, message_id: str, file_key: str, resource_type: str, *, max_bytes: int
) -> FetchedMedia:
    """The bytes of a received message's image or file, never reading past ``max_bytes``."""
    what = "resource download"
    path = f"/open-apis/im/v1/messages/{message_id}/resources/{file_key}"
    try:
        token = await api.tenant_token()
    except FeishuUnavailable as exc:
        raise MediaUnavailableError(str(exc), retry_after=exc.retry_after) from None
    except FeishuApiError as exc:
        raise MediaRejectedError(str(exc.code), exc.msg) from None
    for attempt in (1, 2):
        try:
            async with api.http.stream(
                "GET",
                f"{api.base_url}{path}",
                params={"type": resource_type},
                headers={"Authorization": f"Bearer {token}"},
                timeout=UPLOAD_TIMEOUT,
            ) as response:
                content_type = response.headers.get("content-type", "")
                if response.is_success and not content_type.startswith("application/json"):
                    declared = response.headers.get("content-length")
                    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                        raise MediaTooLargeError(
                            f"the item is {declared} bytes; the limit is {max_bytes}",
                            size=int(declared),
                        )
                    data = bytearray()
                    async for part in response.aiter_bytes():
                        data += part
                        if len(data) > max_bytes:
                            raise MediaTooLargeError(f"the item is larger than {max_bytes} bytes")
                    return FetchedMedia(
                        data=bytes(data),
                        mime_type=content_type.split(";")[0].strip() or None,
                        file_name=_file_name(response.headers),
                    )
                await response.aread()
        except httpx.HTTPError as exc:
            raise MediaUnavailableError(f"{what}: {type(exc).__name__}: {exc}") from None
        body = _json(response)
        code = body.get("code") if isinstance(body.get("code"), int) else None
        if code in TOKEN_INVALID_CODES and attempt == 1:
            token = await api.tenant_token(stale=token)
            continue
        try:
            _raise_for(response, body, code, what)
        except FeishuUnavailable as exc:
            raise MediaUnavailableError(str(exc), retry_after=exc.retry_after) from None
        except FeishuApiError as exc:
            raise MediaRejectedError(str(exc.code), exc.msg) from None
        raise MediaRejectedError("no_content", f"{what}: the answer carried no bytes")
    raise AssertionError("unreachable")  # pragma: no cover


def _file_name(headers: Mapping[str, str]) -> str | None:
    value = headers.get("content-disposition")
    if not value:
        return None
    message = Message()
    message["content-disposition"] = value
    name = message.get_filename()
    return name or None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, min(float(value), 60.0)) if value is not None else None
    except ValueError:
        return None
