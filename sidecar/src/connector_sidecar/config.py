"""Settings from the environment (docs/CONTRACT.md §9), checked once at start.

A missing or malformed setting raises :class:`ConfigError` naming the variable; the CLI prints
that one line and exits with status 2.

Tokens (``EXTERNAL_CONNECTOR_TOKEN``, and ``BRIDGE_TOKEN`` when set) must be at least
:data:`MIN_TOKEN_LENGTH` characters and not a known placeholder (the ``change-me…`` values of
``.env.example``, "changeme", "secret", …): a deployment copied from the example must not run
with a token anyone can read there. Signing secrets are ``whsec_`` + base64, padded or not, as
the Standard Webhooks libraries write them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from connector_sidecar._secret import Secret
from connector_sidecar.signing import decode_secret

__all__ = ["KNOWN_CONNECTORS", "ConfigError", "Settings"]

KNOWN_CONNECTORS = ("weixin", "feishu", "sim")
DEFAULT_WEIXIN_BASE_URL = "https://ilinkai.weixin.qq.com"
DEFAULT_FEISHU_BASE_URL = "https://open.feishu.cn"
DEFAULT_LARK_BASE_URL = "https://open.larksuite.com"
DEFAULT_WEIXIN_CDN_BASE_URL = "https://novac2c.cdn.weixin.qq.com/c2c"
DEFAULT_MEDIA_MAX_BYTES = 25 * 1024 * 1024
DEFAULT_MEDIA_CACHE_BYTES = 1024 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_TOKEN_LENGTH = 16
# Compared without case, spaces, dashes or underscores; a token starting with one of the
# prefixes is a placeholder too ("change-me-sidecar-api-token" in .env.example).
_PLACEHOLDERS = frozenset(
    {"changeme", "secret", "token", "password", "example", "placeholder", "test", "default"}
)
_PLACEHOLDER_PREFIXES = ("changeme", "replaceme", "yourtoken", "insert", "placeholder", "example")
# The event types BRIDGE_EVENT_TYPES may enable; ``ping`` is only ever sent by POST /bridge/test.
EVENT_TYPES = ("message", "connection.status", "send.status")


class ConfigError(Exception):
    """A setting is missing or malformed; ``str()`` is the one line to print."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    token: Secret
    metrics_token: Secret | None = None  # a second bearer token, good for GET /metrics only
    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: Path = Path("./var")
    database_url: Secret | None = None  # postgresql://…; None: SQLite under data_dir
    replica_id: str = dataclasses.field(default_factory=lambda: default_replica_id())
    lease_seconds: float = 15.0
    connectors: tuple[str, ...] = KNOWN_CONNECTORS
    bridge_url: str | None = None
    bridge_token: Secret | None = None
    bridge_signing_secrets: tuple[Secret, ...] = ()
    bridge_concurrency: int = 16
    bridge_timeout_seconds: float = 15.0
    bridge_max_age_seconds: float = 86400.0
    bridge_event_types: frozenset[str] = frozenset({"message"})
    dead_retention_seconds: float = 30 * 86400.0
    weixin_base_url: str = DEFAULT_WEIXIN_BASE_URL
    weixin_route_tag: str | None = None  # sent as SKRouteTag on every iLink call when set
    feishu_base_url: str = DEFAULT_FEISHU_BASE_URL
    lark_base_url: str = DEFAULT_LARK_BASE_URL
    log_level: str = "info"
    log_format: str = "console"
    weixin_cdn_base_url: str = DEFAULT_WEIXIN_CDN_BASE_URL
    media_max_bytes: int = DEFAULT_MEDIA_MAX_BYTES
    media_cache_bytes: int = DEFAULT_MEDIA_CACHE_BYTES
    media_prefetch: bool = True
    media_fetch_allow_private: bool = False
    # Not environment settings: knobs for tests and embedding.
    send_retry_attempts: int = 4
    send_retry_max_seconds: float = 20.0
    send_wait_seconds: float = 10.0
    delivered_retention_seconds: float = 7 * 86400.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        r = _Reader(env)
        return cls(
            token=r.token("EXTERNAL_CONNECTOR_TOKEN"),
            metrics_token=r.optional_token("METRICS_TOKEN"),
            host=r.host("SIDECAR_HOST", "127.0.0.1"),
            port=r.integer("SIDECAR_PORT", 8787, low=1, high=65535),
            data_dir=Path(r.text("SIDECAR_DATA_DIR", "./var")),
            database_url=r.database_url("SIDECAR_DATABASE_URL"),
            replica_id=r.text("SIDECAR_REPLICA_ID", default_replica_id())[:200],
            lease_seconds=r.number("SIDECAR_LEASE_SECONDS", 15.0, low=3, high=3600),
            connectors=r.connectors("SIDECAR_CONNECTORS"),
            bridge_url=r.url("BRIDGE_URL"),
            bridge_token=r.optional_token("BRIDGE_TOKEN"),
            bridge_signing_secrets=r.signing_secrets("BRIDGE_SIGNING_SECRET"),
            bridge_concurrency=r.integer("BRIDGE_CONCURRENCY", 16, low=1, high=1024),
            bridge_timeout_seconds=r.number("BRIDGE_TIMEOUT_SECONDS", 15.0, low=0.1, high=600),
            bridge_max_age_seconds=r.number(
                "BRIDGE_MAX_AGE_SECONDS", 86400.0, low=1, high=30 * 86400
            ),
            bridge_event_types=r.event_types("BRIDGE_EVENT_TYPES"),
            dead_retention_seconds=r.number(
                "DEAD_RETENTION_SECONDS", 30 * 86400.0, low=60, high=3650 * 86400
            ),
            weixin_base_url=r.base_url("WEIXIN_BASE_URL", DEFAULT_WEIXIN_BASE_URL),
            weixin_route_tag=r.header_value("WEIXIN_ROUTE_TAG"),
            feishu_base_url=r.base_url("FEISHU_BASE_URL", DEFAULT_FEISHU_BASE_URL),
            lark_base_url=r.base_url("LARK_BASE_URL", DEFAULT_LARK_BASE_URL),
            log_level=r.choice("LOG_LEVEL", "info", LOG_LEVELS),
            log_format=r.choice("LOG_FORMAT", "console", ("console", "json")),
            weixin_cdn_base_url=r.base_url("WEIXIN_CDN_BASE_URL", DEFAULT_WEIXIN_CDN_BASE_URL),
            media_max_bytes=r.integer(
                "MEDIA_MAX_BYTES", DEFAULT_MEDIA_MAX_BYTES, low=1024, high=1024**3
            ),
            media_cache_bytes=r.integer(
                "MEDIA_CACHE_BYTES", DEFAULT_MEDIA_CACHE_BYTES, low=0, high=1024**4
            ),
            media_prefetch=r.flag("MEDIA_PREFETCH", True),
            media_fetch_allow_private=r.flag("MEDIA_FETCH_ALLOW_PRIVATE", False),
        )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "sidecar.sqlite3"

    @property
    def media_dir(self) -> Path:
        """Where cached inbound media and outbound attachment bytes live (files, not rows)."""
        return self.data_dir / "media"


