"""The store: migrations, the SQLite data-directory lock, transactions and concurrent writers,
on both backends where the behaviour is not SQLite's own."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from connector_sidecar import create_app
from connector_sidecar.store import DatabaseLockedError
from connector_sidecar.store import SqliteDatabase as Database
from connector_sidecar.store.migrations import MIGRATIONS

from .conftest import DatabaseFactory, SidecarFactory, make_settings

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


async def test_migrations_are_applied_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new database gets every migration (user_version = their count); reopening applies none."""
    path = tmp_path / "db" / "sidecar.sqlite3"
    caplog.set_level("INFO", logger="connector_sidecar.store.db")
    db = Database(path)
    await db.open()
    await db.close()
    assert user_version(path) == len(MIGRATIONS) >= 1
    applied = [r for r in caplog.records if "applying database migration" in r.getMessage()]
    assert len(applied) == len(MIGRATIONS)

    caplog.clear()
    db = Database(path)
    await db.open()
    tables = await db.run(
        lambda c: {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    )
    await db.close()
    assert not [r for r in caplog.records if "applying database migration" in r.getMessage()]
    assert {"connections", "sessions", "outbox", "send_ledger", "connection_state"} <= tables
    assert user_version(path) == len(MIGRATIONS)


async def test_migration_2_keeps_the_outbox_schedule(tmp_path: Path) -> None:
    """Upgrading a version-1 outbox keeps each event's age and counts its attempts as failures;
    the worker's lane lookup then reads the partial index of pending events."""
    path = tmp_path / "sidecar.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(MIGRATIONS[0].sqlite)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO outbox (event_id, connection_id, lane, status, attempts, payload,"
            " created_at, next_attempt_at) VALUES ('evt_1', 'c', 'c\x1fp\x1f', 'pending', 3, '{}',"
            " 1000, 2000)"
        )
    db = Database(path)
    await db.open()
    try:
        row = await db.run(
            lambda c: c.execute(
                "SELECT attempts, failures, created_at, queued_at FROM outbox"
            ).fetchone()
        )
        plan = await db.run(
            lambda c: c.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM outbox WHERE lane = ? AND seq >= ?"
                " AND status = 'pending' ORDER BY seq LIMIT 1",
                ("c\x1fp\x1f", 0),
            ).fetchall()
        )
    finally:
        await db.close()
    assert tuple(row) == (3, 3, 1000, 1000)
    assert "outbox_pending_lane" in " ".join(str(step[-1]) for step in plan)
    assert user_version(path) == len(MIGRATIONS) >= 2


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer sidecar (higher user_version) is refused, not downgraded."""
    path = tmp_path / "sidecar.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db = Database(path)
    with pytest.raises(RuntimeError, match="newer"):
        await db.open()
    assert not db.is_open
    # The lock was released: a later open of a good database in the same directory works.
    path.unlink()
    await db.open()
    await db.close()


async def test_second_database_on_the_same_path_is_refused(tmp_path: Path) -> None:
    """A second opener of one data directory gets DatabaseLockedError until the first closes."""
    path = tmp_path / "sidecar.sqlite3"
    first = Database(path)
    await first.open()
    second = Database(path)
    with pytest.raises(DatabaseLockedError, match="already"):
        await second.open()
    assert not second.is_open
    await first.close()
    await second.open()
    assert await second.run(lambda c: c.execute("SELECT 1").fetchone()[0]) == 1
    await second.close()


@pytest.mark.sqlite_only
async def test_second_sidecar_on_the_same_data_dir_refuses_to_start(
    make_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    """A second app on a data directory in use fails its start-up with DatabaseLockedError."""
    data_dir = tmp_path / "shared"
    async with make_sidecar(data_dir=data_dir) as first:
        second = create_app(make_settings(data_dir))
        with pytest.raises(DatabaseLockedError):
            async with second.router.lifespan_context(second):
                pass
        assert (await first.client.get("/healthz")).status_code == 200


async def test_updates_refuse_unknown_columns(make_sidecar: SidecarFactory) -> None:
    """A connection or session update naming an unknown column or created_at is refused."""
    async with make_sidecar() as sidecar:
        view = await sidecar.pair()
        store = sidecar.app.state.services.store
        for update, key in (
            (store.connections.update, "conn_1"),
            (store.sessions.update, view["sessionId"]),
        ):
            for field in ("no_such_field", "created_at", "status = 'x', kind"):
                with pytest.raises(ValueError, match="unknown"):
                    await store.db.transaction(
                        lambda c, u=update, k=key, f=field: u(c, k, **{f: 1})
                    )
        connection = await store.db.run(store.connections.get, "conn_1")
        assert connection is not None
        assert connection.status == "connected"


async def test_concurrent_writes_never_see_database_is_locked(
    make_database: DatabaseFactory,
) -> None:
    """200 concurrent write transactions from many tasks all commit; none sees "database is locked"."""
    db = make_database()
    await db.open()
    try:

        def write(conn: Any, i: int) -> None:
            conn.execute(
                "INSERT INTO connection_state (connection_id, key, value, updated_at)"
                " VALUES ('c', ?, ?, 0)",
                (f"k{i}", str(i)),
            )

        await asyncio.gather(*(db.transaction(write, i) for i in range(200)))
        count = await db.run(
            lambda c: c.execute("SELECT COUNT(*) FROM connection_state").fetchone()[0]
        )
        assert count == 200
    finally:
        await db.close()


async def test_a_failed_transaction_rolls_back(make_database: DatabaseFactory) -> None:
    """An exception inside a transaction rolls back its writes and leaves the database usable."""
    db = make_database()
    await db.open()
    try:

        def fail(conn: Any) -> None:
            conn.execute(
                "INSERT INTO connection_state (connection_id, key, value, updated_at) VALUES ('c', 'k', 'v', 0)"
            )
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await db.transaction(fail)
        count = await db.run(
            lambda c: c.execute("SELECT COUNT(*) FROM connection_state").fetchone()[0]
        )
        assert count == 0
    finally:
        await db.close()


async def test_concurrent_traffic_through_the_api(make_sidecar: SidecarFactory) -> None:
    """Inbound messages, sends and reads on several connections at once all succeed."""
    async with make_sidecar() as sidecar:
        for n in range(4):
            await sidecar.pair(f"conn_{n}")
        calls = []
        for n in range(4):
            for i in range(15):
                calls.append(sidecar.inbound(f"conn_{n}", content=f"m{i}", messageId=f"m{n}-{i}"))
                calls.append(sidecar.send(f"out_{n}_{i}", f"reply {i}", connection_id=f"conn_{n}"))
                calls.append(sidecar.client.get("/connections"))
        responses = await asyncio.gather(*calls)
        assert {r.status_code for r in responses} <= {200, 202}
        deliveries = (await sidecar.client.get("/deliveries", params={"limit": "500"})).json()
        assert len(deliveries["items"]) == 60
        assert sum([len(await sidecar.sent(f"conn_{n}")) for n in range(4)]) == 60


async def test_a_finished_session_keeps_no_secrets_or_driver_state(
    make_database: DatabaseFactory,
) -> None:
    """Once a session is terminal its driver state, QR image and secret options are gone."""
    from connector_sidecar._clock import system_clock
    from connector_sidecar.store import SessionRecord, Store

    store = Store(make_database(), system_clock)
    await store.db.open()
    try:
        session = SessionRecord(
            session_id="cs_1",
            kind="feishu",
            connection_id="c1",
            channel_id="ch",
            status="qr_ready",
            options={"appId": "cli_1", "appSecret": "s3cret", "encryptKey": "k", "mode": "webhook"},
            qr_image="data:image/png;base64,AAAA",
            state={"clientSecret": "s3cret", "deviceCode": "d"},
        )
        await store.db.transaction(store.sessions.insert, session)
        running = await store.db.transaction(
            lambda c: store.sessions.update(c, "cs_1", status="scanned")
        )
        assert running.state == {"clientSecret": "s3cret", "deviceCode": "d"}
        done = await store.db.transaction(
            lambda c: store.sessions.update(c, "cs_1", status="cancelled", error="cancelled")
        )
        raw = await store.db.run(
            lambda c: str(tuple(c.execute("SELECT * FROM sessions").fetchone()))
        )
    finally:
        await store.db.close()
    assert done.state == {}
    assert done.qr_image is None
    assert done.options == {"appId": "cli_1", "mode": "webhook"}
    assert "s3cret" not in raw


@pytest.mark.sqlite_only
async def test_concurrent_transactions_share_commits_and_fail_alone(tmp_path: Path) -> None:
    """Transactions queued together commit together (fewer COMMITs than transactions); one that
    raises is rolled back alone and its caller gets the error, the others commit."""
    db = Database(tmp_path / "sidecar.sqlite3")
    await db.open()
    try:

        def write(conn: Any, i: int) -> int:
            conn.execute(
                "INSERT INTO connection_state (connection_id, key, value, updated_at)"
                " VALUES ('c', ?, ?, 0)",
                (f"k{i}", str(i)),
            )
            if i % 10 == 3:
                raise ValueError(f"refused {i}")
            return i

        before = db.commits
        results = await asyncio.gather(
            *(db.transaction(write, i) for i in range(100)), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, ValueError)]
        assert [str(e) for e in failed] == [f"refused {i}" for i in range(3, 100, 10)]
        assert [r for r in results if isinstance(r, int)] == [i for i in range(100) if i % 10 != 3]
        assert db.commits - before < 100
        keys = await db.run(lambda c: {r[0] for r in c.execute("SELECT key FROM connection_state")})
        assert keys == {f"k{i}" for i in range(100) if i % 10 != 3}
    finally:
        await db.close()
    # Durable: a new connection to the file (as after a crash) sees every committed row.
    with sqlite3.connect(tmp_path / "sidecar.sqlite3") as reader:
        assert reader.execute("SELECT COUNT(*) FROM connection_state").fetchone()[0] == 90


@pytest.mark.sqlite_only
async def test_a_write_racing_the_close_fails_cleanly(tmp_path: Path) -> None:
    """A write queued while the database closes gets "not open" (or commits first); the
    database thread never dies on it and the close completes."""
    db = Database(tmp_path / "sidecar.sqlite3")
    await db.open()

    def write(conn: Any) -> None:
        conn.execute(
            "INSERT INTO connection_state (connection_id, key, value, updated_at)"
            " VALUES ('c', 'k', 'v', 0)"
        )

    closing = asyncio.ensure_future(db.close())
    await asyncio.sleep(0)  # close() has queued the disconnect
    outcome = await asyncio.wait_for(
        asyncio.gather(db.transaction(write), return_exceptions=True), 10
    )
    await asyncio.wait_for(closing, 10)
    assert outcome[0] is None or "not open" in str(outcome[0])
    assert not db.is_open
