"""Both images, built from the Dockerfile and run under podman with compose.yaml's settings.

Each container gets exactly what compose.yaml gives its service (environment, init, a named
volume on the data directory, the network alias the other service uses), on a private podman
network; only the published host port differs, picked free at run time on 127.0.0.1.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from tests import sim_api
from tests.images.compose_file import Service
from tests.images.podman import Podman, wait_for

from connector_sidecar.testing import free_port

pytestmark = pytest.mark.image

SIDECAR_UID = 10001
#: Directories every Debian-based image leaves writable to all users (sticky scratch space).
SCRATCH = frozenset({"/tmp", "/var/tmp", "/run/lock", "/dev/shm"})
#: What podman itself adds to a container's environment.
PODMAN_ENV = frozenset({"PATH", "HOME", "HOSTNAME", "container", "TERM"})
START_TIMEOUT = 90.0

# Run inside a container as its user: every path it may write, and whether /data takes a file.
_WRITABLE_SCRIPT = """
import json, os
with open("/data/probe", "w") as probe:
    probe.write("ok")
skip = {"/proc", "/sys", "/dev"}
writable = []
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
    for name in [*dirs, *files]:
        path = os.path.join(top, name)
        if not os.path.islink(path) and os.access(path, os.W_OK):
            writable.append(path)
print(json.dumps({"writable": writable, "uid": os.getuid(), "gid": os.getgid()}))
"""

# Run inside a running container: the uid, gids and environment names of the main process.
_PROCESS_SCRIPT = """
import json, os, sys
needle = sys.argv[1]
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode()
        program = os.path.basename(cmdline.split(" ", 1)[0])
        if needle not in cmdline or not program.startswith("python") or "import json" in cmdline:
            continue  # not the service: the init process, or this very script
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status") if ":" in line)
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
    except OSError:
        continue
    print(json.dumps({
        "uids": status["Uid"].split(), "gids": status["Gid"].split(),
        "env": sorted(item.split(b"=", 1)[0].decode() for item in environ if item),
    }))
    break
"""


@dataclass
class Running:
    """A started service: its container, the URL published on the host, its settings."""

    container: str
    url: str
    service: Service


def start_service(
    podman: Podman,
    service: Service,
    *,
    network: str,
    volume: str,
    suffix: str = "",
) -> Running:
    """A container of ``service`` started from compose.yaml's values, published on a free port."""
    (port,) = service.container_ports
    host_port = free_port()
    options = [
        "--network",
        network,
        "--network-alias",
        service.name,
        "--publish",
        f"127.0.0.1:{host_port}:{port}",
        "--volume",
        f"{volume}:{service.data_target}",
        "--stop-timeout",
        str(service.stop_grace_seconds),
        *service.env_options(),
    ]
    if service.init:
        options.append("--init")
    container = podman.start(service.name + suffix, service.image, *options)
    return Running(container=container, url=f"http://127.0.0.1:{host_port}", service=service)


