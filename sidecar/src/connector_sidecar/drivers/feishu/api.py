"""The Feishu OpenAPI calls the connector makes, the tenant token cache, and error classes.

docs/protocols/feishu.md §2-§4, §7.1. Errors, by what the caller should do::

    FeishuError
    ├── FeishuUnavailable     network, HTTP 5xx, rate limits (RATE_LIMIT_CODES, HTTP 429),
    │                         230049 "being sent": try again later (``retry_after`` when known)
    ├── CredentialsRejected   the token endpoint refused app_id/app_secret: the login is dead
    └── FeishuApiError        any other non-zero ``code``: the vendor refused this request

Token-invalid codes on a business call (99991661/63/64/65/66/68) are handled here: the cached
token is dropped, a new one fetched, and the call retried once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from connector_sidecar.drivers._common import as_dict

__all__ = [
    "RATE_LIMIT_CODES",
    "REPLY_TARGET_GONE_CODES",
    "TOKEN_INVALID_CODES",
    "BotInfo",
    "CredentialsRejected",
    "FeishuApi",
    "FeishuApiError",
    "FeishuError",
    "FeishuUnavailable",
    "SentMessage",
    "TokenCache",
    "WsEndpoint",
]

log = logging.getLogger(__name__)

# 99991661 missing/malformed, 99991663 invalid or expired; the Python SDK's channel layer
# also counts 64/65/66/68 as token-invalid [sdk channel/errors.py].
TOKEN_INVALID_CODES = frozenset({99991661, 99991663, 99991664, 99991665, 99991666, 99991668})
# Frequency limits (§4.3), all retried later with backoff, one by one:
# - 99991400: the app-level request frequency limit, with HTTP 400, in the vendor doc text
#   embedded in node-sdk [sdk-embedded doc]. lark-oapi's channel layer files it under permission
#   denied; we follow the vendor's own text (a denial would come back on the retry anyway).
# - 99991402: "too many requests" backpressure in lark-oapi's channel layer [sdk].
# - 11020, 11021: the same, per lark-oapi's channel layer [sdk]; what each one limits is
#   [unconfirmed].
# - 230020: "This operation triggers the frequency limit", the vendor message text; lark-oapi's
#   channel layer files it under target revoked, OpenClaw as a send limit [oc][3rd-party].
# - 11232: a message send limit per OpenClaw [oc].
RATE_LIMIT_CODES = frozenset({99991400, 99991402, 11020, 11021, 230020, 11232})
# 230049 "the message is being sent" [3rd-party code table]: the outcome is unknown, so retry
# with the same uuid.
IN_FLIGHT_CODES = frozenset({230049})
# A reply whose target was withdrawn (230011) or is not found (231003) [oc].
REPLY_TARGET_GONE_CODES = frozenset({230011, 231003})
# The ws endpoint's retryable codes: 1 system busy, 1000040343 internal error [sdk].
WS_ENDPOINT_RETRY_CODES = frozenset({1, 1000040343})

MAX_RETRY_AFTER = 60.0  # the Python SDK caps Retry-After at 60 s
# The gateway's own hint on a limited answer: seconds until the quota resets [doc, unconfirmed].
# Read when there is no Retry-After, with the same cap.
RATELIMIT_RESET_HEADER = "x-ogw-ratelimit-reset"
TOKEN_REFRESH_MARGIN = 600.0  # refresh 10 min before expiry (the Python SDK's margin)


class FeishuError(Exception):
    """Base of what :class:`FeishuApi` raises; ``str()`` is safe to log and show."""


class FeishuUnavailable(FeishuError):
    def __init__(
        self, detail: str, *, retry_after: float | None = None, code: int | None = None
    ) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.code = code


class CredentialsRejected(FeishuError):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{msg} (code {code})" if msg else f"code {code}")
        self.code = code
        self.msg = msg


class FeishuApiError(FeishuError):
    def __init__(self, code: int, msg: str, *, http_status: int | None = None) -> None:
        super().__init__(f"{msg} (code {code})" if msg else f"code {code}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


@dataclasses.dataclass(frozen=True, kw_only=True)
class BotInfo:
    open_id: str
    app_name: str
    activate_status: int | None
    avatar_url: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SentMessage:
    message_id: str
    chat_id: str | None = None
    thread_id: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class WsEndpoint:
    url: str
    device_id: str | None
    service_id: int
    client_config: dict[str, Any]


# -- the tenant token -------------------------------------------------------------------------


@dataclasses.dataclass
class _Token:
    value: str = dataclasses.field(repr=False)
    secret_digest: str
    refresh_at: float
    expires_at: float


class TokenCache:
    """Tenant tokens per (OpenAPI base, app_id): refreshed ahead of expiry, one refresh at a time.

    Feishu hands back the same token while 30 min or more remain, a new one below that, and
    both stay valid until each expires (§2), so refreshing 10 min early never cuts off a call
    in flight.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def get(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        app_id: str,
        app_secret: str,
        *,
        stale: str | None = None,
    ) -> str:
        """A usable token; ``stale`` is one the vendor just refused, so never return it again."""
        key = (base_url, app_id)
        digest = hashlib.sha256(app_secret.encode()).hexdigest()
        cached = self._usable(key, digest, stale)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            # Another caller may have refreshed it while this one waited.
            cached = self._usable(key, digest, stale)
            if cached is not None:
                return cached
            current = self._tokens.get(key)
            try:
                token, expire = await _fetch_tenant_token(http, base_url, app_id, app_secret)
            except FeishuUnavailable:
                # A refresh ahead of expiry that fails keeps the old token while it is valid.
                if (
                    current is not None
                    and current.secret_digest == digest
                    and current.value != stale
                    and self.clock() < current.expires_at
                ):
                    return current.value
                raise
            except CredentialsRejected:
                self._tokens.pop(key, None)
                raise
            now = self.clock()
            margin = min(TOKEN_REFRESH_MARGIN, expire / 2)
            self._tokens[key] = _Token(
                value=token,
                secret_digest=digest,
                refresh_at=now + expire - margin,
                expires_at=now + expire,
            )
            return token

    def _usable(self, key: tuple[str, str], digest: str, stale: str | None) -> str | None:
        token = self._tokens.get(key)
        if (
            token is None
            or token.secret_digest != digest
            or token.value == stale
            or self.clock() >= token.refresh_at
        ):
            return None
        return token.value

    def forget(self, base_url: str, app_id: str) -> None:
        self._tokens.pop((base_url, app_id), None)


