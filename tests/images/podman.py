"""Podman and buildah as the image tests use them: every call bounded, every resource removed.

Rules:
- Every command has a timeout; a failure raises ``CommandFailed`` with the command, its exit
  code and the end of its output, so a red test says what podman said.
- Containers run with ``--runtime runc`` and explicit ``nofile``/``nproc`` limits no higher than
  this process's own: the machine refuses to raise them (no CAP_SYS_RESOURCE), which is what
  makes podman's defaults (and the ``crun`` runtime) fail on ``setrlimit``.
- ``Podman.track`` records every container, volume and network a test creates under a unique
  prefix; ``Podman.cleanup`` removes them, and the fixtures call it even when a test fails.
- Nothing here pulls from a registry: images come from ``buildah bud`` or ``podman import``.
"""

from __future__ import annotations

import json
import resource
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Long enough for a cold ``uv sync`` inside a build, short enough that a hang ends the run.
BUILD_TIMEOUT = 900.0
COMMAND_TIMEOUT = 120.0


class CommandFailed(RuntimeError):
    """A podman, buildah or helper command exited non-zero or ran out of time."""


def run(
    command: Sequence[str | Path],
    *,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; raise ``CommandFailed`` (with its output) on failure when ``check``."""
    args = [str(part) for part in command]
    try:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"{' '.join(args)}: no answer within {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise CommandFailed(f"{' '.join(args)} exited {result.returncode}:\n{output[-3000:]}")
    return result


def wait_for(
    check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.2
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, CommandFailed) as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def container_limits() -> list[str]:
    """``--ulimit`` flags this machine lets a container set: never above our own hard limits."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 65536 if nofile == resource.RLIM_INFINITY else min(nofile, 65536)
    nproc = 4096 if nproc == resource.RLIM_INFINITY else min(nproc, 4096)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def missing_tools() -> list[str]:
    """The host commands the image tests need and cannot find."""
    return [tool for tool in ("podman", "buildah", "runc", "debootstrap") if not shutil.which(tool)]


@dataclass
class Podman:
    """One test session's view of podman: a name prefix and what it created."""

    prefix: str = field(default_factory=lambda: "connector-it-" + secrets.token_hex(4))
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def __call__(
        self, *args: str | Path, timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], timeout=timeout, check=check)

    def name(self, what: str) -> str:
        """A unique name for a container, volume or network of this session."""
        return f"{self.prefix}-{what}"

    def create_network(self, what: str) -> str:
        name = self.name(what)
        self.networks.append(name)
        self("network", "create", name)
        return name

    def create_volume(self, what: str) -> str:
        name = self.name(what)
        self.volumes.append(name)
        self("volume", "create", name)
        return name

    def start(self, what: str, image: str, *options: str, command: Sequence[str] = ()) -> str:
        """``podman run -d`` a container named after ``what``; return its name."""
        name = self.name(what)
        self.containers.append(name)
        self(
            "run",
            "-d",
            "--name",
            name,
            "--runtime",
            "runc",
            *container_limits(),
            *options,
            image,
            *command,
        )
        return name

    def run_once(self, image: str, *options: str, command: Sequence[str] = ()) -> str:
        """Run a throwaway container to completion; return its standard output."""
        result = self(
            "run",
            "--rm",
            "--runtime",
            "runc",
            *container_limits(),
            "--network",
            "none",
            *options,
            image,
            *command,
        )
        return result.stdout

    def inspect(self, container: str) -> dict[str, Any]:
        document = json.loads(self("container", "inspect", container).stdout)
        assert isinstance(document, list)
        found: dict[str, Any] = document[0]
        return found

    def image_inspect(self, image: str) -> dict[str, Any]:
        document = json.loads(self("image", "inspect", image).stdout)
        assert isinstance(document, list)
        found: dict[str, Any] = document[0]
        return found

    def logs(self, container: str) -> str:
        result = self("logs", "--tail", "60", container, check=False)
        return (result.stdout + result.stderr).strip()

    def remove_container(self, container: str) -> None:
        self("rm", "--force", "--time", "2", container, check=False)

    def cleanup(self) -> None:
        """Remove everything this session created; never raises, so it always runs to the end."""
        for container in reversed(self.containers):
            self.remove_container(container)
        for volume in self.volumes:
            self("volume", "rm", "--force", volume, check=False)
        for network in self.networks:
            self("network", "rm", "--force", network, check=False)
        self.containers.clear()
        self.volumes.clear()
        self.networks.clear()
