"""An iLink (WeChat bot API) emulator: the vendor's endpoints and shapes, driven by tests.

Serves what ``docs/protocols/weixin-ilink.md`` describes, under the same paths:
``POST /ilink/bot/get_bot_qrcode?bot_type=3``, ``GET /ilink/bot/get_qrcode_status``,
``POST /ilink/bot/getupdates`` (a long-poll with an opaque cursor), ``POST
/ilink/bot/sendmessage``, ``getconfig``, ``sendtyping``, ``msg/notifystart`` and
``msg/notifystop``, ``getuploadurl``, and the CDN under ``/c2c`` (``POST /c2c/upload``,
``GET /c2c/download``) with the real AES-128-ECB/PKCS7 encryption.

Media: ``getuploadurl`` checks every field (a 32-hex filekey and aeskey, rawsize, the md5 and
the padded filesize); the CDN upload must be the ciphertext of exactly that file under that key
(length, padding, size and md5 are checked after decrypting; a 4xx with ``x-error-message``
otherwise) and answers ``x-encrypted-param``; a media item in ``sendmessage`` must name an
uploaded file with the same key, encoded as base64 of its hex (the reference's form), and the
sizes the reference puts there. ``/_emulator/media`` makes an encrypted inbound item (either key
encoding) to push; ``sent`` lists each media message with its decrypted bytes.

It is strict where a real server needs something: the ``iLink-App-*`` headers,
``AuthorizationType``, a well-formed ``X-WECHAT-UIN`` that changes per request, ``base_info`` on
bot calls, one item per ``sendmessage`` with ``message_type`` 2 and ``message_state`` 2, no more
than 2000 characters of text, no Authorization on the QR calls, and cursors that belong to the
bot asking. A violation is answered with HTTP 400 ``{"ret": -1, "errmsg": "emulator strict
check: …"}`` and listed by ``GET /_emulator/violations``. A missing or unknown token is answered
like the real server is reported to (HTTP 200, ``ret``/``errcode`` -14) [3rd-party].

Its behaviour model, where the real one is only reported [3rd-party]: a reply needs the
latest context_token of that user and is refused with ``ret`` -2 after 10 replies per inbound
message or when a test closes the reply window; a new message from the user reopens it. A new
login of a bot invalidates the previous token at once (the real server takes ~30 s). A repeated
``client_id`` is answered with the first message id and not delivered again [unconfirmed].

Tests drive it in-process (an :class:`IlinkEmulator` and ``build_app``, through
``httpx.ASGITransport``) or as a process (``python tests/emulators/ilink.py --port N``, and
:class:`IlinkEmulatorProcess`), with the control API under ``/_emulator/``: QR lifecycle
(scan, require-code, redirect, expire, confirm, bind), messages to push, canned responses for
the next calls (-14, -2, 5xx, an empty body, latency), and what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

from connector_sidecar.testing import ManagedProcess, free_port, wait_until

__all__ = [
    "IlinkEmulator",
    "IlinkEmulatorProcess",
    "build_app",
]


class JSONResponse(_StarletteJSONResponse):
    """JSON with non-ASCII escaped, as a vendor's encoder may write it: so a test can hand the
    driver any text, a lone surrogate (``"\\ud800"``) included."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":")).encode("ascii")


APP_ID = "bot"
STALE_TOKEN = {"ret": -14, "errcode": -14, "errmsg": "session timeout"}
REPLY_REFUSED = {"ret": -2, "errmsg": ""}
MAX_TEXT = 2000
MAX_REPLIES_PER_INBOUND = 10
MESSAGE_ID_BASE = 7_394_000_000_000_000_000  # > 2**53: ids must survive as strings
ENDPOINTS = (
    "getupdates",
    "sendmessage",
    "getconfig",
    "sendtyping",
    "notifystart",
    "notifystop",
    "getuploadurl",
    "cdnupload",
)
MEDIA_TYPES = {1: "image", 2: "video", 3: "file", 4: "voice"}
ITEM_KINDS = {2: "image", 3: "voice", 4: "file", 5: "video"}
TYPING_TICKET = base64.b64encode(b"ticket").decode()


def _ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - the vendor's scheme