async def _fetch_tenant_token(
    http: httpx.AsyncClient, base_url: str, app_id: str, app_secret: str
) -> tuple[str, float]:
    response = await _post(
        http,
        f"{base_url}/open-apis/auth/v3/tenant_access_token/internal",
        json_body={"app_id": app_id, "app_secret": app_secret},
    )
    body = _json_body(response)
    code = _code(body)
    if code is None or response.status_code >= 500:
        raise _unavailable(response, body, "the tenant token endpoint")
    if code in RATE_LIMIT_CODES or response.status_code == 429:
        raise FeishuUnavailable(
            f"the token endpoint is rate limited (code {code})",
            retry_after=_retry_after(response),
            code=code,
        )
    if code != 0:
        # 10014 "app secret invalid" [3rd-party]; unknown app ids give another 100xx
        # [unconfirmed]. Any refusal here is a configuration problem, never retried hot.
        raise CredentialsRejected(code, str(body.get("msg") or ""))
    # The token sits at the top level, not under data [doc].
    token = body.get("tenant_access_token")
    if not isinstance(token, str) or not token:
        raise FeishuUnavailable("the token endpoint answered without a token")
    expire = body.get("expire")
    return token, float(expire) if isinstance(expire, int | float) and expire > 0 else 7200.0


# -- the client -------------------------------------------------------------------------------


