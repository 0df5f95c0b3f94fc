"""WeChat media at the vendor level: AES-128-ECB/PKCS7, both key encodings, CDN download and
upload, getuploadurl, and each error path (respx)."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from connector_sidecar.drivers.attachments import (
    MediaRejectedError,
    MediaTooLargeError,
    MediaUnavailableError,
)
from connector_sidecar.drivers.weixin.client import IlinkApiError, IlinkClient
from connector_sidecar.drivers.weixin.media import (
    DEFAULT_CDN_BASE_URL,
    CdnError,
    decrypt,
    download,
    encrypt,
    message_item,
    outbound_aes_key,
    padded_size,
    parse_aes_key,
    upload_request,
    upload_to_cdn,
)

pytestmark = pytest.mark.anyio

CDN = DEFAULT_CDN_BASE_URL
BASE = "https://ilinkai.weixin.qq.com"
KEY = bytes(range(16))


def ref_for(**fields: object) -> str:
    raw = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    return "wxmedia:" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_padded_size_matches_the_notes() -> None:
    """filesize = ceil((rawsize + 1) / 16) * 16: 12345 → 12352, 16 → 32, 0 → 16."""
    assert padded_size(12345) == 12352
    assert padded_size(16) == 32
    assert padded_size(0) == 16
    assert len(encrypt(b"x" * 12345, KEY)) == 12352


def test_encrypt_decrypt_round_trip_and_known_vector() -> None:
    """AES-128-ECB with PKCS7 against a fixed vector (FIPS-197 key 00..0f, one full pad block)."""
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    cipher = encrypt(plain, KEY)
    assert cipher[:16].hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert len(cipher) == 32
    assert decrypt(cipher, KEY) == plain


def test_decrypt_refuses_bad_lengths_and_padding() -> None:
    """A ciphertext that is not whole blocks, or whose padding is wrong, is a ValueError."""
    with pytest.raises(ValueError, match="whole AES blocks"):
        decrypt(b"x" * 17, KEY)
    bogus = encrypt(b"y" * 16, KEY)[:16]  # one block of data, no padding block
    with pytest.raises(ValueError, match="padding"):
        decrypt(bogus, KEY)


def test_both_inbound_key_encodings_and_the_outbound_one() -> None:
    """aes_key is base64 of 16 raw bytes or of 32 hex characters; outbound is base64(hex)."""
    raw = base64.b64encode(KEY).decode()
    hexed = base64.b64encode(KEY.hex().encode()).decode()
    assert parse_aes_key(raw) == KEY
    assert parse_aes_key(hexed) == KEY
    assert outbound_aes_key(KEY) == "MDAwMTAyMDMwNDA1MDYwNzA4MDkwYTBiMGMwZDBlMGY="
    with pytest.raises(ValueError, match="neither"):
        parse_aes_key(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError, match="not base64"):
        parse_aes_key("not base64!!")


@respx.mock
async def test_download_decrypts_with_either_key_and_prefers_the_image_hex_key() -> None:
    """GET {cdn}/download?encrypted_query_param=…; the image's hex aeskey wins over aes_key."""
    plain = b"\x89PNG\r\n\x1a\n" + b"p" * 1000
    route = respx.get(f"{CDN}/download").respond(200, content=encrypt(plain, KEY))
    async with httpx.AsyncClient() as http:
        hex_ref = ref_for(p="param/1+", k=base64.b64encode(b"\x01" * 16).decode(), hk=KEY.hex())
        assert await download(http, CDN, hex_ref, max_bytes=10_000) == plain
        assert parse_qs(urlsplit(str(route.calls.last.request.url)).query) == {
            "encrypted_query_param": ["param/1+"]
        }
        b64_ref = ref_for(p="p2", k=base64.b64encode(KEY.hex().encode()).decode())
        assert await download(http, CDN, b64_ref, max_bytes=10_000) == plain


