"""The getupdates long-poll against the in-process emulator: durable, deduped, and honest
about dead logins and failures."""

from __future__ import annotations

import base64

import pytest

from connector_sidecar.drivers.weixin.client import RET_STALE_TOKEN
from connector_sidecar.store import event_id_for

from .conftest import WeixinFactory, WeixinSidecar, wait_for


@pytest.mark.anyio
async def test_batch_and_cursor_and_reply_tokens_are_committed(weixin: WeixinSidecar) -> None:
    """Messages become events in order; cursor and the newest token per peer are stored."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    first = emulator.push(bot, "u1@im.wechat", "one")
    emulator.push(bot, "u2@im.wechat", "two")
    last = emulator.push(bot, "u1@im.wechat", "three")
    events = await weixin.wait_events(3)
    assert [e["content"] for e in events] == ["one", "two", "three"]
    event = events[0]
    assert event["eventId"] == event_id_for("wx1", first["messageId"])
    assert event["messageId"] == first["messageId"]
    assert int(event["messageId"]) > 2**53
    assert event["peerId"] == event["userId"] == "u1@im.wechat"
    assert event["peerType"] == "dm"
    assert event["messageType"] == "text"
    assert event["accountId"] == bot
    assert event["kind"] == "weixin"
    assert event["timestamp"].endswith("Z")
    assert await weixin.state("wx1", "ctx:u1@im.wechat") == last["contextToken"]
    cursor = await weixin.state("wx1", "cursor")
    assert cursor is not None
    assert base64.b64decode(cursor).decode() == f"emu:{bot}:3"
    assert emulator.violations == []


@pytest.mark.anyio
async def test_next_poll_sends_the_committed_cursor(weixin: WeixinSidecar) -> None:
    """The first poll sends an empty cursor; later polls send the stored one."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    emulator.push(bot, "u1@im.wechat", "one")
    await weixin.wait_events(1)
    cursor = await weixin.state("wx1", "cursor")

    async def polled_with_cursor() -> bool:
        return any(
            r["json"]["get_updates_buf"] == cursor for r in weixin.vendor_requests("getupdates")
        )

    await wait_for(polled_with_cursor, what="a poll with the stored cursor")
    assert weixin.vendor_requests("getupdates")[0]["json"]["get_updates_buf"] == ""


@pytest.mark.anyio
async def test_duplicates_are_stored_once(weixin: WeixinSidecar) -> None:
    """The same message_id delivered three times is one event."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    emulator.configure(bot, batch_size=2)
    emulator.push(bot, "u1@im.wechat", "dup", copies=3)
    emulator.push(bot, "u1@im.wechat", "after")
    await weixin.wait_events(2)
    await wait_for(
        lambda: _acked(weixin, bot, 4), what="the emulator to see the whole queue acknowledged"
    )
    events = await weixin.events("wx1")
    assert [e["content"] for e in events] == ["dup", "after"]


async def _acked(weixin: WeixinSidecar, bot: str, position: int) -> bool:
    return weixin.ilink.bots[bot].acked >= position


@pytest.mark.anyio
async def test_the_bots_own_messages_are_dropped(weixin: WeixinSidecar) -> None:
    """Messages from the bot itself (or of type BOT) are not delivered; the cursor moves on."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    emulator.push(bot, bot, "echo of my own reply")
    emulator.push(bot, "u1@im.wechat", "a bot-typed message", message_type=2)
    emulator.push(bot, "u1@im.wechat", "hello")
    await weixin.wait_events(1)
    await wait_for(lambda: _acked(weixin, bot, 3), what="the cursor to pass all three")
    events = await weixin.events("wx1")
    assert [e["content"] for e in events] == ["hello"]


@pytest.mark.anyio
async def test_media_arrives_as_descriptors(weixin: WeixinSidecar) -> None:
    """A file message becomes messageType file with a media descriptor."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    item = {
        "type": 4,
        "file_item": {
            "media": {"encrypt_query_param": "eqp", "aes_key": "a2V5", "encrypt_type": 1},
            "file_name": "report.pdf",
            "md5": "0123456789abcdef0123456789abcdef",
            "len": "12345",
        },
    }
    emulator.push(bot, "u1@im.wechat", items=[item])
    [event] = await weixin.wait_events(1)
    assert event["messageType"] == "file"
    assert event["content"] == "[file: report.pdf]"
    [media] = event["metadata"]["media"]
    assert media["type"] == "file"
    assert media["fileName"] == "report.pdf"
    assert media["size"] == 12345
    assert media["md5"] == "0123456789abcdef0123456789abcdef"
    assert media["ref"].startswith("wxmedia:")


@pytest.mark.anyio
async def test_stale_token_expires_the_connection(weixin: WeixinSidecar) -> None:
    """-14 moves the connection to auth_expired at once, stops polling, and sends get 409."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    emulator.push(bot, "u1@im.wechat", "hi")
    await weixin.wait_events(1)
    emulator.configure(bot, expire_token=True)
    connection = await weixin.wait_connection("wx1", "auth_expired")
    assert str(RET_STALE_TOKEN) in connection["lastError"]
    polls = len(weixin.vendor_requests("getupdates"))
    response = await weixin.send("r1", "reply", peer_id="u1@im.wechat")
    assert response.status_code == 409
    assert response.json()["code"] == "connection_not_ready"
    assert "Retry-After" not in response.headers
    assert len(weixin.vendor_requests("getupdates")) == polls
    assert not weixin.services.runtime.connection_running("wx1")
    assert emulator.bots[bot].notify["notifystop"] == 0  # the token is dead: no notifystop