class FeishuApi:
    """One app's view of the OpenAPI at ``base_url`` (open.feishu.cn, open.larksuite.com, …)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        app_id: str,
        app_secret: str,
        *,
        tokens: TokenCache,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self._app_secret = app_secret
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"FeishuApi({self.base_url!r}, {self.app_id!r})"

    async def tenant_token(self, *, stale: str | None = None) -> str:
        return await self.tokens.get(
            self.http, self.base_url, self.app_id, self._app_secret, stale=stale
        )

    async def check_credentials(self) -> None:
        """Fetch a fresh token: raises :class:`CredentialsRejected` for a bad id or secret."""
        self.tokens.forget(self.base_url, self.app_id)
        await self.tenant_token()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        what: str,
    ) -> dict[str, Any]:
        """An authorised call; on a token-invalid code, one retry with a fresh token."""
        token = await self.tenant_token()
        for attempt in (1, 2):
            try:
                response = await self.http.request(
                    method,
                    f"{self.base_url}{path}",
                    params=params,
                    json=json_body,
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json; charset=utf-8",
                    },
                )
            except httpx.HTTPError as exc:
                raise FeishuUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
            body = _json_body(response)
            code = _code(body)
            status = response.status_code
            if status == 429 or code in RATE_LIMIT_CODES:
                raise FeishuUnavailable(
                    f"{what}: rate limited ({_describe(response, body)})",
                    retry_after=_retry_after(response),
                    code=code,
                )
            if code is None and 400 <= status < 500 and status != 408:
                raise FeishuApiError(-1, f"HTTP {status} without a code", http_status=status)
            if code is None or (status >= 500 and code != 0):
                raise _unavailable(response, body, what)
            if code in TOKEN_INVALID_CODES:
                # The HTTP status of these (400 or 401) is [unconfirmed]: key on the code.
                if attempt == 1:
                    log.info("%s: the tenant token was refused (code %s); refreshing", what, code)
                    token = await self.tenant_token(stale=token)
                    continue
                raise FeishuUnavailable(f"{what}: a fresh tenant token was refused too", code=code)
            if code in IN_FLIGHT_CODES:
                raise FeishuUnavailable(f"{what}: {_describe(response, body)}", code=code)
            if code != 0:
                raise FeishuApiError(code, str(body.get("msg") or ""), http_status=status)
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def bot_info(self) -> BotInfo:
        body = await self._call("GET", "/open-apis/bot/v3/info", what="bot info")
        # ``bot`` is top-level next to code/msg [doc]; both SDK layers accept data.bot too.
        bot = body.get("bot")
        if not isinstance(bot, dict):
            data = body.get("data")
            bot = data.get("bot") if isinstance(data, dict) else None
        if not isinstance(bot, dict) or not isinstance(bot.get("open_id"), str):
            raise FeishuApiError(-1, "bot info without a bot: is the bot capability enabled?")
        status = bot.get("activate_status")
        return BotInfo(
            open_id=bot["open_id"],
            app_name=str(bot.get("app_name") or ""),
            activate_status=status if isinstance(status, int) else None,
            avatar_url=bot.get("avatar_url") if isinstance(bot.get("avatar_url"), str) else None,
        )

    async def create_message(
        self, *, receive_id_type: str, receive_id: str, msg_type: str, content: str, uuid: str
    ) -> SentMessage:
        """``POST /im/v1/messages``; ``content`` is a JSON *string*; ``uuid`` dedupes for 1 h."""
        body = await self._call(
            "POST",
            "/open-apis/im/v1/messages",
            params={"receive_id_type": receive_id_type},
            json_body={
                "receive_id": receive_id,
                "msg_type": msg_type,
                "content": content,
                "uuid": uuid,
            },
            what="send message",
        )
        return _sent(body, uuid)

    async def reply_message(
        self, *, message_id: str, msg_type: str, content: str, uuid: str, reply_in_thread: bool
    ) -> SentMessage:
        body = await self._call(
            "POST",
            f"/open-apis/im/v1/messages/{message_id}/reply",
            json_body={
                "content": content,
                "msg_type": msg_type,
                "reply_in_thread": reply_in_thread,
                "uuid": uuid,
            },
            what="reply to message",
        )
        return _sent(body, uuid)

    async def get_message(self, message_id: str) -> dict[str, Any] | None:
        """One message (``data.items[0]``), for the text of a quoted parent [unconfirmed shape]."""
        body = await self._call(
            "GET", f"/open-apis/im/v1/messages/{message_id}", what="get message"
        )
        data = body.get("data")
        items = data.get("items") if isinstance(data, dict) else None
        if isinstance(items, list) and items and isinstance(items[0], dict):
            return items[0]
        return None

    async def ws_endpoint(self) -> WsEndpoint:
        """``POST /callback/ws/endpoint`` (not under /open-apis): a fresh long-connection URL."""
        try:
            response = await self.http.post(
                f"{self.base_url}/callback/ws/endpoint",
                json={"AppID": self.app_id, "AppSecret": self._app_secret},
                headers={"locale": "zh"},
            )
        except httpx.HTTPError as exc:
            raise FeishuUnavailable(f"ws endpoint: {type(exc).__name__}: {exc}") from None
        body = _json_body(response)
        code = _code(body)
        if response.status_code != 200 or code is None:
            raise _unavailable(response, body, "ws endpoint")
        if code in WS_ENDPOINT_RETRY_CODES or code in RATE_LIMIT_CODES:
            raise FeishuUnavailable(f"ws endpoint: {_describe(response, body)}", code=code)
        if code != 0:
            # Any other code is a client error [sdk]: bad credentials, long connection off, …
            raise FeishuApiError(code, str(body.get("msg") or ""), http_status=200)
        data = body.get("data")
        url = data.get("URL") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(url, str) or not url:
            raise FeishuUnavailable("ws endpoint: no URL in the answer")
        query = parse_qs(urlsplit(url).query)
        service = (query.get("service_id") or ["0"])[0]
        config = data.get("ClientConfig")
        return WsEndpoint(
            url=url,
            device_id=query["device_id"][0] if query.get("device_id") else None,
            service_id=int(service) if service.isascii() and service.lstrip("-").isdigit() else 0,
            client_config=config if isinstance(config, dict) else {},
        )


# -- helpers ----------------------------------------------------------------------------------


async def _post(http: httpx.AsyncClient, url: str, *, json_body: Any) -> httpx.Response:
    try:
        return await http.post(
            url,
            content=json.dumps(json_body).encode(),
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    except httpx.HTTPError as exc:
        raise FeishuUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


def _json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of an answer; ``{}`` (no code: an outage) for anything else."""
    try:
        body = response.json()
    except (ValueError, RecursionError):  # an HTML error page; JSON nested too deep to parse
        return {}
    return body if isinstance(body, dict) else {}


