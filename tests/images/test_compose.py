"""compose.yaml brought up for real with podman-compose, and the README round trip through it.

The file is used as it is, with two changes made in a copy: the published host ports (free
ports picked at run time instead of 8787 and 8000, which may be taken on a shared machine) and
the build context (made absolute, as the copy lives elsewhere). The images are the ones the
session built from the Dockerfile, tagged with the names compose.yaml gives them.

Podman 4.3 (Debian bookworm) runs no healthchecks on its own without systemd and podman-compose
ignores ``condition: service_healthy`` on it, so the test runs each healthcheck itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests import sim_api
from tests.images.compose_file import Service
from tests.images.compose_project import Compose
from tests.images.podman import Podman, wait_for

from connector_sidecar.testing import free_port

pytestmark = pytest.mark.image


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
    compose("up", "--detach")
    for name in services:
        config = compose.wait_healthy(name)
        assert config["Config"]["Healthcheck"]["Test"][1:] == list(services[name].healthcheck)
        assert config["Config"]["User"] == "10001:10001"

    with sim_api.client(compose.url("sidecar"), compose_env["EXTERNAL_CONNECTOR_TOKEN"]) as api:
        sim_api.pair(api, "demo")
        sim_api.inject(api, "demo", "hello", "m-1")
        wait_for(
            lambda: sim_api.echoes(api, "demo") == ["echo: hello"],
            timeout=60,
            what="the echo host's reply in sent",
        )

    compose("stop")
    for name in services:
        state = compose.inspect(name)["State"]
        assert state["ExitCode"] == 0, f"{name} stopped with {state}"
