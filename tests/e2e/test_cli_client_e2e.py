"""The operator CLI against a real sidecar process: ``pair`` under a pseudo-terminal (the QR is
drawn, the sim session is scanned, exit 0), a pairing that fails, and the list/replay/logout
commands with readable and ``--json`` output."""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from connector_sidecar._terminal_qr import qr_lines
from connector_sidecar.testing import SidecarProcess, wait_until

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-c", "from connector_sidecar.cli import main; main()"]
SESSION = re.compile(r"Session (cs_[0-9a-f]+):")


def cli_env(sidecar: SidecarProcess) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(sidecar.data_dir),
        "TERM": "xterm-256color",
        "SIDECAR_URL": sidecar.url,
        "EXTERNAL_CONNECTOR_TOKEN": sidecar.token,
    }


class Terminal:
    """A command on a pseudo-terminal of 80x24; ``expect`` reads until a pattern shows up."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.output = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        if not data:
            return False
        # Incremental: a read can end in the middle of a multi-byte character.
        self.output += self._decoder.decode(data).replace("\r\n", "\n")
        return True

    def expect(self, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := pattern.search(self.output):
                return match
            if not self._read(0.2) and not pattern.search(self.output):
                raise AssertionError(
                    f"the command ended without {pattern.pattern!r}:\n{self.output}"
                )
        raise AssertionError(f"no {pattern.pattern!r} within {timeout:g} s:\n{self.output}")

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        while select.select([self.master], [], [], 0)[0] and self._read(0):
            pass  # what it wrote just before it exited
        return self.proc.wait(timeout=5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def sidecar(tmp_path: Path) -> Any:
    # BRIDGE_URL is the sidecar's own public webhook prefix, where nothing answers: a 404, so
    # every event goes dead at once (something to list and replay).
    process = SidecarProcess(tmp_path / "sidecar")
    process.env["BRIDGE_URL"] = f"{process.url}/webhooks/nothing-here"
    with process:
        yield process


def test_pair_draws_the_qr_and_exits_once_connected(sidecar: SidecarProcess) -> None:
    """pair: the QR of the session's qrContent fits 80 columns; a scan connects; exit 0."""
    terminal = Terminal(
        [*CLI, "pair", "--kind", "sim", "--connection-id", "conn_cli", "--channel-id", "sim-cli"],
        cli_env(sidecar),
    )
    try:
        session_id = terminal.expect(SESSION).group(1)
        with sidecar.client() as client:
            view = client.get(f"/connector-sessions/{session_id}").json()
            assert view["status"] == "qr_ready"
            drawn = qr_lines(view["qrContent"], color=True)
            for line in drawn:
                assert line in terminal.output
            visible = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in drawn]
            assert max(len(line) for line in visible) <= 80
            assert set("".join(visible)) == {"▀"}
            scanned = client.post(f"/sim/sessions/{session_id}/scan", json={})
            assert scanned.status_code == 200, scanned.text
        terminal.expect(re.compile(r"Connected: conn_cli \(sim\)"))
        assert terminal.wait() == 0, terminal.output
        with sidecar.client() as client:
            assert client.get("/connections/conn_cli").json()["status"] == "connected"
    finally:
        terminal.close()


def test_pair_exits_non_zero_with_the_reason(sidecar: SidecarProcess) -> None:
    """A pairing cancelled elsewhere ends the command with status 1 and says why."""
    terminal = Terminal(
        [*CLI, "pair", "--kind", "sim", "--connection-id", "conn_x", "--channel-id", "sim-cli"],
        cli_env(sidecar),
    )
    try:
        session_id = terminal.expect(SESSION).group(1)
        with sidecar.client() as client:
            assert client.post(f"/connector-sessions/{session_id}/cancel").status_code == 200
        assert terminal.wait() == 1
        assert "the pairing ended cancelled: cancelled by the host" in terminal.output
    finally:
        terminal.close()


