"""The options of a Feishu pairing session, and where each domain's hosts are.

Options (camelCase, as the host sends them)::

    {"domain": "feishu" | "lark" | "https://…", "appId", "appSecret",
     "mode": "websocket" | "webhook", "encryptKey", "verificationToken", "requireMention"}

Without ``appId``/``appSecret`` the session runs the scan-to-create device flow. The secret
ones (``appSecret``, ``encryptKey``, ``verificationToken``) end up in the connection's
credentials; the runtime strips them from the stored options.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

from connector_sidecar.config import (
    DEFAULT_FEISHU_BASE_URL,
    DEFAULT_LARK_BASE_URL,
    Settings,
)
from connector_sidecar.drivers.base import OptionsError

__all__ = [
    "OPTIONS_SCHEMA",
    "ConnectionConfig",
    "accounts_base",
    "connection_config",
    "openapi_base",
    "parse_options",
]

DOMAINS = ("feishu", "lark")
MODES = ("websocket", "webhook")
FEISHU_ACCOUNTS_URL = "https://accounts.feishu.cn"
LARK_ACCOUNTS_URL = "https://accounts.larksuite.com"

OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "domain": {
            "type": "string",
            "default": "feishu",
            "description": "feishu (open.feishu.cn), lark (open.larksuite.com) or the https URL of a private deployment",
        },
        "appId": {
            "type": "string",
            "description": "the self-built app's App ID (cli_…); leave out with appSecret to create an app by scanning a QR code",
        },
        "appSecret": {"type": "string", "description": "the app's App Secret"},
        "mode": {
            "type": "string",
            "enum": list(MODES),
            "default": "websocket",
            "description": "how events arrive: a long connection the sidecar opens, or webhooks Feishu POSTs to callbackBaseUrl",
        },
        "encryptKey": {
            "type": "string",
            "description": "webhook mode: the Encrypt Key of the console's event settings (events arrive encrypted and signed)",
        },
        "verificationToken": {
            "type": "string",
            "description": "webhook mode (required there): the Verification Token of the console's event settings",
        },
        "requireMention": {
            "type": "boolean",
            "default": True,
            "description": "in groups, only pass on messages that @mention the bot",
        },
    },
}


def _string(options: dict[str, Any], name: str) -> str | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise OptionsError(f"$.options.{name}", "must be a non-empty string")
    return value.strip()


def _domain(value: str | None) -> str:
    if value is None:
        return "feishu"
    if value.lower() in DOMAINS:
        return value.lower()
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or parts.query or parts.fragment:
        raise OptionsError("$.options.domain", "must be feishu, lark or an https:// URL")
    return value.rstrip("/")


def parse_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check a session's options; return them normalised (defaults filled in)."""
    domain = _domain(_string(options, "domain"))
    app_id = _string(options, "appId")
    app_secret = _string(options, "appSecret")
    if app_id and not app_secret:
        raise OptionsError("$.options.appSecret", "is required with appId")
    if app_secret and not app_id:
        raise OptionsError("$.options.appId", "is required with appSecret")
    if app_id is None and domain not in DOMAINS:
        raise OptionsError(
            "$.options.appId",
            "scan-to-create works for the feishu and lark domains only; give appId and appSecret",
        )
    mode = options.get("mode", "websocket")
    if mode not in MODES:
        raise OptionsError("$.options.mode", "must be websocket or webhook")
    encrypt_key = _string(options, "encryptKey")
    verification_token = _string(options, "verificationToken")
    if mode == "webhook" and verification_token is None:
        raise OptionsError(
            "$.options.verificationToken",
            "is required in webhook mode (the console's Verification Token)",
        )
    require_mention = options.get("requireMention", True)
    if not isinstance(require_mention, bool):
        raise OptionsError("$.options.requireMention", "must be true or false")
    parsed: dict[str, Any] = {"domain": domain, "mode": mode, "requireMention": require_mention}
    for name, value in (
        ("appId", app_id),
        ("appSecret", app_secret),
        ("encryptKey", encrypt_key),
        ("verificationToken", verification_token),
    ):
        if value is not None:
            parsed[name] = value
    return parsed


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectionConfig:
    """What a live connection runs with: stored options merged with its credentials."""

    domain: str
    app_id: str
    app_secret: str = dataclasses.field(repr=False)
    mode: str = "websocket"
    encrypt_key: str | None = dataclasses.field(default=None, repr=False)
    verification_token: str | None = dataclasses.field(default=None, repr=False)
    require_mention: bool = True


def connection_config(options: dict[str, Any], credentials: dict[str, Any]) -> ConnectionConfig:
    """Credentials win over options (a scanned app's domain may have switched to lark)."""
    merged = {**options, **credentials}
    return ConnectionConfig(
        domain=str(merged.get("domain") or "feishu"),
        app_id=str(merged.get("appId") or ""),
        app_secret=str(merged.get("appSecret") or ""),
        mode=str(merged.get("mode") or "websocket"),
        encrypt_key=merged.get("encryptKey") or None,
        verification_token=merged.get("verificationToken") or None,
        require_mention=bool(merged.get("requireMention", True)),
    )


def openapi_base(domain: str, settings: Settings) -> str:
    """The OpenAPI base of a domain: FEISHU_BASE_URL / LARK_BASE_URL, or the custom URL."""
    if domain == "feishu":
        return settings.feishu_base_url.rstrip("/")
    if domain == "lark":
        return settings.lark_base_url.rstrip("/")
    return domain.rstrip("/")


def accounts_base(domain: str, settings: Settings) -> str:
    """The accounts host of the device flow.

    The real hosts are accounts.feishu.cn / accounts.larksuite.com. When FEISHU_BASE_URL or
    LARK_BASE_URL is overridden (an emulator, a proxy), the accounts calls go to that same base,
    so one override points the whole flow somewhere else.
    """
    if domain == "lark":
        if settings.lark_base_url.rstrip("/") != DEFAULT_LARK_BASE_URL:
            return settings.lark_base_url.rstrip("/")
        return LARK_ACCOUNTS_URL
    if settings.feishu_base_url.rstrip("/") != DEFAULT_FEISHU_BASE_URL:
        return settings.feishu_base_url.rstrip("/")
    return FEISHU_ACCOUNTS_URL
