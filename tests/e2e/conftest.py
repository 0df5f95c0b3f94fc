"""Fixtures for end-to-end tests: real processes on 127.0.0.1, killed at the end of each test."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import ManagedProcess, SidecarProcess, free_port, wait_until

HERE = Path(__file__).parent


class RecordingHost(ManagedProcess):
    """tests/e2e/recording_host.py as a process; ``records()`` reads what it received."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        token: str = "bridge-token-123",
        signing_secret: str | None = None,
        **faults: float,
    ) -> None:
        """``faults``: fail_rate, conflict_rate, slow_rate, slow_seconds, conflict_retry_after, seed."""
        self.port = free_port()
        self.token = token
        self.out = tmp_path / "host-events.jsonl"
        argv = [
            sys.executable,
            str(HERE / "recording_host.py"),
            "--port",
            str(self.port),
            "--out",
            str(self.out),
        ]
        argv += ["--token", token]
        if signing_secret:
            argv += ["--signing-secret", signing_secret]
        for name, value in faults.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        super().__init__(
            argv, env={"PATH": "", "PYTHONPATH": ""} | _python_env(), log_path=tmp_path / "host.log"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: (
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
            ),
            timeout=30,
            what="the recording host",
        )

    def set_down(self, down: bool) -> None:
        httpx.post(
            f"http://127.0.0.1:{self.port}/control", json={"down": down}, timeout=5
        ).raise_for_status()

    def records(self) -> list[dict[str, Any]]:
        """Every attempt the host answered, in the order it answered them."""
        if not self.out.exists():
            return []
        text = self.out.read_text()
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a line being written right now: not yet
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def accepted(self) -> list[dict[str, Any]]:
        return [r["event"] for r in self.records() if r["accepted"]]


def _python_env() -> dict[str, str]:
    import os

    return {
        k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "PYTHONPATH", "VIRTUAL_ENV")
    }


@pytest.fixture
def recording_host(tmp_path: Path) -> Iterator[RecordingHost]:
    host = RecordingHost(tmp_path)
    host.start()
    try:
        yield host
    finally:
        host.terminate()


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Any]:
    """Build sidecar processes (not started); all are stopped at the end of the test."""
    made: list[SidecarProcess] = []

    def make(**kwargs: Any) -> SidecarProcess:
        kwargs.setdefault("env", {})
        process = SidecarProcess(tmp_path / f"sidecar{len(made)}", **kwargs)
        made.append(process)
        return process

    yield make
    for process in made:
        process.terminate()
