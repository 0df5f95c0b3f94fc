"""Dockerfile, compose.yaml, .env.example and .dockerignore, checked without a Docker engine.

They must parse, name files that exist, and use the ports and environment names that the
code really reads: the sidecar's from docs/CONTRACT.md §9, the echo host's from its config module.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# docs/CONTRACT.md §9: every variable the sidecar reads.
SIDECAR_ENV = frozenset(
    {
        "SIDECAR_HOST",
        "SIDECAR_PORT",
        "EXTERNAL_CONNECTOR_TOKEN",
        "SIDECAR_DATA_DIR",
        "SIDECAR_CONNECTORS",
        "BRIDGE_URL",
        "BRIDGE_TOKEN",
        "BRIDGE_SIGNING_SECRET",
        "BRIDGE_CONCURRENCY",
        "BRIDGE_TIMEOUT_SECONDS",
        "BRIDGE_MAX_AGE_SECONDS",
        "WEIXIN_BASE_URL",
        "FEISHU_BASE_URL",
        "LARK_BASE_URL",
        "LOG_LEVEL",
        "LOG_FORMAT",
    }
)
SIDECAR_DEFAULT_PORT = 8787


def _echo_config() -> ModuleType:
    """The echo host's config module, loaded from its file (the root is not on sys.path)."""
    path = ROOT / "examples" / "echo_host" / "config.py"
    spec = importlib.util.spec_from_file_location("_echo_host_config", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


ECHO = _echo_config()
ECHO_ENV = frozenset(ECHO.ENV_NAMES)


@dataclass
class Stage:
    """One ``FROM … AS name`` stage of the Dockerfile and its instructions."""

    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                values[name] = value
        return values


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _stages() -> dict[str, Stage]:
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, args in _instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)\s+AS\s+(\S+)", args, flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = stages[match.group(2)] = Stage(name=match.group(2), base=match.group(1))
        elif current is not None:
            current.instructions.append((keyword, args))
    return stages


