"""POST /send through the weixin driver against the in-process emulator."""

from __future__ import annotations

from typing import Any

import pytest

from connector_sidecar.sending import vendor_key

from .conftest import WeixinSidecar, wait_for

PEER = "u1@im.wechat"


async def _paired_with_inbound(weixin: WeixinSidecar) -> tuple[str, str]:
    """Pair wx1 and let PEER write once; returns (bot id, the peer's context token)."""
    _, bot = await weixin.pair("wx1")
    pushed = weixin.ilink.push(bot, PEER, "hello bot")
    await weixin.wait_events(1)
    return bot, pushed["contextToken"]


@pytest.mark.anyio
async def test_send_echoes_the_context_token_and_derives_client_id(weixin: WeixinSidecar) -> None:
    """A reply carries the peer's context_token and a client_id derived from requestId + index."""
    emulator = weixin.ilink
    bot, token = await _paired_with_inbound(weixin)
    response = await weixin.send("out_wx:s1:1", "Hello", peer_id=PEER)
    assert response.status_code == 200, response.text
    result = response.json()
    [sent] = emulator.bots[bot].sent
    assert result["ok"] is True
    assert result["status"] == "sent"
    assert result["providerMessageId"] == sent["messageId"]
    assert int(result["providerMessageId"]) > 2**53
    assert sent["text"] == "Hello"
    assert sent["contextToken"] == token
    assert sent["clientId"] == f"connector-sidecar:{vendor_key('out_wx:s1:1', 0)}"
    [request] = weixin.vendor_requests("sendmessage")
    assert request["json"]["msg"]["run_id"] == sent["runId"]
    assert emulator.violations == []


@pytest.mark.anyio
async def test_long_text_goes_out_in_chunks_in_order(weixin: WeixinSidecar) -> None:
    """Text over 2000 characters is split into ordered chunks, one request each."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    paragraphs = [f"{i}" + "x" * 1499 for i in range(3)]
    response = await weixin.send("out_wx:s1:long", "\n\n".join(paragraphs), peer_id=PEER)
    assert response.status_code == 200, response.text
    sent = emulator.bots[bot].sent
    assert len(sent) == 3
    assert all(len(s["text"]) <= 2000 for s in sent)
    assert [s["text"].strip()[0] for s in sent] == ["0", "1", "2"]
    assert [s["clientId"] for s in sent] == [
        f"connector-sidecar:{vendor_key('out_wx:s1:long', i)}" for i in range(3)
    ]
    assert len({s["runId"] for s in sent}) == 1
    assert response.json()["providerMessageIds"] == [s["messageId"] for s in sent]


@pytest.mark.anyio
async def test_closed_reply_window_defers_until_the_peer_writes(weixin: WeixinSidecar) -> None:
    """ret -2 → 202 deferred; the next message from that peer sends it, with its new token."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    emulator.configure(bot, close_reply_window=[PEER])
    response = await weixin.send("out_wx:s1:late", "sorry for the wait", peer_id=PEER)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["status"] == "deferred"
    assert body["providerMessageId"] is None
    assert emulator.bots[bot].sent == []

    pushed = emulator.push(bot, PEER, "are you there?")

    async def sent() -> list[dict[str, Any]]:
        return emulator.bots[bot].sent

    [delivered] = await wait_for(sent, what="the deferred reply to go out")
    assert delivered["text"] == "sorry for the wait"
    assert delivered["contextToken"] == pushed["contextToken"]

    async def recorded() -> dict[str, Any] | None:
        # The vendor has the message before the ledger records it: wait for the record.
        result: dict[str, Any] = (await weixin.api.get("/send/out_wx:s1:late")).json()
        return result if result["status"] == "sent" else None

    status = await wait_for(recorded, what="the deferred reply to be recorded as sent")
    assert status["providerMessageId"] == delivered["messageId"]


@pytest.mark.anyio
async def test_without_a_context_token_the_send_is_deferred(weixin: WeixinSidecar) -> None:
    """A peer that never wrote has no context token: the server says -2, the send waits."""
    await _paired_with_inbound(weixin)
    response = await weixin.send("out_wx:s1:cold", "hi stranger", peer_id="u9@im.wechat")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "deferred"
    [request] = weixin.vendor_requests("sendmessage")
    assert "context_token" not in request["json"]["msg"]


