"""Feishu media at the vendor level (respx): image and file uploads, message resources, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from connector_sidecar.drivers.attachments import (
    MediaRejectedError,
    MediaTooLargeError,
    MediaUnavailableError,
)
from connector_sidecar.drivers.feishu.api import (
    FeishuApi,
    FeishuApiError,
    FeishuUnavailable,
    TokenCache,
)
from connector_sidecar.drivers.feishu.media import (
    download_resource,
    file_type_for,
    message_content,
    upload_file,
    upload_image,
)

pytestmark = pytest.mark.anyio

BASE = "https://open.feishu.cn"
TOKEN_URL = f"{BASE}/open-apis/auth/v3/tenant_access_token/internal"
PNG = b"\x89PNG\r\n\x1a\n" + b"i" * 64


@pytest.fixture
async def api() -> AsyncIterator[FeishuApi]:
    async with httpx.AsyncClient() as http:
        yield FeishuApi(http, BASE, "cli_1", "secret", tokens=TokenCache())


def token_route(*tokens: str) -> respx.Route:
    return respx.post(TOKEN_URL).mock(
        side_effect=[
            httpx.Response(200, json={"code": 0, "tenant_access_token": t, "expire": 7200})
            for t in tokens
        ]
    )


@respx.mock
async def test_image_upload_is_multipart_with_image_type_message(api: FeishuApi) -> None:
    """POST im/v1/images: image_type=message and the image part; data.image_key comes back."""
    token_route("t-1")
    route = respx.post(f"{BASE}/open-apis/im/v1/images").respond(
        json={"code": 0, "data": {"image_key": "img_1"}}
    )
    assert await upload_image(api, PNG, file_name="a.png", mime_type="image/png") == "img_1"
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer t-1"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    body = request.content
    assert b'name="image_type"\r\n\r\nmessage' in body
    assert b'name="image"; filename="a.png"' in body
    assert PNG in body


@respx.mock
async def test_file_upload_names_type_and_file(api: FeishuApi) -> None:
    """POST im/v1/files: file_type from the MIME type (pdf), file_name and the file part."""
    token_route("t-1")
    route = respx.post(f"{BASE}/open-apis/im/v1/files").respond(
        json={"code": 0, "data": {"file_key": "file_1"}}
    )
    key = await upload_file(
        api, b"%PDF-1.4", kind="file", file_name="r.pdf", mime_type="application/pdf"
    )
    assert key == "file_1"
    body = route.calls.last.request.content
    assert b'name="file_type"\r\n\r\npdf' in body
    assert b'name="file_name"\r\n\r\nr.pdf' in body
    assert file_type_for("voice", "audio/ogg") == "opus"
    assert file_type_for("video", "video/mp4") == "mp4"
    assert file_type_for("file", "application/zip") == "stream"
    assert message_content("voice", "k") == ("audio", {"file_key": "k"})
    assert message_content("video", "k") == ("media", {"file_key": "k"})
    assert message_content("image", "k") == ("image", {"image_key": "k"})


@respx.mock
async def test_upload_errors(api: FeishuApi) -> None:
    """A refusal code → FeishuApiError; a rate limit or 5xx → FeishuUnavailable; a stale
    token is refreshed once."""
    token_route("t-1", "t-2")
    route = respx.post(f"{BASE}/open-apis/im/v1/images")
    route.respond(400, json={"code": 234001, "msg": "invalid image"})
    with pytest.raises(FeishuApiError, match="invalid image"):
        await upload_image(api, PNG, file_name="a.png", mime_type="image/png")
    route.respond(400, json={"code": 99991400, "msg": "too fast"}, headers={"Retry-After": "3"})
    with pytest.raises(FeishuUnavailable) as limited:
        await upload_image(api, PNG, file_name="a.png", mime_type="image/png")
    assert limited.value.retry_after == 3
    route.respond(502, text="bad gateway")
    with pytest.raises(FeishuUnavailable):
        await upload_image(api, PNG, file_name="a.png", mime_type="image/png")
    route.side_effect = [
        httpx.Response(400, json={"code": 99991663, "msg": "token expired"}),
        httpx.Response(200, json={"code": 0, "data": {"image_key": "img_2"}}),
    ]
    assert await upload_image(api, PNG, file_name="a.png", mime_type="image/png") == "img_2"
    assert route.calls.last.request.headers["Authorization"] == "Bearer t-2"


@respx.mock
async def test_resource_download(api: FeishuApi) -> None:
    """GET …/messages/{id}/resources/{key}?type=…: bytes, type and the Content-Disposition name."""
    token_route("t-1")
    route = respx.get(f"{BASE}/open-apis/im/v1/messages/om_1/resources/file_1").respond(
        200,
        content=b"%PDF-1.4 body",
        headers={
            "Content-Type": "application/pdf",
            "Content-Disposition": 'attachment; filename="report.pdf"',
        },
    )
    fetched = await download_resource(api, "om_1", "file_1", "file", max_bytes=1000)
    assert fetched.data == b"%PDF-1.4 body"
    assert (fetched.mime_type, fetched.file_name) == ("application/pdf", "report.pdf")
    assert route.calls.last.request.url.params["type"] == "file"


@respx.mock
async def test_resource_download_errors(api: FeishuApi) -> None:
    """Code ≠ 0 → rejected; 5xx → unavailable; over the limit → too large (declared or read)."""
    token_route("t-1")
    route = respx.get(f"{BASE}/open-apis/im/v1/messages/om_1/resources/k")
    route.respond(400, json={"code": 234003, "msg": "file not exist"})
    with pytest.raises(MediaRejectedError, match="file not exist"):
        await download_resource(api, "om_1", "k", "image", max_bytes=10)
    route.respond(503, json={"code": 1, "msg": "busy"}, headers={"Retry-After": "9"})
    with pytest.raises(MediaUnavailableError) as down:
        await download_resource(api, "om_1", "k", "image", max_bytes=10)
    assert down.value.retry_after == 9
    route.respond(200, content=b"x" * 100, headers={"Content-Type": "image/png"})
    with pytest.raises(MediaTooLargeError):
        await download_resource(api, "om_1", "k", "image", max_bytes=10)
    route.side_effect = httpx.ReadTimeout("slow")
    with pytest.raises(MediaUnavailableError):
        await download_resource(api, "om_1", "k", "image", max_bytes=10)
