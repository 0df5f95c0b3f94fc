"""In-process Feishu fixtures: the real sidecar app (its lifespan, over ASGI) with the feishu
driver talking to the emulator in-process: OpenAPI over ``httpx.ASGITransport``, the long
connection on a real loopback websocket server.

The driver's own pauses (pairing backoff, device-flow intervals, reconnect delays) are shrunk;
the send path's retry sleeps are real, so the retry budget is small.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from connector_sidecar import Settings, create_app
from connector_sidecar.drivers.feishu import FeishuDriver

from ...emulators.feishu import App, FeishuEmulator
from .._inprocess import InProcessSidecar, driver_settings, serving, wait_for

__all__ = ["EMULATOR_BASE", "FeishuFactory", "FeishuSidecar", "wait_for"]

EMULATOR_BASE = "http://feishu.test"

_ids = itertools.count(1)


@dataclasses.dataclass
class FeishuSidecar(InProcessSidecar):
    """A running in-process sidecar with the feishu driver, and the emulator it talks to."""

    kind: ClassVar[str] = "feishu"
    default_connection: ClassVar[str] = "fs1"
    default_peer_type: ClassVar[str] = "group"

    driver: FeishuDriver
    emulator: FeishuEmulator

    def new_app(self, **spec: Any) -> App:
        return self.emulator.create_app({"appSecret": "s3cret", **spec})

    async def pair(
        self, app: App, connection_id: str = "fs1", *, wait_ws: bool = True, **options: Any
    ) -> dict[str, Any]:
        """Pair with app credentials; in websocket mode, wait for the long connection too."""
        view = await self.start_session(
            connection_id, appId=app.app_id, appSecret=app.app_secret, **options
        )
        view = await self.wait_session(view["sessionId"], "connected", "error")
        assert view["status"] == "connected", view
        if wait_ws and options.get("mode", "websocket") == "websocket":
            await self.wait_ws(app)
        return view

    async def wait_ws(self, app: App, connects: int = 1, *, timeout: float = 5.0) -> None:
        async def check() -> bool:
            return self.emulator.connects.get(app.app_id, 0) >= connects and any(
                c.open for c in self.emulator.conns if c.app_id == app.app_id
            )

        await wait_for(check, timeout=timeout, what=f"{connects} long connection(s)")

    async def push(self, app: App, **spec: Any) -> dict[str, Any]:
        """An event over the long connection, as the emulator's control API would push it."""
        message, envelope = self.emulator.build_event(app, spec)
        await self.emulator.push_ws(app, message, envelope, spec)
        return {"messageId": message.message_id, "eventId": envelope["header"]["event_id"]}

    async def webhook(
        self, app: App, connection_id: str = "fs1", *, bad_signature: bool = False, **spec: Any
    ) -> httpx.Response:
        """An event POSTed to the sidecar's webhook route, encrypted and signed as Feishu does."""
        _, envelope = self.emulator.build_event(app, spec)
        body, headers = self.emulator.signed_request(app, envelope, bad_signature=bad_signature)
        return await self.api.post(
            f"/webhooks/feishu/{connection_id}", content=body, headers=headers
        )


async def _short_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.01))


@contextlib.asynccontextmanager
async def running_feishu(settings: Settings) -> AsyncIterator[FeishuSidecar]:
    emulator = FeishuEmulator(ws_port=0)
    emulator.client_config.update(ReconnectInterval=1, ReconnectNonce=0)
    await emulator.start_ws()
    app = create_app(settings)
    driver = app.state.services.runtime.drivers["feishu"]
    assert isinstance(driver, FeishuDriver)
    driver.transport = httpx.ASGITransport(app=emulator.app)
    driver.sleep = _short_sleep
    try:
        async with serving(app) as api:
            yield FeishuSidecar(app=app, api=api, driver=driver, emulator=emulator)

        async def all_closed() -> bool:
            return not any(c.open for c in emulator.conns)

        # No long connection may outlive the sidecar that opened it.
        await wait_for(all_closed, timeout=3, what="the long connections to close")
    finally:
        await emulator.stop()


FeishuFactory = Callable[..., contextlib.AbstractAsyncContextManager[FeishuSidecar]]


@pytest.fixture
def make_feishu(tmp_path: Path) -> FeishuFactory:
    """Start a feishu sidecar with settings overrides, each on its own data directory."""

    def make(**overrides: Any) -> contextlib.AbstractAsyncContextManager[FeishuSidecar]:
        data_dir = overrides.pop("data_dir", tmp_path / f"feishu{next(_ids)}")
        overrides.setdefault("feishu_base_url", EMULATOR_BASE)
        overrides.setdefault("lark_base_url", f"{EMULATOR_BASE}/lark")
        return running_feishu(driver_settings(data_dir, "feishu", **overrides))

    return make


@pytest.fixture
async def feishu(make_feishu: FeishuFactory) -> AsyncIterator[FeishuSidecar]:
    async with make_feishu() as running:
        yield running
