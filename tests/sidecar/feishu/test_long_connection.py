"""The long connection, in-process, against the emulator's websocket server: acks only after the
outbox commit, fragments, pings and the server's config, the watchdog, and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from connector_sidecar.drivers.feishu.api import FeishuApi, TokenCache, WsEndpoint
from connector_sidecar.drivers.feishu.ws import ClientConfig, LongConnection
from connector_sidecar.store import event_id_for

from ...emulators.feishu import App, FeishuEmulator
from ..conftest import FakeClock
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


@contextlib.asynccontextmanager
async def long_connection(
    emulator: FeishuEmulator,
    app: App,
    handle: Callable[[bytes], Awaitable[None]],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[LongConnection]:
    """A bare LongConnection of ``app`` to the emulator, connected; cancelled on exit."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as http:
        api = FeishuApi(http, "http://feishu.test", app.app_id, app.app_secret, tokens=TokenCache())
        client = LongConnection(
            fetch_endpoint=api.ws_endpoint, handle_event=handle, sleep=no_sleep, clock=clock
        )
        task = asyncio.create_task(client.run())
        try:
            await wait_for(lambda: _connected(emulator), what="the connection")
            yield client
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.mark.anyio
async def test_ack_is_sent_only_after_the_handler_returns(emulator: FeishuEmulator) -> None:
    """No ack while the handler runs; then code 200 and biz_rt = the handler's ms."""
    app = emulator.create_app({"appSecret": "s"})
    clock = FakeClock()
    entered = asyncio.Event()
    release = asyncio.Event()
    handled: list[dict[str, object]] = []

    async def handle(payload: bytes) -> None:
        entered.set()
        await release.wait()
        clock.advance(0.25)
        handled.append(json.loads(payload))

    async with long_connection(emulator, app, handle, clock=clock):
        message, envelope = emulator.build_event(app, {"text": "hi"})
        await emulator.push_ws(app, message, envelope, {})
        await asyncio.wait_for(entered.wait(), 5)
        [delivery] = emulator.deliveries
        assert delivery.acks == []
        release.set()
        await wait_for(lambda: _acked(emulator), what="the ack")
    assert handled[0]["header"]["event_id"] == envelope["header"]["event_id"]  # type: ignore[index]
    [ack] = delivery.acks
    assert ack["code"] == 200
    assert ack["bizRt"] == "250"


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

    async with long_connection(emulator, app, handle):
        message, envelope = emulator.build_event(app, {"text": "hi"})
        await emulator.push_ws(app, message, envelope, {})
        await wait_for(lambda: _acked(emulator), what="the redelivered ack")
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
    entered = asyncio.Event()
    gate = asyncio.Event()

    async def held_ingest(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await gate.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(runtime, "ingest", held_ingest)
    app = feishu.new_app()
    await feishu.pair(app)
    await feishu.push(app, text="hold on")
    await asyncio.wait_for(entered.wait(), 5)
    [delivery] = feishu.emulator.deliveries
    assert delivery.acks == []
    assert await feishu.events() == []
    gate.set()
    await wait_for(lambda: _acked(feishu.emulator), what="the ack after the commit")
    assert len(await feishu.events()) == 1


@pytest.mark.anyio
async def test_a_pong_that_shortens_the_ping_interval_applies_at_once(
    feishu: FeishuSidecar,
) -> None:
    """A pong's shorter PingInterval applies to the next ping; the watchdog keeps the socket."""
    feishu.emulator.client_config["PingInterval"] = 120
    feishu.emulator.pong_config = {**feishu.emulator.client_config, "PingInterval": 0.5}
    app = feishu.new_app()
    await feishu.pair(app)
    await wait_for(lambda: _pings(feishu.emulator, 4), timeout=5, what="pings 0.5 s apart")
    assert feishu.emulator.connects[app.app_id] == 1
    assert feishu.emulator.endpoint_calls[app.app_id] == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "raw", ["{not json", "[" * 100_000, '"a string"', '{"schema": "2.0", "event": 5}']
)
async def test_unreadable_event_payloads_are_acked_and_skipped(
    feishu: FeishuSidecar, raw: str
) -> None:
    """An unreadable event payload is acked 200 and skipped; the next event is stored."""
    app = feishu.new_app()
    await feishu.pair(app)
    message, envelope = feishu.emulator.build_event(app, {"text": "junk"})
    await feishu.emulator.push_ws(app, message, envelope, {"rawPayload": raw})
    pushed = await feishu.push(app, text="after the junk")
    [event] = await feishu.wait_events(1)
    assert event["messageId"] == pushed["messageId"]
    await wait_for(lambda: _acked(feishu.emulator), what="both acks")
    assert [a["code"] for d in feishu.emulator.deliveries for a in d.acks] == [200, 200]
    assert feishu.emulator.connects[app.app_id] == 1


@pytest.mark.anyio
async def test_an_odd_but_readable_event_is_stored_and_acked(feishu: FeishuSidecar) -> None:
    """Junk mentions and an out-of-range create_time do not cost the message: stored, acked 200."""
    app = feishu.new_app()
    await feishu.pair(app)
    message, envelope = feishu.emulator.build_event(app, {"text": "still readable"})
    envelope["event"]["message"].update(create_time="9" * 30, mentions=[5, {"key": 7}])
    await feishu.emulator.push_ws(app, message, envelope, {})
    [event] = await feishu.wait_events(1)
    assert event["content"] == "still readable"
    await wait_for(lambda: _acked(feishu.emulator), what="the ack")
    assert [a["code"] for a in feishu.emulator.deliveries[0].acks] == [200]


@pytest.mark.anyio
async def test_disconnect_reasons_do_not_carry_the_endpoint_auth(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The endpoint URL's auth query never reaches a log line or a disconnect reason."""
    url = "http://127.0.0.1:9/ws?device_id=1&service_id=2&ticket=SECRET-TICKET"
    reasons: list[str] = []

    async def endpoint() -> WsEndpoint:
        return WsEndpoint(url=url, device_id="1", service_id=2, client_config={})

    async def disconnected(reason: str) -> None:
        reasons.append(reason)
        if len(reasons) == 2:
            raise asyncio.CancelledError

    async def handle(payload: bytes) -> None:
        raise AssertionError

    client = LongConnection(
        fetch_endpoint=endpoint, handle_event=handle, on_disconnected=disconnected, sleep=no_sleep
    )
    with pytest.raises(asyncio.CancelledError):
        await client.run()
    assert reasons
    assert all("127.0.0.1:9/ws" in r for r in reasons)
    assert not [r for r in reasons if "SECRET-TICKET" in r]
    assert not [r for r in caplog.records if "SECRET-TICKET" in r.getMessage()]


def test_client_config_takes_odd_values_within_bounds() -> None:
    """Huge, infinite, negative or junk ClientConfig values are bounded or ignored."""
    config = ClientConfig()
    config.apply({"PingInterval": 10**400, "ReconnectInterval": float("inf"), "ReconnectNonce": -1})
    assert (config.ping_interval, config.reconnect_interval) == (86_400.0, 86_400.0)
    assert config.reconnect_nonce == 30.0
    config.apply({"PingInterval": "5", "ReconnectNonce": float("nan"), "ReconnectCount": True})
    assert (config.ping_interval, config.reconnect_nonce, config.reconnect_count) == (
        86_400.0,
        30.0,
        -1,
    )
    config.apply([1, 2])
    assert config.ping_interval == 86_400.0
