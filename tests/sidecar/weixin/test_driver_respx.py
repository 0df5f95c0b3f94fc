"""The whole driver (real sidecar app, in-process) against respx, with the fixture set of the
protocol notes (§8): pairing, one message, a stale token, and an exact sendmessage."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx

from connector_sidecar.config import ConfigError, Settings
from connector_sidecar.sending import vendor_key

from .conftest import VENDOR_BASE as BASE
from .conftest import WeixinFactory, wait_for

IMG = "https://liteapp.weixin.qq.com/q/x?qrcode=qr1&bot_type=3"
CONFIRMED = {
    "status": "confirmed",
    "bot_token": "tok",
    "ilink_bot_id": "abc@im.bot",
    "baseurl": BASE,
    "ilink_user_id": "u1@im.wechat",
}
ONE_MESSAGE = {
    "ret": 0,
    "get_updates_buf": "b1",
    "longpolling_timeout_ms": 10000,
    "msgs": [
        {
            "seq": 1,
            "message_id": 7394000000000000001,
            "from_user_id": "u1@im.wechat",
            "to_user_id": "abc@im.bot",
            "create_time_ms": 1760000000000,
            "message_type": 1,
            "message_state": 2,
            "context_token": "ctx1",
            "item_list": [{"type": 1, "text_item": {"text": "hi"}}],
        }
    ],
}
STALE = {"ret": -14, "errcode": -14, "errmsg": "session timeout"}


def answers(*items: httpx.Response | Exception) -> Callable[[httpx.Request], Any]:
    """A side effect: these answers in order, then an idle long-poll (empty, after 50 ms)."""
    queue = collections.deque(items)

    async def effect(request: httpx.Request) -> httpx.Response:
        if queue:
            item = queue.popleft()
            if isinstance(item, Exception):
                raise item
            return item
        await asyncio.sleep(0.05)
        return httpx.Response(200, json={"ret": 0, "msgs": [], "get_updates_buf": "b1"})

    return effect


@pytest.fixture
def vendor() -> Iterator[respx.MockRouter]:
    """respx in front of the vendor host, with the QR calls of the notes' fixture set."""
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE}/ilink/bot/get_bot_qrcode", params={"bot_type": "3"}).respond(
            json={"qrcode": "qr1", "qrcode_img_content": IMG}
        )
        mock.get(f"{BASE}/ilink/bot/get_qrcode_status", params={"qrcode": "qr1"}).mock(
            side_effect=[
                httpx.Response(200, json={"status": "wait"}),
                httpx.Response(200, json={"status": "scaned"}),
                httpx.Response(200, json=CONFIRMED),
            ]
        )
        mock.post(f"{BASE}/ilink/bot/msg/notifystart", name="start").respond(
            json={"ret": 0, "errmsg": ""}
        )
        mock.post(f"{BASE}/ilink/bot/msg/notifystop", name="stop").respond(
            json={"ret": 0, "errmsg": ""}
        )
        yield mock


@pytest.mark.anyio
async def test_fixture_set_pair_message_then_stale_token(
    vendor: respx.MockRouter, make_weixin: WeixinFactory
) -> None:
    """Pair, receive "hi", poll again with cursor b1, get -14: auth_expired, no notifystop."""
    updates = vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(httpx.Response(200, json=ONE_MESSAGE), httpx.Response(200, json=STALE))
    )
    async with make_weixin(emulator=None) as weixin:
        view = await weixin.start_session("wx1")
        assert view["status"] in ("qr_ready", "scanned", "connected")  # the mock does not hold
        assert view["qrContent"] == IMG
        done = await weixin.wait_session(view["sessionId"], "connected")
        assert done["accountId"] == "abc@im.bot"
        connection = await weixin.wait_connection("wx1", "auth_expired")
        assert "-14" in connection["lastError"]
        [event] = await weixin.events("wx1")
        assert event["messageId"] == "7394000000000000001"
        assert event["content"] == "hi"
        assert event["timestamp"] == "2025-10-09T08:53:20Z"
        assert await weixin.state("wx1", "ctx:u1@im.wechat") == "ctx1"
        first, second = (json.loads(c.request.content) for c in updates.calls)
        assert first["get_updates_buf"] == ""
        assert second["get_updates_buf"] == "b1"
        assert updates.calls[0].request.headers["authorization"] == "Bearer tok"
        assert vendor["start"].call_count == 1
        assert vendor["stop"].call_count == 0


