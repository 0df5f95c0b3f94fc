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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from connector_sidecar import Secret, Settings, create_app
from connector_sidecar.api._common import Services
from connector_sidecar.drivers.feishu import FeishuDriver

from ...emulators.feishu import App, FeishuEmulator

TOKEN = "test-token-0123456789"
EMULATOR_BASE = "http://feishu.test"

_ids = itertools.count(1)


async def wait_for(check: Callable[[], Awaitable[Any]], *, timeout: float = 5.0, what: str) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


@dataclasses.dataclass
class FeishuSidecar:
    """A running in-process sidecar with the feishu driver, and the emulator it talks to."""

    app: Starlette
    api: httpx.AsyncClient
    driver: FeishuDriver
    emulator: FeishuEmulator

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def new_app(self, **spec: Any) -> App:
        return self.emulator.create_app({"appSecret": "s3cret", **spec})

    async def start_session(
        self, connection_id: str = "fs1", *, callback_base_url: str = "", **options: Any
    ) -> dict[str, Any]:
        response = await self.api.post(
            "/connector-sessions",
            json={
                "kind": "feishu",
                "connectionId": connection_id,
                "channelId": f"feishu-{connection_id}",
                "displayName": "",
                "callbackBaseUrl": callback_base_url,
                "options": options,
            },
        )
        assert response.status_code in (200, 201), response.text
        view: dict[str, Any] = response.json()
        return view

    async def session(self, session_id: str) -> dict[str, Any]:
        response = await self.api.get(f"/connector-sessions/{session_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def wait_session(
        self, session_id: str, *statuses: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            view = await self.session(session_id)
            return view if view["status"] in statuses else None

        view: dict[str, Any] = await wait_for(
            check, timeout=timeout, what=f"session {session_id} in {statuses}"
        )
        return view

    async def connection(self, connection_id: str = "fs1") -> dict[str, Any]:
        response = await self.api.get(f"/connections/{connection_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def wait_connection(
        self, connection_id: str, status: str, *, timeout: float = 5.0
    ) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            view = await self.connection(connection_id)
            return view if view["status"] == status else None

        view: dict[str, Any] = await wait_for(
            check, timeout=timeout, what=f"{connection_id} to be {status}"
        )
        return view

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

    async def events(self, connection_id: str = "fs1") -> list[dict[str, Any]]:
        """The outbox of a connection, oldest first."""
        response = await self.api.get(
            "/deliveries", params={"connectionId": connection_id, "limit": 500}
        )
        assert response.status_code == 200, response.text
        return [item["event"] for item in reversed(response.json()["items"])]

    async def wait_events(
        self, count: int, connection_id: str = "fs1", *, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]] | None:
            events = await self.events(connection_id)
            return events if len(events) >= count else None

        events: list[dict[str, Any]] = await wait_for(
            check, timeout=timeout, what=f"{count} events on {connection_id}"
        )
        return events

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

    async def send(
        self,
        request_id: str,
        content: str,
        *,
        connection_id: str = "fs1",
        peer_id: str,
        **extra: Any,
    ) -> httpx.Response:
        target = {"peerId": peer_id, "peerType": "group", "threadId": extra.pop("thread_id", None)}
        return await self.api.post(
            "/send",
            json={
                "requestId": request_id,
                "connectionId": connection_id,
                "channelId": f"feishu-{connection_id}",
                "kind": "feishu",
                "target": target,
                "content": content,
                "metadata": {},
                **extra,
            },
        )


def feishu_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "token": Secret(TOKEN),
        "data_dir": data_dir,
        "connectors": ("feishu",),
        "feishu_base_url": EMULATOR_BASE,
        "lark_base_url": f"{EMULATOR_BASE}/lark",
        "send_retry_attempts": 3,
        "send_retry_max_seconds": 3.0,
        "send_wait_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


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
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://sidecar",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as api,
        ):
            yield FeishuSidecar(app=app, api=api, driver=driver, emulator=emulator)
    finally:
        await emulator.stop()


FeishuFactory = Callable[..., contextlib.AbstractAsyncContextManager[FeishuSidecar]]


@pytest.fixture
def make_feishu(tmp_path: Path) -> FeishuFactory:
    """Start a feishu sidecar with settings overrides, each on its own data directory."""

    def make(**overrides: Any) -> contextlib.AbstractAsyncContextManager[FeishuSidecar]:
        overrides.setdefault("data_dir", tmp_path / f"feishu{next(_ids)}")
        return running_feishu(feishu_settings(**overrides))

    return make


@pytest.fixture
async def feishu(make_feishu: FeishuFactory) -> AsyncIterator[FeishuSidecar]:
    async with make_feishu() as running:
        yield running