def aes_encrypt(plain: bytes, key: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    encryptor = _ecb(key).encryptor()
    return encryptor.update(padder.update(plain) + padder.finalize()) + encryptor.finalize()


def aes_decrypt(cipher: bytes, key: bytes) -> bytes:
    """Raises ValueError for a length that is not whole blocks or for bad PKCS7 padding."""
    if not cipher or len(cipher) % 16:
        raise ValueError("the ciphertext is not whole 16-byte blocks")
    decryptor = _ecb(key).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    padded = decryptor.update(cipher) + decryptor.finalize()
    return unpadder.update(padded) + unpadder.finalize()


@dataclasses.dataclass
class Upload:
    """A getuploadurl the CDN is waiting for, then the file it received."""

    bot_id: str
    filekey: str
    key: bytes
    media_type: int
    to_user: str
    rawsize: int
    md5: str
    filesize: int
    plaintext: bytes | None = None
    download_param: str | None = None


class StrictError(Exception):
    """A request a real server would not take; answered with 400 and recorded."""


class Answered(Exception):
    """A bot call answered before its own checks run: a dead token, or a canned response."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"answered with HTTP {response.status_code}")
        self.response = response


class ControlError(Exception):
    """A control call that makes no sense (unknown QR code or bot, a bind without a token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Changes:
    """Wakes the long-polls waiting on one QR code or one bot when something happens."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Return at the next change, or after ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)


@dataclasses.dataclass
class QrCode:
    qrcode: str
    img_content: str
    local_token_list: list[str]
    status: str = "wait"
    expected_code: str | None = None
    wrong_codes: int = 0
    max_wrong_codes: int = 3
    redirect_host: str | None = None
    answer_extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    confirm_baseurl: str | None = None
    polls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    changes: Changes = dataclasses.field(default_factory=Changes)

    def set_status(self, status: str) -> None:
        self.status = status
        self.changes.notify()

    def moved_from(self, host: str) -> dict[str, Any] | None:
        """The ``scaned_but_redirect`` answer to a poll on ``host``, when the code moved away."""
        if self.redirect_host and host != self.redirect_host:
            return {"status": "scaned_but_redirect", "redirect_host": self.redirect_host}
        return None

    def view(self) -> dict[str, Any]:
        return {
            "qrcode": self.qrcode,
            "imgContent": self.img_content,
            "status": self.status,
            "localTokenList": self.local_token_list,
            "redirectHost": self.redirect_host,
            "polls": self.polls,
        }


@dataclasses.dataclass
class Bot:
    bot_id: str
    user_id: str
    token: str | None = None
    queue: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    acked: int = 0  # the furthest cursor position a client has presented
    batch_size: int = 100
    context_tokens: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    replies_since_inbound: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter
    )
    closed_windows: set[str] = dataclasses.field(default_factory=set)
    sent: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    client_ids: dict[str, int] = dataclasses.field(default_factory=dict)
    repeated_client_ids: int = 0
    faults: dict[str, collections.deque[dict[str, Any]]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )
    latency_ms: dict[str, int] = dataclasses.field(default_factory=dict)
    notify: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    typing: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    changes: Changes = dataclasses.field(default_factory=Changes)

    def view(self) -> dict[str, Any]:
        return {
            "botId": self.bot_id,
            "userId": self.user_id,
            "token": self.token,
            "queued": len(self.queue),
            "acked": self.acked,
            "sent": len(self.sent),
            "repeatedClientIds": self.repeated_client_ids,
            "notifyStart": self.notify["notifystart"],
            "notifyStop": self.notify["notifystop"],
            "closedWindows": sorted(self.closed_windows),
        }


def _cursor(bot_id: str, position: int) -> str:
    return base64.b64encode(f"emu:{bot_id}:{position}".encode()).decode()


def _position(bot_id: str, cursor: str) -> int:
    try:
        tag, owner, position = base64.b64decode(cursor, validate=True).decode().rsplit(":", 2)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise StrictError(
            f"get_updates_buf {cursor[:40]!r} is not a cursor this server gave"
        ) from None
    if tag != "emu" or owner != bot_id or not position.isdigit():
        raise StrictError("get_updates_buf belongs to another bot or is not ours")
    return int(position)


class IlinkEmulator:
    """The emulator's state, with a Python control API (the HTTP one calls the same methods)."""

    def __init__(self, *, poll_hold_seconds: float = 1.0, qr_hold_seconds: float = 1.0) -> None:
        self.poll_hold_seconds = poll_hold_seconds
        self.qr_hold_seconds = qr_hold_seconds
        self.qrcodes: dict[str, QrCode] = {}
        self.bots: dict[str, Bot] = {}
        self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=20_000)
        self.violations: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._last_uin: str | None = None
        self.uploads: dict[str, Upload] = {}  # by upload_param
        self.files: dict[str, tuple[bytes, bytes]] = {}  # download param → (ciphertext, key)
        self.upload_count = 0
        # Canned answers for the next CDN downloads: {"status", "retryAfter"?}.
        self.download_faults: collections.deque[dict[str, Any]] = collections.deque()

    # -- control: QR codes ------------------------------------------------------------------------

    def qr(self, qrcode: str | None = None) -> QrCode:
        """A QR code by id, or the newest one."""
        if qrcode is None:
            if not self.qrcodes:
                raise ControlError(404, "no QR code was requested yet")
            return list(self.qrcodes.values())[-1]
        try:
            return self.qrcodes[qrcode]
        except KeyError:
            raise ControlError(404, f"no QR code {qrcode!r}") from None

    def scan(self, qrcode: str | None = None) -> QrCode:
        qr = self.qr(qrcode)
        qr.set_status("scaned")
        return qr

    def require_code(self, qrcode: str | None = None, *, code: str, max_wrong: int = 3) -> QrCode:
        qr = self.qr(qrcode)
        qr.expected_code = code
        qr.wrong_codes = 0
        qr.max_wrong_codes = max_wrong
        qr.set_status("need_verifycode")
        return qr

    def redirect(self, qrcode: str | None = None, *, host: str) -> QrCode:
        """From now on this code answers ``scaned_but_redirect`` on every host but ``host``."""
        qr = self.qr(qrcode)
        qr.redirect_host = host
        qr.set_status("scaned")
        return qr

    def expire(self, qrcode: str | None = None) -> QrCode:
        qr = self.qr(qrcode)
        qr.set_status("expired")
        return qr

    def confirm(
        self,
        qrcode: str | None = None,
        *,
        bot_id: str | None = None,
        user_id: str | None = None,
        baseurl: str | None = None,
    ) -> Bot:
        """The user confirms: a bot (new or existing) gets a new token; the old one dies."""
        qr = self.qr(qrcode)
        bot_id = bot_id or f"{secrets.token_hex(6)}@im.bot"
        bot = self.bots.get(bot_id)
        if bot is None:
            bot = self.bots[bot_id] = Bot(bot_id, user_id or f"o{secrets.token_hex(5)}@im.wechat")
        bot.token = f"tok_{secrets.token_hex(12)}"
        bot.changes.notify()
        qr.answer_extra = {
            "bot_token": bot.token,
            "ilink_bot_id": bot.bot_id,
            "ilink_user_id": bot.user_id,
        }
        qr.confirm_baseurl = baseurl
        qr.set_status("confirmed")
        return bot

    def bind(self, qrcode: str | None = None, *, bot_id: str, name_bot: bool = False) -> QrCode:
        """``binded_redirect``: only when the QR request carried this bot's live token."""
        qr = self.qr(qrcode)
        bot = self.bot(bot_id)
        if bot.token is None or bot.token not in qr.local_token_list:
            raise ControlError(409, "the QR request did not carry this bot's current token")
        qr.answer_extra = {"ilink_bot_id": bot.bot_id} if name_bot else {}
        qr.set_status("binded_redirect")
        return qr

    def requests_to(self, endpoint: str) -> list[dict[str, Any]]:
        """The recorded requests to one vendor endpoint (``getupdates``, ``sendmessage``, …)."""
        path = f"/ilink/bot/{endpoint}"
        return [r for r in self.requests if r["path"] == path]

    # -- control: bots ----------------------------------------------------------------------------

    def bot(self, bot_id: str) -> Bot:
        try:
            return self.bots[bot_id]
        except KeyError:
            raise ControlError(404, f"no bot {bot_id!r}") from None

    def push(
        self,
        bot_id: str,
        from_user: str,
        text: str | None = None,
        *,
        items: list[dict[str, Any]] | None = None,
        copies: int = 1,
        message_type: int = 1,
        message_id: int | str | None = None,
        context_token: str | None = None,
    ) -> dict[str, Any]:
        """A user (``message_type`` 1) or the bot itself (2) writes; ``copies`` > 1 duplicates it."""
        bot = self.bot(bot_id)
        n = next(self._ids)
        token = context_token or f"ctx_{secrets.token_hex(8)}"
        msg = {
            "seq": n,
            "message_id": MESSAGE_ID_BASE + n if message_id is None else message_id,
            "from_user_id": from_user,
            "to_user_id": bot.bot_id,
            "client_id": "",
            "create_time_ms": int(time.time() * 1000),
            "message_type": message_type,
            "message_state": 2,
            "context_token": token,
            "item_list": items if items is not None else [{"type": 1, "text_item": {"text": text}}],
        }
        for _ in range(max(1, copies)):
            bot.queue.append(msg)
        if message_type == 1:
            bot.context_tokens.setdefault(from_user, []).append(token)
            bot.replies_since_inbound[from_user] = 0
            bot.closed_windows.discard(from_user)
        bot.changes.notify()
        return {"messageId": str(msg["message_id"]), "seq": n, "contextToken": token}

    def media_item(
        self,
        data: bytes,
        *,
        kind: str = "image",
        file_name: str | None = None,
        key_encoding: str = "hex",
        full_url: str | None = None,
    ) -> dict[str, Any]:
        """An inbound item whose bytes wait on the CDN, encrypted with a fresh key.

        ``key_encoding``: ``hex`` puts base64 of the hex key in ``media.aes_key`` (files, voice,
        video); ``raw`` base64 of the raw key; ``image_hex`` the image's own ``aeskey`` (hex)
        beside a wrong ``aes_key`` (the image key must win); ``none`` stores plain bytes.
        """
        key = secrets.token_bytes(16)
        param = "dl_" + secrets.token_urlsafe(12)
        stored = data if key_encoding == "none" else aes_encrypt(data, key)
        self.files[param] = (stored, key)
        media: dict[str, Any] = {"encrypt_query_param": param, "encrypt_type": 1}
        if full_url:
            media["full_url"] = full_url + "?encrypted_query_param=" + param
        payload: dict[str, Any] = {"media": media}
        if key_encoding == "hex":
            media["aes_key"] = base64.b64encode(key.hex().encode()).decode()
        elif key_encoding == "raw":
            media["aes_key"] = base64.b64encode(key).decode()
        elif key_encoding == "image_hex":
            media["aes_key"] = base64.b64encode(b"\x00" * 16).decode()
            payload["aeskey"] = key.hex()
        type_number = {"image": 2, "voice": 3, "file": 4, "video": 5}[kind]
        if kind == "image":
            payload["mid_size"] = len(stored)
        elif kind == "file":
            payload.update(file_name=file_name or "file.bin", len=str(len(data)))
            payload["md5"] = hashlib.md5(data).hexdigest()  # noqa: S324
        elif kind == "video":
            payload["video_size"] = len(stored)
        return {"type": type_number, f"{kind}_item": payload}

    def inject(self, bot_id: str, endpoint: str, *responses: dict[str, Any]) -> None:
        """The next calls to ``endpoint`` get these answers: ``{"status", "json"|"body", "delayMs"}``."""
        if endpoint not in ENDPOINTS:
            raise ControlError(422, f"unknown endpoint {endpoint!r}")
        self.bot(bot_id).faults[endpoint].extend(responses)

    def configure(
        self,
        bot_id: str,
        *,
        latency_ms: dict[str, int] | None = None,
        batch_size: int | None = None,
        close_reply_window: list[str] | None = None,
        expire_token: bool = False,
    ) -> Bot:
        bot = self.bot(bot_id)
        if latency_ms:
            bot.latency_ms.update(latency_ms)
        if batch_size:
            bot.batch_size = batch_size
        bot.closed_windows.update(close_reply_window or ())
        if expire_token:
            bot.token = None
            bot.changes.notify()
        return bot

    # -- the vendor API ---------------------------------------------------------------------------

    def _record(self, request: Request, body: Any) -> None:
        self.requests.append(
            {
                "at": time.time(),
                "method": request.method,
                "path": request.url.path,
                "host": request.headers.get("host"),
                "query": dict(request.query_params),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": body,
            }
        )

    def _check_app_headers(self, request: Request) -> None:
        if request.headers.get("ilink-app-id") != APP_ID:
            raise StrictError(f"header iLink-App-Id must be {APP_ID!r}")
        version = request.headers.get("ilink-app-clientversion", "")
        if not version.isdigit() or int(version) >= 2**32:
            raise StrictError("header iLink-App-ClientVersion must be a uint32 in decimal")

    def _check_post(self, request: Request, body: Any, *, bot_call: bool) -> dict[str, Any]:
        self._check_app_headers(request)
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise StrictError("header Content-Type must be application/json")
        if request.headers.get("authorizationtype") != "ilink_bot_token":
            raise StrictError("header AuthorizationType must be ilink_bot_token")
        uin = request.headers.get("x-wechat-uin", "")
        try:
            decimal = base64.b64decode(uin, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError):
            raise StrictError("header X-WECHAT-UIN must be base64") from None
        if not decimal.isdigit() or int(decimal) >= 2**32:
            raise StrictError("header X-WECHAT-UIN must be base64 of a uint32 in decimal")
        if uin == self._last_uin:
            raise StrictError("header X-WECHAT-UIN must be new on every request")
        self._last_uin = uin
        if not isinstance(body, dict):
            raise StrictError("the body must be a JSON object")
        if bot_call:
            info = body.get("base_info")
            if not isinstance(info, dict):
                raise StrictError("base_info is missing")
            agent = info.get("bot_agent")
            if not isinstance(info.get("channel_version"), str) or not isinstance(agent, str):
                raise StrictError("base_info needs channel_version and bot_agent strings")
            if len(agent.encode()) > 256:
                raise StrictError("base_info.bot_agent is longer than 256 bytes")
        elif "authorization" in request.headers:
            raise StrictError("the QR code request carries no Authorization")
        return body

    def _bot_for(self, request: Request) -> Bot | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth.removeprefix("Bearer ")
        return next((b for b in self.bots.values() if b.token and b.token == token), None)

    async def get_bot_qrcode(self, request: Request, body: Any) -> Response:
        body = self._check_post(request, body, bot_call=False)
        if request.query_params.get("bot_type") != "3":
            raise StrictError("get_bot_qrcode needs ?bot_type=3")
        tokens = body.get("local_token_list")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise StrictError("local_token_list must be a list of strings")
        if len(tokens) > 10:
            raise StrictError("local_token_list holds at most 10 tokens")
        qrcode = secrets.token_hex(16)
        img = (
            f"https://liteapp.weixin.qq.com/q/{secrets.token_urlsafe(4)}?qrcode={qrcode}&bot_type=3"
        )
        self.qrcodes[qrcode] = QrCode(qrcode, img, list(tokens))
        return JSONResponse({"qrcode": qrcode, "qrcode_img_content": img})

    async def get_qrcode_status(self, request: Request, body: Any) -> Response:
        self._check_app_headers(request)
        if "authorization" in request.headers:
            raise StrictError("the QR status poll carries no Authorization")
        qr = self.qrcodes.get(request.query_params.get("qrcode", ""))
        if qr is None:
            raise StrictError("unknown qrcode")
        host = request.headers.get("host", "")
        verify_code = request.query_params.get("verify_code")
        qr.polls.append({"host": host, "verifyCode": verify_code, "status": qr.status})
        if (moved := qr.moved_from(host)) is not None:
            return JSONResponse(moved)
        if verify_code is not None and qr.status == "need_verifycode":
            if verify_code == qr.expected_code:
                qr.set_status("scaned")
            else:
                qr.wrong_codes += 1
                if qr.wrong_codes >= qr.max_wrong_codes:
                    qr.set_status("verify_code_blocked")
        elif qr.status in ("wait", "scaned"):
            # The long-poll: hold until something happens or the hold time is up.
            seen = qr.status
            await qr.changes.wait(self.qr_hold_seconds)
            if qr.status != seen and (moved := qr.moved_from(host)) is not None:
                return JSONResponse(moved)
        answer: dict[str, Any] = {"status": qr.status}
        if qr.status in ("confirmed", "binded_redirect"):
            answer.update(qr.answer_extra)
        if qr.status == "confirmed":
            answer["baseurl"] = qr.confirm_baseurl or f"{request.url.scheme}://{host}"
        return JSONResponse(answer)

    async def _fault(self, bot: Bot, endpoint: str) -> Response | None:
        if delay := bot.latency_ms.get(endpoint):
            await asyncio.sleep(delay / 1000)
        if not bot.faults[endpoint]:
            return None
        fault = bot.faults[endpoint].popleft()
        if fault.get("delayMs"):
            await asyncio.sleep(fault["delayMs"] / 1000)
        status = int(fault.get("status", 200))
        if "json" in fault:
            return JSONResponse(fault["json"], status_code=status)
        return Response(fault.get("body", ""), status_code=status, media_type="application/json")

    async def _bot_call(
        self, request: Request, body: Any, endpoint: str
    ) -> tuple[Bot, dict[str, Any]]:
        """What every bot call checks first: the request, the token (-14 if it is not a live
        one), then a canned answer queued for this endpoint (both raise :class:`Answered`)."""
        body = self._check_post(request, body, bot_call=True)
        bot = self._bot_for(request)
        if bot is None:
            raise Answered(JSONResponse(STALE_TOKEN))
        if (fault := await self._fault(bot, endpoint)) is not None:
            raise Answered(fault)
        return bot, body

    async def getupdates(self, request: Request, body: Any) -> Response:
        bot, body = await self._bot_call(request, body, "getupdates")
        cursor = body.get("get_updates_buf")
        if not isinstance(cursor, str):
            raise StrictError("get_updates_buf must be a string ('' at first)")
        position = _position(bot.bot_id, cursor) if cursor else bot.acked
        bot.acked = max(bot.acked, position)
        if position >= len(bot.queue):
            await bot.changes.wait(self.poll_hold_seconds)
            if bot.token is None or self._bot_for(request) is not bot:
                return JSONResponse(STALE_TOKEN)
        batch = bot.queue[position : position + bot.batch_size]
        return JSONResponse(
            {
                "ret": 0,
                "msgs": batch,
                "get_updates_buf": _cursor(bot.bot_id, position + len(batch)),
                "longpolling_timeout_ms": int(self.poll_hold_seconds * 1000),
            }
        )

    async def sendmessage(self, request: Request, body: Any) -> Response:
        bot, body = await self._bot_call(request, body, "sendmessage")
        msg = body.get("msg")
        if not isinstance(msg, dict):
            raise StrictError("msg must be an object")
        if msg.get("from_user_id") != "":
            raise StrictError("msg.from_user_id must be ''")
        peer = msg.get("to_user_id")
        if not isinstance(peer, str) or not peer:
            raise StrictError("msg.to_user_id is missing")
        client_id = msg.get("client_id")
        if not isinstance(client_id, str) or not client_id or len(client_id) > 128:
            raise StrictError("msg.client_id must be a non-empty string of at most 128 characters")
        if msg.get("message_type") != 2 or msg.get("message_state") != 2:
            raise StrictError("msg.message_type and msg.message_state must be 2 (BOT, FINISH)")
        items = msg.get("item_list")
        if not isinstance(items, list) or len(items) != 1:
            raise StrictError("msg.item_list must hold exactly one item")
        item = items[0]
        media_entry: dict[str, Any] | None = None
        text: Any = None
        if isinstance(item, dict) and item.get("type") in ITEM_KINDS:
            media_entry = self._media_of(bot, peer, item)
        else:
            text = item.get("text_item", {}).get("text") if isinstance(item, dict) else None
            if not isinstance(item, dict) or item.get("type") != 1 or not isinstance(text, str):
                raise StrictError("the item must be a text item {type: 1, text_item: {text}}")
            if not text:
                raise StrictError("empty text: the reference omits item_list instead")
            if len(text) > MAX_TEXT:
                raise StrictError(f"text longer than {MAX_TEXT} characters (the server truncates)")
        if client_id in bot.client_ids:
            bot.repeated_client_ids += 1
            return JSONResponse({"ret": 0, "message_id": bot.client_ids[client_id]})
        token = msg.get("context_token")
        if token is None or token not in bot.context_tokens.get(peer, ()):
            return JSONResponse(REPLY_REFUSED)
        if peer in bot.closed_windows or bot.replies_since_inbound[peer] >= MAX_REPLIES_PER_INBOUND:
            return JSONResponse(REPLY_REFUSED)
        bot.replies_since_inbound[peer] += 1
        message_id = MESSAGE_ID_BASE + next(self._ids)
        bot.client_ids[client_id] = message_id
        bot.sent.append(
            {
                "messageId": str(message_id),
                "clientId": client_id,
                "to": peer,
                "text": text,
                "contextToken": token,
                "runId": msg.get("run_id"),
                **(media_entry or {}),
            }
        )
        return JSONResponse({"ret": 0, "message_id": message_id})

    def _media_of(self, bot: Bot, peer: str, item: dict[str, Any]) -> dict[str, Any]:
        """Check a media item against the upload it names; what ``sent`` shows of it."""
        kind = ITEM_KINDS[item["type"]]
        if kind == "voice":
            raise StrictError("the reference never sends voice items [unconfirmed: refused here]")
        payload = item.get(f"{kind}_item")
        if not isinstance(payload, dict) or not isinstance(payload.get("media"), dict):
            raise StrictError(f"{kind}_item.media is missing")
        media = payload["media"]
        param = media.get("encrypt_query_param")
        upload = next(
            (u for u in self.uploads.values() if u.download_param and u.download_param == param),
            None,
        )
        if upload is None or upload.plaintext is None or upload.bot_id != bot.bot_id:
            raise StrictError("media.encrypt_query_param names no file this bot uploaded")
        if upload.to_user != peer:
            raise StrictError("the file was uploaded for another user")
        if media.get("aes_key") != base64.b64encode(upload.key.hex().encode()).decode():
            raise StrictError("media.aes_key must be base64 of the hex key of the upload")
        if media.get("encrypt_type") != 1:
            raise StrictError("media.encrypt_type must be 1")
        if MEDIA_TYPES[upload.media_type] != kind:
            raise StrictError(f"a {MEDIA_TYPES[upload.media_type]} upload sent as a {kind} item")
        if kind == "image" and payload.get("mid_size") != upload.filesize:
            raise StrictError("image_item.mid_size must be the ciphertext size")
        if kind == "video" and payload.get("video_size") != upload.filesize:
            raise StrictError("video_item.video_size must be the ciphertext size")
        if kind == "file":
            if not isinstance(payload.get("file_name"), str) or not payload["file_name"]:
                raise StrictError("file_item.file_name is missing")
            if payload.get("len") != str(upload.rawsize):
                raise StrictError("file_item.len must be the plaintext size as a string")
        return {
            "kind": kind,
            "fileName": payload.get("file_name"),
            "size": upload.rawsize,
            "sha256": hashlib.sha256(upload.plaintext).hexdigest(),
            "dataB64": base64.b64encode(upload.plaintext).decode(),
        }

    async def getuploadurl(self, request: Request, body: Any) -> Response:
        bot, body = await self._bot_call(request, body, "getuploadurl")

        def hex32(name: str) -> str:
            value = body.get(name)
            if not isinstance(value, str) or len(value) != 32:
                raise StrictError(f"{name} must be 32 hex characters")
            try:
                bytes.fromhex(value)
            except ValueError:
                raise StrictError(f"{name} must be 32 hex characters") from None
            return value

        filekey, aeskey, md5 = hex32("filekey"), hex32("aeskey"), hex32("rawfilemd5")
        media_type = body.get("media_type")
        if media_type not in MEDIA_TYPES:
            raise StrictError("media_type must be 1, 2, 3 or 4")
        rawsize, filesize = body.get("rawsize"), body.get("filesize")
        if not isinstance(rawsize, int) or rawsize < 0 or not isinstance(filesize, int):
            raise StrictError("rawsize and filesize must be integers")
        if filesize != (rawsize // 16 + 1) * 16:
            raise StrictError("filesize must be the PKCS7-padded size ceil((rawsize+1)/16)*16")
        to_user = body.get("to_user_id")
        if not isinstance(to_user, str) or not to_user:
            raise StrictError("to_user_id is missing")
        if body.get("no_need_thumb") is not True:
            raise StrictError("no_need_thumb must be true (no thumbnail is sent)")
        param = "up_" + secrets.token_urlsafe(12)
        self.uploads[param] = Upload(
            bot_id=bot.bot_id,
            filekey=filekey,
            key=bytes.fromhex(aeskey),
            media_type=media_type,
            to_user=to_user,
            rawsize=rawsize,
            md5=md5,
            filesize=filesize,
        )
        return JSONResponse({"upload_param": param})

    async def cdn_upload(self, request: Request) -> Response:
        def refuse(status: int, message: str) -> Response:
            self.violations.append({"path": request.url.path, "problem": message})
            return Response(status_code=status, headers={"x-error-message": message})

        param = request.query_params.get("encrypted_query_param", "")
        upload = self.uploads.get(param)
        if upload is None:
            return refuse(400, "unknown encrypted_query_param")
        bot = self.bots.get(upload.bot_id)
        if bot is not None and (fault := await self._fault(bot, "cdnupload")) is not None:
            return fault
        if request.query_params.get("filekey") != upload.filekey:
            return refuse(400, "filekey does not match getuploadurl")
        if request.headers.get("content-type") != "application/octet-stream":
            return refuse(400, "Content-Type must be application/octet-stream")
        cipher = await request.body()
        if len(cipher) != upload.filesize:
            return refuse(400, f"{len(cipher)} bytes, getuploadurl said {upload.filesize}")
        try:
            plain = aes_decrypt(cipher, upload.key)
        except ValueError as exc:
            return refuse(400, f"does not decrypt with the aeskey: {exc}")
        if len(plain) != upload.rawsize:
            return refuse(400, "the plaintext size differs from rawsize")
        if hashlib.md5(plain).hexdigest() != upload.md5:  # noqa: S324
            return refuse(400, "the plaintext md5 differs from rawfilemd5")
        self.upload_count += 1
        upload.plaintext = plain
        upload.download_param = "dl_" + secrets.token_urlsafe(12)
        self.files[upload.download_param] = (cipher, upload.key)
        return Response(status_code=200, headers={"x-encrypted-param": upload.download_param})

    async def cdn_download(self, request: Request) -> Response:
        if self.download_faults:
            fault = self.download_faults.popleft()
            headers = {"Retry-After": str(fault["retryAfter"])} if "retryAfter" in fault else {}
            return Response(status_code=int(fault["status"]), headers=headers)
        param = request.query_params.get("encrypted_query_param", "")
        stored = self.files.get(param)
        if stored is None:
            return Response(status_code=404, headers={"x-error-message": "no such file"})
        return Response(stored[0], media_type="application/octet-stream")

    async def _simple(self, request: Request, body: Any, endpoint: str) -> Response:
        bot, body = await self._bot_call(request, body, endpoint)
        bot.notify[endpoint] += 1
        if endpoint == "getconfig":
            if not isinstance(body.get("ilink_user_id"), str):
                raise StrictError("getconfig needs ilink_user_id")
            return JSONResponse({"ret": 0, "typing_ticket": TYPING_TICKET})
        if endpoint == "sendtyping":
            if body.get("typing_ticket") != TYPING_TICKET:
                raise StrictError("sendtyping needs the typing_ticket getconfig handed out")
            if body.get("status") not in (1, 2) or not isinstance(body.get("ilink_user_id"), str):
                raise StrictError("sendtyping needs ilink_user_id and status 1 or 2")
            bot.typing.append((body["ilink_user_id"], body["status"]))
        return JSONResponse({"ret": 0, "errmsg": ""})


# -- the app ----------------------------------------------------------------------------------------

Handler = Callable[[Request, Any], Awaitable[Response]]


def build_app(emulator: IlinkEmulator) -> Starlette:
    """The vendor endpoints and the ``/_emulator/`` control API over one emulator."""

    def vendor(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            emulator._record(request, body)
            try:
                if request.method == "POST" and raw and body is None:
                    raise StrictError("the body is not JSON")
                return await handler(request, body)
            except Answered as exc:
                return exc.response
            except StrictError as exc:
                emulator.violations.append({"path": request.url.path, "problem": str(exc)})
                message = f"emulator strict check: {exc}"
                return JSONResponse({"ret": -1, "errcode": -1, "errmsg": message}, 400)

        return endpoint

    def simple(name: str) -> Handler:
        return lambda request, body: emulator._simple(request, body, name)

    def control(
        action: Callable[[Request, dict[str, Any]], Any],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body = json.loads(raw) if raw.strip() else {}
            try:
                result = action(request, body)
            except ControlError as exc:
                return JSONResponse({"error": str(exc)}, exc.status)
            if isinstance(result, QrCode | Bot):
                result = result.view()
            return JSONResponse(result)

        return endpoint

    def qr_action(request: Request, body: dict[str, Any]) -> Any:
        qrcode, action = request.path_params["qrcode"], request.path_params["action"]
        if action == "scan":
            return emulator.scan(qrcode)
        if action == "require-code":
            return emulator.require_code(
                qrcode, code=body["code"], max_wrong=body.get("maxWrong", 3)
            )
        if action == "redirect":
            return emulator.redirect(qrcode, host=body["host"])
        if action == "expire":
            return emulator.expire(qrcode)
        if action == "confirm":
            return emulator.confirm(
                qrcode,
                bot_id=body.get("botId"),
                user_id=body.get("userId"),
                baseurl=body.get("baseurl"),
            )
        if action == "bind":
            return emulator.bind(qrcode, bot_id=body["botId"], name_bot=body.get("nameBot", False))
        raise ControlError(404, f"unknown QR action {action!r}")

    def push(request: Request, body: dict[str, Any]) -> Any:
        bot_id = request.path_params["bot_id"]
        pushed = [
            emulator.push(
                bot_id,
                m["from"],
                m.get("text"),
                items=m.get("items"),
                copies=m.get("copies", 1),
                message_type=m.get("messageType", 1),
                message_id=m.get("messageId"),
                context_token=m.get("contextToken"),
            )
            for m in body["messages"]
        ]
        return {"messages": pushed}

    def faults(request: Request, body: dict[str, Any]) -> Any:
        bot_id = request.path_params["bot_id"]
        for endpoint, responses in (body.get("responses") or {}).items():
            emulator.inject(bot_id, endpoint, *responses)
        return emulator.configure(
            bot_id,
            latency_ms=body.get("latencyMs"),
            batch_size=body.get("batchSize"),
            close_reply_window=body.get("closeReplyWindow"),
            expire_token=body.get("expireToken", False),
        )

    def media(request: Request, body: dict[str, Any]) -> Any:
        item = emulator.media_item(
            base64.b64decode(body["dataB64"]),
            kind=body.get("kind", "image"),
            file_name=body.get("fileName"),
            key_encoding=body.get("keyEncoding", "hex"),
        )
        return {"item": item}

    def requests_log(request: Request, body: dict[str, Any]) -> Any:
        path = request.query_params.get("path")
        return {"items": [r for r in emulator.requests if path is None or r["path"] == path]}

    routes = [
        Route("/ilink/bot/get_bot_qrcode", vendor(emulator.get_bot_qrcode), methods=["POST"]),
        Route("/ilink/bot/get_qrcode_status", vendor(emulator.get_qrcode_status), methods=["GET"]),
        Route("/ilink/bot/getupdates", vendor(emulator.getupdates), methods=["POST"]),
        Route("/ilink/bot/sendmessage", vendor(emulator.sendmessage), methods=["POST"]),
        Route("/ilink/bot/getconfig", vendor(simple("getconfig")), methods=["POST"]),
        Route("/ilink/bot/sendtyping", vendor(simple("sendtyping")), methods=["POST"]),
        Route("/ilink/bot/msg/notifystart", vendor(simple("notifystart")), methods=["POST"]),
        Route("/ilink/bot/msg/notifystop", vendor(simple("notifystop")), methods=["POST"]),
        Route("/ilink/bot/getuploadurl", vendor(emulator.getuploadurl), methods=["POST"]),
        Route("/c2c/upload", emulator.cdn_upload, methods=["POST"]),
        Route("/c2c/download", emulator.cdn_download, methods=["GET"]),
        Route("/_emulator/media", control(media), methods=["POST"]),
        Route(
            "/_emulator/uploads",
            control(lambda r, b: {"count": emulator.upload_count}),
            methods=["GET"],
        ),
        Route(
            "/_emulator/qrcodes",
            control(lambda r, b: {"items": [q.view() for q in emulator.qrcodes.values()]}),
            methods=["GET"],
        ),
        Route("/_emulator/qrcodes/{qrcode}/{action}", control(qr_action), methods=["POST"]),
        Route(
            "/_emulator/bots/{bot_id}",
            control(lambda r, b: emulator.bot(r.path_params["bot_id"])),
            methods=["GET"],
        ),
        Route(
            "/_emulator/bots/{bot_id}/sent",
            control(lambda r, b: {"items": emulator.bot(r.path_params["bot_id"]).sent}),
            methods=["GET"],
        ),
        Route("/_emulator/bots/{bot_id}/messages", control(push), methods=["POST"]),
        Route("/_emulator/bots/{bot_id}/faults", control(faults), methods=["POST"]),
        Route("/_emulator/requests", control(requests_log), methods=["GET"]),
        Route(
            "/_emulator/violations",
            control(lambda r, b: {"items": emulator.violations}),
            methods=["GET"],
        ),
        Route("/healthz", control(lambda r, b: {"ok": True}), methods=["GET"]),
    ]
    return Starlette(routes=routes)


# -- as a process -----------------------------------------------------------------------------------


class IlinkEmulatorProcess(ManagedProcess):
    """This file as a process on two loopback ports (the second one is a redirect host)."""

    def __init__(self, tmp_path: Path, *, poll_hold_seconds: float = 1.0) -> None:
        self.port = free_port()
        self.redirect_port = free_port()
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--port",
            str(self.port),
            "--redirect-port",
            str(self.redirect_port),
            "--poll-hold-seconds",
            str(poll_hold_seconds),
        ]
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "VIRTUAL_ENV")}
        super().__init__(argv, env=env, log_path=tmp_path / "ilink-emulator.log")
        # A fresh connection per control call: the emulator (Hypercorn) closes connections idle
        # for 5 s, and a pooled one reused as it closes fails with "Server disconnected".
        self._http = httpx.Client(
            base_url=self.url, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redirect_host(self) -> str:
        return f"127.0.0.1:{self.redirect_port}"

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: self._http.get("/healthz").status_code == 200,
            timeout=30,
            what="the iLink emulator",
        )

    def terminate(self, timeout: float = 20.0) -> int:
        self._http.close()
        return super().terminate(timeout)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def latest_qrcode(self) -> str:
        return str(self.call("GET", "/_emulator/qrcodes")["items"][-1]["qrcode"])

    def qr_action(self, action: str, qrcode: str | None = None, **body: Any) -> Any:
        return self.call(
            "POST", f"/_emulator/qrcodes/{qrcode or self.latest_qrcode()}/{action}", body
        )

    def push(self, bot_id: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pushed = self.call("POST", f"/_emulator/bots/{bot_id}/messages", {"messages": messages})
        return list(pushed["messages"])

    def faults(self, bot_id: str, **body: Any) -> Any:
        return self.call("POST", f"/_emulator/bots/{bot_id}/faults", body)

    def bot(self, bot_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/_emulator/bots/{bot_id}"))

    def sent(self, bot_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/_emulator/bots/{bot_id}/sent")["items"])

    def violations(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_emulator/violations")["items"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redirect-port", type=int, default=0, help="a second port to redirect to")
    parser.add_argument("--poll-hold-seconds", type=float, default=1.0)
    parser.add_argument("--qr-hold-seconds", type=float, default=1.0)
    args = parser.parse_args()

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    emulator = IlinkEmulator(
        poll_hold_seconds=args.poll_hold_seconds, qr_hold_seconds=args.qr_hold_seconds
    )
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    if args.redirect_port:
        config.bind.append(f"127.0.0.1:{args.redirect_port}")
    config.accesslog = None
    asyncio.run(serve(build_app(emulator), config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
