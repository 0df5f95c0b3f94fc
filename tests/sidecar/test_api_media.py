"""Media through the API, against the sim: inbound descriptors, ``GET /media``, the media
cache's bounds, attachments on ``POST /send`` (parts, ledger resume, fingerprint, limits,
sources), and ``POST /typing``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import httpx
import pytest

from connector_sidecar.drivers.sim import SimDriver

from .conftest import Sidecar, SidecarFactory, assert_problem, send_body

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + b"report " * 300


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def inject_image(sidecar: Sidecar, data: bytes = PNG, **fields: Any) -> dict[str, Any]:
    """Inject a message with one image; return the descriptor of the stored event."""
    response = await sidecar.inbound(
        content="",
        media=[{"kind": "image", "data": b64(data), "fileName": "cat.png"}],
        **fields,
    )
    assert response.status_code == 202, response.text
    event_id = response.json()["eventId"]
    page = (await sidecar.client.get("/deliveries", params={"status": "pending"})).json()
    [event] = [d["event"] for d in page["items"] if d["eventId"] == event_id]
    assert event["messageType"] == "image"
    assert event["content"] == "[image]"
    [descriptor] = event["metadata"]["media"]
    return dict(descriptor)


def sim_driver(sidecar: Sidecar) -> SimDriver:
    driver = sidecar.app.state.services.runtime.drivers["sim"]
    assert isinstance(driver, SimDriver)
    return driver


async def test_inbound_media_gets_a_descriptor_and_is_served(paired: Sidecar) -> None:
    """An injected image becomes metadata.media[0] with mediaId/kind/mimeType/fileName/size/url,
    and GET /media/{id} answers the same bytes with type, length and file name."""
    descriptor = await inject_image(paired)
    assert descriptor["mediaId"].startswith("med_")
    assert descriptor["kind"] == "image"
    assert descriptor["mimeType"] == "image/png"
    assert descriptor["fileName"] == "cat.png"
    assert descriptor["size"] == len(PNG)
    assert descriptor["url"] == f"/media/{descriptor['mediaId']}"
    response = await paired.client.get(descriptor["url"])
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-length"] == str(len(PNG))
    assert 'filename="cat.png"' in response.headers["content-disposition"]


async def test_the_same_vendor_item_keeps_its_media_id(paired: Sidecar) -> None:
    """A redelivery of the same message (same messageId) names its media with the same mediaId."""
    first = await inject_image(paired, messageId="m-1")
    again = await paired.inbound(
        content="", media=[{"kind": "image", "data": b64(PNG)}], messageId="m-1"
    )
    assert again.status_code == 202
    other = await inject_image(paired, messageId="m-2")
    assert first["mediaId"] != other["mediaId"]
    record = await paired.app.state.services.store.db.run(
        paired.app.state.services.store.media.get, first["mediaId"]
    )
    assert record is not None
    assert record.message_id == "m-1"


async def test_media_errors(make_sidecar: SidecarFactory) -> None:
    """Unknown id → 404 media_not_found; over MEDIA_MAX_BYTES → 413 media_too_large without a
    fetch; a vendor that lost the item → 502 provider_rejected; no token → 401."""
    async with make_sidecar(media_max_bytes=2048, media_prefetch=False) as sidecar:
        await sidecar.pair()
        assert_problem(await sidecar.client.get("/media/med_nope"), 404, "media_not_found")
        big = await inject_image(sidecar, b"\x89PNG\r\n\x1a\n" + b"b" * 4000)
        assert_problem(await sidecar.client.get(big["url"]), 413, "media_too_large")
        gone = await inject_image(sidecar, b"\x89PNG\r\n\x1a\n" + b"gone")
        (
            sidecar.settings.data_dir
            / "sim-media"
            / hashlib.sha256(b"\x89PNG\r\n\x1a\n" + b"gone").hexdigest()
        ).unlink()
        assert_problem(await sidecar.client.get(gone["url"]), 502, "provider_rejected")
        anonymous = await sidecar.client.get(big["url"], headers={"Authorization": ""})
        assert_problem(anonymous, 401, "unauthorized")


async def test_prefetch_caches_right_after_ingest(make_sidecar: SidecarFactory) -> None:
    """With MEDIA_PREFETCH the item is fetched in the background: the cached file appears
    without any GET, and a GET serves it even after the vendor's copy is gone."""
    async with make_sidecar() as sidecar:
        await sidecar.pair()
        descriptor = await inject_image(sidecar)
        cached = sidecar.settings.media_dir / "in" / descriptor["mediaId"]
        for _ in range(250):
            if cached.exists():
                break
            await asyncio.sleep(0.02)
        assert cached.read_bytes() == PNG
        for path in (sidecar.settings.data_dir / "sim-media").iterdir():
            path.unlink()
        response = await sidecar.client.get(descriptor["url"])
        assert response.content == PNG