def _code(body: Mapping[str, Any]) -> int | None:
    code = body.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _describe(response: httpx.Response, body: Mapping[str, Any]) -> str:
    code = _code(body)
    msg = str(body.get("msg") or "")
    parts = [f"HTTP {response.status_code}"]
    if code is not None:
        parts.append(f"code {code}")
    if msg:
        parts.append(msg)
    return ", ".join(parts)


def _unavailable(response: httpx.Response, body: Mapping[str, Any], what: str) -> FeishuUnavailable:
    return FeishuUnavailable(
        f"{what}: {_describe(response, body)}",
        retry_after=_retry_after(response),
        code=_code(body),
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait: ``Retry-After``, else ``x-ogw-ratelimit-reset``; None when neither reads."""
    for name in ("retry-after", RATELIMIT_RESET_HEADER):
        value = response.headers.get(name)
        if value is None or not value.isascii():  # float() reads other scripts' digits too
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if seconds == seconds:  # not NaN
            return max(0.0, min(seconds, MAX_RETRY_AFTER))
    return None


def _sent(body: Mapping[str, Any], uuid: str) -> SentMessage:
    """What a code-0 answer says was sent. Code 0 means Feishu took the message, so an answer
    without a readable ``data.message_id`` is still a success; the uuid stands in for the id."""
    data = as_dict(body.get("data"))
    message_id = data.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        log.warning("Feishu accepted message %s but named no message_id", uuid)
        message_id = uuid
    return SentMessage(
        message_id=message_id,
        chat_id=data.get("chat_id") if isinstance(data.get("chat_id"), str) else None,
        thread_id=data.get("thread_id") if isinstance(data.get("thread_id"), str) else None,
    )
