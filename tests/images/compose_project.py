"""A compose file brought up for real with podman-compose, from a copy the test may change.

Rules:
- podman-compose comes from PyPI (a pinned version) into a virtualenv in the image cache, made
  once per machine.
- The project runs from a copy of the compose file in a directory of the test's own: free host
  ports instead of the published ones, an absolute build context, and whatever the test's
  ``edit`` changes (each test says what and why); everything else is the file as it is.
- podman-compose's containers run with ``runc`` and limits this machine allows
  (``CONTAINERS_CONF``), as every other container of these tests.
- Podman 4.3 (Debian bookworm) runs no healthchecks on its own without systemd and
  podman-compose ignores ``condition: service_healthy`` on it, so ``wait_healthy`` runs each
  healthcheck itself.
- ``remove_everything`` takes the project down and removes what is left of it, after a failure
  too; the fixtures call it in ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tests.images import compose_file, standins
from tests.images.podman import container_limits, run, wait_for

PODMAN_COMPOSE_VERSION = "1.6.0"
PROJECT_LABEL = "io.podman.compose.project"
#: How long a service may take to answer /healthz after ``up`` (a cold start under load).
START_TIMEOUT = 90.0

Edit = Callable[[dict[str, Any]], None]


def _podman_compose() -> Path:
    """podman-compose from PyPI, in a virtualenv kept in the image cache (made once)."""
    home = standins.cache_dir() / f"podman-compose-{PODMAN_COMPOSE_VERSION}"
    program = home / "bin" / "podman-compose"
    if not program.is_file():
        subprocess.run(
            [standins.machine_python(), "-m", "venv", str(home)], check=True, timeout=120
        )
        subprocess.run(
            [home / "bin" / "python", "-m", "pip", "install", "--quiet",
             f"podman-compose=={PODMAN_COMPOSE_VERSION}"],
            check=True,
            timeout=300,
        )  # fmt: skip
    return program


def _containers_conf(directory: Path) -> Path:
    """podman settings for what podman-compose runs: runc, and limits this machine allows."""
    limits = container_limits()[1::2]
    path = directory / "containers.conf"
    path.write_text(
        f'[containers]\ndefault_ulimits = {json.dumps(limits)}\n[engine]\nruntime = "runc"\n'
    )
    return path


class Compose:
    """One podman-compose project made from a copy of ``source`` in ``directory``."""

    def __init__(
        self,
        directory: Path,
        project: str,
        env: dict[str, str],
        ports: dict[str, int],
        *,
        source: Path = compose_file.COMPOSE_FILE,
        edit: Edit | None = None,
    ):
        self.directory = directory
        self.project = project
        self.ports = ports
        self.env = {**os.environ, "CONTAINERS_CONF": str(_containers_conf(directory))}
        self.program = _podman_compose()
        (directory / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        compose_file.with_published_ports(source, ports, directory / "compose.yaml", edit=edit)

    def __call__(self, *args: str, timeout: float = 180) -> str:
        result = run(
            [self.program, "--project-name", self.project, "--file", "compose.yaml",
             "--env-file", ".env", *args],
            timeout=timeout,
            env=self.env,
            cwd=self.directory,
        )  # fmt: skip
        return result.stdout + result.stderr

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["podman", *args], env=self.env, check=check)

    def container(self, service: str) -> str:
        names = self.podman(
            "ps", "--all", "--format", "{{.Names}}",
            "--filter", f"label={PROJECT_LABEL}={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).stdout.split()  # fmt: skip
        assert len(names) == 1, f"containers of {service}: {names}"
        return names[0]

    def inspect(self, service: str) -> dict[str, Any]:
        document = json.loads(self.podman("container", "inspect", self.container(service)).stdout)
        assert isinstance(document, list)
        found: dict[str, Any] = document[0]
        return found

    def logs(self, service: str) -> str:
        result = self.podman("logs", "--tail", "60", self.container(service), check=False)
        return (result.stdout + result.stderr).strip()

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def wait_healthy(self, service: str) -> dict[str, Any]:
        """/healthz answers on the published port and the container's HEALTHCHECK passes.

        Returns the container's ``podman inspect`` document.
        """

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url(service)}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(healthy, timeout=START_TIMEOUT, what=f"{service} /healthz (published port)")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs(service)}") from exc
        health = self.podman("healthcheck", "run", self.container(service), check=False)
        assert health.returncode == 0, f"{service}: {health.stdout}{health.stderr}"
        return self.inspect(service)

    def remove_everything(self) -> None:
        """``down -v``, then remove whatever is left of the project, even after a failure."""
        try:
            self("down", "--volumes", "--timeout", "5")
        except Exception as exc:  # cleanup goes on below
            print(f"podman-compose down failed: {exc}")
        label = f"label={PROJECT_LABEL}={self.project}"
        leftovers = self.podman("ps", "--all", "--quiet", "--filter", label, check=False)
        for container in leftovers.stdout.split():
            self.podman("rm", "--force", "--time", "2", container, check=False)
        volumes = self.podman("volume", "ls", "--quiet", "--filter", label, check=False)
        for volume in volumes.stdout.split():
            self.podman("volume", "rm", "--force", volume, check=False)
        self.podman("network", "rm", "--force", f"{self.project}_default", check=False)