async def test_cache_evicts_oldest_first(make_sidecar: SidecarFactory) -> None:
    """Over MEDIA_CACHE_BYTES the oldest cached items go; an evicted item is fetched again."""
    async with make_sidecar(media_cache_bytes=2500, media_prefetch=False) as sidecar:
        await sidecar.pair()
        items = [await inject_image(sidecar, PNG + bytes([i])) for i in range(3)]
        for item in items:
            assert (await sidecar.client.get(item["url"])).status_code == 200
        cache = sidecar.settings.media_dir / "in"
        assert not (cache / items[0]["mediaId"]).exists()
        assert (cache / items[2]["mediaId"]).exists()
        again = await sidecar.client.get(items[0]["url"])
        assert again.content == PNG + bytes([0])


async def test_send_with_attachments_sends_text_then_each_part(paired: Sidecar) -> None:
    """Text first, then each attachment as its own message; providerMessageIds lists all;
    /sent shows kind, fileName, mimeType, size and sha256 of each part."""
    response = await paired.client.post(
        "/send",
        json=send_body(
            "out_media_1",
            "here you go",
            attachments=[
                {"kind": "file", "data": b64(PDF), "fileName": "report.pdf"},
                {"kind": "image", "data": b64(PNG)},
            ],
        ),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "sent"
    assert len(result["providerMessageIds"]) == 3
    text, pdf, png = await paired.sent()
    assert (text["content"], text["kind"]) == ("here you go", None)
    assert (pdf["kind"], pdf["fileName"], pdf["mimeType"], pdf["size"]) == (
        "file",
        "report.pdf",
        "application/pdf",
        len(PDF),
    )
    assert pdf["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert (png["kind"], png["mimeType"], png["sha256"]) == (
        "image",
        "image/png",
        hashlib.sha256(PNG).hexdigest(),
    )
    assert [i["providerMessageId"] for i in (text, pdf, png)] == result["providerMessageIds"]
    repeat = await paired.client.post(
        "/send",
        json=send_body(
            "out_media_1",
            "here you go",
            attachments=[
                {"kind": "file", "data": b64(PDF), "fileName": "report.pdf"},
                {"kind": "image", "data": b64(PNG)},
            ],
        ),
    )
    assert repeat.json()["duplicate"] is True
    assert len(await paired.sent()) == 3


async def test_attachment_only_send_and_media_id_source(paired: Sidecar) -> None:
    """content may be empty with attachments; a mediaId source sends the inbound item back."""
    descriptor = await inject_image(paired)
    response = await paired.client.post(
        "/send",
        json=send_body(
            "out_echo", "", attachments=[{"kind": "image", "mediaId": descriptor["mediaId"]}]
        ),
    )
    assert response.status_code == 200, response.text
    [part] = await paired.sent()
    assert part["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert part["fileName"] == "cat.png"


async def test_a_different_file_under_the_same_request_id_conflicts(paired: Sidecar) -> None:
    """The fingerprint covers the attachments by content hash: another file → 422 conflict."""
    first = send_body("out_fp", "x", attachments=[{"kind": "image", "data": b64(PNG)}])
    assert (await paired.client.post("/send", json=first)).status_code == 200
    other = send_body("out_fp", "x", attachments=[{"kind": "image", "data": b64(PNG + b"!")}])
    assert_problem(await paired.client.post("/send", json=other), 422, "request_id_conflict")


async def test_upload_failure_resumes_without_uploading_again(paired: Sidecar) -> None:
    """A send whose message fails after its upload answers 503; the retry posts the message
    without a second upload, and the text chunk is not sent again either."""
    body = send_body("out_resume", "caption", attachments=[{"kind": "image", "data": b64(PNG)}])
    # The text chunk and the upload succeed, then the attachment's message fails.
    await paired.faults(sendFailures=1, sendFailuresAfter=1)
    assert_problem(await paired.client.post("/send", json=body), 503, "provider_unavailable")
    assert sim_driver(paired).uploads["conn_1"] == 1
    assert len(await paired.sent()) == 1
    retry = await paired.client.post("/send", json=body)
    assert retry.status_code == 200, retry.text
    assert sim_driver(paired).uploads["conn_1"] == 1
    assert [i["kind"] for i in await paired.sent()] == [None, "image"]


async def test_upload_faults(paired: Sidecar) -> None:
    """A transient upload failure is 503 and resumable; a refused upload is 502, final."""
    await paired.faults(uploadFailures=1)
    body = send_body("out_up", "", attachments=[{"kind": "file", "data": b64(PDF)}])
    assert_problem(await paired.client.post("/send", json=body), 503, "provider_unavailable")
    assert (await paired.client.post("/send", json=body)).status_code == 200
    await paired.faults(uploadRejects=1)
    refused = send_body("out_up2", "", attachments=[{"kind": "file", "data": b64(PDF)}])
    assert_problem(await paired.client.post("/send", json=refused), 502, "provider_rejected")
    assert_problem(await paired.client.post("/send", json=refused), 502, "provider_rejected")


async def test_attachment_validation(make_sidecar: SidecarFactory) -> None:
    """Exactly one source (422 naming the attachment), base64, http(s) URLs, mediaId form,
    and MEDIA_MAX_BYTES (413 attachment_too_large) are checked before anything is sent."""
    async with make_sidecar(media_max_bytes=2048) as sidecar:
        await sidecar.pair()
        cases: list[tuple[dict[str, Any], str]] = [
            ({"kind": "image"}, "$.attachments[0]"),
            ({"kind": "image", "data": b64(PNG), "url": "https://x.example/a"}, "$.attachments[0]"),
            ({"kind": "image", "data": "!!not base64!!"}, "$.attachments[0].data"),
            ({"kind": "image", "url": "ftp://x.example/a"}, "$.attachments[0].url"),
            ({"kind": "image", "mediaId": "abc"}, "$.attachments[0].mediaId"),
            ({"kind": "image", "mediaId": "med_unknown"}, "$.attachments[0].mediaId"),
            ({"kind": "sticker", "data": b64(PNG)}, "$.attachments[0].kind"),
        ]
        for index, (attachment, path) in enumerate(cases):
            body = send_body(f"out_bad_{index}", "x", attachments=[attachment])
            problem = assert_problem(
                await sidecar.client.post("/send", json=body), 422, "validation_failed"
            )
            assert problem["detail"].startswith(path), (attachment, problem)
        big = send_body("out_big", "x", attachments=[{"kind": "file", "data": b64(b"z" * 5000)}])
        assert_problem(await sidecar.client.post("/send", json=big), 413, "attachment_too_large")
        assert await sidecar.sent() == []


async def test_url_sources_refuse_private_addresses(paired: Sidecar) -> None:
    """A url on loopback is refused unless MEDIA_FETCH_ALLOW_PRIVATE (the default is off)."""
    body = send_body(
        "out_url", "", attachments=[{"kind": "image", "url": "http://127.0.0.1:9/cat.png"}]
    )
    problem = assert_problem(await paired.client.post("/send", json=body), 422, "validation_failed")
    assert "private" in problem["detail"]


async def test_url_source_fetched_when_private_is_allowed(make_sidecar: SidecarFactory) -> None:
    """With MEDIA_FETCH_ALLOW_PRIVATE the sidecar fetches the URL and sends its bytes."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from connector_sidecar.testing import free_port

    async def cat(request: Any) -> Response:
        return Response(PNG, media_type="image/png")

    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    stop = asyncio.Event()
    server = asyncio.ensure_future(
        hypercorn.asyncio.serve(
            Starlette(routes=[Route("/cat.png", cat)]),  # type: ignore[arg-type]
            config,
            shutdown_trigger=stop.wait,
        )
    )
    try:
        async with make_sidecar(media_fetch_allow_private=True) as sidecar:
            await sidecar.pair()
            url = f"http://127.0.0.1:{port}/cat.png"
            for _ in range(250):
                try:
                    async with httpx.AsyncClient() as probe:
                        await probe.get(url)
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            body = send_body("out_url_ok", "", attachments=[{"kind": "image", "url": url}])
            response = await sidecar.client.post("/send", json=body)
            assert response.status_code == 200, response.text
            [part] = await sidecar.sent()
            assert (part["fileName"], part["sha256"]) == (
                "cat.png",
                hashlib.sha256(PNG).hexdigest(),
            )
    finally:
        stop.set()
        await server


async def test_typing_on_the_sim_is_unsupported(paired: Sidecar) -> None:
    """The sim has no typing indicator: 200 ok false, reason unsupported; unknown → 404."""
    body = {"connectionId": "conn_1", "target": {"peerId": "peer-1"}, "status": "typing"}
    response = await paired.client.post("/typing", json=body)
    assert response.status_code == 200
    assert response.json() == {"ok": False, "reason": "unsupported"}
    missing = await paired.client.post("/typing", json={**body, "connectionId": "nope"})
    assert_problem(missing, 404, "connection_not_found")


async def test_capabilities_list_media(sidecar: Sidecar) -> None:
    """Each connector lists send_media/receive_media; only WeChat lists typing."""
    kinds = {c["kind"]: c["capabilities"] for c in (await sidecar.client.get("/connectors")).json()}
    for kind in ("sim", "weixin", "feishu"):
        assert {"send_media", "receive_media"} <= set(kinds[kind])
    assert "typing" in kinds["weixin"]
    assert "typing" not in kinds["sim"]
    assert "typing" not in kinds["feishu"]


async def test_a_deferred_send_with_an_attachment_goes_out_when_the_peer_writes(
    paired: Sidecar,
) -> None:
    """A closed reply window defers the whole send; the peer's next message flushes it,
    attachment included, from the bytes the sidecar kept."""
    await paired.faults(replyWindowClosed=True)
    body = send_body("out_deferred", "later", attachments=[{"kind": "file", "data": b64(PDF)}])
    response = await paired.client.post("/send", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "deferred"
    assert (await paired.inbound(content="I'm back")).status_code == 202
    for _ in range(250):
        if (await paired.client.get("/send/out_deferred")).json()["status"] == "sent":
            break
        await asyncio.sleep(0.02)
    parts = await paired.sent()
    assert [p["kind"] for p in parts] == [None, "file"]
    assert parts[1]["sha256"] == hashlib.sha256(PDF).hexdigest()


async def test_send_takes_a_body_above_one_mib_other_routes_do_not(paired: Sidecar) -> None:
    """/send accepts MEDIA_MAX_BYTES in base64 (here 1.5 MiB of file); other routes keep 1 MiB."""
    big = bytes(range(256)) * 6144  # 1.5 MiB
    body = send_body("out_big_ok", "", attachments=[{"kind": "file", "data": b64(big)}])
    response = await paired.client.post("/send", json=body)
    assert response.status_code == 200, response.text
    [part] = await paired.sent()
    assert part["sha256"] == hashlib.sha256(big).hexdigest()
    too_big = await paired.client.post(
        "/connector-sessions", content=b"{" + b" " * (1024 * 1024 + 1) + b"}"
    )
    assert_problem(too_big, 413, "body_too_large")


def test_feishu_limits_by_kind() -> None:
    """Feishu's own limits: images 10 MB, files 30 MB (413), Opus voice, MP4 video, no empty file."""
    from connector_sidecar.drivers.feishu import FeishuDriver

    check = FeishuDriver.attachment_problem
    driver = FeishuDriver.__new__(FeishuDriver)
    assert check(driver, "image", "image/png", 11 * 1024 * 1024) is not None
    assert check(driver, "image", "image/png", 11 * 1024 * 1024)[0] == 413  # type: ignore[index]
    assert check(driver, "file", "application/pdf", 20 * 1024 * 1024) is None
    assert check(driver, "file", "application/pdf", 31 * 1024 * 1024)[0] == 413  # type: ignore[index]
    assert check(driver, "voice", "audio/mpeg", 100)[0] == 422  # type: ignore[index]
    assert check(driver, "voice", "audio/ogg", 100) is None
    assert check(driver, "video", "video/quicktime", 100)[0] == 422  # type: ignore[index]
    assert check(driver, "file", "text/plain", 0)[0] == 422  # type: ignore[index]


async def test_housekeeping_forgets_old_media(make_sidecar: SidecarFactory) -> None:
    """Items older than the retention of delivered events are forgotten with their files."""
    from .conftest import FakeClock

    clock = FakeClock()
    async with make_sidecar(clock=clock, media_prefetch=False) as sidecar:
        await sidecar.pair()
        descriptor = await inject_image(sidecar)
        assert (await sidecar.client.get(descriptor["url"])).status_code == 200
        cache = sidecar.app.state.services.media
        assert await cache.housekeeping() == 0
        clock.advance(sidecar.settings.delivered_retention_seconds + 1)
        assert await cache.housekeeping() == 1
        assert not cache.path_for(descriptor["mediaId"]).exists()
        assert_problem(await sidecar.client.get(descriptor["url"]), 404, "media_not_found")
