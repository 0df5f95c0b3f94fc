"""The iLink client with respx: exact request shapes and headers, and what answers mean."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx

from connector_sidecar.drivers.weixin.client import (
    CLIENT_VERSION,
    IlinkApiError,
    IlinkClient,
    IlinkTransportError,
    random_uin,
)

BASE = "https://ilinkai.weixin.qq.com"
APP_HEADERS = {"ilink-app-id": "bot", "ilink-app-clientversion": "132105"}


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def ilink() -> AsyncIterator[IlinkClient]:
    async with httpx.AsyncClient() as http:
        yield IlinkClient(http, bot_agent="connector-sidecar/1.2.3")


def _uin_ok(value: str) -> bool:
    decimal = base64.b64decode(value, validate=True).decode("ascii")
    return decimal.isdigit() and int(decimal) < 2**32


def test_client_version_encodes_2_4_9() -> None:
    """iLink-App-ClientVersion is (major<<16)|(minor<<8)|patch: 2.4.9 is 132105."""
    assert CLIENT_VERSION == 132105


def test_uin_is_base64_of_a_decimal_uint32(monkeypatch: pytest.MonkeyPatch) -> None:
    """X-WECHAT-UIN for uint32 3735928559 is MzczNTkyODU1OQ== (the notes' example)."""
    monkeypatch.setattr(secrets, "randbits", lambda bits: 3735928559)
    assert random_uin() == "MzczNTkyODU1OQ=="


@pytest.mark.anyio
async def test_qr_fetch_is_a_tokenless_post_with_local_tokens(
    mock: respx.MockRouter, ilink: IlinkClient
) -> None:
    """get_bot_qrcode: POST ?bot_type=3, local_token_list, no Authorization, no base_info."""
    route = mock.post(f"{BASE}/ilink/bot/get_bot_qrcode", params={"bot_type": "3"}).respond(
        json={
            "qrcode": "qr1",
            "qrcode_img_content": "https://liteapp.weixin.qq.com/q/x?qrcode=qr1&bot_type=3",
        }
    )
    answer = await ilink.get_bot_qrcode(BASE, ["t2", "t1"])
    assert answer["qrcode"] == "qr1"
    request = route.calls.last.request
    assert json.loads(request.content) == {"local_token_list": ["t2", "t1"]}
    assert "authorization" not in request.headers
    assert request.headers["authorizationtype"] == "ilink_bot_token"
    assert request.headers["content-type"] == "application/json"
    assert _uin_ok(request.headers["x-wechat-uin"])
    for name, value in APP_HEADERS.items():
        assert request.headers[name] == value


@pytest.mark.anyio
async def test_qr_status_is_a_get_with_only_app_headers(
    mock: respx.MockRouter, ilink: IlinkClient
) -> None:
    """get_qrcode_status: GET with qrcode (and verify_code); no auth, no Content-Type."""
    route = mock.get(
        f"{BASE}/ilink/bot/get_qrcode_status", params={"qrcode": "qr1", "verify_code": "1234"}
    ).respond(json={"status": "scaned"})
    answer = await ilink.get_qrcode_status(BASE, "qr1", verify_code="1234", timeout_s=35)
    assert answer == {"status": "scaned"}
    request = route.calls.last.request
    assert request.method == "GET"
    for name in ("authorization", "authorizationtype", "content-type", "x-wechat-uin"):
        assert name not in request.headers
    for name, value in APP_HEADERS.items():
        assert request.headers[name] == value


@pytest.mark.anyio
async def test_bot_calls_carry_token_uin_and_base_info(
    mock: respx.MockRouter, ilink: IlinkClient
) -> None:
    """getupdates: Bearer token, AuthorizationType, a fresh UIN each time, base_info in the body."""
    route = mock.post(f"{BASE}/ilink/bot/getupdates").respond(
        json={"ret": 0, "msgs": [], "get_updates_buf": "b2"}
    )
    await ilink.get_updates(BASE, "tok", "b1", timeout_s=40)
    await ilink.get_updates(BASE + "/", "tok", "b2", timeout_s=40)
    first, second = (call.request for call in route.calls)
    assert json.loads(first.content) == {
        "get_updates_buf": "b1",
        "base_info": {"channel_version": "2.4.9", "bot_agent": "connector-sidecar/1.2.3"},
    }
    assert first.headers["authorization"] == "Bearer tok"
    assert first.headers["authorizationtype"] == "ilink_bot_token"
    assert _uin_ok(first.headers["x-wechat-uin"])
    assert first.headers["x-wechat-uin"] != second.headers["x-wechat-uin"]
    assert str(second.url) == f"{BASE}/ilink/bot/getupdates"


@pytest.mark.anyio
async def test_notify_bodies_hold_only_base_info(
    mock: respx.MockRouter, ilink: IlinkClient
) -> None:
    """msg/notifystart and msg/notifystop: ``{"base_info": …}``, with the 10 s timeout."""
    start = mock.post(f"{BASE}/ilink/bot/msg/notifystart").respond(json={"ret": 0, "errmsg": ""})
    stop = mock.post(f"{BASE}/ilink/bot/msg/notifystop").respond(json={"ret": 0, "errmsg": ""})
    await ilink.notify(BASE, "tok", "notifystart")
    await ilink.notify(BASE, "tok", "notifystop")
    for route in (start, stop):
        assert set(json.loads(route.calls.last.request.content)) == {"base_info"}
        assert route.calls.last.request.extensions["timeout"]["read"] == 10.0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"ret": -14, "errcode": -14, "errmsg": "session timeout"},
        {"ret": -14},
        {"errcode": -14},
        {"ret": 0, "errcode": -14},
    ],
)
async def test_minus_14_in_ret_or_errcode_is_a_stale_token(
    mock: respx.MockRouter, ilink: IlinkClient, body: dict[str, object]
) -> None:
    """-14 in either ret or errcode means the login is dead."""
    mock.post(f"{BASE}/ilink/bot/getupdates").respond(json=body)
    with pytest.raises(IlinkApiError) as caught:
        await ilink.get_updates(BASE, "tok", "", timeout_s=40)
    assert caught.value.stale_token
    assert caught.value.code == -14