@respx.mock
async def test_download_uses_full_url_and_plain_bytes_without_a_key() -> None:
    """full_url wins over the parameter; an item with no key is plain bytes."""
    respx.get("https://cdn.example/full").respond(200, content=b"plain")
    async with httpx.AsyncClient() as http:
        assert (
            await download(http, CDN, ref_for(u="https://cdn.example/full"), max_bytes=99)
            == b"plain"
        )


@respx.mock
async def test_download_errors() -> None:
    """4xx → rejected, 5xx and network → unavailable, too big → too large, bad padding → rejected."""
    ref = ref_for(p="x", k=base64.b64encode(KEY).decode())
    route = respx.get(f"{CDN}/download")
    async with httpx.AsyncClient() as http:
        route.respond(404, headers={"x-error-message": "expired"})
        with pytest.raises(MediaRejectedError, match="expired"):
            await download(http, CDN, ref, max_bytes=100)
        route.respond(503, headers={"Retry-After": "7"})
        with pytest.raises(MediaUnavailableError) as unavailable:
            await download(http, CDN, ref, max_bytes=100)
        assert unavailable.value.retry_after == 7
        route.side_effect = httpx.ConnectError("down")
        with pytest.raises(MediaUnavailableError):
            await download(http, CDN, ref, max_bytes=100)
        route.side_effect = None
        route.respond(200, content=encrypt(b"z" * 500, KEY))
        with pytest.raises(MediaTooLargeError):
            await download(http, CDN, ref, max_bytes=100)
        route.respond(200, content=b"q" * 32)
        with pytest.raises(MediaRejectedError, match="decrypt"):
            await download(http, CDN, ref, max_bytes=100)
        with pytest.raises(MediaRejectedError, match="reference"):
            await download(http, CDN, "wxmedia:!!!", max_bytes=100)


def test_upload_request_fields() -> None:
    """rawsize, rawfilemd5, padded filesize, media_type by kind, 32-hex aeskey, no thumb."""
    data = b"%PDF-1.4 hello"
    body = upload_request(data, kind="file", to_user="u@im.wechat", filekey="fk", key=KEY)
    assert body == {
        "filekey": "fk",
        "media_type": 3,
        "to_user_id": "u@im.wechat",
        "rawsize": len(data),
        "rawfilemd5": hashlib.md5(data).hexdigest(),  # noqa: S324
        "filesize": padded_size(len(data)),
        "no_need_thumb": True,
        "aeskey": KEY.hex(),
    }


@respx.mock
async def test_get_upload_url_call_and_its_refusal() -> None:
    """getuploadurl carries base_info and the token; a non-zero ret raises IlinkApiError."""
    route = respx.post(f"{BASE}/ilink/bot/getuploadurl").respond(json={"upload_param": "up"})
    async with httpx.AsyncClient() as http:
        client = IlinkClient(http, bot_agent="test")
        answer = await client.get_upload_url(BASE, "tok", {"filekey": "fk"})
        assert answer == {"upload_param": "up"}
        request = route.calls.last.request
        assert request.headers["Authorization"] == "Bearer tok"
        assert json.loads(request.content)["base_info"]["bot_agent"] == "test"
        route.respond(json={"ret": -1, "errmsg": "bad md5"})
        with pytest.raises(IlinkApiError, match="bad md5"):
            await client.get_upload_url(BASE, "tok", {"filekey": "fk"})


@respx.mock
async def test_cdn_upload_posts_ciphertext_and_reads_the_header() -> None:
    """POST to {cdn}/upload?encrypted_query_param=…&filekey=…; x-encrypted-param comes back."""
    route = respx.post(f"{CDN}/upload").respond(200, headers={"x-encrypted-param": "dl"})
    async with httpx.AsyncClient() as http:
        param = await upload_to_cdn(
            http, CDN, {"upload_param": "u p"}, filekey="fk", ciphertext=b"c" * 32
        )
    assert param == "dl"
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.content == b"c" * 32
    assert parse_qs(urlsplit(str(request.url)).query) == {
        "encrypted_query_param": ["u p"],
        "filekey": ["fk"],
    }


