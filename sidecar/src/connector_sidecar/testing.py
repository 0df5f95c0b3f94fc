"""Helpers for tests that run the real ``connector-sidecar serve`` process on loopback.

Kept in the package (not under tests/) so that hosts can reuse them in their own end-to-end
tests. Every wait here is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = ["ManagedProcess", "SidecarProcess", "free_port", "wait_until"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what}"
        + (f" ({last_error})" if last_error else "")
    )


class ManagedProcess:
    """A child process with its output in a log file, killed for sure at the end of a test."""

    def __init__(
        self, argv: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("already running")
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - argv is ours
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd
            )
        finally:
            log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not stop in time)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _sidecar_command() -> list[str]:
    script = shutil.which("connector-sidecar", path=str(Path(sys.executable).parent))
    if script:
        return [script, "serve"]
    return [sys.executable, "-c", "from connector_sidecar.cli import main; main()", "serve"]


class SidecarProcess(ManagedProcess):
    """``connector-sidecar serve`` on a free loopback port with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        token: str = "test-token-0123456789",  # noqa: S107 - a test default, not a secret
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.token = token
        self.data_dir = data_dir
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", str(data_dir)),
            "EXTERNAL_CONNECTOR_TOKEN": token,
            "SIDECAR_HOST": "127.0.0.1",
            "SIDECAR_PORT": str(self.port),
            "SIDECAR_DATA_DIR": str(data_dir),
            "SIDECAR_CONNECTORS": "sim",
            "LOG_LEVEL": "info",
            **(env or {}),
        }
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(_sidecar_command(), env=full_env, log_path=data_dir / "sidecar.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30.0,
            **kwargs,
        )

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        super().start()
        if wait:
            self.wait_healthy(timeout=timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if not self.running:
                raise RuntimeError(f"the sidecar exited early:\n{self.log_tail()}")
            return httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200

        try:
            wait_until(healthy, timeout=timeout, what="the sidecar to answer /healthz")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> SidecarProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()
