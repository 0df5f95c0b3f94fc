"""The echo host's settings, read from the environment and checked at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from connector_sdk import DEFAULT_SIDECAR_URL, Secret, WebhookSecret

__all__ = ["BRIDGE_PATH", "ENV_NAMES", "Settings", "SettingsError"]

#: Where the sidecar POSTs events: set its ``BRIDGE_URL`` to ``http://<host>:<port>`` + this.
BRIDGE_PATH: Final = "/api/channel-connector-bridge/events"

#: Every variable the echo host reads, with its default ("" when there is none).
ENV_NAMES: Final[Mapping[str, str]] = {
    "SIDECAR_URL": DEFAULT_SIDECAR_URL,
    "EXTERNAL_CONNECTOR_TOKEN": "",
    "BRIDGE_TOKEN": "",
    "BRIDGE_SIGNING_SECRET": "",
    "ECHO_HOST": "127.0.0.1",
    "ECHO_PORT": "8000",
    "ECHO_DATA_DIR": "./var/echo",
    "LOG_LEVEL": "info",
}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it in one line."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the echo host needs; secrets are wrapped so they never show in a repr."""

    sidecar_token: Secret
    sidecar_url: str = DEFAULT_SIDECAR_URL
    bridge_token: Secret | None = None
    bridge_signing_secrets: tuple[Secret, ...] = field(default=())
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./var/echo")
    log_level: str = "info"

    @property
    def dedupe_path(self) -> Path:
        """The SQLite file of the dedupe store."""
        return self.data_dir / "dedupe.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: ``os.environ``)."""
        source = os.environ if env is None else env

        def get(name: str) -> str:
            return source.get(name, ENV_NAMES[name]).strip()

        token = get("EXTERNAL_CONNECTOR_TOKEN")
        if not token:
            raise SettingsError("EXTERNAL_CONNECTOR_TOKEN is required (the sidecar's API token)")
        secrets = tuple(
            Secret(s.strip()) for s in get("BRIDGE_SIGNING_SECRET").split(",") if s.strip()
        )
        for secret in secrets:
            try:
                WebhookSecret(secret)
            except ValueError:
                raise SettingsError(
                    "BRIDGE_SIGNING_SECRET must be whsec_ + base64, comma-separated"
                ) from None
        bridge_token = get("BRIDGE_TOKEN")
        if not bridge_token and not secrets:
            raise SettingsError(
                "BRIDGE_TOKEN or BRIDGE_SIGNING_SECRET is required to verify the bridge"
            )
        port_text = get("ECHO_PORT")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise SettingsError(f"ECHO_PORT must be a port number, not {port_text!r}")
        log_level = get("LOG_LEVEL").lower()
        if log_level not in ("debug", "info", "warning", "error", "critical"):
            raise SettingsError(
                f"LOG_LEVEL must be debug, info, warning or error, not {log_level!r}"
            )
        url = get("SIDECAR_URL")
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"SIDECAR_URL must be an http(s) URL, not {url!r}")
        return cls(
            sidecar_url=url,
            sidecar_token=Secret(token),
            bridge_token=Secret(bridge_token) if bridge_token else None,
            bridge_signing_secrets=secrets,
            host=get("ECHO_HOST"),
            port=int(port_text),
            data_dir=Path(get("ECHO_DATA_DIR")),
            log_level=log_level,
        )
