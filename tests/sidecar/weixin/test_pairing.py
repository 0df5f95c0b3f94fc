"""QR pairing against the in-process iLink emulator: every status the server can send."""

from __future__ import annotations

import base64

import pytest

from .conftest import WeixinFactory, WeixinSidecar, qrcode_of, wait_for


async def _credentials(weixin: WeixinSidecar, connection_id: str) -> dict[str, object]:
    store = weixin.services.store
    record = await store.db.run(store.connections.get, connection_id)
    assert record is not None
    return dict(record.credentials)


@pytest.mark.anyio
async def test_scan_and_confirm_connects(weixin: WeixinSidecar) -> None:
    """A scanned, confirmed code connects and stores bot_token, baseurl and ilink_user_id."""
    view = await weixin.start_session("wx1")
    assert view["status"] == "qr_ready"
    assert view["qrImage"].startswith("data:image/png;base64,")
    assert base64.b64decode(view["qrImage"].split(",", 1)[1])[:4] == b"\x89PNG"
    assert view["qrContent"] == weixin.ilink.qr().img_content
    qrcode = qrcode_of(view)
    weixin.ilink.scan(qrcode)
    await weixin.wait_session(view["sessionId"], "scanned")
    bot = weixin.ilink.confirm(qrcode, bot_id="b0f5860fdecb@im.bot", user_id="o9cq80yy@im.wechat")
    done = await weixin.wait_session(view["sessionId"], "connected")
    assert done["accountId"] == "b0f5860fdecb@im.bot"
    assert done["metadata"]["ilinkUserId"] == "o9cq80yy@im.wechat"
    assert done["metadata"]["stateRef"]
    connection = await weixin.wait_connection("wx1", "connected")
    assert connection["accountId"] == bot.bot_id
    assert await _credentials(weixin, "wx1") == {
        "bot_token": bot.token,
        "base_url": "http://ilink.test",
        "ilink_user_id": "o9cq80yy@im.wechat",
    }


@pytest.mark.anyio
async def test_confirmed_baseurl_is_used_for_the_bot_api(weixin: WeixinSidecar) -> None:
    """After a confirm, getupdates goes to the ``baseurl`` the server returned."""
    view = await weixin.start_session("wx1")
    weixin.ilink.confirm(qrcode_of(view), baseurl="http://ilink-api.test")
    await weixin.wait_session(view["sessionId"], "connected")
    assert (await _credentials(weixin, "wx1"))["base_url"] == "http://ilink-api.test"

    async def polled_there() -> bool:
        return any(r["host"] == "ilink-api.test" for r in weixin.vendor_requests("getupdates"))

    await wait_for(polled_there, what="getupdates on the confirmed baseurl")
    qr_hosts = {r["host"] for r in weixin.ilink.requests if "qrcode" in r["path"]}
    assert qr_hosts == {"ilink.test"}


@pytest.mark.anyio
async def test_qr_request_carries_stored_tokens_newest_first(weixin: WeixinSidecar) -> None:
    """``local_token_list`` holds the tokens of the logins stored here, newest first."""
    await weixin.pair("wx1", bot_id="a@im.bot")
    await weixin.pair("wx2", bot_id="b@im.bot")
    await weixin.start_session("wx3")
    bots = weixin.ilink.bots
    assert weixin.ilink.qr().local_token_list == [bots["b@im.bot"].token, bots["a@im.bot"].token]


