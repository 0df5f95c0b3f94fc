"""Media end to end with real processes: the vendor emulators, ``connector-sidecar serve``, the
recording host, and the host's side through the SDK.

- WeChat: a user's picture reaches the host, which fetches it from ``/media/{id}`` byte for byte;
  the host sends a PDF and a PNG, and the emulator decrypts exactly the originals, one message
  per part. A SIGKILL while the message of an uploaded attachment is in flight: the retry after
  the restart posts it without a second upload.
- Feishu: the same both ways, through ``im/v1/images``/``files`` and message resources.
- The sim path of ``make run``: an injected image comes back from the echo host as the same image.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests import sim_api

from connector_sdk import Attachment, SidecarClient
from connector_sidecar.testing import SidecarProcess, wait_until

from ..emulators.feishu_harness import FeishuEmulatorProcess
from ..emulators.ilink import IlinkEmulatorProcess
from .conftest import RecordingHost
from .test_round_trip_e2e import local_run
from .test_weixin_e2e import pair as pair_weixin
from .test_weixin_e2e import unique_events

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]
BOT = "b0f5860fdecb@im.bot"
USER = "u1@im.wechat"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
PDF = b"%PDF-1.4\n" + b"a quarterly report " * 400


def host_fetch(sidecar: SidecarProcess, url: str) -> bytes:
    """What a host does with a descriptor: fetch its url through the SDK."""

    async def fetch() -> bytes:
        async with SidecarClient(sidecar.url, token=sidecar.token) as client:
            return await client.get_media(url)

    return asyncio.run(fetch())


def host_send(sidecar: SidecarProcess, **kwargs: Any) -> Any:
    async def send() -> Any:
        async with SidecarClient(sidecar.url, token=sidecar.token, timeout=60) as client:
            return await client.send(**kwargs)

    return asyncio.run(send())


@pytest.fixture
def ilink(tmp_path: Path) -> Iterator[IlinkEmulatorProcess]:
    emulator = IlinkEmulatorProcess(tmp_path, poll_hold_seconds=1.0)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.terminate()


def weixin_sidecar(
    factory: SidecarFactory, ilink: IlinkEmulatorProcess, host: RecordingHost
) -> SidecarProcess:
    sidecar = factory(
        env={
            "SIDECAR_CONNECTORS": "weixin",
            "WEIXIN_BASE_URL": ilink.url,
            "WEIXIN_CDN_BASE_URL": f"{ilink.url}/c2c",
            "BRIDGE_URL": host.url,
            "BRIDGE_TOKEN": host.token,
        }
    )
    sidecar.start()
    return sidecar


def test_weixin_picture_in_and_files_out(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """A picture reaches the host and fetches byte-identical; a PDF and a PNG go out encrypted,
    and the emulator decrypts exactly the originals, one message per part after the text."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host)
    with sidecar.client() as client:
        pair_weixin(client, ilink, "wx1", BOT)
    item = ilink.call("POST", "/_emulator/media", {"dataB64": base64.b64encode(PNG).decode()})
    ilink.push(BOT, [{"from": USER, "items": [item["item"]]}])
    [event] = wait_until(lambda: unique_events(recording_host), timeout=20, what="the picture")
    assert event["messageType"] == "image"
    [descriptor] = event["metadata"]["media"]
    assert descriptor["mediaId"].startswith("med_")
    assert host_fetch(sidecar, descriptor["url"]) == PNG

    result = host_send(
        sidecar,
        connection_id="wx1",
        peer_id=USER,
        request_id="out_e2e_media",
        content="your files",
        attachments=[
            Attachment.from_bytes(PDF, file_name="report.pdf"),
            Attachment.from_bytes(PNG, file_name="chart.png"),
        ],
    )
    assert result.status == "sent"
    sent = ilink.sent(BOT)
    assert [s.get("kind") for s in sent] == [None, "file", "image"]
    assert base64.b64decode(sent[1]["dataB64"]) == PDF
    assert sent[1]["fileName"] == "report.pdf"
    assert base64.b64decode(sent[2]["dataB64"]) == PNG
    assert result.provider_message_ids == [s["messageId"] for s in sent]
    assert ilink.violations() == []


