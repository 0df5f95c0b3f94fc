"""In-process sidecar fixtures: the real Starlette app with its lifespan, over httpx's ASGI transport.

The store is SQLite unless a test module is marked ``both_stores``: then each of its tests that
uses ``store_backend`` (through ``make_sidecar``, ``sidecar`` or ``make_database``) runs twice,
on SQLite and on PostgreSQL, the same test on both backends.

``sidecar`` is an app on a fresh data directory with the sim connector only and tiny retry
settings; ``make_sidecar(**settings)`` starts another with different settings. A test that waits
out retry backoffs passes ``clock=FakeClock()`` and ``sleep=clock.sleep``: sleeping then moves the
fake clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from tests.watchdog import after

from connector_sidecar import Secret, Settings, create_app
from connector_sidecar._clock import Clock, Sleep
from connector_sidecar.store import Database, database_for

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

_ids = itertools.count(1)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an in-process sidecar: sim only, fast failure paths."""
    values: dict[str, Any] = {
        "token": Secret(TOKEN),
        "data_dir": data_dir,
        "connectors": ("sim",),
        "send_retry_attempts": 1,
        "send_retry_max_seconds": 0.5,
        "send_wait_seconds": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


def send_body(
    request_id: str,
    content: str = "hello",
    *,
    connection_id: str = "conn_1",
    peer_id: str = "peer-1",
    **extra: Any,
) -> dict[str, Any]:
    """A ``POST /send`` body shaped like docs/CONTRACT.md §4's example."""
    return {
        "requestId": request_id,
        "connectionId": connection_id,
        "channelId": "sim-main",
        "kind": "sim",
        "target": {"peerId": peer_id, "peerType": "dm", "threadId": None},
        "content": content,
        "metadata": {"inboundMessageId": "in-msg-1", "sessionId": "s1"},
        **extra,
    }


def paragraphs(count: int, size: int = 1500) -> str:
    """Text of ``count`` paragraphs of ``size`` characters: one sim chunk (2000) per paragraph."""
    return "\n\n".join(f"{i}" + "x" * (size - 1) for i in range(count))


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem document with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    assert body["title"]
    return body


@dataclasses.dataclass
class Sidecar:
    """A running in-process sidecar and an authenticated client for it."""

    app: Starlette
    settings: Settings
    client: httpx.AsyncClient

    async def pair(
        self, connection_id: str = "conn_1", channel_id: str = "sim-main", **options: Any
    ) -> dict[str, Any]:
        """Pair a sim connection at once (``autoConfirm``); returns the session view."""
        response = await self.client.post(
            "/connector-sessions",
            json={
                "kind": "sim",
                "connectionId": connection_id,
                "channelId": channel_id,
                "displayName": "Test",
                "callbackBaseUrl": "",
                "options": {"autoConfirm": True, **options},
            },
        )
        assert response.status_code == 201, response.text
        view: dict[str, Any] = response.json()
        assert view["status"] == "connected", view
        return view

    async def inbound(
        self, connection_id: str = "conn_1", content: str = "hi", **fields: Any
    ) -> httpx.Response:
        fields.setdefault("peerId", "peer-1")
        return await self.client.post(
            f"/sim/connections/{connection_id}/messages", json={"content": content, **fields}
        )

    async def faults(self, connection_id: str = "conn_1", **faults: Any) -> dict[str, Any]:
        response = await self.client.post(f"/sim/connections/{connection_id}/faults", json=faults)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def sent(self, connection_id: str = "conn_1") -> list[dict[str, Any]]:
        response = await self.client.get(f"/sim/connections/{connection_id}/sent")
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def send(self, request_id: str, content: str = "hello", **kwargs: Any) -> httpx.Response:
        return await self.client.post("/send", json=send_body(request_id, content, **kwargs))


class FakeClock:
    """A clock that moves only when told to (``advance``) or slept on (``sleep``)."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record the wait and move the clock past it, at once."""
        self.slept.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def running_sidecar(
    settings: Settings, clock: Clock | None = None, sleep: Sleep | None = None
) -> AsyncIterator[Sidecar]:
    """Run the app's lifespan and yield a client bound to it; stop it on exit."""
    timing: dict[str, Any] = {}
    if clock is not None:
        timing["clock"] = clock
    if sleep is not None:
        timing["sleep"] = sleep
    app = create_app(settings, **timing)
    with _task_dump_after(WATCHDOG_SECONDS):
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://sidecar", headers=AUTH
            ) as client,
        ):
            yield Sidecar(app=app, settings=settings, client=client)


def _awaiting(coro: Any) -> Iterator[str]:
    """Where a coroutine waits, outermost first: its frame, then what it awaits, and so on."""
    for _ in range(50):
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            yield f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if coro is None:
            return
        if not hasattr(coro, "cr_frame") and not hasattr(coro, "gi_frame"):
            yield f"awaiting {coro!r}"[:300]
            return


WATCHDOG_SECONDS = 45.0  # below the 60 s timeout of the modules that run sidecars


@contextlib.contextmanager
def _task_dump_after(seconds: float) -> Iterator[None]:
    """If the sidecar is still running after ``seconds``, print where every asyncio task waits.

    pytest-timeout shows the threads' stacks, where an idle event loop says nothing; a stuck
    test is explained by the task stacks (shown with the failure, as captured stderr).
    """
    loop = asyncio.get_running_loop()

    def dump() -> None:
        print(f"--- asyncio tasks after {seconds:g} s ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            print(f"{task.get_name()}:", file=sys.stderr)
            for where in _awaiting(task.get_coro()):
                print(f"    {where}", file=sys.stderr)

    with after(seconds, lambda: loop.call_soon_threadsafe(dump)):
        yield


SidecarFactory = Callable[..., contextlib.AbstractAsyncContextManager[Sidecar]]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker
        if marker("postgres_only"):
            backends = ["postgres"]
        elif marker("both_stores") and not marker("sqlite_only"):
            backends = ["sqlite", "postgres"]
        else:
            backends = ["sqlite"]
        metafunc.parametrize("store_backend", backends, indirect=True)


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def database_url(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    """The PostgreSQL URL of this test's schema, or None on SQLite."""
    if store_backend == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


DatabaseFactory = Callable[[], Database]


@pytest.fixture
def make_database(tmp_path: Path, database_url: str | None) -> DatabaseFactory:
    """A new (closed) Database of this test's backend; every call opens the same data."""
    return lambda: database_for(database_url, tmp_path / "sidecar.sqlite3")


@pytest.fixture
def make_sidecar(tmp_path: Path, database_url: str | None) -> SidecarFactory:
    """Start a sidecar with settings overrides; each call gets its own data directory (on
    PostgreSQL, every sidecar of one test shares the test's database)."""

    def make(
        *, clock: Clock | None = None, sleep: Sleep | None = None, **overrides: Any
    ) -> contextlib.AbstractAsyncContextManager[Sidecar]:
        overrides.setdefault("data_dir", tmp_path / f"data{next(_ids)}")
        if database_url is not None:
            overrides.setdefault("database_url", Secret(database_url))
        return running_sidecar(make_settings(**overrides), clock, sleep)

    return make


@pytest.fixture
async def sidecar(make_sidecar: SidecarFactory) -> AsyncIterator[Sidecar]:
    """A running sidecar with the sim connector and nothing paired yet."""
    async with make_sidecar() as running:
        yield running


@pytest.fixture
async def paired(sidecar: Sidecar) -> Sidecar:
    """The ``sidecar`` with sim connection ``conn_1`` connected."""
    await sidecar.pair("conn_1")
    return sidecar