@pytest.mark.anyio
async def test_send_answers(mock: respx.MockRouter, ilink: IlinkClient) -> None:
    """ret -2 is an API error with its code; ``{}`` and ret 0 are successes; ids stay exact."""
    route = mock.post(f"{BASE}/ilink/bot/sendmessage")
    route.side_effect = [
        httpx.Response(200, json={"ret": -2, "errmsg": ""}),
        httpx.Response(200, json={}),
        httpx.Response(200, content=b'{"ret": 0, "message_id": 7394000000000000002}'),
    ]
    with pytest.raises(IlinkApiError) as caught:
        await ilink.send_message(BASE, "tok", {"to_user_id": "u1@im.wechat"})
    assert caught.value.code == -2
    assert not caught.value.stale_token
    assert await ilink.send_message(BASE, "tok", {}) == {}
    answer = await ilink.send_message(BASE, "tok", {})
    assert str(answer["message_id"]) == "7394000000000000002"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"errcode": -14}, -14),  # the reference: sent; us: the dead-login answer it is
        ({"errcode": -1, "errmsg": "x"}, -1),  # the reference: sent; us: refused
        ({"ret": 0, "errcode": -1}, None),  # the reference and us: sent
        ({"ret": 0, "errcode": -14}, None),
        ({"ret": -1, "errcode": 0}, -1),
    ],
    ids=["errcode-14-no-ret", "errcode-no-ret", "ret0-errcode", "ret0-errcode-14", "ret-only"],
)
async def test_send_answers_with_errcode(
    mock: respx.MockRouter, ilink: IlinkClient, body: dict[str, int | str], error: int | None
) -> None:
    """sendmessage reads ``ret`` first as the reference does; errcode decides only without ret."""
    mock.post(f"{BASE}/ilink/bot/sendmessage").respond(json=body)
    if error is None:
        assert await ilink.send_message(BASE, "tok", {}) == body
        return
    with pytest.raises(IlinkApiError) as caught:
        await ilink.send_message(BASE, "tok", {})
    assert caught.value.code == error
    assert caught.value.stale_token == (error == -14)


@pytest.mark.anyio
async def test_the_route_tag_goes_on_every_call(mock: respx.MockRouter) -> None:
    """With a route tag, SKRouteTag is on the QR fetch, the QR status GET and every bot call;
    without one there is no such header."""
    qr = mock.post(f"{BASE}/ilink/bot/get_bot_qrcode").respond(json={"qrcode": "q"})
    status = mock.get(f"{BASE}/ilink/bot/get_qrcode_status").respond(json={"status": "wait"})
    updates = mock.post(f"{BASE}/ilink/bot/getupdates").respond(json={"ret": 0})
    send = mock.post(f"{BASE}/ilink/bot/sendmessage").respond(json={"ret": 0})
    notify = mock.post(f"{BASE}/ilink/bot/msg/notifystart").respond(json={"ret": 0})
    routes = (qr, status, updates, send, notify)
    async with httpx.AsyncClient() as http:
        for tag in ("route-7", None):
            ilink = IlinkClient(http, bot_agent="a/1", route_tag=tag)
            await ilink.get_bot_qrcode(BASE, [])
            await ilink.get_qrcode_status(BASE, "q", verify_code=None, timeout_s=5)
            await ilink.get_updates(BASE, "tok", "", timeout_s=5)
            await ilink.send_message(BASE, "tok", {})
            await ilink.notify(BASE, "tok", "notifystart")
            for route in routes:
                assert route.calls.last.request.headers.get("skroutetag") == tag, route


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("response", "status"),
    [
        (httpx.Response(200, content=b""), 200),
        (httpx.Response(200, content=b"<html>gateway</html>"), 200),
        (httpx.Response(200, content=b"[" * 100_000), 200),
        (httpx.Response(200, content=b"\xff\xfe{"), 200),
        (httpx.Response(200, json=[1, 2]), 200),
        (httpx.Response(524, content=b"cloudflare"), 524),
        (httpx.Response(429, headers={"Retry-After": "7"}), 429),
    ],
)
async def test_unusable_answers_are_transport_errors(
    mock: respx.MockRouter, ilink: IlinkClient, response: httpx.Response, status: int
) -> None:
    """Empty, non-JSON or non-object bodies and HTTP errors are failures, never successes."""
    mock.post(f"{BASE}/ilink/bot/sendmessage").mock(return_value=response)
    with pytest.raises(IlinkTransportError) as caught:
        await ilink.send_message(BASE, "tok", {})
    assert caught.value.status == status
    assert not caught.value.timeout
    if status == 429:
        assert caught.value.retry_after == 7.0


@pytest.mark.anyio
async def test_client_timeout_is_flagged(mock: respx.MockRouter, ilink: IlinkClient) -> None:
    """A client-side timeout is reported as such (the poller treats it as an empty answer)."""
    mock.post(f"{BASE}/ilink/bot/getupdates").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(IlinkTransportError) as caught:
        await ilink.get_updates(BASE, "tok", "", timeout_s=1)
    assert caught.value.timeout