@pytest.mark.anyio
async def test_poll_timeouts_follow_longpolling_timeout_ms(
    vendor: respx.MockRouter, make_weixin: WeixinFactory
) -> None:
    """A client timeout is normal (same cursor, still connected); the hint sets the next timeout."""
    updates = vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(httpx.ReadTimeout("idle"), httpx.Response(200, json=ONE_MESSAGE))
    )
    async with make_weixin(emulator=None) as weixin:
        await weixin.connect()
        await weixin.wait_events(1)

        async def polled_three_times() -> bool:
            return len(updates.calls) >= 3

        await wait_for(polled_three_times, what="the poll after the message")
        connection = await weixin.connection("wx1")
        assert connection["status"] == "connected"
        assert connection["lastError"] is None
        bodies = [json.loads(c.request.content) for c in updates.calls[:3]]
        assert [b["get_updates_buf"] for b in bodies] == ["", "", "b1"]
        reads = [c.request.extensions["timeout"]["read"] for c in updates.calls[:3]]
        assert reads == [40.0, 40.0, 15.0]  # 35 s default, then the 10 s hint, plus 5 s grace


@pytest.mark.anyio
async def test_sendmessage_has_every_header_and_field(
    vendor: respx.MockRouter, make_weixin: WeixinFactory
) -> None:
    """The reply: one item, context_token ctx1, message_type 2, message_state 2, base_info."""
    vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(httpx.Response(200, json=ONE_MESSAGE))
    )
    send = vendor.post(f"{BASE}/ilink/bot/sendmessage").respond(
        content=b'{"ret": 0, "message_id": 7394000000000000002}'
    )
    async with make_weixin(emulator=None) as weixin:
        await weixin.connect()
        await weixin.wait_events(1)
        response = await weixin.send("out_wx:s1:m1", "Hello", peer_id="u1@im.wechat")
        assert response.status_code == 200, response.text
        assert response.json()["providerMessageId"] == "7394000000000000002"
        request = send.calls.last.request
        body = json.loads(request.content)
        run_id = body["msg"].pop("run_id")
        assert uuid.UUID(run_id).version == 5
        assert body == {
            "msg": {
                "from_user_id": "",
                "to_user_id": "u1@im.wechat",
                "client_id": f"connector-sidecar:{vendor_key('out_wx:s1:m1', 0)}",
                "message_type": 2,
                "message_state": 2,
                "item_list": [{"type": 1, "text_item": {"text": "Hello"}}],
                "context_token": "ctx1",
            },
            "base_info": {"channel_version": "2.4.9", "bot_agent": body["base_info"]["bot_agent"]},
        }
        assert body["base_info"]["bot_agent"].startswith("connector-sidecar/")
        assert request.headers["authorization"] == "Bearer tok"
        assert request.headers["authorizationtype"] == "ilink_bot_token"
        assert request.headers["ilink-app-id"] == "bot"
        assert request.headers["ilink-app-clientversion"] == "132105"
        assert request.headers["x-wechat-uin"]
        assert request.extensions["timeout"]["read"] == 15.0


@pytest.mark.anyio
async def test_confirm_without_bot_id_is_an_error(make_weixin: WeixinFactory) -> None:
    """A confirm without ilink_bot_id fails the session (the reference's rule)."""
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE}/ilink/bot/get_bot_qrcode").respond(
            json={"qrcode": "qr1", "qrcode_img_content": IMG}
        )
        mock.get(f"{BASE}/ilink/bot/get_qrcode_status").respond(
            json={"status": "confirmed", "bot_token": "tok"}
        )
        async with make_weixin(emulator=None) as weixin:
            view = await weixin.start_session("wx1")
            done = await weixin.wait_session(view["sessionId"], "error")
            assert "ilink_bot_id" in done["error"]
            assert (await weixin.connection("wx1"))["status"] == "pairing"