@respx.mock
async def test_cdn_upload_errors_and_retries() -> None:
    """A 4xx is final at once; a 5xx or a missing header is tried 3 times; no URL is final."""
    full = "https://cdn.example/up"
    route = respx.post(full)
    async with httpx.AsyncClient() as http:
        route.respond(400, headers={"x-error-message": "bad size"})
        with pytest.raises(CdnError) as refused:
            await upload_to_cdn(http, CDN, {"upload_full_url": full}, filekey="f", ciphertext=b"")
        assert refused.value.permanent
        assert route.call_count == 1
        route.reset()
        route.side_effect = [
            httpx.Response(500),
            httpx.Response(200),
            httpx.Response(200, headers={"x-encrypted-param": "ok"}),
        ]
        assert (
            await upload_to_cdn(http, CDN, {"upload_full_url": full}, filekey="f", ciphertext=b"")
            == "ok"
        )
        assert route.call_count == 3
        route.reset()
        route.side_effect = [httpx.Response(502)] * 3
        with pytest.raises(CdnError) as failed:
            await upload_to_cdn(http, CDN, {"upload_full_url": full}, filekey="f", ciphertext=b"")
        assert not failed.value.permanent
        with pytest.raises(CdnError, match="neither"):
            await upload_to_cdn(http, CDN, {}, filekey="f", ciphertext=b"")


def test_message_items() -> None:
    """Image: mid_size = ciphertext size; file: file_name and len as a string; voice refused."""
    record = {"param": "P", "aesKey": "K", "cipherSize": 32, "rawSize": 20}
    image = message_item("image", record, file_name="a.png")
    assert image == {
        "type": 2,
        "image_item": {
            "media": {"encrypt_query_param": "P", "aes_key": "K", "encrypt_type": 1},
            "mid_size": 32,
        },
    }
    file_item = message_item("file", record, file_name="a.pdf")["file_item"]
    assert (file_item["file_name"], file_item["len"]) == ("a.pdf", "20")
    assert message_item("video", record, file_name="v.mp4")["video_item"]["video_size"] == 32
    with pytest.raises(ValueError, match="voice"):
        message_item("voice", record, file_name="v.silk")


@respx.mock
async def test_getconfig_and_sendtyping_calls() -> None:
    """getconfig carries ilink_user_id (and context_token when known); sendtyping the ticket and
    status 1 or 2, without a context_token; a non-zero ret raises."""
    config = respx.post(f"{BASE}/ilink/bot/getconfig").respond(
        json={"ret": 0, "typing_ticket": "dGlja2V0"}
    )
    typing = respx.post(f"{BASE}/ilink/bot/sendtyping").respond(json={"ret": 0})
    async with httpx.AsyncClient() as http:
        client = IlinkClient(http, bot_agent="test")
        answer = await client.get_config(BASE, "tok", "u@im.wechat", context_token="ctx")
        assert answer["typing_ticket"] == "dGlja2V0"
        body = json.loads(config.calls.last.request.content)
        assert (body["ilink_user_id"], body["context_token"]) == ("u@im.wechat", "ctx")
        await client.get_config(BASE, "tok", "u@im.wechat", context_token=None)
        assert "context_token" not in json.loads(config.calls.last.request.content)
        await client.send_typing(BASE, "tok", "u@im.wechat", "dGlja2V0", typing=True)
        await client.send_typing(BASE, "tok", "u@im.wechat", "dGlja2V0", typing=False)
        sent = [json.loads(c.request.content) for c in typing.calls]
        assert [s["status"] for s in sent] == [1, 2]
        assert all(s["typing_ticket"] == "dGlja2V0" and "context_token" not in s for s in sent)
        config.respond(json={"ret": -14, "errcode": -14})
        with pytest.raises(IlinkApiError):
            await client.get_config(BASE, "tok", "u@im.wechat", context_token=None)
