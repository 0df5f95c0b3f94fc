"""The long connection, in-process, against the emulator's websocket server: acks only after the
outbox commit, fragments, pings and the server's config, the watchdog, and reconnects."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from connector_sidecar.drivers.feishu.api import FeishuApi, TokenCache
from connector_sidecar.drivers.feishu.ws import LongConnection
from connector_sidecar.store import event_id_for

from ...emulators.feishu import FeishuEmulator
from .conftest import FeishuSidecar, wait_for


@pytest.fixture
async def emulator() -> AsyncIterator[FeishuEmulator]:
    emu = FeishuEmulator(ws_port=0)
    emu.client_config.update(ReconnectInterval=1, ReconnectNonce=0)
    await emu.start_ws()
    try:
        yield emu
    finally:
        await emu.stop()


async def no_sleep(seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.mark.anyio
async def test_ack_is_sent_only_after_the_handler_returns(emulator: FeishuEmulator) -> None:
    """While the handler (the outbox commit) runs, nothing is acked; then code 200 with biz_rt."""
    app = emulator.create_app({"appSecret": "s"})
    release = asyncio.Event()
    handled: list[dict[str, object]] = []

    async def handle(payload: bytes) -> None:
        await release.wait()
        handled.append(json.loads(payload))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as http:
        api = FeishuApi(http, "http://feishu.test", app.app_id, "s", tokens=TokenCache())
        client = LongConnection(fetch_endpoint=api.ws_endpoint, handle_event=handle, sleep=no_sleep)
        task = asyncio.create_task(client.run())
        try:
            await wait_for(lambda: _connected(emulator), what="the connection")
            message, envelope = emulator.build_event(app, {"text": "hi"})
            await emulator.push_ws(app, message, envelope, {})
            await asyncio.sleep(0.2)
            [delivery] = emulator.deliveries
            assert delivery.acks == []
            release.set()
            await wait_for(lambda: _acked(emulator), what="the ack")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert handled[0]["header"]["event_id"] == envelope["header"]["event_id"]  # type: ignore[index]
    [ack] = delivery.acks
    assert ack["code"] == 200
    assert ack["bizRt"] is not None
    assert int(ack["bizRt"]) >= 150


@pytest.mark.anyio
async def test_handler_failure_answers_500_and_the_event_comes_back(
    emulator: FeishuEmulator,
) -> None:
    """A handler that raises acks 500; the emulator redelivers under a new event_id."""
    emulator.ack_timeout = 0.2
    app = emulator.create_app({"appSecret": "s"})
    calls: list[str] = []

    async def handle(payload: bytes) -> None:
        calls.append(json.loads(payload)["header"]["event_id"])
        if len(calls) == 1:
            raise RuntimeError("the database is unhappy")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as http:
        api = FeishuApi(http, "http://feishu.test", app.app_id, "s", tokens=TokenCache())
        client = LongConnection(fetch_endpoint=api.ws_endpoint, handle_event=handle, sleep=no_sleep)
        task = asyncio.create_task(client.run())
        try:
            await wait_for(lambda: _connected(emulator), what="the connection")
            message, envelope = emulator.build_event(app, {"text": "hi"})
            await emulator.push_ws(app, message, envelope, {})
            await wait_for(lambda: _acked(emulator), what="the redelivered ack")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    [delivery] = emulator.deliveries
    assert [a["code"] for a in delivery.acks] == [500, 200]
    assert len(set(calls)) == 2


async def _connected(emulator: FeishuEmulator) -> bool:
    return any(c.open for c in emulator.conns)


async def _acked(emulator: FeishuEmulator) -> bool:
    return bool(emulator.deliveries) and all(d.acked for d in emulator.deliveries)


@pytest.mark.anyio
async def test_fragments_are_reassembled_and_acked_once(feishu: FeishuSidecar) -> None:
    """An event split in 4 DATA frames becomes one event; one ack, on the completing frame."""
    app = feishu.new_app()
    await feishu.pair(app)
    pushed = await feishu.push(app, text="a long message " * 50, fragments=4)
    [event] = await feishu.wait_events(1)
    assert event["messageId"] == pushed["messageId"]
    assert event["content"] == ("a long message " * 50).strip()
    await wait_for(lambda: _acked(feishu.emulator), what="the ack")
    [delivery] = feishu.emulator.deliveries
    assert len(delivery.acks) == 1


@pytest.mark.anyio
async def test_pings_carry_the_service_id_and_pongs_set_the_interval(
    feishu: FeishuSidecar,
) -> None:
    """A ping right after connecting, with the URL's service_id; a pong's PingInterval applies."""
    feishu.emulator.client_config["PingInterval"] = 1
    app = feishu.new_app()
    await feishu.pair(app)
    await wait_for(lambda: _pings(feishu.emulator, 3), timeout=5, what="three pings a second apart")
    assert all(c.bad_pings == 0 for c in feishu.emulator.conns)


async def _pings(emulator: FeishuEmulator, count: int) -> bool:
    return sum(c.pings for c in emulator.conns) >= count


@pytest.mark.anyio
async def test_silence_watchdog_reconnects_with_a_fresh_endpoint(feishu: FeishuSidecar) -> None:
    """A connection that goes silent (no pongs) is dropped after 3 × PingInterval; the driver
    fetches a new endpoint, reconnects, and gets the events queued meanwhile."""
    feishu.emulator.client_config["PingInterval"] = 1
    app = feishu.new_app()
    await feishu.pair(app)
    assert feishu.emulator.endpoint_calls[app.app_id] == 1
    for conn in feishu.emulator.conns:
        conn.muted = True
    pushed = await feishu.push(app, text="while silent")
    await feishu.wait_ws(app, connects=2, timeout=8)
    assert feishu.emulator.endpoint_calls[app.app_id] == 2
    [event] = await feishu.wait_events(1)
    assert event["messageId"] == pushed["messageId"]
    view = await feishu.wait_connection("fs1", "connected")
    assert view["lastError"] is None


@pytest.mark.anyio
async def test_drop_mid_stream_redelivers_unacked_under_new_event_ids(
    feishu: FeishuSidecar,
) -> None:
    """Events whose acks were lost come back under new event_ids after a reconnect; the outbox
    keeps each message once, and every delivery ends acked."""
    feishu.emulator.ack_timeout = 0.5
    app = feishu.new_app()
    await feishu.pair(app)
    first = await feishu.push(app, text="one", ignoreAcks=1)
    second = await feishu.push(app, text="two", dropAfterSend=True)
    await feishu.wait_ws(app, connects=2, timeout=8)
    third = await feishu.push(app, text="three")
    events = await feishu.wait_events(3)
    await wait_for(lambda: _acked(feishu.emulator), timeout=8, what="every delivery acked")
    assert sorted(e["messageId"] for e in events) == sorted(
        p["messageId"] for p in (first, second, third)
    )
    assert {e["eventId"] for e in events} == {
        event_id_for("fs1", p["messageId"]) for p in (first, second, third)
    }
    redelivered = [d for d in feishu.emulator.deliveries if d.attempts > 1]
    assert redelivered
    assert all(len(set(d.event_ids)) == d.attempts for d in redelivered)
    assert len(await feishu.events()) == 3


@pytest.mark.anyio
async def test_credentials_rejected_on_reconnect_is_auth_expired(feishu: FeishuSidecar) -> None:
    """A secret reset in the console: the next endpoint call fails, the token check says 10014,
    and the connection becomes auth_expired with the vendor's message."""
    app = feishu.new_app()
    await feishu.pair(app)
    app.app_secret = "rotated"
    for conn in feishu.emulator.conns:
        conn.open = False
        conn.ws.transport.abort()
    view = await feishu.wait_connection("fs1", "auth_expired")
    assert "app secret invalid" in view["lastError"]