@pytest.mark.anyio
async def test_status_poll_errors_count_as_wait(make_weixin: WeixinFactory) -> None:
    """A 524 or a network error while polling the QR status is a ``wait``, not a failure."""
    with respx.mock(assert_all_called=False) as mock:
        mock.post(f"{BASE}/ilink/bot/get_bot_qrcode").respond(
            json={"qrcode": "qr1", "qrcode_img_content": IMG}
        )
        status = mock.get(f"{BASE}/ilink/bot/get_qrcode_status").mock(
            side_effect=[
                httpx.Response(524, text="a timeout occurred"),
                httpx.ConnectError("refused"),
                httpx.Response(200, json={"status": "scaned"}),
                httpx.Response(200, json={"status": "wait"}),
            ]
            * 50
        )
        async with make_weixin(emulator=None) as weixin:
            view = await weixin.start_session("wx1")
            await weixin.wait_session(view["sessionId"], "scanned")
            assert status.call_count >= 3
            assert (await weixin.session(view["sessionId"]))["error"] is None
            # The status long-poll waits 35 s on the client side (the session has 480 s left).
            assert status.calls[0].request.extensions["timeout"]["read"] == 35.0


@pytest.mark.anyio
async def test_qr_fetch_failures_end_in_error(make_weixin: WeixinFactory) -> None:
    """When no QR code can be had (3 tries), the session is ``error`` and says why."""
    with respx.mock(assert_all_called=False) as mock:
        fetch = mock.post(f"{BASE}/ilink/bot/get_bot_qrcode").respond(503, text="busy")
        async with make_weixin(emulator=None) as weixin:
            view = await weixin.start_session("wx1")
            done = await weixin.wait_session(view["sessionId"], "error")
            assert "HTTP 503" in done["error"]
            assert fetch.call_count == 3


def _user_message(message_id: int, text: str, **fields: Any) -> dict[str, Any]:
    return {
        **ONE_MESSAGE["msgs"][0],  # type: ignore[index]
        "message_id": message_id,
        "item_list": [{"type": 1, "text_item": {"text": text}}],
        **fields,
    }


