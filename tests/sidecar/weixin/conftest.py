"""In-process WeChat fixtures: the real sidecar app (its lifespan, over ASGI) with the weixin
driver talking either to the iLink emulator in-process (``httpx.ASGITransport``) or to respx.

The driver's pauses are shrunk (``PairTiming``/``PollTiming``); the send path's retry sleeps are
real, so the retry budget is small.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from connector_sidecar import Settings, create_app
from connector_sidecar._secret import Secret
from connector_sidecar.api._common import Services
from connector_sidecar.drivers.weixin import WeixinDriver
from connector_sidecar.drivers.weixin.inbound import PollTiming
from connector_sidecar.drivers.weixin.pairing import PairTiming

from ...emulators.ilink import IlinkEmulator, build_app

TOKEN = "test-token-0123456789"
EMULATOR_BASE = "http://ilink.test"
VENDOR_BASE = "https://ilinkai.weixin.qq.com"

_ids = itertools.count(1)


@dataclasses.dataclass
class WeixinSidecar:
    """A running in-process sidecar with the weixin driver, and what it talks to."""

    app: Starlette
    api: httpx.AsyncClient
    driver: WeixinDriver
    emulator: IlinkEmulator | None

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def start_session(self, connection_id: str = "wx1", **fields: Any) -> dict[str, Any]:
        response = await self.api.post(
            "/connector-sessions",
            json={
                "kind": "weixin",
                "connectionId": connection_id,
                "channelId": f"weixin-{connection_id}",
                "displayName": "",
                "callbackBaseUrl": "",
                **fields,
            },
        )
        assert response.status_code in (200, 201), response.text
        view: dict[str, Any] = response.json()
        return view

    async def view(self, path: str) -> dict[str, Any]:
        response = await self.api.get(path)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def wait_status(self, path: str, status: str, *, timeout: float = 5.0) -> dict[str, Any]:
        """GET ``path`` until its ``status`` is ``status``; returns that view."""

        async def check() -> dict[str, Any] | None:
            view = await self.view(path)
            return view if view["status"] == status else None

        view: dict[str, Any] = await wait_for(check, timeout=timeout, what=f"{path}: {status}")
        return view

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self.view(f"/connector-sessions/{session_id}")

    async def wait_session(self, session_id: str, status: str) -> dict[str, Any]:
        return await self.wait_status(f"/connector-sessions/{session_id}", status)

    async def connection(self, connection_id: str = "wx1") -> dict[str, Any]:
        return await self.view(f"/connections/{connection_id}")

    async def wait_connection(self, connection_id: str, status: str) -> dict[str, Any]:
        return await self.wait_status(f"/connections/{connection_id}", status)

    async def pair(
        self, connection_id: str = "wx1", *, bot_id: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Pair through the emulator's QR flow; returns the connected session view and bot id."""
        assert self.emulator is not None
        view = await self.start_session(connection_id)
        assert view["status"] == "qr_ready", view
        qrcode = qrcode_of(view)
        bot = self.emulator.confirm(qrcode, bot_id=bot_id)
        view = await self.wait_session(view["sessionId"], "connected")
        return view, bot.bot_id

    async def events(self, connection_id: str = "wx1") -> list[dict[str, Any]]:
        """The outbox of a connection, oldest first (the order of delivery)."""
        response = await self.api.get(
            "/deliveries", params={"connectionId": connection_id, "limit": 500}
        )
        assert response.status_code == 200, response.text
        return [item["event"] for item in reversed(response.json()["items"])]

    async def wait_events(
        self, connection_id: str, count: int, *, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]] | None:
            events = await self.events(connection_id)
            return events if len(events) >= count else None

        events: list[dict[str, Any]] = await wait_for(
            check, timeout=timeout, what=f"{count} events on {connection_id}"
        )
        return events

    async def send(
        self,
        request_id: str,
        content: str,
        *,
        connection_id: str = "wx1",
        peer_id: str,
        **extra: Any,
    ) -> httpx.Response:
        return await self.api.post(
            "/send",
            json={
                "requestId": request_id,
                "connectionId": connection_id,
                "channelId": f"weixin-{connection_id}",
                "kind": "weixin",
                "target": {"peerId": peer_id, "peerType": "dm", "threadId": None},
                "content": content,
                "metadata": {},
                **extra,
            },
        )

    async def state(self, connection_id: str, key: str) -> str | None:
        return await self.services.runtime.ctx.get_state(connection_id, key)


async def wait_for(
    check: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02, what: str
) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def qrcode_of(view: dict[str, Any]) -> str:
    """The ``qrcode`` parameter inside the session's ``qrContent`` URL."""
    content = view["qrContent"]
    assert content, view
    assert "qrcode=" in content, view
    return str(httpx.URL(content).params["qrcode"])


def weixin_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "token": Secret(TOKEN),
        "data_dir": data_dir,
        "connectors": ("weixin",),
        "weixin_base_url": EMULATOR_BASE,
        "send_retry_attempts": 3,
        "send_retry_max_seconds": 3.0,
        "send_wait_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_weixin(
    settings: Settings, emulator: IlinkEmulator | None
) -> AsyncIterator[WeixinSidecar]:
    """Start the app; with an emulator, the driver reaches it through an ASGI transport."""
    app = create_app(settings)
    driver = app.state.services.runtime.drivers["weixin"]
    assert isinstance(driver, WeixinDriver)
    if emulator is not None:
        driver.transport = httpx.ASGITransport(app=build_app(emulator))
    driver.pair_timing = PairTiming(poll_pause_seconds=0.01, fetch_retry_seconds=0.01)
    driver.poll_timing = PollTiming(
        retry_seconds=0.01, long_retry_seconds=0.05, notify_stop_timeout=1.0
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://sidecar",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as api,
    ):
        yield WeixinSidecar(app=app, api=api, driver=driver, emulator=emulator)


WeixinFactory = Callable[..., contextlib.AbstractAsyncContextManager[WeixinSidecar]]


@pytest.fixture
def ilink_emulator() -> IlinkEmulator:
    """An in-process iLink emulator with short long-poll holds."""
    return IlinkEmulator(poll_hold_seconds=0.2, qr_hold_seconds=0.2)


@pytest.fixture
def make_weixin(tmp_path: Path, ilink_emulator: IlinkEmulator) -> WeixinFactory:
    """Start a sidecar against ``ilink_emulator`` (or respx with ``emulator=None``)."""

    def make(
        *, data_dir: Path | None = None, emulator: Any = ilink_emulator, **overrides: Any
    ) -> contextlib.AbstractAsyncContextManager[WeixinSidecar]:
        if emulator is None:
            overrides.setdefault("weixin_base_url", VENDOR_BASE)
        settings = weixin_settings(data_dir or tmp_path / f"data{next(_ids)}", **overrides)
        return running_weixin(settings, emulator)

    return make


@pytest.fixture
async def weixin(make_weixin: WeixinFactory) -> AsyncIterator[WeixinSidecar]:
    """A running sidecar with the weixin driver against the in-process emulator."""
    async with make_weixin() as running:
        yield running