def _inherited(stages: dict[str, Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, nearest first."""
    chain = [stages[name]]
    for _ in range(len(stages)):  # a chain is never longer than the file
        if chain[-1].base not in stages:
            break
        chain.append(stages[chain[-1].base])
    return chain


def _last_stage_name() -> str:
    froms = [args for kw, args in _instructions((ROOT / "Dockerfile").read_text()) if kw == "FROM"]
    return froms[-1].split()[-1]


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    """The Dockerfile's stages by name."""
    return _stages()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml, parsed."""
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example line without '=': {line!r}"
            values[name.strip()] = value.strip()
    return values


def _dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(
            fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
            for prefix in prefixes
        ):
            ignored = not negated
    return ignored


# Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_with_uv(stages: dict[str, Stage]) -> None:
    """Build stages install from uv.lock with ``uv sync --locked``; runtimes carry no uv."""
    assert {"build-sidecar", "build-echo-host", "sidecar", "echo-host"} <= set(stages)
    for build in ("build-sidecar", "build-echo-host"):
        runs = " ".join(args for stage in _inherited(stages, build) for args in stage.all("RUN"))
        assert "uv sync --locked --no-dev" in runs
    copies = " ".join(stages["build-base"].all("COPY"))
    assert "--from=uv" in copies
    for runtime in ("sidecar", "echo-host"):
        chain = _inherited(stages, runtime)
        assert all("--from=uv " not in c for stage in chain for c in stage.all("COPY"))


def test_default_target_is_the_sidecar() -> None:
    """A plain ``docker build .`` builds the last stage, which is the sidecar."""
    assert _last_stage_name() == "sidecar"


@pytest.mark.parametrize("target", ["sidecar", "echo-host"])
def test_runtime_runs_as_non_root(stages: dict[str, Stage], target: str) -> None:
    """Each runtime stage switches to a user that is not root, after creating it."""
    users = stages[target].all("USER")
    assert users
    assert users[-1] not in ("root", "0", "0:0")
    created = " ".join(args for stage in _inherited(stages, target) for args in stage.all("RUN"))
    assert "useradd" in created
    assert users[-1].split(":")[0] in created


@pytest.mark.parametrize("target", ["sidecar", "echo-host"])
def test_runtime_user_is_numeric(stages: dict[str, Stage], target: str) -> None:
    """USER is ``uid:gid`` in numbers, the ids the runtime stage creates and gives /data to.

    Numbers, so a platform can tell the user is not root without reading /etc/passwd
    (Kubernetes' runAsNonRoot refuses a named user).
    """
    user = stages[target].all("USER")[-1]
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user} is not uid:gid"
    uid, gid = match.groups()
    assert uid != "0"
    created = " ".join(args for stage in _inherited(stages, target) for args in stage.all("RUN"))
    assert f"--uid {uid}" in created
    assert f"--gid {gid}" in created
    assert "chown connector:connector /data" in created


@pytest.mark.parametrize(
    ("target", "port_variable", "port"),
    [("sidecar", "SIDECAR_PORT", SIDECAR_DEFAULT_PORT), ("echo-host", "ECHO_PORT", 8000)],
)
def test_healthcheck_and_port(
    stages: dict[str, Stage], target: str, port_variable: str, port: int
) -> None:
    """HEALTHCHECK probes /healthz on the port the image sets, which it also EXPOSEs."""
    stage = stages[target]
    (healthcheck,) = stage.all("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert port_variable in healthcheck
    assert json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())[0] == "python"
    assert stage.env()[port_variable] == str(port)
    assert stage.all("EXPOSE") == [str(port)]


@pytest.mark.parametrize("target", ["sidecar", "echo-host"])
def test_entrypoint_is_exec_form(stages: dict[str, Stage], target: str) -> None:
    """ENTRYPOINT (and CMD) are JSON arrays, so no shell sits between Docker and the process."""
    (entrypoint,) = stages[target].all("ENTRYPOINT")
    assert isinstance(json.loads(entrypoint), list)
    for cmd in stages[target].all("CMD"):
        assert isinstance(json.loads(cmd), list)


def test_sidecar_image_settings(stages: dict[str, Stage]) -> None:
    """The sidecar listens on 0.0.0.0, keeps its data in /data (a volume), runs ``serve``."""
    stage = stages["sidecar"]
    env = stage.env()
    assert env["SIDECAR_HOST"] == "0.0.0.0"
    assert env["SIDECAR_DATA_DIR"] == "/data"
    assert set(env) <= SIDECAR_ENV
    assert json.loads(stage.all("VOLUME")[0]) == ["/data"]
    assert json.loads(stage.all("ENTRYPOINT")[0]) + json.loads(stage.all("CMD")[0]) == [
        "connector-sidecar",
        "serve",
    ]
    scripts = tomllib.loads((ROOT / "sidecar" / "pyproject.toml").read_text())["project"]["scripts"]
    assert "connector-sidecar" in scripts


def test_echo_host_image_settings(stages: dict[str, Stage]) -> None:
    """The echo host image sets only names its config reads and runs the module."""
    stage = stages["echo-host"]
    assert set(stage.env()) <= ECHO_ENV
    assert stage.env()["ECHO_DATA_DIR"] == "/data"
    assert json.loads(stage.all("ENTRYPOINT")[0]) == ["python", "-m", "examples.echo_host"]
    assert (ROOT / "examples" / "echo_host" / "__main__.py").is_file()


def test_copied_paths_exist_and_are_in_the_context(stages: dict[str, Stage]) -> None:
    """Every COPY source from the build context exists and is not excluded by .dockerignore."""
    sources = []
    for stage in stages.values():
        for args in stage.all("COPY"):
            if "--from=" in args:
                continue
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources.extend(words[:-1])
    assert "uv.lock" in sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _dockerignored(source), source


def test_python_image_satisfies_requires_python() -> None:
    """The image's Python version meets every package's requires-python."""
    match = re.search(r"PYTHON_IMAGE=python:(\d+)\.(\d+)", (ROOT / "Dockerfile").read_text())
    assert match
    version = (int(match.group(1)), int(match.group(2)))
    for member in ("contracts", "sidecar", "sdk"):
        spec = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"][
            "requires-python"
        ]
        minimum = tuple(int(part) for part in spec.removeprefix(">=").split("."))
        assert version >= minimum, member


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    """The build context never carries .env, .venv, .git or local data."""
    for path in (".env", ".venv", ".git", "var", "sdk/src/connector_sdk/__pycache__"):
        assert _dockerignored(path), path
    for path in ("uv.lock", "sidecar/src", "examples/echo_host"):
        assert not _dockerignored(path), path


# compose.yaml --------------------------------------------------------------------------------


def test_compose_builds_both_services_from_this_repo(
    compose: dict[str, Any], stages: dict[str, Stage]
) -> None:
    """Both services build from this directory's Dockerfile, each its own target."""
    services = compose["services"]
    assert set(services) == {"sidecar", "echo-host"}
    for name, service in services.items():
        build = service["build"]
        assert (ROOT / build["context"]).resolve() == ROOT
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
        assert build["target"] in stages
        assert build["target"] == name


def test_compose_healthchecks_and_order(compose: dict[str, Any]) -> None:
    """Both services have /healthz healthchecks; the echo host waits for a healthy sidecar."""
    services = compose["services"]
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert "/healthz" in " ".join(test), name
    depends = services["echo-host"]["depends_on"]
    assert depends == {"sidecar": {"condition": "service_healthy"}}


def test_compose_environment_names_are_read_by_the_code(compose: dict[str, Any]) -> None:
    """Each variable given to a container is one its code reads."""
    services = compose["services"]
    assert set(services["sidecar"]["environment"]) <= SIDECAR_ENV
    assert set(services["echo-host"]["environment"]) <= ECHO_ENV


def test_compose_ports_match_what_the_services_listen_on(compose: dict[str, Any]) -> None:
    """Published container ports are the ports the processes listen on, on loopback only."""
    services = compose["services"]
    echo_port = int(services["echo-host"]["environment"]["ECHO_PORT"])
    listen = {"sidecar": SIDECAR_DEFAULT_PORT, "echo-host": echo_port}
    for name, service in services.items():
        (mapping,) = service["ports"]
        host_ip, _, container_port = mapping.split(":")
        assert host_ip == "127.0.0.1"
        assert int(container_port) == listen[name]
        assert f":{listen[name]}/healthz" in " ".join(service["healthcheck"]["test"])


def test_compose_wires_the_services_together(compose: dict[str, Any]) -> None:
    """BRIDGE_URL points at the echo host's bridge path; SIDECAR_URL at the sidecar's port."""
    services = compose["services"]
    bridge = urlsplit(services["sidecar"]["environment"]["BRIDGE_URL"])
    assert (bridge.hostname, bridge.port, bridge.path) == (
        "echo-host",
        int(services["echo-host"]["environment"]["ECHO_PORT"]),
        ECHO.BRIDGE_PATH,
    )
    sidecar_url = urlsplit(services["echo-host"]["environment"]["SIDECAR_URL"])
    assert (sidecar_url.hostname, sidecar_url.port) == ("sidecar", SIDECAR_DEFAULT_PORT)


def test_compose_data_on_volumes(compose: dict[str, Any]) -> None:
    """Each service's data directory is a named volume declared at the top level."""
    services = compose["services"]
    assert services["echo-host"]["environment"]["ECHO_DATA_DIR"] == "/data"
    for service in services.values():
        (volume,) = service["volumes"]
        name, _, target = volume.partition(":")
        assert target == "/data"
        assert name in compose["volumes"]


def test_compose_secrets_come_from_env_file(compose: dict[str, Any]) -> None:
    """Tokens are ${…} references; every reference is in .env.example, and .env is ignored."""
    text = (ROOT / "compose.yaml").read_text()
    references = re.findall(r"\$\{([A-Z_][A-Z0-9_]*)(:?[-?][^}]*)?\}", text)
    assert references
    # Complete: every variable compose reads, required or not, is offered in .env.example.
    assert {name for name, _ in references} <= set(_env_example())
    for service in compose["services"].values():
        for name in ("EXTERNAL_CONNECTOR_TOKEN", "BRIDGE_TOKEN"):
            if name in service["environment"]:
                assert service["environment"][name].startswith("${" + name), name
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_env_example_names_are_read_by_the_code() -> None:
    """.env.example only offers variables the sidecar or the echo host read."""
    assert set(_env_example()) <= SIDECAR_ENV | ECHO_ENV


def test_sidecar_source_reads_the_compose_names(compose: dict[str, Any]) -> None:
    """Once the sidecar's config exists, every name compose passes appears in its source."""
    config = ROOT / "sidecar" / "src" / "connector_sidecar" / "config.py"
    if not config.is_file():
        pytest.skip("connector_sidecar/config.py is not written yet")
    source = "\n".join(p.read_text() for p in (ROOT / "sidecar" / "src").rglob("*.py"))
    names = set(compose["services"]["sidecar"]["environment"]) | set(_stages()["sidecar"].env())
    missing = sorted(name for name in names if name not in source)
    assert not missing


def _interpolate(value: object, env: dict[str, str]) -> str:
    """A compose value with ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?error}`` filled in."""

    def fill(match: re.Match[str]) -> str:
        name, modifier, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        found = env.get(name, "")
        if modifier in (":-", "-"):
            return found or rest
        assert found or not modifier.endswith("?"), f"{name}: {rest}"
        return found

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:?[-?])([^}]*))?\}", fill, str(value))


