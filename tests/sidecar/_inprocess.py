"""The in-process harness the vendor driver tests share (weixin, feishu), and the JSON values
their fuzz tests feed the drivers.

The real sidecar app runs with its lifespan and is driven over ``httpx.ASGITransport``; a
subclass of :class:`InProcessSidecar` adds what its vendor needs (the driver, the emulator,
pairing). Every wait is bounded (:func:`wait_for`). When the app stops, :func:`serving` checks
that the sidecar left no task of its own running: a driver that does not cancel its loops
cleanly fails the test that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import httpx
from hypothesis import strategies as st
from starlette.applications import Starlette

from connector_sidecar import Secret, Settings
from connector_sidecar.api._common import Services

__all__ = [
    "TOKEN",
    "InProcessSidecar",
    "assert_not_logged",
    "driver_settings",
    "json_values",
    "serving",
    "sidecar_tasks",
    "wait_for",
]

TOKEN = "test-token-0123456789"
SIDECAR_PACKAGE = "connector_sidecar"

# Any JSON value a vendor could put where a field is expected: the fuzz tests of the drivers'
# mapping code draw surprising payloads from it (huge numbers, NaN, wrong types, nesting).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


async def wait_for(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.02, what: str
) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def driver_settings(data_dir: Path, connector: str, **overrides: Any) -> Settings:
    """Settings for one vendor connector: a small real retry budget for the send path."""
    values: dict[str, Any] = {
        "token": Secret(TOKEN),
        "data_dir": data_dir,
        "connectors": (connector,),
        "send_retry_attempts": 3,
        "send_retry_max_seconds": 3.0,
        "send_wait_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def assert_not_logged(records: Iterable[logging.LogRecord], secrets: Iterable[str]) -> None:
    """No record (its message, its arguments, its traceback) holds any of ``secrets``."""
    wanted = [s for s in secrets if s]
    assert wanted, "no secrets to look for: the check would be vacuous"
    formatter = logging.Formatter("%(name)s %(message)s %(args)s")
    lines = [formatter.format(r) + (r.exc_text or "") for r in records]
    assert lines, "nothing was logged: the check would be vacuous"
    for line in lines:
        for secret in wanted:
            assert secret not in line, f"a secret was logged: {line}"


def sidecar_tasks() -> list[str]:
    """The names of the unfinished tasks running the sidecar's own code (not this one's)."""
    found = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task() or task.done():
            continue
        code = getattr(task.get_coro(), "cr_code", None)
        if code is not None and f"/{SIDECAR_PACKAGE}/" in code.co_filename.replace("\\", "/"):
            found.append(task.get_name())
    return found


@contextlib.asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an authenticated client; on exit, check for leftovers."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://sidecar",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as api,
    ):
        yield api
    leftovers = sidecar_tasks()
    assert not leftovers, f"the sidecar left tasks running after it stopped: {leftovers}"


@dataclasses.dataclass
class InProcessSidecar:
    """A running in-process sidecar: the API a host uses, with bounded waits."""

    kind: ClassVar[str]
    default_connection: ClassVar[str]
    default_peer_type: ClassVar[str] = "dm"

    app: Starlette
    api: httpx.AsyncClient

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def view(self, path: str) -> dict[str, Any]:
        response = await self.api.get(path)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def wait_status(self, path: str, *statuses: str, timeout: float = 5.0) -> dict[str, Any]:
        """GET ``path`` until its ``status`` is one of ``statuses``; returns that view."""

        async def check() -> dict[str, Any] | None:
            view = await self.view(path)
            return view if view["status"] in statuses else None

        view: dict[str, Any] = await wait_for(check, timeout=timeout, what=f"{path}: {statuses}")
        return view

    async def start_session(
        self, connection_id: str | None = None, *, callback_base_url: str = "", **options: Any
    ) -> dict[str, Any]:
        connection_id = connection_id or self.default_connection
        response = await self.api.post(
            "/connector-sessions",
            json={
                "kind": self.kind,
                "connectionId": connection_id,
                "channelId": f"{self.kind}-{connection_id}",
                "displayName": "",
                "callbackBaseUrl": callback_base_url,
                "options": options,
            },
        )
        assert response.status_code in (200, 201), response.text
        view: dict[str, Any] = response.json()
        return view

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self.view(f"/connector-sessions/{session_id}")

    async def wait_session(
        self, session_id: str, *statuses: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        return await self.wait_status(
            f"/connector-sessions/{session_id}", *statuses, timeout=timeout
        )

    async def connection(self, connection_id: str | None = None) -> dict[str, Any]:
        return await self.view(f"/connections/{connection_id or self.default_connection}")

    async def wait_connection(
        self, connection_id: str, *statuses: str, timeout: float = 5.0
    ) -> dict[str, Any]:
        return await self.wait_status(f"/connections/{connection_id}", *statuses, timeout=timeout)

    async def events(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        """The outbox of a connection, oldest first (the order of delivery)."""
        response = await self.api.get(
            "/deliveries",
            params={"connectionId": connection_id or self.default_connection, "limit": 500},
        )
        assert response.status_code == 200, response.text
        return [item["event"] for item in reversed(response.json()["items"])]

    async def wait_events(
        self, count: int, connection_id: str | None = None, *, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """At least ``count`` events in the outbox of a connection; returns them all."""

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
        peer_id: str,
        connection_id: str | None = None,
        peer_type: str | None = None,
        thread_id: str | None = None,
        **extra: Any,
    ) -> httpx.Response:
        """``POST /send`` of ``content`` to ``peer_id``; ``extra`` adds top-level fields."""
        connection_id = connection_id or self.default_connection
        return await self.api.post(
            "/send",
            json={
                "requestId": request_id,
                "connectionId": connection_id,
                "channelId": f"{self.kind}-{connection_id}",
                "kind": self.kind,
                "target": {
                    "peerId": peer_id,
                    "peerType": peer_type or self.default_peer_type,
                    "threadId": thread_id,
                },
                "content": content,
                "metadata": {},
                **extra,
            },
        )

    async def state(self, connection_id: str, key: str) -> str | None:
        """A vendor state value of a connection (cursor, reply tokens, …)."""
        return await self.services.runtime.ctx.get_state(connection_id, key)
