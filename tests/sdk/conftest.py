"""Shared fixtures of the SDK tests, including the PostgreSQL and Redis the shared stores use.

The services are the machine's (127.0.0.1:5432 trust auth as ``postgres``; 127.0.0.1:6379),
or those named by ``CONNECTOR_TEST_POSTGRES_URL`` and ``CONNECTOR_TEST_REDIS_URL``. Tests get
a database created for this run (dropped after) and a random Redis key prefix (deleted
after). With ``CI=true`` an unreachable service fails the tests that need it; elsewhere they
are skipped with one line saying how to start it.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from ._dedupe_stores import KINDS, MakeStore, Store, open_store

# --import-mode=importlib leaves the repository root off sys.path; the echo host tests import
# the runnable example as ``examples.echo_host``, the way ``python -m`` does from the root.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

REDIS_URL = os.environ.get("CONNECTOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_HOW_TO_START = {
    "Redis": "service redis-server start, or: docker run -d -p 127.0.0.1:6379:6379 redis:7 "
    "(or set CONNECTOR_TEST_REDIS_URL)",
}


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio, the loop the SDK's SQLite store is written for."""
    return "asyncio"


def service_unavailable(service: str, error: BaseException) -> NoReturn:
    """Fail under CI (a missing service must not pass as a skip), skip elsewhere."""
    reason = f"{service} is not reachable ({type(error).__name__}: {error})".replace("\n", " ")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; CI needs it", pytrace=False)
    pytest.skip(f"{reason}; start it with: {_HOW_TO_START[service]}")


@pytest.fixture(scope="session")
def postgres_dsn(postgres_database: str) -> str:
    """The PostgreSQL database of this test run (tests/conftest.py creates and drops it)."""
    return postgres_database


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis to test against, once it has answered a PING."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        service_unavailable("Redis", error)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; every key under it is deleted after the test."""
    import redis

    prefix = f"connector-test:{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# dedupe stores of every kind -----------------------------------------------------------------


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each dedupe store kind in turn (a test narrows it with ``parametrize("store_kind")``)."""
    return str(request.param)


@pytest.fixture
def store_target(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path
) -> tuple[str, str]:
    """Where this test's stores keep their records: (file, DSN or URL; table or key prefix)."""
    if store_kind == "sqlite":
        return str(tmp_path / "dedupe.sqlite3"), ""
    if store_kind == "postgres":
        return request.getfixturevalue("postgres_dsn"), f"dedupe_{secrets.token_hex(6)}"
    if store_kind == "redis":
        return request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return "", ""


@pytest.fixture
async def make_store(store_kind: str, store_target: tuple[str, str]) -> AsyncIterator[MakeStore]:
    """Builds stores of ``store_kind``, all on the same file, table or prefix; closes them after."""
    made: list[Store] = []

    def make(**options: Any) -> Store:
        store = open_store(store_kind, *store_target, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()
