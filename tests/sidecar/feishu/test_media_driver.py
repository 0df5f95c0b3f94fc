"""Feishu media through the sidecar against the in-process emulator: a received image served
by ``GET /media``, attachments uploaded (images/files) and sent with their msg_type, a retry
that does not upload again, and the limits checked before any upload."""

from __future__ import annotations

import base64
import json

import pytest

from ...emulators.feishu import Fault, Resource
from .conftest import FeishuSidecar

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
PDF = b"%PDF-1.4\n" + b"page " * 500


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_received_image_is_served(feishu: FeishuSidecar) -> None:
    """An image message names a resource; GET /media fetches it from the message resources."""
    app = feishu.new_app()
    await feishu.pair(app)
    key = "img_v3_in"
    feishu.emulator.resources[key] = Resource(app.app_id, "image", PNG, "photo.png")
    await feishu.push(app, chatType="p2p", msgType="image", content={"image_key": key})
    [event] = await feishu.wait_events(1)
    [descriptor] = event["metadata"]["media"]
    assert descriptor["kind"] == "image"
    response = await feishu.api.get(descriptor["url"])
    assert response.status_code == 200, response.text
    assert response.content == PNG
    [call] = [c for c in feishu.emulator.calls if "/resources/" in c["path"]]
    assert call["query"] == {"type": "image"}


async def test_received_file_that_is_gone_is_502(feishu: FeishuSidecar) -> None:
    """A resource the vendor no longer has is 502 provider_rejected."""
    app = feishu.new_app()
    await feishu.pair(app)
    await feishu.push(
        app, chatType="p2p", msgType="file", content={"file_key": "nope", "file_name": "a.pdf"}
    )
    [event] = await feishu.wait_events(1)
    [descriptor] = event["metadata"]["media"]
    assert descriptor["fileName"] == "a.pdf"
    response = await feishu.api.get(descriptor["url"])
    assert response.status_code == 502
    assert response.json()["code"] == "provider_rejected"


async def test_attachments_are_uploaded_and_sent(feishu: FeishuSidecar) -> None:
    """A PDF (im/v1/files, msg_type file) and a PNG (im/v1/images, msg_type image) after the
    text, each with its own uuid; the emulator holds exactly the original bytes."""
    app = feishu.new_app()
    await feishu.pair(app)
    response = await feishu.send(
        "req-media",
        "files",
        peer_id="oc_room",
        attachments=[
            {"kind": "file", "data": b64(PDF), "fileName": "report.pdf"},
            {"kind": "image", "data": b64(PNG)},
        ],
    )
    assert response.status_code == 200, response.text
    text, pdf, png = feishu.emulator.sent
    assert (text["msgType"], pdf["msgType"], png["msgType"]) == ("text", "file", "image")
    assert base64.b64decode(pdf["dataB64"]) == PDF
    assert pdf["fileName"] == "report.pdf"
    assert base64.b64decode(png["dataB64"]) == PNG
    assert len({text["uuid"], pdf["uuid"], png["uuid"]}) == 3
    assert response.json()["providerMessageIds"] == [s["messageId"] for s in (text, pdf, png)]
    [files_call] = [c for c in feishu.emulator.calls if c["path"].endswith("/im/v1/files")]
    assert 'name="file_type"\r\n\r\npdf' in files_call["body"]


async def test_retry_after_a_failed_message_does_not_upload_again(feishu: FeishuSidecar) -> None:
    """The upload succeeds, the message fails (5xx): a retry posts it with the recorded key."""
    app = feishu.new_app()
    await feishu.pair(app)
    feishu.emulator.faults.append(Fault("create", 503, 1, "busy", None, 10))
    attachments = [{"kind": "image", "data": b64(PNG)}]
    first = await feishu.send("req-resume", "", peer_id="oc_room", attachments=attachments)
    assert first.status_code == 503, first.text
    assert feishu.emulator.uploads == 1
    feishu.emulator.faults.clear()
    retry = await feishu.send("req-resume", "", peer_id="oc_room", attachments=attachments)
    assert retry.status_code == 200, retry.text
    assert feishu.emulator.uploads == 1
    [sent] = feishu.emulator.sent
    assert json.loads(sent["content"])["image_key"].startswith("img_v3_")


async def test_vendor_limits_before_upload(feishu: FeishuSidecar) -> None:
    """Voice must be Opus and video MP4 (422 naming the kind); nothing is uploaded."""
    app = feishu.new_app()
    await feishu.pair(app)
    voice = await feishu.send(
        "req-voice", "", peer_id="oc_room", attachments=[{"kind": "voice", "data": b64(PDF)}]
    )
    assert voice.status_code == 422
    assert voice.json()["errors"][0]["path"] == "$.attachments[0].kind"
    assert feishu.emulator.uploads == 0