@pytest.mark.anyio
async def test_malformed_messages_never_stall_or_lose_the_batch(
    vendor: respx.MockRouter, make_weixin: WeixinFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Readable entries of a messy batch are stored, the rest skipped with a warning."""
    batch = {
        "ret": 0,
        "get_updates_buf": "b1",
        "longpolling_timeout_ms": 10**400,
        "msgs": [
            _user_message(1, "first"),
            _user_message(2, "odd", create_time_ms=10**20, context_token=5),
            _user_message(3, "", item_list=5),
            "not a message",
            _user_message(4, "", from_user_id=None),
            _user_message(5, "last"),
        ],
    }
    updates = vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(httpx.Response(200, content=json.dumps(batch).encode()))
    )
    async with make_weixin(emulator=None) as weixin:
        await weixin.connect()
        events = await weixin.wait_events(3)

        async def polled_again() -> bool:
            return len(updates.calls) >= 2

        await wait_for(polled_again, what="the poll after the batch")
        assert [e["content"] for e in events] == ["first", "odd", "last"]
        assert events[1]["messageId"] == "2"
        assert await weixin.state("wx1", "cursor") == "b1"
        assert json.loads(updates.calls[1].request.content)["get_updates_buf"] == "b1"
        assert updates.calls[1].request.extensions["timeout"]["read"] == 305.0
        assert (await weixin.connection("wx1"))["status"] == "connected"
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 3, skipped


@pytest.mark.anyio
async def test_msgs_that_is_not_a_list_does_not_move_the_cursor(
    vendor: respx.MockRouter, make_weixin: WeixinFactory
) -> None:
    """An answer whose msgs cannot be read is a failed poll: reconnecting, the old cursor kept."""
    updates = vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(
            httpx.Response(200, json={"ret": 0, "msgs": {"0": "?"}, "get_updates_buf": "bX"}),
            httpx.Response(200, json=ONE_MESSAGE),
        )
    )
    async with make_weixin(emulator=None) as weixin:
        await weixin.connect()
        [event] = await weixin.wait_events(1)
        assert event["content"] == "hi"
        bodies = [json.loads(c.request.content) for c in updates.calls[:2]]
        assert [b["get_updates_buf"] for b in bodies] == ["", ""]
        assert await weixin.state("wx1", "cursor") == "b1"


@pytest.mark.anyio
@pytest.mark.parametrize("message_id", [None, "", True, 7.5, {"id": 1}, [1]])
async def test_send_without_a_usable_message_id_returns_the_client_id(
    vendor: respx.MockRouter, make_weixin: WeixinFactory, message_id: Any
) -> None:
    """A success whose message_id is missing or not an id reports our client_id instead."""
    vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(httpx.Response(200, json=ONE_MESSAGE))
    )
    answer = {"ret": 0} if message_id is None else {"ret": 0, "message_id": message_id}
    send = vendor.post(f"{BASE}/ilink/bot/sendmessage").respond(json=answer)
    async with make_weixin(emulator=None) as weixin:
        await weixin.connect()
        await weixin.wait_events(1)
        response = await weixin.send("out_wx:s1:id", "Hello", peer_id="u1@im.wechat")
        assert response.status_code == 200, response.text
        client_id = json.loads(send.calls.last.request.content)["msg"]["client_id"]
        assert response.json()["providerMessageId"] == client_id


@pytest.mark.anyio
async def test_an_empty_cursor_is_not_adopted(
    vendor: respx.MockRouter, make_weixin: WeixinFactory
) -> None:
    """An answer with an empty get_updates_buf keeps the cursor the client already has."""
    updates = vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(
            httpx.Response(200, json=ONE_MESSAGE),
            httpx.Response(200, json={"ret": 0, "msgs": [], "get_updates_buf": ""}),
            httpx.Response(200, json={"ret": 0, "msgs": []}),
        )
    )
    async with make_weixin(emulator=None) as weixin:
        await weixin.connect()

        async def polled_four_times() -> bool:
            return len(updates.calls) >= 4

        await wait_for(polled_four_times, what="four polls")
        cursors = [json.loads(c.request.content)["get_updates_buf"] for c in updates.calls[:4]]
        assert cursors == ["", "b1", "b1", "b1"]
        assert await weixin.state("wx1", "cursor") == "b1"


@pytest.mark.anyio
async def test_weixin_route_tag_reaches_every_call(
    vendor: respx.MockRouter, make_weixin: WeixinFactory
) -> None:
    """WEIXIN_ROUTE_TAG is sent as SKRouteTag on pairing, polling and sending."""
    updates = vendor.post(f"{BASE}/ilink/bot/getupdates").mock(
        side_effect=answers(httpx.Response(200, json=ONE_MESSAGE))
    )
    send = vendor.post(f"{BASE}/ilink/bot/sendmessage").respond(json={"ret": 0})
    settings = Settings.from_env(
        {"EXTERNAL_CONNECTOR_TOKEN": "weixin-route-test-9f2c7a", "WEIXIN_ROUTE_TAG": "sk-route-9"}
    )
    async with make_weixin(emulator=None, weixin_route_tag=settings.weixin_route_tag) as weixin:
        await weixin.connect()
        await weixin.wait_events(1)
        assert (await weixin.send("out_rt:1", "hi", peer_id="u1@im.wechat")).status_code == 200
    calls = [c for route in vendor.routes for c in route.calls]
    assert updates.calls
    assert send.calls
    assert len(calls) >= 5
    assert {c.request.headers.get("skroutetag") for c in calls} == {"sk-route-9"}


@pytest.mark.parametrize("value", ["tag\u00e9", "tag\x7f"])
def test_a_route_tag_that_is_no_header_value_is_refused(value: str) -> None:
    """A route tag must be printable ASCII: ConfigError naming WEIXIN_ROUTE_TAG."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"EXTERNAL_CONNECTOR_TOKEN": "weixin-route-test-9f2c7a", "WEIXIN_ROUTE_TAG": value}
        )
    assert caught.value.name == "WEIXIN_ROUTE_TAG"
