"""WeChat media through the sidecar against the in-process iLink emulator (real encryption):
inbound items fetched by ``GET /media`` with each key encoding, attachments uploaded and sent,
resume after a failure between upload and message, and the typing indicator."""

from __future__ import annotations

import base64
import hashlib

import pytest

from .conftest import WeixinFactory, WeixinSidecar

pytestmark = pytest.mark.anyio

PEER = "u1@im.wechat"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3
PDF = b"%PDF-1.4\n" + b"page " * 500


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def paired(weixin: WeixinSidecar) -> str:
    _, bot = await weixin.pair("wx1")
    weixin.ilink.push(bot, PEER, "hello bot")
    await weixin.wait_events(1)
    return bot


@pytest.mark.parametrize("encoding", ["hex", "raw", "image_hex", "none"])
async def test_inbound_image_is_fetched_and_decrypted(weixin: WeixinSidecar, encoding: str) -> None:
    """A picture pushed by the emulator is a descriptor; GET /media returns the original bytes,
    whichever key encoding the item used (or none)."""
    bot = await paired(weixin)
    item = weixin.ilink.media_item(PNG, kind="image", key_encoding=encoding)
    weixin.ilink.push(bot, PEER, None, items=[item])
    events = await weixin.wait_events(2)
    [descriptor] = events[-1]["metadata"]["media"]
    assert (descriptor["kind"], events[-1]["messageType"]) == ("image", "image")
    response = await weixin.api.get(descriptor["url"])
    assert response.status_code == 200, response.text
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


async def test_inbound_file_keeps_its_name(weixin: WeixinSidecar) -> None:
    """A file item's name and size come from file_item; the bytes decrypt exactly."""
    bot = await paired(weixin)
    item = weixin.ilink.media_item(PDF, kind="file", file_name="report.pdf")
    weixin.ilink.push(bot, PEER, None, items=[item])
    events = await weixin.wait_events(2)
    [descriptor] = events[-1]["metadata"]["media"]
    assert (descriptor["fileName"], descriptor["size"]) == ("report.pdf", len(PDF))
    response = await weixin.api.get(descriptor["url"])
    assert response.content == PDF
    assert 'filename="report.pdf"' in response.headers["content-disposition"]


async def test_attachments_are_uploaded_encrypted_and_sent(weixin: WeixinSidecar) -> None:
    """A PDF and a PNG: getuploadurl, the CDN receives exactly their ciphertext (the emulator
    decrypts and checks md5/sizes), one sendmessage per part after the text."""
    bot = await paired(weixin)
    response = await weixin.send(
        "out_media",
        "two files",
        peer_id=PEER,
        attachments=[
            {"kind": "file", "data": b64(PDF), "fileName": "report.pdf"},
            {"kind": "image", "data": b64(PNG), "fileName": "chart.png"},
        ],
    )
    assert response.status_code == 200, response.text
    assert weixin.ilink.violations == []
    text, pdf, png = weixin.ilink.bots[bot].sent
    assert text["text"] == "two files"
    assert (pdf["kind"], pdf["fileName"], base64.b64decode(pdf["dataB64"])) == (
        "file",
        "report.pdf",
        PDF,
    )
    assert (png["kind"], base64.b64decode(png["dataB64"])) == ("image", PNG)
    assert response.json()["providerMessageIds"] == [
        text["messageId"],
        pdf["messageId"],
        png["messageId"],
    ]
    assert weixin.ilink.upload_count == 2


async def test_a_failed_message_after_its_upload_does_not_upload_again(
    weixin: WeixinSidecar,
) -> None:
    """sendmessage fails (5xx) after the CDN took the file: 503; the retry sends the item with
    the recorded upload, and the CDN sees one upload only."""
    bot = await paired(weixin)
    weixin.ilink.inject(bot, "sendmessage", *[{"status": 502, "body": "down"}] * 10)
    attachments = [{"kind": "image", "data": b64(PNG)}]
    first = await weixin.send("out_resume", "", peer_id=PEER, attachments=attachments)
    assert first.status_code == 503, first.text
    assert weixin.ilink.upload_count == 1
    weixin.ilink.bots[bot].faults["sendmessage"].clear()
    retry = await weixin.send("out_resume", "", peer_id=PEER, attachments=attachments)
    assert retry.status_code == 200, retry.text
    assert weixin.ilink.upload_count == 1
    [sent] = weixin.ilink.bots[bot].sent
    assert (
        hashlib.sha256(base64.b64decode(sent["dataB64"])).hexdigest()
        == hashlib.sha256(PNG).hexdigest()
    )


async def test_cdn_refusal_is_final_and_voice_is_refused_before_upload(
    weixin: WeixinSidecar,
) -> None:
    """A CDN 4xx is 502 provider_rejected; a voice attachment is 422 before any upload."""
    bot = await paired(weixin)
    weixin.ilink.inject(bot, "cdnupload", {"status": 400, "body": ""})
    refused = await weixin.send(
        "out_refused", "", peer_id=PEER, attachments=[{"kind": "image", "data": b64(PNG)}]
    )
    assert refused.status_code == 502, refused.text
    voice = await weixin.send(
        "out_voice", "", peer_id=PEER, attachments=[{"kind": "voice", "data": b64(b"#!SILK_V3")}]
    )
    assert voice.status_code == 422
    assert voice.json()["errors"][0]["path"] == "$.attachments[0].kind"
    assert weixin.vendor_requests("getuploadurl")[-1]["json"]["media_type"] == 1


async def test_typing_uses_a_cached_ticket(weixin: WeixinSidecar) -> None:
    """POST /typing: getconfig once per user (cached), then sendtyping status 1 and 2."""
    bot = await paired(weixin)
    for status in ("typing", "stop", "typing"):
        response = await weixin.api.post(
            "/typing", json={"connectionId": "wx1", "target": {"peerId": PEER}, "status": status}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"ok": True, "reason": None}
    assert weixin.ilink.bots[bot].typing == [(PEER, 1), (PEER, 2), (PEER, 1)]
    [config] = weixin.vendor_requests("getconfig")
    assert config["json"]["ilink_user_id"] == PEER
    assert config["json"]["context_token"]
    assert weixin.ilink.violations == []


async def test_cdn_outage_and_refusal_through_get_media(make_weixin: WeixinFactory) -> None:
    """The CDN down → 503 provider_unavailable with its Retry-After; the CDN refusing (an
    expired item) → 502 provider_rejected; then it works and is cached."""
    async with make_weixin(media_prefetch=False) as weixin:
        bot = await paired(weixin)
        weixin.ilink.push(bot, PEER, None, items=[weixin.ilink.media_item(PNG)])
        events = await weixin.wait_events(2)
        url = events[-1]["metadata"]["media"][0]["url"]
        weixin.ilink.download_faults.extend([{"status": 503, "retryAfter": 7}, {"status": 404}])
        down = await weixin.api.get(url)
        assert (down.status_code, down.json()["code"]) == (503, "provider_unavailable")
        assert down.headers["retry-after"] == "7"
        refused = await weixin.api.get(url)
        assert (refused.status_code, refused.json()["code"]) == (502, "provider_rejected")
        assert (await weixin.api.get(url)).content == PNG
        weixin.ilink.files.clear()  # the CDN forgot it: the cache still has it
        assert (await weixin.api.get(url)).content == PNG