@pytest.mark.anyio
async def test_verify_code_wrong_then_right(weixin: WeixinSidecar) -> None:
    """need_verifycode asks the host; a wrong code asks again; the right one is polled at once."""
    view = await weixin.start_session("wx1")
    sid = view["sessionId"]
    qrcode = qrcode_of(view)
    weixin.ilink.require_code(qrcode, code="4321")
    await weixin.wait_session(sid, "verify_code_required")

    response = await weixin.api.post(
        f"/connector-sessions/{sid}/verify-code", json={"code": "1111"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] in ("scanned", "verify_code_required")
    await weixin.wait_session(sid, "verify_code_required")
    assert any(p["verifyCode"] == "1111" for p in weixin.ilink.qr(qrcode).polls)

    response = await weixin.api.post(
        f"/connector-sessions/{sid}/verify-code", json={"code": "4321"}
    )
    assert response.status_code == 200, response.text
    await weixin.wait_session(sid, "scanned")
    weixin.ilink.confirm(qrcode)
    await weixin.wait_session(sid, "connected")


@pytest.mark.anyio
async def test_verify_code_refused_when_not_asked(weixin: WeixinSidecar) -> None:
    """A verify code for a session that is not waiting for one is a 409."""
    view = await weixin.start_session("wx1")
    response = await weixin.api.post(
        f"/connector-sessions/{view['sessionId']}/verify-code", json={"code": "1234"}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "session_not_awaiting_code"


@pytest.mark.anyio
async def test_verify_code_blocked_gets_a_new_code(weixin: WeixinSidecar) -> None:
    """verify_code_blocked refreshes the QR code: a new qrContent, back to qr_ready."""
    view = await weixin.start_session("wx1")
    sid, first = view["sessionId"], qrcode_of(view)
    weixin.ilink.require_code(first, code="4321", max_wrong=1)
    await weixin.wait_session(sid, "verify_code_required")
    await weixin.api.post(f"/connector-sessions/{sid}/verify-code", json={"code": "0000"})

    async def refreshed() -> dict[str, object] | None:
        current = await weixin.session(sid)
        return current if current["qrContent"] != view["qrContent"] else None

    current = await wait_for(refreshed, what="a new QR code")
    assert current["status"] == "qr_ready"
    assert len(weixin.ilink.qrcodes) == 2
    weixin.ilink.confirm(qrcode_of(current))
    await weixin.wait_session(sid, "connected")


@pytest.mark.anyio
async def test_redirect_moves_the_status_polls(weixin: WeixinSidecar) -> None:
    """scaned_but_redirect: later polls go to ``redirect_host``, where the confirm arrives."""
    view = await weixin.start_session("wx1")
    qrcode = qrcode_of(view)
    weixin.ilink.redirect(qrcode, host="ilink-idc2.test")
    qr = weixin.ilink.qr(qrcode)

    async def moved() -> bool:
        return any(p["host"] == "ilink-idc2.test" for p in qr.polls)

    await wait_for(moved, what="a poll on the redirect host")
    await weixin.wait_session(view["sessionId"], "scanned")
    weixin.ilink.confirm(qrcode)
    await weixin.wait_session(view["sessionId"], "connected")
    hosts = [p["host"] for p in qr.polls]
    assert hosts[0] == "ilink.test"
    assert hosts[-1] == "ilink-idc2.test"


@pytest.mark.anyio
async def test_three_expired_codes_expire_the_session(weixin: WeixinSidecar) -> None:
    """Each expired code is replaced, at most 3 codes in all; then the session is expired."""
    view = await weixin.start_session("wx1")
    sid = view["sessionId"]
    seen = [view["qrContent"]]
    for _ in range(2):
        weixin.ilink.expire(qrcode_of(await weixin.session(sid)))

        async def refreshed() -> dict[str, object] | None:
            current = await weixin.session(sid)
            return current if current["qrContent"] not in seen else None

        current = await wait_for(refreshed, what="a new QR code")
        assert current["status"] == "qr_ready"
        seen.append(current["qrContent"])
    weixin.ilink.expire(qrcode_of(await weixin.session(sid)))
    done = await weixin.wait_session(sid, "expired")
    assert "3 QR codes" in done["error"]
    assert done["qrImage"] is None
    assert len(weixin.ilink.qrcodes) == 3
    assert (await weixin.connection("wx1"))["status"] == "pairing"


@pytest.mark.anyio
async def test_binded_redirect_reuses_the_stored_login(weixin: WeixinSidecar) -> None:
    """A re-pair answered ``binded_redirect`` connects with the login already stored."""
    _, bot_id = await weixin.pair("wx1")
    token = weixin.ilink.bots[bot_id].token
    view = await weixin.start_session("wx1")
    weixin.ilink.bind(qrcode_of(view), bot_id=bot_id)
    done = await weixin.wait_session(view["sessionId"], "connected")
    assert done["accountId"] == bot_id
    assert (await _credentials(weixin, "wx1"))["bot_token"] == token
    await weixin.wait_connection("wx1", "connected")


@pytest.mark.anyio
async def test_binded_redirect_to_another_live_connection_is_an_error(
    weixin: WeixinSidecar,
) -> None:
    """A bot already live on another connection is not shared (no crosstalk): error."""
    _, bot_id = await weixin.pair("wx1")
    view = await weixin.start_session("wx2")
    weixin.ilink.bind(qrcode_of(view), bot_id=bot_id, name_bot=True)
    done = await weixin.wait_session(view["sessionId"], "error")
    assert "'wx1'" in done["error"]
    assert (await weixin.connection("wx1"))["status"] == "connected"


@pytest.mark.anyio
async def test_session_is_capped(weixin: WeixinSidecar) -> None:
    """A code never confirmed ends as ``expired`` when the session's time is up."""
    weixin.driver.pair_timing.session_seconds = 0.5
    view = await weixin.start_session("wx1")
    done = await weixin.wait_session(view["sessionId"], "expired")
    assert "not confirmed" in done["error"]


@pytest.mark.anyio
async def test_repair_keeps_the_old_login_until_confirmed(weixin: WeixinSidecar) -> None:
    """During a re-pair the old login still receives; the confirm resets cursor and tokens."""
    emulator = weixin.ilink
    _, old_bot = await weixin.pair("wx1", bot_id="old@im.bot")
    emulator.push(old_bot, "u1@im.wechat", "before")
    await weixin.wait_events(1)
    assert await weixin.state("wx1", "ctx:u1@im.wechat")

    view = await weixin.start_session("wx1")
    assert view["status"] == "qr_ready"
    emulator.push(old_bot, "u1@im.wechat", "during")
    events = await weixin.wait_events(2)
    assert [e["content"] for e in events] == ["before", "during"]
    assert (await weixin.connection("wx1"))["status"] == "connected"

    emulator.confirm(qrcode_of(view), bot_id="new@im.bot")
    await weixin.wait_session(view["sessionId"], "connected")
    assert (await weixin.connection("wx1"))["accountId"] == "new@im.bot"
    assert await weixin.state("wx1", "ctx:u1@im.wechat") is None
    emulator.push("new@im.bot", "u2@im.wechat", "after")
    events = await weixin.wait_events(3)
    assert events[-1]["content"] == "after"
    assert events[-1]["accountId"] == "new@im.bot"
    cursor = await weixin.state("wx1", "cursor")
    assert cursor is not None
    assert base64.b64decode(cursor).decode().startswith("emu:new@im.bot:")


@pytest.mark.anyio
async def test_pairing_resumes_after_a_restart(make_weixin: WeixinFactory, tmp_path) -> None:
    """A session interrupted by a restart keeps polling the same code and connects."""
    data_dir = tmp_path / "restart"
    async with make_weixin(data_dir=data_dir) as first:
        emulator = first.ilink
        view = await first.start_session("wx1")
        qrcode = qrcode_of(view)
        emulator.scan(qrcode)
        await first.wait_session(view["sessionId"], "scanned")
    emulator.confirm(qrcode)
    async with make_weixin(data_dir=data_dir) as second:
        done = await second.wait_session(view["sessionId"], "connected")
        assert done["qrContent"] == view["qrContent"]
        assert len(emulator.qrcodes) == 1
