"""The iLink HTTP client: headers, ``base_info``, timeouts, and what an answer means.

Wire facts are from the reference client ``@tencent-weixin/openclaw-weixin@2.4.9`` as written
up in ``docs/protocols/weixin-ilink.md``; statements the notes tag [3rd-party] or
[unconfirmed] are tagged the same way here.

Errors::

    IlinkError
    ├── IlinkTransportError   network, timeout, non-2xx, empty or non-JSON body
    └── IlinkApiError         a JSON answer with ``ret`` or ``errcode`` present and non-zero
                              (sendmessage: see :func:`check_send_answer`)

With a route tag configured (``WEIXIN_ROUTE_TAG``), every call carries it as ``SKRouteTag``, GET
and POST alike, as the reference's ``buildCommonHeaders`` does.

The bot token is passed per call and never logged or put into an error message.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from typing import Any

import httpx

__all__ = [
    "APP_ID",
    "BOT_TYPE",
    "CHANNEL_VERSION",
    "CLIENT_VERSION",
    "ITEM_TEXT",
    "MESSAGE_STATE_FINISH",
    "MESSAGE_TYPE_BOT",
    "RET_REPLY_WINDOW_CLOSED",
    "RET_STALE_TOKEN",
    "IlinkApiError",
    "IlinkClient",
    "IlinkError",
    "IlinkTransportError",
    "as_id",
    "as_int",
    "check_api_error",
    "check_send_answer",
    "join_url",
    "random_uin",
]

# The protocol level this client implements: the reference 2.4.9. The server may gate features
# by client version, so we present the version we were written against.
CHANNEL_VERSION = "2.4.9"
CLIENT_VERSION = (2 << 16) | (4 << 8) | 9  # iLink-App-ClientVersion: (major<<16)|(minor<<8)|patch
APP_ID = "bot"  # package.json "ilink_appid"
BOT_TYPE = "3"

MESSAGE_TYPE_BOT = 2  # WeixinMessage.message_type: 1 USER, 2 BOT
MESSAGE_STATE_FINISH = 2  # message_state: 0 NEW, 1 GENERATING, 2 FINISH
ITEM_TEXT = 1

RET_STALE_TOKEN = -14  # errcode/ret: the login is dead; only a new QR scan recovers it [3rd-party]
RET_REPLY_WINDOW_CLOSED = -2  # sendmessage: reply window/quota/context refusal [3rd-party]

# Client-side timeouts from the reference (seconds).
SEND_TIMEOUT = 15.0
NOTIFY_TIMEOUT = 10.0
QR_STATUS_TIMEOUT = 35.0
QR_FETCH_TIMEOUT = 30.0  # the reference has none since 2.1.4; we still bound it
UPDATES_TIMEOUT = 35.0
ERROR_EXCERPT = 200


class IlinkError(Exception):
    """Base of what :class:`IlinkClient` raises; ``str()`` never contains a token."""


class IlinkTransportError(IlinkError):
    """No usable answer: the network, a timeout, an HTTP error status, or an unreadable body."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        timeout: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.retry_after = retry_after
        self.timeout = timeout


class IlinkApiError(IlinkError):
    """The server answered with ``ret`` or ``errcode`` non-zero."""

    def __init__(self, ret: int | None, errcode: int | None, errmsg: str) -> None:
        self.ret = ret
        self.errcode = errcode
        self.errmsg = errmsg
        code = self.code
        super().__init__(f"ret={code} errmsg={errmsg}" if errmsg else f"ret={code}")

    @property
    def code(self) -> int:
        """The non-zero one of ``ret`` and ``errcode`` (``errcode`` wins when both are)."""
        return self.errcode or self.ret or 0

    @property
    def stale_token(self) -> bool:
        return RET_STALE_TOKEN in (self.ret, self.errcode)


def random_uin() -> str:
    """``X-WECHAT-UIN``: base64 of the ASCII decimal of a random uint32, new on every request."""
    return base64.b64encode(str(secrets.randbits(32)).encode()).decode()


