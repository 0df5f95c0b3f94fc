"""compose.yaml as the image tests read it: each service's settings with ``${…}`` filled in.

The tests start containers from these values (environment, image, init, data volume,
healthcheck), so a change to compose.yaml changes what they run. Interpolation follows the
Compose rules the file uses: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}`` and
``${NAME:?error}`` (an unset required name raises ``ValueError`` with the file's message).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: object, env: dict[str, str]) -> str:
    """``value`` with every ``${…}`` reference replaced from ``env``."""

    def fill(match: re.Match[str]) -> str:
        name, modifier, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        found = env.get(name)
        empty = found is None or (found == "" and modifier.startswith(":"))
        if modifier.endswith("-") and empty:
            return rest
        if modifier.endswith("?") and empty:
            raise ValueError(f"{name}: {rest}")
        return found or ""

    return _REFERENCE.sub(fill, str(value))


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of a .env file; comments and blank lines skipped."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Service:
    """One compose service, interpolated."""

    name: str
    image: str
    target: str
    environment: dict[str, str]
    container_ports: tuple[int, ...]
    data_target: str
    init: bool
    stop_grace_seconds: int
    healthcheck: tuple[str, ...]

    def env_options(self) -> list[str]:
        return [
            part for key, value in self.environment.items() for part in ("--env", f"{key}={value}")
        ]


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    if not match:
        raise ValueError(f"stop_grace_period {value!r}: only whole seconds (`30s`) are read here")
    return int(match.group(1))


def load(env: dict[str, str], path: Path = COMPOSE_FILE) -> dict[str, Service]:
    """Every service of the compose file, with ``env`` as its .env file."""
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    services = {}
    for name, raw in document["services"].items():
        (volume,) = raw["volumes"]
        test = raw["healthcheck"]["test"]
        services[name] = Service(
            name=name,
            image=interpolate(raw["image"], env),
            target=raw["build"]["target"],
            environment={key: interpolate(value, env) for key, value in raw["environment"].items()},
            container_ports=tuple(int(str(port).rsplit(":", 1)[-1]) for port in raw["ports"]),
            data_target=volume.split(":")[1],
            init=bool(raw.get("init", False)),
            stop_grace_seconds=_seconds(raw["stop_grace_period"]),
            healthcheck=tuple(test[1:] if test[0] == "CMD" else test),
        )
    return services


def with_published_ports(
    path: Path,
    ports: dict[str, int],
    target: Path,
    *,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Write a copy of the compose file to ``target`` that publishes on other host ports.

    ``ports`` gives each service's host port (a service publishes one port). ``edit``, when
    given, changes the parsed file first (the caller says what and why); then only ``ports``
    and the build contexts (made absolute, so the copy builds this repository) change.
    """
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    if edit is not None:
        edit(document)
    for name, service in document["services"].items():
        if "ports" in service:
            (mapping,) = service["ports"]
            host_ip, _, container_port = str(mapping).rpartition(":")
            host_ip = host_ip.rpartition(":")[0] or "127.0.0.1"
            service["ports"] = [f"{host_ip}:{ports[name]}:{container_port}"]
        if "build" in service:
            build = dict(service["build"])  # merged from an anchor: shared between services
            build["context"] = str((path.parent / build["context"]).resolve())
            service["build"] = build
    target.write_text(yaml.safe_dump(document, sort_keys=False))
