"""The SDK's media helpers against a respx-mocked sidecar: Attachment constructors, send with
attachments, get_media and its streaming variant, and the typing context manager."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
import respx

from connector_sdk import (
    Attachment,
    MediaNotFound,
    ProviderUnavailable,
    RetryPolicy,
    SidecarClient,
)

pytestmark = pytest.mark.anyio

BASE = "http://sidecar.test"
TOKEN = "sidecar-token-123"
PNG = b"\x89PNG\r\n\x1a\n" + b"x" * 100


def client() -> SidecarClient:
    return SidecarClient(BASE, token=TOKEN, retry=RetryPolicy(attempts=2, total_seconds=1))


def test_attachment_constructors(tmp_path: Path) -> None:
    """from_path reads the file and guesses type and kind from its name; from_bytes encodes
    base64; from_media takes a mediaId or a descriptor url; from_url keeps the URL."""
    path = tmp_path / "chart.png"
    path.write_bytes(PNG)
    attachment = Attachment.from_path(path)
    assert (attachment.kind, attachment.file_name, attachment.mime_type) == (
        "image",
        "chart.png",
        "image/png",
    )
    assert attachment.data is not None
    assert base64.b64decode(attachment.data) == PNG
    pdf = Attachment.from_bytes(b"%PDF", file_name="r.pdf")
    assert (pdf.kind, pdf.mime_type) == ("file", "application/pdf")
    assert Attachment.from_bytes(b"OggS", mime_type="audio/ogg").kind == "voice"
    assert Attachment.from_media("/media/med_abc", kind="image").media_id == "med_abc"
    assert Attachment.from_url("https://x.example/a.mp4", kind="video").url == (
        "https://x.example/a.mp4"
    )


@respx.mock
async def test_send_carries_attachments() -> None:
    """send(attachments=…) puts them on the wire in camelCase, with content allowed empty."""
    route = respx.post(f"{BASE}/send").respond(
        json={"ok": True, "requestId": "r1", "status": "sent", "providerMessageIds": ["a"]}
    )
    async with client() as sidecar:
        await sidecar.send(
            connection_id="c1",
            peer_id="p1",
            request_id="r1",
            attachments=[Attachment.from_bytes(PNG, file_name="a.png")],
        )
    body = json.loads(route.calls.last.request.content)
    assert body["content"] == ""
    [sent] = body["attachments"]
    assert (sent["kind"], sent["fileName"], sent["mimeType"]) == ("image", "a.png", "image/png")
    assert base64.b64decode(sent["data"]) == PNG


@respx.mock
async def test_get_media_and_streaming() -> None:
    """get_media returns the bytes (a 503 first is retried); iter_media streams them; an unknown
    id raises MediaNotFound."""
    respx.get(f"{BASE}/media/med_1").mock(
        side_effect=[
            httpx.Response(
                503,
                headers={"Retry-After": "0", "Content-Type": "application/problem+json"},
                json={"title": "x", "status": 503, "code": "provider_unavailable"},
            ),
            httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"}),
            httpx.Response(200, content=PNG, headers={"Content-Type": "image/png"}),
        ]
    )
    respx.get(f"{BASE}/media/med_none").respond(
        404, json={"title": "Not Found", "status": 404, "code": "media_not_found"}
    )
    async with client() as sidecar:
        assert await sidecar.get_media("/media/med_1") == PNG
        chunks = [chunk async for chunk in sidecar.iter_media("med_1", chunk_size=16)]
        assert b"".join(chunks) == PNG
        assert len(chunks) > 1
        with pytest.raises(MediaNotFound):
            await sidecar.get_media("med_none")


@respx.mock
async def test_get_media_gives_up_after_the_retry_budget() -> None:
    """A vendor that stays down is ProviderUnavailable once the retries are spent."""
    respx.get(f"{BASE}/media/med_2").respond(
        503,
        headers={"Retry-After": "0"},
        json={"title": "x", "status": 503, "code": "provider_unavailable"},
    )
    async with client() as sidecar:
        with pytest.raises(ProviderUnavailable):
            await sidecar.get_media("med_2")


@respx.mock
async def test_typing_context_renews_and_stops() -> None:
    """typing() sends "typing", renews it while the block runs, and "stop" at the end."""
    statuses: list[str] = []
    renewed = asyncio.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        statuses.append(json.loads(request.content)["status"])
        if statuses.count("typing") >= 3:
            renewed.set()
        return httpx.Response(200, json={"ok": True})

    respx.post(f"{BASE}/typing").mock(side_effect=answer)
    async with (
        client() as sidecar,
        sidecar.typing(connection_id="c1", peer_id="p1", interval=0.01),
    ):
        await asyncio.wait_for(renewed.wait(), 5)
    assert statuses[0] == "typing"
    assert statuses[-1] == "stop"
    assert statuses.count("stop") == 1


@respx.mock
async def test_typing_unsupported_is_asked_once() -> None:
    """A connector without typing (ok false) is not renewed nor stopped; errors never raise."""
    route = respx.post(f"{BASE}/typing").respond(json={"ok": False, "reason": "unsupported"})
    async with (
        client() as sidecar,
        sidecar.typing(connection_id="c1", peer_id="p1", interval=0.01),
    ):
        await asyncio.sleep(0.05)
    assert route.call_count == 1
    route.respond(500)
    async with (
        client() as sidecar,
        sidecar.typing(connection_id="c1", peer_id="p1", interval=0.01),
    ):
        pass


def test_echo_host_answers_an_image_with_the_same_image() -> None:
    """The echo host sends each image of an event back by its mediaId (no other kinds)."""
    from examples.echo_host.app import echo_attachments

    from connector_contracts import BridgeEvent

    event = BridgeEvent(
        event_id="evt_1",
        timestamp="2026-01-01T00:00:00Z",
        delivery_attempt=1,
        connection_id="c1",
        channel_id="sim-main",
        kind="sim",
        account_id="a",
        peer_id="p1",
        peer_type="dm",
        message_id="m1",
        message_type="image",
        content="[image]",
        metadata={
            "media": [
                {"mediaId": "med_1", "kind": "image", "url": "/media/med_1"},
                {"mediaId": "med_2", "kind": "file", "url": "/media/med_2"},
            ]
        },
    )
    [attachment] = echo_attachments(event)
    assert (attachment.kind, attachment.media_id) == ("image", "med_1")
