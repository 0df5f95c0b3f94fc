"""Shared pytest set-up: anyio runs async tests on asyncio; the machine's PostgreSQL for tests.

PostgreSQL (``SIDECAR_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``)
gets one fresh database per test run, dropped at the end, and each test a schema of its own in
it (``postgres_url``), dropped after the test. Unreachable, the tests that need it fail when
``CI=true`` and are skipped with one line otherwise.
"""

from __future__ import annotations

import faulthandler
import os
import secrets
import sys
import urllib.parse
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from tests.watchdog import after

POSTGRES_ADMIN_URL = (
    os.environ.get("SIDECAR_TEST_POSTGRES_URL")
    or os.environ.get("CONNECTOR_TEST_POSTGRES_URL")  # the name the SDK's tests used
    or "postgresql://postgres@127.0.0.1:5432/postgres"
)
HOW_TO_START_POSTGRES = (
    "start PostgreSQL on 127.0.0.1:5432 (trust auth, user postgres), e.g."
    " `pg_ctlcluster --skip-systemctl-redirect 15 main start`, or set SIDECAR_TEST_POSTGRES_URL"
)


def service_missing(what: str, how: str, error: BaseException) -> None:
    """Fail under CI (a missing service must never pass silently), skip with one line locally."""
    message = f"{what} is unreachable ({error.__class__.__name__}: {error}); {how}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def with_database(url: str, database: str, **query: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(
        parts._replace(path=f"/{database}", query=urllib.parse.urlencode(query))
    )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of this test run (its URL), created at first use and dropped at the end."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        service_missing("PostgreSQL", HOW_TO_START_POSTGRES, exc)
        raise
    name = f"sidecar_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(POSTGRES_ADMIN_URL, name)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """A URL whose tables land in a fresh schema of the run's database, dropped after the test."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urllib.parse.urlsplit(postgres_database)
    yield urllib.parse.urlunsplit(
        parts._replace(
            query=urllib.parse.urlencode(
                {"options": f"-c search_path={schema}"}, quote_via=urllib.parse.quote
            )
        )
    )
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- a teardown that never ends ends the run --------------------------------------------------------

TEARDOWN_LIMIT_SECONDS = 120.0


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    """pytest-timeout sets one alarm per test; once it has gone off in the test body, nothing
    bounds the fixtures' teardown, and a teardown that never returns would hang the whole run
    until CI kills it. After :data:`TEARDOWN_LIMIT_SECONDS` of teardown, every thread's stack is
    printed and the run ends with exit code 3."""
    with after(TEARDOWN_LIMIT_SECONDS, lambda: _end_stuck_run(item)):
        yield


def _end_stuck_run(item: pytest.Item) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    sys.stderr.write(
        f"\n+++ the teardown of {item.nodeid} is still running after"
        f" {TEARDOWN_LIMIT_SECONDS:g} s: ending the run +++\n"
    )
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(3)