def join_url(base_url: str, path: str) -> str:
    """The reference adds a trailing ``/`` to the base and resolves the path against it."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def as_id(value: Any) -> str | None:
    """A uint64 id as a string: it may exceed 2^53, and json.loads keeps integers exact.

    Anything but an integer or a non-empty string (a float has lost digits already) is None.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def as_int(value: Any) -> int | None:
    """An int from a JSON number or a decimal string (``file_item.len`` is a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def check_api_error(body: dict[str, Any]) -> None:
    """An API error is ``ret`` present and non-zero, or ``errcode`` present and non-zero.

    That is the reference's rule for getupdates (``monitor.ts``), used for every call but
    sendmessage (:func:`check_send_answer`).
    """
    ret = as_int(body.get("ret"))
    errcode = as_int(body.get("errcode"))
    if ret or errcode:
        errmsg = body.get("errmsg")
        raise IlinkApiError(ret, errcode, errmsg if isinstance(errmsg, str) else "")


def check_send_answer(body: dict[str, Any]) -> None:
    """What a ``sendmessage`` answer means; the reference (2.4.9 ``api.ts``) reads ``ret`` only.

    - ``ret`` present and non-zero: an API error, as in the reference.
    - ``ret`` present and 0: sent, as in the reference, whatever ``errcode`` says (an
      ``{"ret": 0, "errcode": -1}`` is logged by the caller, not refused): the server said it
      took the message, and reporting a refusal would make a host send it again, twice on the
      user's screen.
    - ``ret`` absent and ``errcode`` non-zero (``{"errcode": -14}``): an API error. **This
      differs from the reference**, which reports it as sent. Such an answer carries no
      message id and no sign of delivery, and -14 is the dead-login answer of every other
      call: reporting it as sent would lose the message without a word (our choice, so the send
      ledger stays truthful; the reference notices the dead login at its next getupdates).
    """
    ret = as_int(body.get("ret"))
    errcode = as_int(body.get("errcode"))
    if ret or (ret is None and errcode):
        errmsg = body.get("errmsg")
        raise IlinkApiError(ret, errcode, errmsg if isinstance(errmsg, str) else "")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class IlinkClient:
    """One method per iLink call; ``base_url`` and ``token`` per call (one client, many bots)."""

    def __init__(
        self, http: httpx.AsyncClient, *, bot_agent: str, route_tag: str | None = None
    ) -> None:
        self.http = http
        self.route_tag = route_tag
        # A UA-style "Name/Version (comment)", at most 256 bytes, for the vendor's observability.
        self.base_info = {
            "channel_version": CHANNEL_VERSION,
            "bot_agent": bot_agent.encode()[:256].decode(errors="ignore"),
        }

    # -- the wire ---------------------------------------------------------------------------------

    @staticmethod
    def post_headers(token: str | None) -> dict[str, str]:
        """``buildHeaders`` of the reference; no hand-set Content-Length (2.4.2 dropped it)."""
        headers = {
            "Content-Type": "application/json",
            "AuthorizationType": "ilink_bot_token",
            "X-WECHAT-UIN": random_uin(),
            "iLink-App-Id": APP_ID,
            "iLink-App-ClientVersion": str(CLIENT_VERSION),
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    @staticmethod
    def get_headers() -> dict[str, str]:
        """The QR status GET carries only the app headers: no auth, no Content-Type."""
        return {"iLink-App-Id": APP_ID, "iLink-App-ClientVersion": str(CLIENT_VERSION)}

    async def _request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        timeout_s: float,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        if self.route_tag:
            headers = {**headers, "SKRouteTag": self.route_tag}
        try:
            response = await self.http.request(
                method,
                url,
                headers=headers,
                content=content,
                params=params,
                timeout=httpx.Timeout(timeout_s),
            )
        except httpx.TimeoutException as exc:
            raise IlinkTransportError(
                f"no answer within {timeout_s:g} s ({type(exc).__name__})", timeout=True
            ) from None
        except httpx.HTTPError as exc:
            raise IlinkTransportError(f"network error: {type(exc).__name__}: {exc}") from None
        if not response.is_success:
            raise IlinkTransportError(
                f"HTTP {response.status_code}: {response.text[:ERROR_EXCERPT]}",
                status=response.status_code,
                retry_after=_retry_after(response),
            )
        if not response.content.strip():
            # JSON.parse("") throws in the reference: an empty body is a failure, never success.
            raise IlinkTransportError("empty response body", status=response.status_code)
        try:
            parsed = response.json()
        except (ValueError, RecursionError):  # an HTML page; JSON nested too deep to parse
            raise IlinkTransportError(
                f"the body is not JSON: {response.text[:ERROR_EXCERPT]}",
                status=response.status_code,
            ) from None
        if not isinstance(parsed, dict):
            raise IlinkTransportError("the body is not a JSON object", status=response.status_code)
        return parsed

    async def _post_bot(
        self,
        base_url: str,
        path: str,
        token: str,
        body: dict[str, Any],
        *,
        timeout_s: float,
        check: Callable[[dict[str, Any]], None] = check_api_error,
    ) -> dict[str, Any]:
        answer = await self._request(
            "POST",
            join_url(base_url, path),
            headers=self.post_headers(token),
            body={**body, "base_info": self.base_info},
            timeout_s=timeout_s,
        )
        check(answer)
        return answer

    # -- QR login ---------------------------------------------------------------------------------

    async def get_bot_qrcode(self, base_url: str, local_tokens: list[str]) -> dict[str, Any]:
        """``POST get_bot_qrcode?bot_type=3`` with ``local_token_list``; no token, no base_info.

        2.1.x used GET with no body; whether the server still accepts GET is [unconfirmed], so we
        use the current POST.
        """
        answer = await self._request(
            "POST",
            join_url(base_url, "ilink/bot/get_bot_qrcode"),
            params={"bot_type": BOT_TYPE},
            headers=self.post_headers(None),
            body={"local_token_list": local_tokens[:10]},
            timeout_s=QR_FETCH_TIMEOUT,
        )
        check_api_error(answer)  # fixtures sometimes carry "ret": 0 [3rd-party]
        return answer

    async def get_qrcode_status(
        self, base_url: str, qrcode: str, *, verify_code: str | None, timeout_s: float
    ) -> dict[str, Any]:
        """The long-poll ``GET get_qrcode_status?qrcode=…[&verify_code=…]``."""
        params = {"qrcode": qrcode}
        if verify_code:
            params["verify_code"] = verify_code
        return await self._request(
            "GET",
            join_url(base_url, "ilink/bot/get_qrcode_status"),
            params=params,
            headers=self.get_headers(),
            timeout_s=timeout_s,
        )

    # -- the bot API ------------------------------------------------------------------------------

    async def get_updates(
        self, base_url: str, token: str, cursor: str, *, timeout_s: float
    ) -> dict[str, Any]:
        """One long-poll; the caller treats a client-side timeout as an empty answer."""
        return await self._post_bot(
            base_url,
            "ilink/bot/getupdates",
            token,
            {"get_updates_buf": cursor},
            timeout_s=timeout_s,
        )

    async def send_message(self, base_url: str, token: str, msg: dict[str, Any]) -> dict[str, Any]:
        return await self._post_bot(
            base_url,
            "ilink/bot/sendmessage",
            token,
            {"msg": msg},
            timeout_s=SEND_TIMEOUT,
            check=check_send_answer,
        )

    async def get_upload_url(
        self, base_url: str, token: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        """``getuploadurl`` (§7 step 3): where to POST the ciphertext of one upload."""
        return await self._post_bot(
            base_url, "ilink/bot/getuploadurl", token, request, timeout_s=SEND_TIMEOUT
        )

    async def get_config(
        self, base_url: str, token: str, user_id: str, *, context_token: str | None
    ) -> dict[str, Any]:
        """``getconfig`` (§6): carries the ``typing_ticket`` for one user."""
        body: dict[str, Any] = {"ilink_user_id": user_id}
        if context_token:
            body["context_token"] = context_token
        return await self._post_bot(
            base_url, "ilink/bot/getconfig", token, body, timeout_s=NOTIFY_TIMEOUT
        )

    async def send_typing(
        self, base_url: str, token: str, user_id: str, ticket: str, *, typing: bool
    ) -> None:
        """``sendtyping`` (§6): status 1 typing, 2 cancel; no context_token on this call."""
        await self._post_bot(
            base_url,
            "ilink/bot/sendtyping",
            token,
            {"ilink_user_id": user_id, "typing_ticket": ticket, "status": 1 if typing else 2},
            timeout_s=NOTIFY_TIMEOUT,
        )

    async def notify(
        self, base_url: str, token: str, which: str, *, timeout_s: float = NOTIFY_TIMEOUT
    ) -> None:
        """``msg/notifystart`` or ``msg/notifystop`` (the caller ignores failures, as the reference)."""
        await self._post_bot(base_url, f"ilink/bot/msg/{which}", token, {}, timeout_s=timeout_s)