# What a user puts in .env in place of the example's change-me placeholders.
REAL_TOKENS = {
    "EXTERNAL_CONNECTOR_TOKEN": "tDk1xQ-3nVb8ZrW0yLp4s",
    "BRIDGE_TOKEN": "bR9-2mXq7LcY0aHe5TfUj",
}


def _service_env(
    compose: dict[str, Any], service: str, overrides: dict[str, str] | None = None
) -> dict[str, str]:
    """A service's environment as its container sees it, with .env.example as the .env file."""
    example = {**_env_example(), **(overrides or {})}
    environment = compose["services"][service]["environment"]
    return {name: _interpolate(value, example) for name, value in environment.items()}


def test_env_example_placeholders_are_refused(compose: dict[str, Any]) -> None:
    """.env.example copied to .env unchanged: the sidecar refuses its change-me token."""
    from connector_sidecar.config import ConfigError
    from connector_sidecar.config import Settings as SidecarSettings

    sidecar_env = {**_stages()["sidecar"].env(), **_service_env(compose, "sidecar")}
    with pytest.raises(ConfigError) as caught:
        SidecarSettings.from_env(sidecar_env)
    assert caught.value.name == "EXTERNAL_CONNECTOR_TOKEN"
    assert "placeholder" in str(caught.value)