@pytest.mark.anyio
async def test_stale_token_on_send_expires_the_connection(weixin: WeixinSidecar) -> None:
    """sendmessage -14 → 409 connection_not_ready and the connection is auth_expired."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    emulator.inject(
        bot, "sendmessage", {"json": {"ret": -14, "errcode": -14, "errmsg": "session timeout"}}
    )
    response = await weixin.send("out_wx:s1:dead", "hello?", peer_id=PEER)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "connection_not_ready"
    connection = await weixin.wait_connection("wx1", "auth_expired")
    assert "-14" in connection["lastError"]


@pytest.mark.anyio
async def test_other_ret_is_a_recorded_refusal(weixin: WeixinSidecar) -> None:
    """Another non-zero ret is 502 provider_rejected with ret and errmsg, and stays so."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    emulator.inject(bot, "sendmessage", {"json": {"ret": -3, "errmsg": "bad request"}})
    response = await weixin.send("out_wx:s1:bad", "hello", peer_id=PEER)
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "provider_rejected"
    assert "-3" in response.json()["detail"]
    assert "bad request" in response.json()["detail"]
    again = await weixin.send("out_wx:s1:bad", "hello", peer_id=PEER)
    assert again.status_code == 502
    assert len(weixin.vendor_requests("sendmessage")) == 1
    assert emulator.bots[bot].sent == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"ret": -3, "errmsg": "bad \ud800"}, 502),
        ({"ret": -14, "errmsg": "gone \ud800"}, 409),
    ],
    ids=["refused", "login-ended"],
)
async def test_a_vendor_error_message_with_a_lone_surrogate_is_recorded(
    weixin: WeixinSidecar, answer: dict[str, object], status: int
) -> None:
    """WeChat's errmsg is vendor text too: a lone surrogate in it is recorded as U+FFFD, and the
    refusal (or the dead login) is answered, never a 500."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    emulator.inject(bot, "sendmessage", {"json": answer})
    response = await weixin.send("out_wx:s1:odd", "hello", peer_id=PEER)
    assert response.status_code == status, response.text
    if status == 502:
        assert "bad \ufffd" in response.json()["detail"]
        again = await weixin.send("out_wx:s1:odd", "hello", peer_id=PEER)
        assert again.status_code == 502
    else:
        connection = (await weixin.api.get("/connections/wx1")).json()
        assert "gone \ufffd" in connection["lastError"]


@pytest.mark.anyio
async def test_empty_body_and_5xx_are_retried_with_the_same_client_id(
    weixin: WeixinSidecar,
) -> None:
    """An empty 200 body is never a success: it and a 500 are retried with one client_id."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    emulator.inject(bot, "sendmessage", {"status": 200, "body": ""}, {"status": 500, "body": ""})
    response = await weixin.send("out_wx:s1:flaky", "hello", peer_id=PEER)
    assert response.status_code == 200, response.text
    requests = weixin.vendor_requests("sendmessage")
    assert len(requests) == 3
    assert len({r["json"]["msg"]["client_id"] for r in requests}) == 1
    assert len({r["headers"]["x-wechat-uin"] for r in requests}) == 3
    assert len(emulator.bots[bot].sent) == 1


@pytest.mark.anyio
async def test_unavailable_vendor_is_503_and_resumable(weixin: WeixinSidecar) -> None:
    """A vendor that keeps failing gives 503; the same requestId later sends it once."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    emulator.inject(bot, "sendmessage", *[{"status": 503, "body": "busy"}] * 3)
    response = await weixin.send("out_wx:s1:busy", "hello", peer_id=PEER)
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "provider_unavailable"
    again = await weixin.send("out_wx:s1:busy", "hello", peer_id=PEER)
    assert again.status_code == 200, again.text
    assert len(emulator.bots[bot].sent) == 1


@pytest.mark.anyio
async def test_markdown_is_made_wechat_safe(weixin: WeixinSidecar) -> None:
    """messageType markdown goes through the WeChat-safe filter; text is sent as given."""
    emulator = weixin.ilink
    bot, _ = await _paired_with_inbound(weixin)
    content = "##### 小标题\n**bold** and *重点*\n![chart](https://x.test/c.png)done"
    response = await weixin.send("out_wx:s1:md", content, peer_id=PEER, messageType="markdown")
    assert response.status_code == 200, response.text
    response = await weixin.send("out_wx:s1:txt", "*重点*", peer_id=PEER)
    assert response.status_code == 200, response.text
    assert [s["text"] for s in emulator.bots[bot].sent] == [
        "小标题\n**bold** and 重点\ndone",
        "*重点*",
    ]


@pytest.mark.anyio
async def test_group_targets_are_refused(weixin: WeixinSidecar) -> None:
    """iLink bots have direct chats only: a group target is a 502 without a vendor call."""
    await _paired_with_inbound(weixin)
    response = await weixin.api.post(
        "/send",
        json={
            "requestId": "out_wx:s1:group",
            "connectionId": "wx1",
            "channelId": "weixin-wx1",
            "kind": "weixin",
            "target": {"peerId": "g1", "peerType": "group", "threadId": None},
            "content": "hello all",
        },
    )
    assert response.status_code == 502, response.text
    assert "directly" in response.json()["detail"]
    assert weixin.vendor_requests("sendmessage") == []
