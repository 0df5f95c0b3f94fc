"""Scan-to-create: Feishu's app-registration device flow (docs/protocols/feishu.md §8).

``POST {accounts}/oauth/v1/app/registration``, form-encoded, in three steps: ``action=init``
(the answer must list ``client_secret``), ``action=begin`` (device code and the URL to show as
a QR code), then ``action=poll`` every ``interval`` seconds until the person has scanned and
confirmed. The endpoint is not publicly documented; its rate limits and whether the new app is
published by itself are [unconfirmed]. The wire shapes follow both official SDKs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from connector_sidecar.drivers._common import as_dict

__all__ = [
    "Approved",
    "Begun",
    "FlowExpired",
    "FlowState",
    "Pending",
    "RegistrationClient",
    "RegistrationError",
    "RegistrationUnavailable",
    "SwitchToLark",
    "run_device_flow",
]

PATH = "/oauth/v1/app/registration"
DEFAULT_INTERVAL = 5.0
DEFAULT_EXPIRES_IN = 600.0
SLOW_DOWN_SECONDS = 5.0
# The endpoint is undocumented: absurd timing values are bounded (our choice).
MAX_INTERVAL = 60.0
MAX_EXPIRES_IN = 3600.0
MAX_BEGIN_FAILURES = 5  # then the session fails instead of waiting for a host that is down


class RegistrationError(Exception):
    """The flow ended: ``error`` is the vendor's code (access_denied, expired_token, …)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


class RegistrationUnavailable(Exception):
    """Network trouble or a 5xx: poll again later."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Begun:
    device_code: str
    user_code: str | None
    url: str
    interval: float
    expires_in: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pending:
    slow_down: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class SwitchToLark:
    """``user_info.tenant_brand == "lark"``: keep polling on the Lark accounts host."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Approved:
    app_id: str
    app_secret: str = dataclasses.field(repr=False)
    owner_open_id: str | None
    tenant_brand: str | None