def test_env_example_starts_both_services(compose: dict[str, Any]) -> None:
    """.env.example copied to .env with real tokens filled in: both services' settings load."""
    from connector_sidecar.config import Settings as SidecarSettings

    sidecar_env = {
        **_stages()["sidecar"].env(),
        **_service_env(compose, "sidecar", REAL_TOKENS),
    }
    sidecar = SidecarSettings.from_env(sidecar_env)
    assert (sidecar.host, sidecar.port) == ("0.0.0.0", SIDECAR_DEFAULT_PORT)
    assert sidecar.bridge_url == compose["services"]["sidecar"]["environment"]["BRIDGE_URL"]
    echo_env = {**_stages()["echo-host"].env(), **_service_env(compose, "echo-host", REAL_TOKENS)}
    echo = ECHO.Settings.from_env(echo_env)
    assert (echo.host, echo.port) == ("0.0.0.0", 8000)
    assert echo.bridge_token is not None
    assert echo.bridge_token.reveal() == sidecar_env["BRIDGE_TOKEN"]


def test_compose_gives_each_service_time_to_stop(compose: dict[str, Any]) -> None:
    """stop_grace_period outlasts each server's graceful timeout, so SIGKILL never cuts it."""
    from examples.echo_host.__main__ import GRACEFUL_SECONDS as ECHO_GRACE

    from connector_sidecar.cli import GRACEFUL_SECONDS as SIDECAR_GRACE

    for name, grace in (("sidecar", SIDECAR_GRACE), ("echo-host", ECHO_GRACE)):
        period = compose["services"][name]["stop_grace_period"]
        assert re.fullmatch(r"\d+s", period), period
        assert int(period[:-1]) >= grace + 5, name


def test_replicas_compose_echo_host_reaches_whichever_replica_runs() -> None:
    """compose.replicas.yaml: the echo host calls a name every replica answers to, so stopping
    one replica does not cut the host off (make image-test stops one and checks the echo)."""
    services = yaml.safe_load((ROOT / "compose.replicas.yaml").read_text())["services"]
    name = urlsplit(services["echo-host"]["environment"]["SIDECAR_URL"]).hostname
    replicas = [s for s in services.values() if s.get("build", {}).get("target") == "sidecar"]
    assert len(replicas) == 2
    for replica in replicas:
        assert name in replica["networks"]["default"]["aliases"]