@pytest.mark.anyio
async def test_failures_reconnect_with_backoff(weixin: WeixinSidecar) -> None:
    """Failures: reconnecting, 2 s pauses and 30 s after 3 in a row; success: connected."""
    emulator = weixin.ilink
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    weixin.driver.sleep = record
    weixin.driver.poll_timing.retry_seconds = 2.0
    weixin.driver.poll_timing.long_retry_seconds = 30.0
    _, bot = await weixin.pair("wx1")
    await weixin.wait_connection("wx1", "connected")
    emulator.inject(
        bot,
        "getupdates",
        {"status": 500, "body": "upstream broke"},
        {"status": 502, "body": ""},
        {"json": {"ret": -1, "errmsg": "system busy"}},
        {"status": 503, "body": ""},
    )
    emulator.push(bot, "u1@im.wechat", "after the storm")
    await weixin.wait_events(1)
    connection = await weixin.wait_connection("wx1", "connected")
    assert connection["lastError"] is None
    assert pauses == [2.0, 2.0, 30.0, 2.0]


@pytest.mark.anyio
async def test_reconnecting_is_visible_with_the_error(weixin: WeixinSidecar) -> None:
    """While getupdates fails, the connection shows reconnecting and why."""
    emulator = weixin.ilink
    weixin.driver.poll_timing.retry_seconds = 0.3
    _, bot = await weixin.pair("wx1")
    emulator.inject(bot, "getupdates", {"status": 500, "body": "upstream broke"})
    connection = await weixin.wait_connection("wx1", "reconnecting")
    assert "HTTP 500" in connection["lastError"]
    await weixin.wait_connection("wx1", "connected")


@pytest.mark.anyio
async def test_notify_start_and_stop_around_the_poller(weixin: WeixinSidecar) -> None:
    """notifystart when the poller starts; notifystop when it stops (logout)."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    await wait_for(
        lambda: _notified(weixin, bot, "notifystart", 1), what="notifystart on the emulator"
    )
    response = await weixin.api.post("/connections/wx1/logout", json={})
    assert response.status_code == 200
    assert emulator.bots[bot].notify["notifystop"] == 1
    assert emulator.bots[bot].notify["notifystart"] == 1


async def _notified(weixin: WeixinSidecar, bot: str, which: str, count: int) -> bool:
    return weixin.ilink.bots[bot].notify[which] >= count


@pytest.mark.anyio
async def test_many_accounts_without_crosstalk(weixin: WeixinSidecar) -> None:
    """Two connections, two bots: each sees only its own messages and sends with its own token."""
    emulator = weixin.ilink
    _, bot_a = await weixin.pair("wx1")
    _, bot_b = await weixin.pair("wx2")
    for i in range(5):
        emulator.push(bot_a, "alice@im.wechat", f"a{i}")
        emulator.push(bot_b, "bob@im.wechat", f"b{i}")
    events_a = await weixin.wait_events(5)
    events_b = await weixin.wait_events(5, "wx2")
    assert [e["content"] for e in events_a] == [f"a{i}" for i in range(5)]
    assert [e["content"] for e in events_b] == [f"b{i}" for i in range(5)]
    assert {e["accountId"] for e in events_a} == {bot_a}
    assert await weixin.state("wx1", "ctx:bob@im.wechat") is None

    response = await weixin.send("r-b", "hi bob", connection_id="wx2", peer_id="bob@im.wechat")
    assert response.status_code == 200, response.text
    assert [s["text"] for s in emulator.bots[bot_b].sent] == ["hi bob"]
    assert emulator.bots[bot_a].sent == []
    assert emulator.violations == []


@pytest.mark.anyio
async def test_restart_resumes_from_the_stored_cursor(make_weixin: WeixinFactory, tmp_path) -> None:
    """After a restart polling resumes at the stored cursor: nothing lost, nothing twice."""
    data_dir = tmp_path / "restart"
    async with make_weixin(data_dir=data_dir) as first:
        emulator = first.ilink
        _, bot = await first.pair("wx1")
        for i in range(3):
            emulator.push(bot, "u1@im.wechat", f"m{i}")
        await first.wait_events(3)
    for i in range(3, 6):
        emulator.push(bot, "u1@im.wechat", f"m{i}")
    async with make_weixin(data_dir=data_dir) as second:
        events = await second.wait_events(6)
        assert [e["content"] for e in events] == [f"m{i}" for i in range(6)]
        restarted_polls = [
            r["json"]["get_updates_buf"] for r in second.vendor_requests("getupdates")
        ]
        assert "" not in restarted_polls[1:]


@pytest.mark.anyio
async def test_a_lone_surrogate_is_stored_repaired_and_does_not_block_its_batch(
    weixin: WeixinSidecar,
) -> None:
    """A message whose text and quote hold "\\ud800" is stored with U+FFFD and flagged
    ``textRepaired``; the good message of the same batch is stored too and the cursor moves."""
    emulator = weixin.ilink
    _, bot = await weixin.pair("wx1")
    emulator.configure(bot, batch_size=2)
    poisoned = [
        {"type": 1, "text_item": {"text": "bad \ud800 text"}},
        {"type": 1, "ref_msg": {"svr_id": 5, "title": "quote \udfff"}},
    ]
    emulator.push(bot, "u1@im.wechat", items=poisoned)
    emulator.push(bot, "u1@im.wechat", "good")
    events = await weixin.wait_events(2)
    assert [e["content"] for e in events] == ["bad \ufffd text", "good"]
    assert events[0]["metadata"]["textRepaired"] is True
    assert events[0]["metadata"]["quoted"]["title"] == "quote \ufffd"
    assert "textRepaired" not in events[1]["metadata"]
    cursor = await weixin.state("wx1", "cursor")
    assert cursor is not None
    assert base64.b64decode(cursor).decode() == f"emu:{bot}:2"
