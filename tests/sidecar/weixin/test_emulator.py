"""The iLink emulator itself: it refuses what a real server would, so tests against it can fail."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connector_sidecar.drivers.weixin.client import IlinkClient

from ...emulators.ilink import IlinkEmulator, build_app


@pytest.fixture
async def ilink_http(ilink_emulator: IlinkEmulator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(ilink_emulator))
    async with httpx.AsyncClient(transport=transport, base_url="http://ilink.test") as http:
        yield http


async def _login(emulator: IlinkEmulator, http: httpx.AsyncClient) -> tuple[str, str]:
    """A QR code fetched the real way and confirmed; returns (bot id, token)."""
    response = await http.post(
        "/ilink/bot/get_bot_qrcode",
        params={"bot_type": "3"},
        headers=IlinkClient.post_headers(None),
        json={"local_token_list": []},
    )
    assert response.status_code == 200, response.text
    bot = emulator.confirm(response.json()["qrcode"])
    assert bot.token is not None
    return bot.bot_id, bot.token


def _send_body(**msg: Any) -> dict[str, Any]:
    return {
        "msg": {
            "from_user_id": "",
            "to_user_id": "u1@im.wechat",
            "client_id": "c-1",
            "message_type": 2,
            "message_state": 2,
            "item_list": [{"type": 1, "text_item": {"text": "hi"}}],
            **msg,
        },
        "base_info": {"channel_version": "2.4.9", "bot_agent": "test/1"},
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"iLink-App-Id": "other"}, "iLink-App-Id"),
        ({"iLink-App-ClientVersion": "v2"}, "ClientVersion"),
        ({"AuthorizationType": "bearer"}, "AuthorizationType"),
        ({"X-WECHAT-UIN": "not base64!"}, "X-WECHAT-UIN"),
        ({"X-WECHAT-UIN": base64.b64encode(b"99999999999").decode()}, "uint32"),
        ({"Content-Type": "text/plain"}, "Content-Type"),
    ],
)
async def test_bad_headers_are_refused(
    ilink_emulator: IlinkEmulator,
    ilink_http: httpx.AsyncClient,
    headers: dict[str, str],
    problem: str,
) -> None:
    """Wrong iLink headers get 400 ret -1 and are listed as violations."""
    _, token = await _login(ilink_emulator, ilink_http)
    response = await ilink_http.post(
        "/ilink/bot/getupdates",
        headers={**IlinkClient.post_headers(token), **headers},
        json={"get_updates_buf": "", "base_info": {"channel_version": "2.4.9", "bot_agent": "t"}},
    )
    assert response.status_code == 400
    assert response.json()["ret"] == -1
    assert problem in response.json()["errmsg"]
    assert problem in ilink_emulator.violations[-1]["problem"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"base_info": None}, "base_info"),
        ({"msg": {"message_type": 1}}, "message_type"),
        ({"msg": {"item_list": []}}, "exactly one item"),
        ({"msg": {"item_list": [{"type": 1, "text_item": {"text": "x" * 2001}}]}}, "2000"),
        ({"msg": {"client_id": ""}}, "client_id"),
    ],
)
async def test_bad_sendmessage_bodies_are_refused(
    ilink_emulator: IlinkEmulator,
    ilink_http: httpx.AsyncClient,
    body: dict[str, Any],
    problem: str,
) -> None:
    """sendmessage without base_info, with the wrong type, several items or long text: 400."""
    _, token = await _login(ilink_emulator, ilink_http)
    payload = _send_body(**body.get("msg", {}))
    if "base_info" in body:
        del payload["base_info"]
    response = await ilink_http.post(
        "/ilink/bot/sendmessage", headers=IlinkClient.post_headers(token), json=payload
    )
    assert response.status_code == 400
    assert problem in response.json()["errmsg"]


@pytest.mark.anyio
async def test_qr_calls_must_not_carry_a_token(
    ilink_emulator: IlinkEmulator, ilink_http: httpx.AsyncClient
) -> None:
    """The QR fetch and status poll with an Authorization header are refused."""
    response = await ilink_http.post(
        "/ilink/bot/get_bot_qrcode",
        params={"bot_type": "3"},
        headers=IlinkClient.post_headers("tok"),
        json={"local_token_list": []},
    )
    assert response.status_code == 400
    await _login(ilink_emulator, ilink_http)
    response = await ilink_http.get(
        "/ilink/bot/get_qrcode_status",
        params={"qrcode": ilink_emulator.qr().qrcode},
        headers={**IlinkClient.get_headers(), "Authorization": "Bearer tok"},
    )
    assert response.status_code == 400


@pytest.mark.anyio
async def test_unknown_tokens_and_foreign_cursors(
    ilink_emulator: IlinkEmulator, ilink_http: httpx.AsyncClient
) -> None:
    """An unknown token is answered -14 (HTTP 200); another bot's cursor is refused."""
    bot_a, token_a = await _login(ilink_emulator, ilink_http)
    _, token_b = await _login(ilink_emulator, ilink_http)
    body = {"get_updates_buf": "", "base_info": {"channel_version": "2.4.9", "bot_agent": "t"}}
    stale = await ilink_http.post(
        "/ilink/bot/getupdates", headers=IlinkClient.post_headers("nope"), json=body
    )
    assert stale.status_code == 200
    assert stale.json()["errcode"] == -14
    ilink_emulator.push(bot_a, "u1@im.wechat", "hi")
    first = await ilink_http.post(
        "/ilink/bot/getupdates", headers=IlinkClient.post_headers(token_a), json=body
    )
    cursor = first.json()["get_updates_buf"]
    foreign = await ilink_http.post(
        "/ilink/bot/getupdates",
        headers=IlinkClient.post_headers(token_b),
        json={**body, "get_updates_buf": cursor},
    )
    assert foreign.status_code == 400
    assert "another bot" in foreign.json()["errmsg"]


@pytest.mark.anyio
async def test_a_reused_uin_is_refused(
    ilink_emulator: IlinkEmulator, ilink_http: httpx.AsyncClient
) -> None:
    """X-WECHAT-UIN must change on every request."""
    _, token = await _login(ilink_emulator, ilink_http)
    headers = IlinkClient.post_headers(token)
    body = {"base_info": {"channel_version": "2.4.9", "bot_agent": "t"}}
    first = await ilink_http.post("/ilink/bot/msg/notifystart", headers=headers, json=body)
    second = await ilink_http.post("/ilink/bot/msg/notifystart", headers=headers, json=body)
    assert first.status_code == 200
    assert second.status_code == 400
    assert "new on every request" in second.json()["errmsg"]