def test_weixin_sigkill_between_upload_and_message_does_not_upload_again(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """The sidecar dies (SIGKILL) while the message of an uploaded file is in flight; after a
    restart the host's retry posts it without a second upload."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host)
    with sidecar.client() as client:
        pair_weixin(client, ilink, "wx1", BOT)
        ilink.push(BOT, [{"from": USER, "text": "send me the report"}])
        wait_until(lambda: unique_events(recording_host), timeout=20, what="the request")
        # The next sendmessage hangs (then fails): the kill lands between upload and message.
        ilink.faults(BOT, responses={"sendmessage": [{"delayMs": 60000, "status": 502}]})
        body = {
            "requestId": "out_e2e_kill",
            "connectionId": "wx1",
            "target": {"peerId": USER, "peerType": "dm"},
            "content": "",
            "attachments": [
                {"kind": "file", "data": base64.b64encode(PDF).decode(), "fileName": "r.pdf"}
            ],
        }
        with pytest.raises(httpx.ReadTimeout):
            client.post("/send", json=body, timeout=3)
    wait_until(
        lambda: ilink.call("GET", "/_emulator/requests?path=/ilink/bot/sendmessage")["items"],
        timeout=20,
        what="the attachment's sendmessage",
    )
    assert ilink.call("GET", "/_emulator/uploads")["count"] == 1
    sidecar.kill()
    sidecar.start()
    with sidecar.client() as client:
        retry = client.post("/send", json=body, timeout=60)
    assert retry.status_code == 200, retry.text
    assert ilink.call("GET", "/_emulator/uploads")["count"] == 1
    [sent] = ilink.sent(BOT)
    assert base64.b64decode(sent["dataB64"]) == PDF
    assert ilink.violations() == []


@pytest.fixture
def feishu(tmp_path: Path) -> Iterator[FeishuEmulatorProcess]:
    process = FeishuEmulatorProcess(tmp_path / "emulator")
    process.start()
    try:
        yield process
    finally:
        process.terminate()


def test_feishu_picture_in_and_files_out(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, feishu: FeishuEmulatorProcess
) -> None:
    """A picture message reaches the host, fetched byte-identical from the message resources;
    a PDF and a PNG are uploaded and sent as file and image messages."""
    app = feishu.create_app(appSecret="s3cret")
    sidecar = sidecar_factory(
        env={
            **feishu.sidecar_env(),
            "SIDECAR_CONNECTORS": "feishu",
            "BRIDGE_URL": recording_host.url,
            "BRIDGE_TOKEN": recording_host.token,
        }
    )
    sidecar.start()
    with sidecar.client() as client:
        started = client.post(
            "/connector-sessions",
            json={
                "kind": "feishu",
                "connectionId": "fs1",
                "channelId": "feishu-fs1",
                "options": {"appId": app["appId"], "appSecret": "s3cret"},
            },
        )
        assert started.status_code == 201, started.text
        wait_until(
            lambda: client.get("/connections/fs1").json().get("status") == "connected",
            timeout=20,
            what="the Feishu connection",
        )
    wait_until(
        lambda: feishu.ws_state(app["appId"])["connected"], timeout=20, what="the long connection"
    )
    key = feishu.post(
        f"/apps/{app['appId']}/resources",
        {"dataB64": base64.b64encode(PNG).decode(), "fileType": "image", "fileName": "p.png"},
    )["key"]
    feishu.push(
        app["appId"], chatType="p2p", chatId="oc_chat", msgType="image", content={"image_key": key}
    )
    [event] = wait_until(
        lambda: recording_host.accepted(), timeout=20, what="the picture at the host"
    )
    [descriptor] = event["metadata"]["media"]
    assert host_fetch(sidecar, descriptor["url"]) == PNG

    result = host_send(
        sidecar,
        connection_id="fs1",
        peer_id="oc_chat",
        request_id="out_fs_media",
        content="files",
        attachments=[
            Attachment.from_bytes(PDF, file_name="report.pdf"),
            Attachment.from_bytes(PNG, file_name="chart.png"),
        ],
    )
    assert result.status == "sent"
    sent = feishu.sent(app["appId"])
    assert [s["msgType"] for s in sent] == ["text", "file", "image"]
    assert base64.b64decode(sent[1]["dataB64"]) == PDF
    assert base64.b64decode(sent[2]["dataB64"]) == PNG


def test_make_run_echoes_an_image(tmp_path: Path) -> None:
    """``make run``'s launcher: an injected image comes back from the echo host as the same
    image; ``sent`` shows its sha256."""
    with local_run(tmp_path) as run:
        with run.client() as client:
            sim_api.pair(client, "demo")
            injected = client.post(
                "/sim/connections/demo/messages",
                json={
                    "peerId": "alice",
                    "content": "",
                    "media": [
                        {
                            "kind": "image",
                            "data": base64.b64encode(PNG).decode(),
                            "fileName": "cat.png",
                        }
                    ],
                },
            )
            assert injected.status_code == 202, injected.text

            def echoed_image() -> list[dict[str, Any]]:
                items = client.get("/sim/connections/demo/sent").json()["items"]
                return [i for i in items if i["kind"] == "image"]

            [image] = wait_until(echoed_image, timeout=30, what="the echoed image")
            assert image["sha256"] == hashlib.sha256(PNG).hexdigest()
            assert image["fileName"] == "cat.png"
            texts = [i["content"] for i in client.get("/sim/connections/demo/sent").json()["items"]]
            assert "echo: [image]" in texts
        assert run.stop() == 0
