"""The whole system as a newcomer runs it: the sidecar and the SDK-built echo host as processes."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests import sim_api

from connector_sidecar.testing import ManagedProcess, SidecarProcess, free_port, wait_until

from .conftest import RecordingHost

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BRIDGE_PATH = "/api/channel-connector-bridge/events"


def _python_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep} | extra


def _echoes(client: httpx.Client, connection_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/sim/connections/{connection_id}/sent")
    assert response.status_code == 200, response.text
    return [item for item in response.json()["items"] if item["content"].startswith("echo: ")]


@dataclasses.dataclass
class LocalRun:
    """``python -m examples.run_local`` (what ``make run`` runs) as a process, once its banner
    is out: the ports it was given, its log and the tokens it wrote to var/local.env."""

    proc: subprocess.Popen[bytes]
    sidecar_port: int
    echo_port: int
    log_path: Path
    tokens: dict[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.sidecar_port}",
            headers={"Authorization": f"Bearer {self.tokens['EXTERNAL_CONNECTOR_TOKEN']}"},
            timeout=30,
        )

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@contextlib.contextmanager
def local_run(tmp_path: Path, *args: str, **env: str) -> Iterator[LocalRun]:
    """Start the launcher (with ``args``, and ``env`` added) on free ports, its var directory
    in ``tmp_path``; killed at the end if a test left it running."""
    sidecar_port, echo_port = free_port(), free_port()
    log_path = tmp_path / "run.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.run_local", *args, "--var-dir", str(tmp_path / "var")],
        env=_python_env(SIDECAR_PORT=str(sidecar_port), ECHO_PORT=str(echo_port), **env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(
            lambda: "Ctrl-C stops everything" in log_path.read_text(),
            timeout=60,
            what="the launcher's banner",
        )
        tokens = dict(
            line.split("=", 1)
            for line in (tmp_path / "var" / "local.env").read_text().splitlines()
            if "=" in line
        )
        yield LocalRun(proc, sidecar_port, echo_port, log_path, tokens)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_round_trip_through_the_echo_host(tmp_path: Path) -> None:
    """A sim message reaches the echo host, its reply reaches the sim once, even when redelivered."""
    echo_port = free_port()
    token = "api-" + secrets.token_hex(8)
    bridge_token = "bridge-" + secrets.token_hex(8)
    signing_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    sidecar = SidecarProcess(
        tmp_path / "sidecar",
        token=token,
        env={
            "BRIDGE_URL": f"http://127.0.0.1:{echo_port}{BRIDGE_PATH}",
            "BRIDGE_TOKEN": bridge_token,
            "BRIDGE_SIGNING_SECRET": signing_secret,
        },
    )
    echo = ManagedProcess(
        [sys.executable, "-m", "examples.echo_host"],
        env=_python_env(
            SIDECAR_URL=sidecar.url,
            EXTERNAL_CONNECTOR_TOKEN=token,
            BRIDGE_TOKEN=bridge_token,
            BRIDGE_SIGNING_SECRET=signing_secret,
            ECHO_HOST="127.0.0.1",
            ECHO_PORT=str(echo_port),
            ECHO_DATA_DIR=str(tmp_path / "echo"),
        ),
        log_path=tmp_path / "echo.log",
        cwd=ROOT,
    )
    sidecar.start()
    echo.start()
    try:
        wait_until(
            lambda: (
                httpx.get(f"http://127.0.0.1:{echo_port}/healthz", timeout=2).status_code == 200
            ),
            timeout=30,
            what="the echo host",
        )
        with sidecar.client() as client:
            sim_api.pair(client, "demo")

            sent = client.post(
                "/sim/connections/demo/messages",
                json={"peerId": "alice", "content": "hello", "messageId": "m-1"},
            )
            assert sent.status_code == 202, sent.text
            event_id = sent.json()["eventId"]
            echoes = wait_until(lambda: _echoes(client, "demo"), timeout=30, what="the echo")
            assert [e["content"] for e in echoes] == ["echo: hello"]
            assert echoes[0]["peerId"] == "alice"

            # The echo host sends its reply before it answers the bridge POST: wait for the
            # sidecar to record the delivery rather than assume it is already there.
            delivered = wait_until(
                lambda: client.get(
                    "/deliveries", params={"connectionId": "demo", "status": "delivered"}
                ).json()["items"],
                timeout=30,
                what="the delivery to be recorded",
            )
            assert [d["eventId"] for d in delivered] == [event_id]

            # The operator replays the delivered event: the host dedupes it, no second echo.
            replay = client.post(f"/deliveries/{event_id}/replay")
            assert replay.status_code == 200, replay.text
            wait_until(
                lambda: client.get(
                    "/deliveries", params={"connectionId": "demo", "status": "delivered"}
                ).json()["items"],
                timeout=30,
                what="the replay to be delivered",
            )
            # A vendor redelivery of the same message is the same event: nothing new either.
            again = client.post(
                "/sim/connections/demo/messages",
                json={"peerId": "alice", "content": "hello", "messageId": "m-1"},
            )
            assert again.json()["eventId"] == event_id
            # The echo host answered the replay only after handling it, so a second echo would be here.
            assert [e["content"] for e in _echoes(client, "demo")] == ["echo: hello"]
    finally:
        assert echo.terminate() == 0, echo.log_tail()
        assert sidecar.terminate() == 0, sidecar.log_tail()


def test_make_run_launcher_starts_both_and_stops_cleanly(tmp_path: Path) -> None:
    """``python -m examples.run_local`` (what `make run` runs) wires both processes and stops them on SIGTERM."""
    with local_run(tmp_path) as run:
        banner = run.log_path.read_text()
        token = run.tokens["EXTERNAL_CONNECTOR_TOKEN"]
        assert f"export TOKEN={token}" in banner
        assert f"http://127.0.0.1:{run.sidecar_port}" in banner
        with run.client() as client:
            sim_api.pair(client, "demo")
            client.post("/sim/connections/demo/messages", json={"peerId": "alice", "content": "hi"})
            echoes = wait_until(lambda: _echoes(client, "demo"), timeout=30, what="the echo")
            assert [e["content"] for e in echoes] == ["echo: hi"]
        assert run.stop() == 0
        for port in (run.sidecar_port, run.echo_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_run_sidecar_delivers_to_your_backend(tmp_path: Path) -> None:
    """``BRIDGE_URL=… make run-sidecar``: events reach that URL with var/local.env's bridge token,
    signed with its secret (checked by the official Standard Webhooks library)."""
    bridge_token = "bridge-" + secrets.token_hex(12)
    signing_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    var = tmp_path / "var"
    var.mkdir()
    api_token = "dev_" + secrets.token_hex(12)
    (var / "local.env").write_text(
        f"EXTERNAL_CONNECTOR_TOKEN={api_token}\n"
        f"BRIDGE_TOKEN={bridge_token}\nBRIDGE_SIGNING_SECRET={signing_secret}\n"
    )
    host = RecordingHost(tmp_path, token=bridge_token, signing_secret=signing_secret)
    host.start()
    try:
        with local_run(tmp_path, "--sidecar-only", BRIDGE_URL=host.url) as run:
            banner = run.log_path.read_text()
            assert f"bridge      {host.url}" in banner
            assert str(var / "local.env") in banner
            assert run.tokens["EXTERNAL_CONNECTOR_TOKEN"] == api_token
            with run.client() as client:
                sim_api.pair(client, "demo")
                sent = client.post(
                    "/sim/connections/demo/messages", json={"peerId": "alice", "content": "hi"}
                )
                assert sent.status_code == 202, sent.text
                [record] = wait_until(
                    lambda: [r for r in host.records() if r["accepted"]],
                    timeout=30,
                    what="the event at your backend",
                )
            assert record["event"]["eventId"] == sent.json()["eventId"]
            assert record["signatureValid"] is True
            assert run.stop() == 0
    finally:
        host.terminate()