class RegistrationClient:
    def __init__(self, http: httpx.AsyncClient, accounts_base: str) -> None:
        self.http = http
        self.base = accounts_base.rstrip("/")

    async def _post(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self.http.post(
                f"{self.base}{PATH}",
                data=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError as exc:
            raise RegistrationUnavailable(f"{type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except (ValueError, RecursionError):  # an HTML page; JSON nested too deep to parse
            body = None
        if not isinstance(body, dict):
            if response.status_code >= 500 or response.status_code == 429:
                raise RegistrationUnavailable(f"HTTP {response.status_code}")
            raise RegistrationError("bad_response", f"HTTP {response.status_code} without JSON")
        # Errors come as OAuth-style {"error", "error_description"}, with HTTP 200 or 4xx.
        if response.status_code >= 500 and not body.get("error"):
            raise RegistrationUnavailable(f"HTTP {response.status_code}")
        return body

    async def begin(self) -> Begun:
        init = await self._post({"action": "init"})
        methods = init.get("supported_auth_methods") or []
        if "client_secret" not in methods:
            raise RegistrationError(
                "unsupported_auth_method", "client_secret is not a supported auth method"
            )
        body = await self._post(
            {
                "action": "begin",
                "archetype": "PersonalAgent",
                "auth_method": "client_secret",
                "request_user_info": "open_id",
            }
        )
        if body.get("error"):
            raise RegistrationError(str(body["error"]), str(body.get("error_description") or ""))
        device_code = body.get("device_code")
        url = body.get("verification_uri_complete")
        if not isinstance(device_code, str) or not isinstance(url, str):
            raise RegistrationError("bad_response", "no device_code or verification_uri_complete")
        # expires_in per the notes; OpenClaw and an SDK version read expire_in.
        expires = body.get("expires_in", body.get("expire_in"))
        return Begun(
            device_code=device_code,
            user_code=body.get("user_code") if isinstance(body.get("user_code"), str) else None,
            url=url,
            interval=_seconds(body.get("interval"), DEFAULT_INTERVAL, MAX_INTERVAL),
            expires_in=_seconds(expires, DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN),
        )

    async def poll(self, device_code: str, *, switched: bool) -> Pending | SwitchToLark | Approved:
        body = await self._post({"action": "poll", "device_code": device_code})
        user_info = as_dict(body.get("user_info"))
        brand = user_info.get("tenant_brand")
        app_id, app_secret = body.get("client_id"), body.get("client_secret")
        if isinstance(app_id, str) and app_id and isinstance(app_secret, str) and app_secret:
            open_id = user_info.get("open_id")
            return Approved(
                app_id=app_id,
                app_secret=app_secret,
                owner_open_id=open_id if isinstance(open_id, str) else None,
                tenant_brand=brand if isinstance(brand, str) else None,
            )
        if brand == "lark" and not switched:
            return SwitchToLark()
        error = str(body.get("error") or "")
        if error == "authorization_pending":
            return Pending()
        if error == "slow_down":
            return Pending(slow_down=True)
        raise RegistrationError(error or "unknown", str(body.get("error_description") or ""))


def _seconds(value: Any, default: float, maximum: float) -> float:
    """A positive number of seconds from the answer, at most ``maximum``; else ``default``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return min(value, maximum) * 1.0
    return default


# -- the flow, resumable ------------------------------------------------------------------------


@dataclasses.dataclass
class FlowState:
    """Where a scan-to-create session stands; saved in the session so a restart resumes it."""

    brand: str = "feishu"  # whose accounts host is polled: feishu, or lark after the switch
    switched: bool = False
    device_code: str | None = None
    url: str | None = None
    interval: float = DEFAULT_INTERVAL
    expires_at: float | None = None  # wall-clock seconds
    codes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class FlowExpired(Exception):
    """No QR code was scanned in time, after ``max_codes`` codes."""


async def run_device_flow(
    state: FlowState,
    *,
    client_for: Callable[[str], RegistrationClient],
    on_code: Callable[[FlowState], Awaitable[None]],
    on_change: Callable[[FlowState], Awaitable[None]],
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    max_codes: int = 3,
) -> Approved:
    """Show codes and poll until one is approved; a code that expires is replaced (up to
    ``max_codes``). Raises :class:`RegistrationError` (access_denied, …) or :class:`FlowExpired`."""
    begin_failures = 0
    while True:
        if state.device_code is None or (state.expires_at or 0) <= clock():
            if state.codes >= max_codes:
                raise FlowExpired(f"no QR code was scanned in time ({state.codes} codes shown)")
            try:
                begun = await client_for(state.brand).begin()
            except RegistrationUnavailable as exc:
                begin_failures += 1
                if begin_failures >= MAX_BEGIN_FAILURES:
                    raise RegistrationError("unavailable", f"the accounts host: {exc}") from None
                await sleep(state.interval)
                continue
            state.device_code = begun.device_code
            state.url = begun.url
            state.interval = begun.interval
            state.expires_at = clock() + begun.expires_in
            state.codes += 1
            await on_code(state)
        await sleep(state.interval)
        if (state.expires_at or 0) <= clock():
            continue
        try:
            result = await client_for(state.brand).poll(state.device_code, switched=state.switched)
        except RegistrationUnavailable:
            continue
        except RegistrationError as exc:
            if exc.error == "expired_token":
                state.expires_at = 0.0  # a new code, if any are left
                continue
            raise
        if isinstance(result, Approved):
            if result.tenant_brand == "lark":
                state.brand = "lark"
            return result
        if isinstance(result, SwitchToLark):
            # The scanner's tenant is on Lark: keep polling there, once [sdk][oc].
            state.brand, state.switched = "lark", True
            await on_change(state)
        elif result.slow_down:
            state.interval += SLOW_DOWN_SECONDS
            await on_change(state)
