"""Bot tokens stay out of the logs, across a whole life of a WeChat connection."""

from __future__ import annotations

import logging

import pytest

from .._inprocess import assert_not_logged
from .conftest import WeixinFactory

PEER = "u1@im.wechat"


@pytest.mark.anyio
async def test_bot_tokens_are_never_logged(
    make_weixin: WeixinFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """No log line of a busy WeChat life holds a bot token the vendor issued."""
    caplog.set_level(logging.DEBUG)
    tokens: set[str] = set()
    async with make_weixin() as weixin:
        emulator = weixin.emulator
        assert emulator is not None
        _, bot = await weixin.pair("wx1")
        tokens.add(str(emulator.bots[bot].token))
        emulator.push(bot, PEER, "hello")
        await weixin.wait_events(1)
        assert (await weixin.send("r1", "hi", peer_id=PEER)).status_code == 200
        emulator.inject(bot, "sendmessage", {"status": 500, "body": "upstream broke"})
        assert (await weixin.send("r2", "again", peer_id=PEER)).status_code == 200
        emulator.inject(bot, "sendmessage", {"json": {"ret": -3, "errmsg": "bad"}})
        assert (await weixin.send("r3", "refused", peer_id=PEER)).status_code == 502
        assert (await weixin.send("r4", "cold", peer_id="u9@im.wechat")).status_code == 202
        emulator.inject(bot, "getupdates", {"status": 502, "body": "<html>gateway</html>"})
        emulator.configure(bot, expire_token=True)
        await weixin.wait_connection("wx1", "auth_expired")
        await weixin.pair("wx1", bot_id=bot)
        tokens.add(str(emulator.bots[bot].token))
        await weixin.wait_connection("wx1", "connected")
        assert (await weixin.api.post("/connections/wx1/logout", json={})).status_code == 200
    assert len(tokens) == 2
    assert_not_logged(caplog.records, tokens)