def test_reconnect_delays_jitter_and_cap() -> None:
    """First retry: jitter within ReconnectNonce; then exponential, capped by ReconnectInterval."""

    async def endpoint() -> object:
        raise AssertionError

    async def handle(payload: bytes) -> None:
        pass

    client = LongConnection(
        fetch_endpoint=endpoint,  # type: ignore[arg-type]
        handle_event=handle,
        rng=random.Random(1),
    )
    client.config.apply({"ReconnectInterval": 20, "ReconnectNonce": 5, "PingInterval": 30})
    assert client.config.ping_interval == 30
    assert all(0 <= client._delay(0) <= 5 for _ in range(50))
    assert all(0.5 <= client._delay(1) <= 1 for _ in range(50))
    assert all(4 <= client._delay(4) <= 8 for _ in range(50))
    assert all(10 <= client._delay(9) <= 20 for _ in range(50))
    client.config.apply({"ReconnectCount": 3})
    assert client._delay(4) == 20


@pytest.mark.anyio
async def test_driver_acks_only_after_the_outbox_commit(
    feishu: FeishuSidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the outbox commit is held back, the event is not acked; once it is durable, it is."""
    runtime = feishu.services.runtime
    original = runtime.ingest
    gate = asyncio.Event()

    async def held_ingest(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(runtime, "ingest", held_ingest)
    app = feishu.new_app()
    await feishu.pair(app)
    await feishu.push(app, text="hold on")
    await asyncio.sleep(0.3)
    [delivery] = feishu.emulator.deliveries
    assert delivery.acks == []
    assert await feishu.events() == []
    gate.set()
    await wait_for(lambda: _acked(feishu.emulator), what="the ack after the commit")
    assert len(await feishu.events()) == 1
