"""Every way ``connector-sidecar serve`` can fail to start: one log line naming the cause, exit 1.

Each case starts the real process against a real fault: a corrupted or newer database, a
read-only file system (a tmpfs remounted read-only), an immutable database file, a data
directory owned by another user (the sidecar run as ``nobody``), a port in use, two sidecars
started at once on one data directory, and PostgreSQL unreachable, missing or read-only. None
may print a traceback, and none may log "ready" (which is logged only once the port is bound).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.faults import mechanism_missing, root_command, tmpfs

from connector_sidecar.testing import SidecarProcess, free_port, wait_until

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def refused(sidecar: SidecarProcess, *causes: str) -> str:
    """Start ``sidecar``, which must exit non-zero with one error line holding ``causes``."""
    sidecar.start(wait=False)
    proc = sidecar.proc
    assert proc is not None
    wait_until(lambda: proc.poll() is not None, timeout=60, what="the sidecar to give up")
    output = sidecar.log_tail(200)
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    assert "sidecar ready" not in output, output
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1, output
    [line] = errors
    assert "cannot start: " in line, line
    for cause in causes:
        assert cause in line, line
    return line


def test_a_corrupted_database_is_named(sidecar_factory: SidecarFactory) -> None:
    """A database file that is not SQLite stops the start, naming the file."""
    sidecar = sidecar_factory()
    (sidecar.data_dir / "sidecar.sqlite3").write_bytes(b"not a database " * 1000)
    refused(sidecar, "sidecar.sqlite3", "not a SQLite database")


def test_a_newer_database_is_refused(sidecar_factory: SidecarFactory) -> None:
    """A database written by a newer sidecar is never downgraded: the start stops."""
    sidecar = sidecar_factory()
    with contextlib.closing(sqlite3.connect(sidecar.data_dir / "sidecar.sqlite3")) as db:
        db.execute("PRAGMA user_version = 999")
    refused(sidecar, "version 999", "newer")


def test_a_read_only_file_system_is_named(sidecar_factory: SidecarFactory, tmp_path: Path) -> None:
    """On a file system remounted read-only, an existing data directory stops the start."""
    with tmpfs(tmp_path / "ro", options="size=8m", what="a read-only file system (tmpfs)") as mount:
        data_dir = mount / "data"
        first = SidecarProcess(data_dir)
        first.log_path = tmp_path / "first.log"
        with first:  # a real database and lock file, written while it could
            pass
        root_command("mount", "-o", "remount,ro", str(mount))
        # The log goes elsewhere: the data directory cannot take it any more.
        second = SidecarProcess(data_dir, token=first.token)
        second.log_path = tmp_path / "second.log"
        try:
            refused(second, "Read-only file system")
        finally:
            second.terminate()


def test_an_immutable_database_file_is_named(sidecar_factory: SidecarFactory) -> None:
    """A database file the process cannot write (chattr +i) stops the start."""
    first = sidecar_factory()
    first.start()
    assert first.terminate() == 0
    database = first.data_dir / "sidecar.sqlite3"
    try:
        root_command("chattr", "+i", str(database))
    except (OSError, subprocess.SubprocessError) as exc:
        mechanism_missing("an immutable database file (chattr +i)", exc)
    try:
        second = SidecarProcess(first.data_dir, token=first.token)
        second.log_path = first.data_dir.parent / "second.log"
        refused(second, str(database), "read-only")
    finally:
        root_command("chattr", "-i", str(database))


def test_a_data_directory_owned_by_another_user_is_named() -> None:
    """Run as ``nobody`` on a data directory root owns: the start stops, naming the lock file."""
    base = Path(tempfile.mkdtemp(prefix="sidecar-owned-"))
    try:
        base.chmod(0o755)
        first = SidecarProcess(base / "data")
        with first:
            pass
        (base / "data").chmod(0o755)
        probe = subprocess.run(
            [*AS_NOBODY, "touch", str(base / "data" / "probe")],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0 or b"Permission denied" not in probe.stderr:
            mechanism_missing("a directory owned by another user (setpriv)", probe.stderr.decode())
        second = SidecarProcess(base / "data", token=first.token)
        second.log_path = base / "second.log"
        second.argv = [*AS_NOBODY, *second.argv]
        try:
            refused(second, "sidecar.lock", "Permission denied")
        finally:
            second.terminate()
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False, timeout=60)  # noqa: S607


def test_a_port_in_use_is_named_and_nothing_says_ready(sidecar_factory: SidecarFactory) -> None:
    """Another process on the port: the start stops before the store opens, never "ready"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sidecar = sidecar_factory(port=taken.getsockname()[1])
        refused(sidecar, f"cannot listen on 127.0.0.1:{sidecar.port}", "in use")
    assert not (sidecar.data_dir / "sidecar.sqlite3").exists()