def run_cli(sidecar: SidecarProcess, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [*CLI, *args],
        env=env or cli_env(sidecar),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_replay_and_logout_commands(sidecar: SidecarProcess) -> None:
    """connections, deliveries --status dead, replay (one and --dead), logout; --json for scripts."""
    paired = run_cli(
        sidecar,
        "pair",
        "--kind",
        "sim",
        "--connection-id",
        "conn_ops",
        "--channel-id",
        "sim-ops",
        "--option",
        "autoConfirm=true",  # JSON: the boolean true
        "--json",
    )
    assert paired.returncode == 0, paired.stderr
    [view] = [json.loads(line) for line in paired.stdout.splitlines()]
    assert (view["connectionId"], view["status"]) == ("conn_ops", "connected")
    with sidecar.client() as client:
        event_id = client.post(
            "/sim/connections/conn_ops/messages", json={"peerId": "p1", "content": "hi"}
        ).json()["eventId"]
        wait_until(
            lambda: client.get("/deliveries", params={"status": "dead"}).json()["items"],
            what="the event to go dead",
        )

    table = run_cli(sidecar, "connections")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["CONNECTION", "KIND", "STATUS"]
    assert row.split()[:3] == ["conn_ops", "sim", "connected"]
    as_json = json.loads(run_cli(sidecar, "connections", "--json").stdout)
    assert [(c["connectionId"], c["deadDeliveries"]) for c in as_json] == [("conn_ops", 1)]

    dead = run_cli(sidecar, "deliveries", "--status", "dead")
    assert dead.returncode == 0, dead.stderr
    assert event_id in dead.stdout
    assert "HTTP 404" in dead.stdout
    page = json.loads(run_cli(sidecar, "deliveries", "--status", "dead", "--json").stdout)
    assert [d["eventId"] for d in page["items"]] == [event_id]

    one = run_cli(sidecar, "replay", event_id)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == f"Replayed {event_id}: pending"
    with sidecar.client() as client:
        wait_until(
            lambda: client.get("/deliveries", params={"status": "dead"}).json()["items"],
            what="the replayed event to go dead again",
        )
    many = run_cli(sidecar, "replay", "--dead", "--connection-id", "conn_ops", "--json")
    assert json.loads(many.stdout) == {"replayed": 1}
    unknown = run_cli(sidecar, "replay", "evt_nope")
    assert unknown.returncode == 1
    assert "HTTP 404 delivery_not_found" in unknown.stderr
    both = run_cli(sidecar, "replay", event_id, "--dead")
    assert both.returncode == 2

    out = run_cli(sidecar, "logout", "conn_ops")
    assert (out.returncode, out.stdout.strip()) == (0, "Logged out conn_ops")
    assert "logged_out" in run_cli(sidecar, "connections").stdout


def test_version_everywhere_and_clear_errors(sidecar: SidecarProcess) -> None:
    """--version on every command; no token, a wrong token or no sidecar: a one-line reason."""
    for command in ("", "pair", "connections", "deliveries", "replay", "logout", "serve"):
        shown = run_cli(sidecar, *([command] if command else []), "--version")
        assert shown.returncode == 0
        assert re.fullmatch(r"connector-sidecar \S+\n", shown.stdout)
    env = cli_env(sidecar)
    no_token = run_cli(sidecar, "connections", env={**env, "EXTERNAL_CONNECTOR_TOKEN": ""})
    assert no_token.returncode == 2
    assert "EXTERNAL_CONNECTOR_TOKEN" in no_token.stderr
    wrong = run_cli(sidecar, "connections", env={**env, "EXTERNAL_CONNECTOR_TOKEN": "wrong-token"})
    assert wrong.returncode == 1
    assert "HTTP 401 unauthorized" in wrong.stderr
    gone = run_cli(sidecar, "connections", "--url", "http://127.0.0.1:9")
    assert gone.returncode == 1
    assert "cannot reach the sidecar at http://127.0.0.1:9" in gone.stderr
