"""Dedupe stores shared by real OS processes: each event processed once across processes, and
acknowledged calls surviving a SIGKILL (group commit for SQLite); the optional drivers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from connector_sdk import SqliteDedupeStore

from ._dedupe_stores import SHARED_KINDS, MakeStore

pytestmark = pytest.mark.anyio

# The child opens the same store as the test (kind, target, table or prefix from argv).
_OPEN = """
import asyncio, json, sys
from connector_sdk import PostgresDedupeStore, RedisDedupeStore, SqliteDedupeStore

def open_store(kind, target, name):
    if kind == "sqlite":
        return SqliteDedupeStore(target)
    if kind == "postgres":
        return PostgresDedupeStore(target, table=name)
    return RedisDedupeStore(target, prefix=name)
"""

_RACE = _OPEN + textwrap.dedent(
    """
    async def main() -> None:
        kind, target, name, keys, order = sys.argv[1:6]
        store = open_store(kind, target, name)
        await store.begin("warm-up", "connect", 1)  # connect before the race starts
        print("ready", flush=True)
        sys.stdin.readline()  # wait until both processes are started
        won = []
        events = range(int(keys))
        # Opposite orders: the two processes meet in the middle and race for the same keys.
        for n in reversed(events) if order == "desc" else events:
            decision = await store.begin("conn", f"evt_{n}", 1)
            if decision.should_process:
                won.append(decision.dedupe_key)
        await store.aclose()
        print(json.dumps(won), flush=True)

    asyncio.run(main())
    """
)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


@pytest.mark.parametrize("store_kind", SHARED_KINDS)
def test_two_processes_process_each_event_once(
    store_kind: str, store_target: tuple[str, str]
) -> None:
    """Two OS processes begin() the same 200 keys on one store: each key is processed once."""
    keys = 200
    children = [_spawn(_RACE, store_kind, *store_target, str(keys), o) for o in ("asc", "desc")]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            assert line == "ready", child.communicate(timeout=10)[1]
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        _stop(children)
    won = []
    for (out, err), child in zip(outputs, children, strict=True):
        assert child.returncode == 0, err
        won.append(set(json.loads(out.strip().splitlines()[-1])))
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == {f"conn:evt_{n}" for n in range(keys)}


_WORKERS = _OPEN + textwrap.dedent(
    """
    async def worker(store, number: int) -> None:
        for n in range(1_000_000):  # ends when the test kills the process
            decision = await store.begin("conn", f"w{number}_{n}", 1)
            assert decision.should_process
            await store.complete(decision.dedupe_key, f"m{number}_{n}")
            # Printed only once complete() has returned: this key is acknowledged.
            print(decision.dedupe_key, flush=True)

    async def main() -> None:
        kind, target, name = sys.argv[1:4]
        store = open_store(kind, target, name)
        await asyncio.gather(*(worker(store, number) for number in range(16)))

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("store_kind", SHARED_KINDS)
async def test_acknowledged_completes_survive_a_sigkill(
    store_kind: str, store_target: tuple[str, str], make_store: MakeStore
) -> None:
    """16 tasks begin and complete at once; SIGKILL right after 300 acks: none of them is lost."""
    child = _spawn(_WORKERS, store_kind, *store_target)
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while len(acknowledged) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break  # the child died: its stderr says why
            acknowledged.append(line.strip())
        child.send_signal(signal.SIGKILL)  # while other calls are still in flight
        _, err = child.communicate(timeout=10)
    finally:
        _stop([child])
    assert len(acknowledged) >= 300, err
    assert child.returncode == -signal.SIGKILL
    async with make_store() as store:
        for key in acknowledged:
            record = await store.get(key)
            assert record is not None, key
            assert record.status == "completed", key
            assert record.message_id == "m" + key.removeprefix("conn:w")


async def test_sqlite_group_commit_coalesces_concurrent_calls(tmp_path: Path) -> None:
    """Calls that arrive together share transactions: fewer commits than calls, all applied."""
    async with SqliteDedupeStore(tmp_path / "group.sqlite3") as store:
        before = store.commits
        decisions = await asyncio.gather(*(store.begin("c", f"e{n % 100}", 1) for n in range(400)))
        await asyncio.gather(*(store.complete(d.dedupe_key) for d in decisions if d.should_process))
        commits = store.commits - before
        assert sum(d.should_process for d in decisions) == 100
        assert await store.count() == 100
    assert commits < 500 / 4  # 500 calls: coalesced, not one commit each


@pytest.mark.parametrize(
    ("module", "store", "extra"),
    [
        ("psycopg", "PostgresDedupeStore('postgresql://127.0.0.1/db')", "postgres"),
        ("psycopg_pool", "PostgresDedupeStore('postgresql://127.0.0.1/db')", "postgres"),
        ("redis", "RedisDedupeStore('redis://127.0.0.1:6379/0')", "redis"),
    ],
)
def test_a_missing_driver_says_which_extra_to_install(module: str, store: str, extra: str) -> None:
    """Without the driver the SDK still imports; the store raises ImportError naming the extra."""
    code = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "from connector_sdk import PostgresDedupeStore, RedisDedupeStore\n"
        "try:\n"
        f"    {store}\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'connector-sdk[{extra}]'" in result.stdout