def test_two_sidecars_started_at_once_one_serves_one_refuses(
    sidecar_factory: SidecarFactory,
) -> None:
    """Started together on one data directory: exactly one serves, the other says why."""
    first = sidecar_factory()
    second = SidecarProcess(first.data_dir, token=first.token)
    second.log_path = first.data_dir.parent / "second.log"
    try:
        first.start(wait=False)
        second.start(wait=False)

        def one_exited() -> list[SidecarProcess] | None:
            exited = [
                s for s in (first, second) if s.proc is not None and s.proc.poll() is not None
            ]
            return exited or None

        exited = wait_until(one_exited, timeout=60, what="one of the two sidecars to give up")
        logs = f"first:\n{first.log_tail(200)}\nsecond:\n{second.log_tail(200)}"
        assert len(exited) == 1, logs
        [loser] = exited
        winner = second if loser is first else first
        winner.wait_healthy(timeout=60)
        output = loser.log_tail(200)
        assert loser.proc is not None
        assert loser.proc.returncode == 1, logs
        assert "Traceback" not in output, logs
        assert "cannot start: another sidecar is already using" in output, logs
        assert httpx.get(f"{winner.url}/healthz", timeout=5).status_code == 200
    finally:
        second.terminate()
        first.terminate()


@pytest.fixture
def postgres_admin() -> str:
    import psycopg
    from tests.conftest import HOW_TO_START_POSTGRES, POSTGRES_ADMIN_URL, service_missing

    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        service_missing("PostgreSQL", HOW_TO_START_POSTGRES, exc)
    return POSTGRES_ADMIN_URL


def test_postgresql_unreachable_is_named(sidecar_factory: SidecarFactory) -> None:
    """Nothing listens at the database URL: one line with the address, never the password."""
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{free_port()}/sidecar"
    line = refused(sidecar_factory(env={"SIDECAR_DATABASE_URL": url}), "cannot use PostgreSQL")
    assert "hunter2-secret" not in line


def test_postgresql_refusing_is_named(sidecar_factory: SidecarFactory, postgres_admin: str) -> None:
    """A database that does not exist: PostgreSQL's refusal, in one line."""
    url = postgres_admin.rsplit("/", 1)[0] + f"/no_such_db_{secrets.token_hex(4)}"
    refused(sidecar_factory(env={"SIDECAR_DATABASE_URL": url}), "does not exist")


def test_a_read_only_postgresql_is_named(
    sidecar_factory: SidecarFactory, postgres_admin: str
) -> None:
    """A database that refuses writes (default_transaction_read_only) stops the start."""
    import psycopg

    name = f"sidecar_ro_{secrets.token_hex(6)}"
    url = postgres_admin.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_admin, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        first = sidecar_factory(env={"SIDECAR_DATABASE_URL": url})
        first.start()  # migrated while it could write
        assert first.terminate() == 0
        with psycopg.connect(postgres_admin, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        second = SidecarProcess(first.data_dir, token=first.token, env=first.env)
        second.log_path = first.data_dir.parent / "second.log"
        refused(second, "cannot write to PostgreSQL", "read-only")
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
