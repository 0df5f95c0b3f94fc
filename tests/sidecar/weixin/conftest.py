"""In-process WeChat fixtures: the real sidecar app (its lifespan, over ASGI) with the weixin
driver talking either to the iLink emulator in-process (``httpx.ASGITransport``) or to respx.

The driver's pauses are shrunk (``PairTiming``/``PollTiming``); the send path's retry sleeps are
real, so the retry budget is small.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from connector_sidecar import Settings, create_app
from connector_sidecar.drivers.weixin import WeixinDriver
from connector_sidecar.drivers.weixin.inbound import PollTiming
from connector_sidecar.drivers.weixin.pairing import PairTiming

from ...emulators.ilink import IlinkEmulator, build_app
from .._inprocess import InProcessSidecar, driver_settings, serving, wait_for

__all__ = [
    "EMULATOR_BASE",
    "VENDOR_BASE",
    "WeixinFactory",
    "WeixinSidecar",
    "qrcode_of",
    "wait_for",
]

EMULATOR_BASE = "http://ilink.test"
VENDOR_BASE = "https://ilinkai.weixin.qq.com"

_ids = itertools.count(1)


@dataclasses.dataclass
class WeixinSidecar(InProcessSidecar):
    """A running in-process sidecar with the weixin driver, and what it talks to."""

    kind: ClassVar[str] = "weixin"
    default_connection: ClassVar[str] = "wx1"

    driver: WeixinDriver
    emulator: IlinkEmulator | None

    async def pair(
        self, connection_id: str = "wx1", *, bot_id: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Pair through the emulator's QR flow; returns the connected session view and bot id."""
        view = await self.start_session(connection_id)
        assert view["status"] == "qr_ready", view
        bot = self.ilink.confirm(qrcode_of(view), bot_id=bot_id)
        view = await self.wait_session(view["sessionId"], "connected")
        return view, bot.bot_id

    async def connect(self, connection_id: str = "wx1") -> dict[str, Any]:
        """Start a session and wait until it is connected: for a vendor (respx) that confirms
        by itself. Returns the connected session view."""
        view = await self.start_session(connection_id)
        return await self.wait_session(view["sessionId"], "connected")

    @property
    def ilink(self) -> IlinkEmulator:
        """The emulator (for a sidecar that was started against one)."""
        assert self.emulator is not None, "this sidecar talks to respx, not to the emulator"
        return self.emulator

    def vendor_requests(self, endpoint: str) -> list[dict[str, Any]]:
        """What the driver sent to one emulator endpoint (``getupdates``, ``sendmessage``, …)."""
        return self.ilink.requests_to(endpoint)


def qrcode_of(view: dict[str, Any]) -> str:
    """The ``qrcode`` parameter inside the session's ``qrContent`` URL."""
    content = view["qrContent"]
    assert content, view
    assert "qrcode=" in content, view
    return str(httpx.URL(content).params["qrcode"])


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
    async with serving(app) as api:
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
        overrides.setdefault(
            "weixin_base_url", EMULATOR_BASE if emulator is not None else VENDOR_BASE
        )
        if emulator is not None:
            overrides.setdefault("weixin_cdn_base_url", f"{EMULATOR_BASE}/c2c")
        settings = driver_settings(
            data_dir or tmp_path / f"data{next(_ids)}", "weixin", **overrides
        )
        return running_weixin(settings, emulator)

    return make


@pytest.fixture
async def weixin(make_weixin: WeixinFactory) -> AsyncIterator[WeixinSidecar]:
    """A running sidecar with the weixin driver against the in-process emulator."""
    async with make_weixin() as running:
        yield running
