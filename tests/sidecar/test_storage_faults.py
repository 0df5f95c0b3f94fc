"""Storage failing under a running sidecar: 503 ``storage_unavailable``, not 500, and recovery.

The faults are real, one per backend: on SQLite the data directory is a small tmpfs that gets
filled up (disk full); on PostgreSQL the test's own database stops accepting connections and its
sessions are terminated (the server gone). Either way the API answers 503 with ``Retry-After``,
``/readyz`` names the storage, nothing answered 503 is stored, and once the storage is back a
write succeeds and the sidecar is ready again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.faults import tmpfs
from tests.sidecar.conftest import Sidecar, SidecarFactory, assert_problem
from tests.sidecar.test_delivery import until

from connector_sidecar import Secret

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]

BIG = "x" * 60_000  # a message that needs new database pages, so a full disk shows at once


class Fault:
    """Breaks and repairs the storage of one backend for real."""

    def __init__(self, break_: Callable[[], None], repair: Callable[[], None]) -> None:
        self.break_ = break_
        self.repair = repair


def fill(directory: Path) -> None:
    """Write a file into ``directory`` until its file system is full."""
    filler = directory / "filler"
    block = b"\0" * 65536
    with filler.open("wb") as out:
        for _ in range(100_000):  # bounded: 6 GB at most, far more than the tmpfs
            try:
                out.write(block)
                out.flush()
            except OSError:
                break


@pytest.fixture
def fault(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Fault, dict[str, Any]]]:
    """The fault of this backend and the sidecar settings that expose the storage to it."""
    if store_backend == "sqlite":
        with tmpfs(
            tmp_path / "small", options="size=4m,mode=0700", what="a full disk (a small tmpfs)"
        ) as data_dir:
            filler = data_dir / "filler"
            yield (
                Fault(lambda: fill(data_dir), lambda: filler.unlink(missing_ok=True)),
                {"data_dir": data_dir},
            )
        return
    import psycopg

    admin_url: str = request.getfixturevalue("postgres_database")  # skips/fails if unreachable
    name = f"sidecar_fault_{secrets.token_hex(6)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"

    def server_gone() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )

    def server_back() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')

    try:
        yield Fault(server_gone, server_back), {"database_url": Secret(url)}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def readiness(sidecar: Sidecar) -> str:
    response = await sidecar.client.get("/readyz")
    return response.text


async def stored_event_ids(sidecar: Sidecar) -> set[str]:
    response = await sidecar.client.get("/deliveries", params={"limit": "500"})
    assert response.status_code == 200, response.text
    return {item["eventId"] for item in response.json()["items"]}


async def test_a_storage_failure_is_a_503_until_a_write_succeeds_again(
    make_sidecar: SidecarFactory, fault: tuple[Fault, dict[str, Any]]
) -> None:
    """Disk full / PostgreSQL gone: 503 storage_unavailable with Retry-After, /readyz 503
    naming the storage, nothing refused is stored; repaired, the sidecar recovers by itself."""
    breaker, settings = fault
    async with make_sidecar(**settings) as sidecar:
        await sidecar.pair()
        accepted: set[str] = set()
        first = await sidecar.inbound(content="before the fault", messageId="m-before")
        assert first.status_code == 202, first.text
        accepted.add(first.json()["eventId"])
        assert "storage unavailable" not in await readiness(sidecar)

        breaker.break_()
        refused: httpx.Response | None = None
        for i in range(40):  # a full disk may still take what fits in pages already allocated
            response = await sidecar.inbound(content=f"{i} {BIG}", messageId=f"m-{i}")
            if response.status_code != 202:
                refused = response
                break
            accepted.add(response.json()["eventId"])
        assert refused is not None, "the storage never failed"
        body = assert_problem(refused, 503, "storage_unavailable")
        assert int(refused.headers["Retry-After"]) > 0
        assert "retry" in body["detail"]
        ready = await sidecar.client.get("/readyz")
        assert ready.status_code == 503
        assert "storage unavailable" in ready.text

        breaker.repair()

        async def recovered() -> bool:
            return "storage unavailable" not in await readiness(sidecar)

        await until(recovered, timeout=30, what="/readyz to drop the storage reason")
        after = await sidecar.inbound(content="after the fault", messageId="m-after")
        assert after.status_code == 202, after.text
        accepted.add(after.json()["eventId"])
        assert await stored_event_ids(sidecar) == accepted


async def test_a_replica_cut_off_past_its_lease_stops_its_inbound_loops(
    store_backend: str, make_sidecar: SidecarFactory, fault: tuple[Fault, dict[str, Any]]
) -> None:
    """PostgreSQL unreachable for longer than the lease: the replica stops the inbound loops
    others may now hold; once it can renew, it runs again what it still holds."""
    if store_backend == "sqlite":
        pytest.skip("SQLite is one process: no other replica can take a connection over")
    breaker, settings = fault
    async with make_sidecar(lease_seconds=3.0, **settings) as sidecar:
        await sidecar.pair()
        runtime = sidecar.app.state.services.runtime
        assert runtime.running_connections() == {"conn_1"}

        breaker.break_()

        async def stopped() -> bool:
            return not runtime.running_connections()

        await until(stopped, timeout=60, what="the inbound loop to stop")
        breaker.repair()

        async def running_again() -> bool:
            return bool(runtime.running_connections() == {"conn_1"})

        await until(running_again, timeout=60, what="the inbound loop to start again")