def default_replica_id() -> str:
    """The host name and process id: unique among the replicas of one database."""
    return f"{socket.gethostname()}-{os.getpid()}"


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self.raw(name) or default

    def token(self, name: str) -> Secret:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required (the bearer token hosts must send)")
        return Secret(_checked_token(name, value))

    def header_value(self, name: str) -> str | None:
        """Optional text sent as an HTTP header value: printable ASCII only."""
        value = self.raw(name)
        if value is not None and not (value.isascii() and value.isprintable()):
            raise ConfigError(name, "must be printable ASCII (it is sent as an HTTP header)")
        return value

    def optional_token(self, name: str) -> Secret | None:
        value = self.raw(name)
        return Secret(_checked_token(name, value)) if value else None

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"must be a whole number, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {number}")
        return number

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"must be a number of seconds, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(name, f"must be between {low:g} and {high:g}, got {number:g}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")

    def host(self, name: str, default: str) -> str:
        value = self.raw(name) or default
        if value == "localhost":
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(name, f"must be an IP address or localhost, got {value!r}") from None
        return value

    def url(self, name: str) -> str | None:
        """An http(s) URL, exactly as given: BRIDGE_URL is POSTed to verbatim."""
        value = self.raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(name, f"must be an http(s) URL, got {value!r}")
        return value

    def database_url(self, name: str) -> Secret | None:
        """A PostgreSQL URL (it may hold a password: kept as a secret)."""
        value = self.raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or (not parts.netloc and not parts.query):
            raise ConfigError(name, "must be a postgresql://user@host:port/database URL")
        return Secret(value)

    def base_url(self, name: str, default: str) -> str:
        """A URL that paths are appended to: without a trailing slash."""
        value = self.url(name)
        return default if value is None else value.rstrip("/")

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = (self.raw(name) or default).lower()
        if value not in options:
            raise ConfigError(name, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def connectors(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return KNOWN_CONNECTORS
        kinds = tuple(dict.fromkeys(k.strip().lower() for k in value.split(",") if k.strip()))
        unknown = [k for k in kinds if k not in KNOWN_CONNECTORS]
        if unknown or not kinds:
            raise ConfigError(
                name,
                f"unknown connector {', '.join(unknown) or '(none)'}; known: {', '.join(KNOWN_CONNECTORS)}",
            )
        return kinds

    def event_types(self, name: str) -> frozenset[str]:
        value = self.raw(name)
        if value is None:
            return frozenset({"message"})
        types = {t.strip().lower() for t in value.split(",") if t.strip()}
        unknown = sorted(types - set(EVENT_TYPES))
        if unknown or not types:
            raise ConfigError(
                name,
                f"unknown event type {', '.join(unknown) or '(none)'}; known: {', '.join(EVENT_TYPES)}",
            )
        return frozenset(types)

    def signing_secrets(self, name: str) -> tuple[Secret, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        secrets: list[Secret] = []
        for item in (s.strip() for s in value.split(",")):
            if not item:
                continue
            if not item.startswith("whsec_") or len(item) <= len("whsec_"):
                raise ConfigError(name, "each secret must look like whsec_<base64>")
            try:
                # What the signer takes, unpadded too, as the SDK and the official library do.
                decode_secret(item)
            except ValueError:
                raise ConfigError(name, "the part after whsec_ must be base64") from None
            secrets.append(Secret(item))
        return tuple(secrets)


def _checked_token(name: str, value: str) -> str:
    """``value`` if it can serve as a bearer token; never echoes it in the error."""
    how = 'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
    squashed = "".join(c for c in value.lower() if c.isalnum())
    if squashed in _PLACEHOLDERS or squashed.startswith(_PLACEHOLDER_PREFIXES):
        raise ConfigError(
            name,
            f"is a known placeholder (like the change-me values of .env.example), not a secret; {how}",
        )
    if len(value) < MIN_TOKEN_LENGTH:
        raise ConfigError(name, f"must be at least {MIN_TOKEN_LENGTH} characters; {how}")
    if len(set(value)) < 4:
        raise ConfigError(name, f"is too simple (fewer than 4 different characters); {how}")
    return value
