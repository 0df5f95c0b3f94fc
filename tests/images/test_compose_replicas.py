"""compose.replicas.yaml brought up for real with podman-compose, on the machine's PostgreSQL.

The file runs its own ``postgres`` service from the ``postgres:16`` image, which cannot be
pulled here (no registry). The test uses a copy of the file in which only this changes:

- the ``postgres`` service and its ``postgres-data`` volume are gone, and so is the replicas'
  ``depends_on`` entry for it (the machine's database is up before the test starts);
- the replicas' ``SIDECAR_DATABASE_URL`` names a fresh database of the machine's PostgreSQL
  (made for this run, dropped at the end), reached through its Unix socket, whose directory is
  mounted into both replicas. PostgreSQL listens on TCP 127.0.0.1 only, which a container on
  the compose network cannot reach (podman's ``host.containers.internal`` is the bridge
  gateway, 10.88.0.1 here). Host networking would reach it, but then the replicas would leave
  the compose network and every service name, port and healthcheck URL would have to change;
  with the socket, ``BRIDGE_URL``, the ``sidecar`` alias the echo host calls and the
  healthchecks are used exactly as the file writes them;
- as for compose.yaml, free host ports instead of 8787, 8788 and 8000, and an absolute build
  context.

The replicas keep the file's ``SIDECAR_LEASE_SECONDS`` (15 s): a hand-over seen within a few
seconds of ``podman stop`` is the SIGTERM hand-over, not a lease running out.
"""

from __future__ import annotations

import functools
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests import sim_api
from tests.images.compose_file import ROOT
from tests.images.compose_project import Compose, Edit
from tests.images.podman import Podman, wait_for

from connector_sidecar.testing import free_port

pytestmark = pytest.mark.image

REPLICAS_FILE = ROOT / "compose.replicas.yaml"
REPLICAS = ("sidecar-1", "sidecar-2")
#: After ``podman stop`` returns; well under the file's 15 s lease (a replica stopped with
#: SIGTERM clears its leases, and another takes them at its next tick, about a second).
HANDOVER_TIMEOUT = 10.0


def _socket_directory(database_url: str) -> str:
    """The directory of the PostgreSQL server's Unix socket, when it has one on this machine."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW unix_socket_directories").fetchone()
    directories = [d.strip() for d in str(row[0] if row else "").split(",") if d.strip()]
    usable = [d for d in directories if not d.startswith("@") and Path(d).is_dir()]
    if not usable:
        pytest.skip(
            "compose.replicas.yaml needs the machine's PostgreSQL reachable from a container: it"
            f" listens on TCP 127.0.0.1 only and has no Unix socket directory here ({directories})"
        )
    return usable[0]


def _through_socket(database_url: str, directory: str) -> str:
    """The same database and user, reached through the socket in ``directory``."""
    parts = urllib.parse.urlsplit(database_url)
    query = {"host": directory, "port": str(parts.port or 5432)}
    user = urllib.parse.quote(parts.username or "postgres")
    return f"postgresql://{user}@{parts.path}?{urllib.parse.urlencode(query)}"


def on_the_machines_postgres(database_url: str, directory: str) -> Edit:
    """The copy's one change beyond ports: the machine's PostgreSQL instead of ``postgres``."""

    def edit(document: dict[str, Any]) -> None:
        services = document["services"]
        del services["postgres"]
        del document["volumes"]["postgres-data"]
        for name in REPLICAS:
            service = services[name]
            waits = {k: v for k, v in service["depends_on"].items() if k != "postgres"}
            if waits:
                service["depends_on"] = waits
            else:
                del service["depends_on"]
            service["environment"] = {
                **service["environment"],
                "SIDECAR_DATABASE_URL": _through_socket(database_url, directory),
            }
            service["volumes"] = [*service.get("volumes", []), f"{directory}:{directory}"]

    return edit


def _echoed(api: httpx.Client, expected: list[str]) -> bool:
    return sim_api.echoes(api, "demo") == expected


@pytest.fixture
def replicas_compose(
    podman: Podman,
    images: dict[str, str],
    compose_env: dict[str, str],
    postgres_database: str,
    tmp_path: Path,
) -> Iterator[Compose]:
    """compose.replicas.yaml on the machine's PostgreSQL and free ports; always taken down."""
    directory = _socket_directory(postgres_database)
    ports = {name: free_port() for name in (*REPLICAS, "echo-host")}
    session = Compose(
        tmp_path,
        podman.prefix + "-replicas",
        {**compose_env, "POSTGRES_PASSWORD": "unused-the-machines-postgres-trusts-its-socket"},
        ports,
        source=REPLICAS_FILE,
        edit=on_the_machines_postgres(postgres_database, directory),
    )
    try:
        yield session
    finally:
        session.remove_everything()


def test_replicas_share_a_connection_and_hand_it_over_on_sigterm(
    replicas_compose: Compose, compose_env: dict[str, str]
) -> None:
    """Both replicas healthy; paired on 1, injected on 2, echoed and seen on both; sidecar-1
    stopped with SIGTERM: sidecar-2 runs the connection at once and a new message is echoed."""
    compose = replicas_compose
    written = yaml.safe_load(REPLICAS_FILE.read_text())
    compose("up", "--detach")
    for name in (*REPLICAS, "echo-host"):
        config = compose.wait_healthy(name)
        assert config["Config"]["User"] == "10001:10001"
    for name in REPLICAS:
        healthcheck = compose.inspect(name)["Config"]["Healthcheck"]["Test"]
        assert healthcheck == written["services"][name]["healthcheck"]["test"]

    token = compose_env["EXTERNAL_CONNECTOR_TOKEN"]
    with (
        sim_api.client(compose.url("sidecar-1"), token) as first,
        sim_api.client(compose.url("sidecar-2"), token) as second,
    ):
        sim_api.pair(first, "demo")
        # The pairing replica holds the lease from the transaction that stored the login.
        for api in (first, second):
            assert sim_api.replicas(api) == {"demo": "sidecar-1"}
        sim_api.inject(second, "demo", "hello", "m-1")
        for api in (first, second):
            wait_for(
                functools.partial(_echoed, api, ["echo: hello"]),
                timeout=60,
                what=f"the echo host's reply in sent, read through {api.base_url}",
            )

        stopping = time.monotonic()
        compose.podman("stop", compose.container("sidecar-1"))
        state = compose.inspect("sidecar-1")["State"]
        assert state["ExitCode"] == 0, (
            f"sidecar-1 stopped with {state}\n{compose.logs('sidecar-1')}"
        )
        wait_for(
            lambda: sim_api.replicas(second) == {"demo": "sidecar-2"},
            timeout=HANDOVER_TIMEOUT,
            what="sidecar-2 to run the connection after sidecar-1's SIGTERM",
        )
        print(
            f"sidecar-2 runs the connection {time.monotonic() - stopping:.1f} s after podman stop"
        )

        sim_api.inject(second, "demo", "still there?", "m-2")
        wait_for(
            lambda: sim_api.echoes(second, "demo") == ["echo: hello", "echo: still there?"],
            timeout=60,
            what="the echo of a message sent after sidecar-1 stopped",
        )
