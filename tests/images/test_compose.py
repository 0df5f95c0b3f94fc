"""compose.yaml brought up for real with podman-compose, and the README round trip through it.

The file is used as it is, with two changes made in a copy: the published host ports (free
ports picked at run time instead of 8787 and 8000, which may be taken on a shared machine) and
the build context (made absolute, as the copy lives elsewhere). The images are the ones the
session built from the Dockerfile, tagged with the names compose.yaml gives them.

Podman 4.3 (Debian bookworm) runs no healthchecks on its own without systemd and podman-compose
ignores ``condition: service_healthy`` on it, so the test runs each healthcheck itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.images import compose_file, standins
from tests.images.compose_file import Service
from tests.images.podman import Podman, container_limits, run, wait_for

from connector_sidecar.testing import free_port

pytestmark = pytest.mark.image

PODMAN_COMPOSE_VERSION = "1.6.0"
PROJECT_LABEL = "io.podman.compose.project"


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
    """One podman-compose project made from a copy of compose.yaml."""

    def __init__(self, directory: Path, project: str, env: dict[str, str], ports: dict[str, int]):
        self.directory = directory
        self.project = project
        self.ports = ports
        self.env = {**os.environ, "CONTAINERS_CONF": str(_containers_conf(directory))}
        self.program = _podman_compose()
        (directory / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        services = compose_file.load(env)
        compose_file.with_published_ports(
            compose_file.COMPOSE_FILE,
            {name: {service.container_ports[0]: ports[name]} for name, service in services.items()},
            directory / "compose.yaml",
        )

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


@pytest.fixture
def compose(
    podman: Podman, images: dict[str, str], compose_env: dict[str, str], tmp_path: Path
) -> Iterator[Compose]:
    """A compose project named after this session, on free host ports; always taken down."""
    project = podman.prefix + "-compose"
    ports = {"sidecar": free_port(), "echo-host": free_port()}
    session = Compose(tmp_path, project, compose_env, ports)
    try:
        yield session
    finally:
        session.remove_everything()


def test_compose_up_runs_the_round_trip_and_stops_cleanly(
    compose: Compose, services: dict[str, Service], compose_env: dict[str, str]
) -> None:
    """podman-compose up: both healthy, the README round trip works, stop ends both with 0."""
    ports = compose.ports
    compose("up", "--detach")
    for name in services:
        url = f"http://127.0.0.1:{ports[name]}/healthz"

        def healthy(url: str = url) -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=90, what=f"{name} /healthz through compose's published port")
        container = compose.container(name)
        health = compose.podman("healthcheck", "run", container, check=False)
        assert health.returncode == 0, f"{name}: {health.stdout}{health.stderr}"
        config = json.loads(compose.podman("container", "inspect", container).stdout)[0]
        assert config["Config"]["Healthcheck"]["Test"][1:] == list(services[name].healthcheck)
        assert config["Config"]["User"] == "10001:10001"

    token = compose_env["EXTERNAL_CONNECTOR_TOKEN"]
    with httpx.Client(
        base_url=f"http://127.0.0.1:{ports['sidecar']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as client:
        paired = client.post(
            "/connector-sessions",
            json={"kind": "sim", "connectionId": "demo", "channelId": "sim-demo",
                  "options": {"autoConfirm": True}},
        )  # fmt: skip
        assert paired.status_code == 201, paired.text
        injected = client.post(
            "/sim/connections/demo/messages",
            json={"peerId": "alice", "content": "hello", "messageId": "m-1"},
        )
        assert injected.status_code == 202, injected.text

        def echoed() -> bool:
            sent = client.get("/sim/connections/demo/sent").json()["items"]
            return [item["content"] for item in sent] == ["echo: hello"]

        wait_for(echoed, timeout=60, what="the echo host's reply in sent")

    compose("stop")
    for name in services:
        state = json.loads(compose.podman("container", "inspect", compose.container(name)).stdout)
        assert state[0]["State"]["ExitCode"] == 0, f"{name} stopped with {state[0]['State']}"