def wait_healthy(podman: Podman, running: Running) -> None:
    """/healthz answers 200 on the published port, or fail with the container's log."""

    def answers() -> bool:
        state = podman.inspect(running.container)["State"]
        if not state["Running"]:
            pytest.fail(
                f"{running.container} exited {state['ExitCode']}:\n{podman.logs(running.container)}"
            )
        try:
            return httpx.get(f"{running.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(answers, timeout=START_TIMEOUT, what=f"{running.service.name} /healthz")
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{podman.logs(running.container)}")


def process_of(podman: Podman, container: str, needle: str) -> dict[str, Any]:
    """The uid, gid and environment names of the process whose command line has ``needle``."""
    result = podman("exec", container, "python", "-c", _PROCESS_SCRIPT, needle)
    assert result.stdout.strip(), f"no process matching {needle!r} in {container}"
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.fixture
def network(podman: Podman) -> str:
    """A podman network of its own, on which the services find each other by compose name."""
    return podman.create_network("net-" + secrets.token_hex(3))


# ---- the images themselves ------------------------------------------------------------------


@pytest.mark.parametrize("service_name", ["sidecar", "echo-host"])
def test_image_runs_as_10001_and_only_the_data_volume_is_writable(
    podman: Podman, images: dict[str, str], services: dict[str, Service], service_name: str
) -> None:
    """The image's user is 10001:10001; it may write its data volume and no file of the image."""
    service = services[service_name]
    config = podman.image_inspect(images[service_name])["Config"]
    assert config["User"] == f"{SIDECAR_UID}:{SIDECAR_UID}"
    volume = podman.create_volume(f"{service_name}-writable")
    output = podman.run_once(
        images[service_name],
        "--volume",
        f"{volume}:{service.data_target}",
        "--entrypoint",
        "python",
        command=["-c", _WRITABLE_SCRIPT],
    )
    report = json.loads(output)
    assert (report["uid"], report["gid"]) == (SIDECAR_UID, SIDECAR_UID)
    writable = {path for path in report["writable"] if not path.startswith("/data/")}
    assert writable - SCRATCH == {service.data_target}
    assert "/data/probe" in report["writable"]


@pytest.mark.parametrize("service_name", ["sidecar", "echo-host"])
def test_image_carries_no_uv_and_no_build_time_certificates(
    podman: Podman,
    images: dict[str, str],
    base_images: dict[str, str],
    service_name: str,
) -> None:
    """uv, its TLS setting and the host's CA bundle were used by the build, not shipped in it."""
    inspected = podman.image_inspect(images[service_name])
    config = inspected["Config"]
    names = {item.split("=", 1)[0] for item in config.get("Env") or []}
    assert not {name for name in names if name.startswith("UV_")}
    assert "SSL_CERT_FILE" not in names
    assert inspected["Healthcheck"]["Test"][0] == "CMD"  # the docker format kept HEALTHCHECK
    probe = (
        "import hashlib, shutil; print(shutil.which('uv'), shutil.which('uvx'),"
        " hashlib.sha256(open('/etc/ssl/certs/ca-certificates.crt', 'rb').read()).hexdigest())"
    )
    shipped = podman.run_once(images[service_name], "--entrypoint", "python", command=["-c", probe])
    base = podman.run_once(base_images["PYTHON_IMAGE"], command=["python", "-c", probe])
    assert shipped.split()[:2] == ["None", "None"]
    assert shipped.split()[2] == base.split()[2], "the CA bundle differs from the base image's"


# ---- the sidecar container ------------------------------------------------------------------


def test_sidecar_container_starts_answers_and_stops_cleanly(
    podman: Podman, images: dict[str, str], services: dict[str, Service], network: str
) -> None:
    """uid 10001 with compose's environment only; /healthz; HEALTHCHECK; SIGTERM ends it 0 in 5 s."""
    service = services["sidecar"]
    volume = podman.create_volume("sidecar-lifecycle")
    sidecar = start_service(podman, service, network=network, volume=volume, suffix="-lifecycle")
    wait_healthy(podman, sidecar)

    process = process_of(podman, sidecar.container, "connector-sidecar")
    assert set(process["uids"]) == {str(SIDECAR_UID)}
    assert set(process["gids"]) == {str(SIDECAR_UID)}
    image_env = {
        item.split("=", 1)[0] for item in podman.image_inspect(service.image)["Config"]["Env"]
    }
    assert set(process["env"]) <= set(service.environment) | image_env | PODMAN_ENV

    health = podman("healthcheck", "run", sidecar.container, check=False)
    assert health.returncode == 0, health.stdout + health.stderr

    started = time.monotonic()
    podman("stop", "--time", str(service.stop_grace_seconds), sidecar.container)
    elapsed = time.monotonic() - started
    state = podman.inspect(sidecar.container)["State"]
    assert state["ExitCode"] == 0, podman.logs(sidecar.container)
    assert elapsed < 5, f"podman stop took {elapsed:.1f} s"
    assert "Traceback" not in podman.logs(sidecar.container)


# ---- both containers: the README round trip -------------------------------------------------


def test_round_trip_between_the_containers_survives_a_sidecar_restart(
    podman: Podman,
    images: dict[str, str],
    services: dict[str, Service],
    compose_env: dict[str, str],
    network: str,
) -> None:
    """Pair sim, inject, the echo host's reply is sent; a new sidecar container keeps it all."""
    token = compose_env["EXTERNAL_CONNECTOR_TOKEN"]
    sidecar_volume = podman.create_volume("sidecar-data")
    echo_volume = podman.create_volume("echo-data")
    sidecar = start_service(podman, services["sidecar"], network=network, volume=sidecar_volume)
    wait_healthy(podman, sidecar)
    echo = start_service(podman, services["echo-host"], network=network, volume=echo_volume)
    wait_healthy(podman, echo)
    echo_health = podman("healthcheck", "run", echo.container, check=False)
    assert echo_health.returncode == 0, echo_health.stdout + echo_health.stderr
    echo_process = process_of(podman, echo.container, "examples.echo_host")
    assert set(echo_process["uids"]) == {str(SIDECAR_UID)}

    with sim_api.client(sidecar.url, token) as client:
        sim_api.pair(client, "demo")
        event_id = sim_api.inject(client, "demo", "hello", "m-1")
        wait_for(
            lambda: sim_api.echoes(client, "demo") == ["echo: hello"], timeout=60, what="the echo"
        )
        # The echo host replies before it answers the bridge POST: wait for the outbox to know.
        wait_for(
            lambda: sim_api.deliveries(client, "demo") == [(event_id, "delivered")],
            timeout=30,
            what="the event to be marked delivered",
        )

    # A new container on the same volume: the connection, its outbox and what was sent remain.
    podman("stop", "--time", "10", sidecar.container)
    podman.remove_container(sidecar.container)
    sidecar = start_service(
        podman, services["sidecar"], network=network, volume=sidecar_volume, suffix="-again"
    )
    wait_healthy(podman, sidecar)
    with sim_api.client(sidecar.url, token) as client:
        connection = client.get("/connections/demo")
        assert connection.status_code == 200, connection.text
        assert connection.json()["status"] == "connected"
        assert sim_api.deliveries(client, "demo") == [(event_id, "delivered")]
        assert sim_api.echoes(client, "demo") == ["echo: hello"]
        sim_api.inject(client, "demo", "still there?", "m-2")
        wait_for(
            lambda: sim_api.echoes(client, "demo") == ["echo: hello", "echo: still there?"],
            timeout=60,
            what="the echo after the restart",
        )
