"""A Feishu / Lark emulator for tests: OpenAPI, long connection, webhooks and app registration.

Run it as a process: ``python tests/emulators/feishu.py --port N --ws-port M``; point the
sidecar at it with ``FEISHU_BASE_URL=http://127.0.0.1:N`` and ``LARK_BASE_URL=…:N/lark`` (the
same routes under ``/lark`` answer as the Lark brand). Or build :class:`FeishuEmulator` in a
test and use ``emulator.app`` with ``httpx.ASGITransport`` plus ``await emulator.start_ws()``.

What it speaks (docs/protocols/feishu.md):
- ``POST /open-apis/auth/v3/tenant_access_token/internal``: 10014 for a wrong secret; the same
  token while 30 min or more remain. ``GET /open-apis/bot/v3/info`` (``bot`` at the top level).
- ``POST /open-apis/im/v1/messages`` and ``…/{id}/reply``: content must be a JSON string, a post
  without the ``{"post":…}`` wrapper (else 230001); ``uuid`` dedupes for an hour (the original
  message comes back, an [unconfirmed] choice); a withdrawn target gives 230011, an unknown one
  231003; token errors 99991663 with HTTP 400. ``GET /open-apis/im/v1/messages/{id}``.
- ``POST /callback/ws/endpoint`` → a single-use ``ws://`` URL on ``--ws-port`` where frames are
  pbbp2 (encoded here independently of the driver): pongs carry ClientConfig (or ``pongConfig``
  when a test sets one), events go to one random connected client, fragmented on request (or
  replaced by a malformed ``rawPayload``), acks are tracked, and an event not acked within
  ``ackTimeout`` (or whose connection dropped) is redelivered under a **new** event_id.
- ``POST /oauth/v1/app/registration`` (init / begin / poll), with a control call to "scan".
- Media: ``POST /open-apis/im/v1/images`` (multipart ``image_type=message`` + ``image``, at most
  10 MB, an image by its magic number) and ``/im/v1/files`` (``file_type`` of opus, mp4, pdf,
  doc, xls, ppt or stream, ``file_name``, the file; at most 30 MB, not empty; opus must be Ogg
  and mp4 must be MP4) hand out keys; an ``image``/``file``/``audio``/``media`` message must
  name a key of this app of the matching type (else 230001); ``GET …/messages/{id}/resources/
  {key}?type=image|file`` serves what a pushed message carries (a control call stores it).
- Webhooks: events and the URL-verification challenge POSTed to a URL, AES-256-CBC encrypted and
  SHA-256 signed when the app has an Encrypt Key; a failed POST is retried like Feishu does.

The control API lives under ``/_emulator/`` (see ``_control_routes``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import email.parser
import email.policy
import hashlib
import json
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse

TOKEN_CODES = {"missing": 99991661, "invalid": 99991663}
IMAGE_LIMIT = 10 * 1024 * 1024
FILE_LIMIT = 30 * 1024 * 1024
FILE_TYPES = ("opus", "mp4", "pdf", "doc", "xls", "ppt", "stream")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")
# msg_type → (content field, the upload types it may name)
MEDIA_MSG_TYPES = {
    "image": ("image_key", ("image",)),
    "file": ("file_key", ("pdf", "doc", "xls", "ppt", "stream", "opus", "mp4")),
    "audio": ("file_key", ("opus",)),
    "media": ("file_key", ("mp4",)),
}


@dataclasses.dataclass
class Resource:
    """An uploaded image or file (or one a pushed message carries)."""

    app_id: str
    file_type: str  # image, or the file_type of the upload
    data: bytes
    file_name: str


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """``multipart/form-data`` fields as name → (file name, bytes), with the stdlib parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ValueError("not multipart/form-data")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (part.get_filename(), payload)
    return fields


UUID_WINDOW = 3600.0
MAX_REDELIVERIES = 20


class Answered(Exception):
    """A call answered before its own logic runs: a refused tenant token, an injected fault."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"answered with HTTP {response.status_code}")
        self.response = response


# -- pbbp2, written independently of the driver's codec -------------------------------------


def _uvarint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ld(field: int, data: bytes) -> bytes:
    return _uvarint(field << 3 | 2) + _uvarint(len(data)) + data


def encode_frame(frame: dict[str, Any]) -> bytes:
    out = b""
    for number, name in ((1, "SeqID"), (2, "LogID"), (3, "service"), (4, "method")):
        out += _uvarint(number << 3) + _uvarint(int(frame.get(name, 0)))
    for key, value in frame.get("headers", []):
        out += _ld(5, _ld(1, key.encode()) + _ld(2, value.encode()))
    if frame.get("payload") is not None:
        out += _ld(8, frame["payload"])
    return out


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_uvarint(data, pos)
        if key & 7 == 0:
            value, pos = _read_uvarint(data, pos)
            fields.append((key >> 3, value))
        elif key & 7 == 2:
            size, pos = _read_uvarint(data, pos)
            fields.append((key >> 3, data[pos : pos + size]))
            pos += size
        else:
            raise ValueError(f"wire type {key & 7} is not used by pbbp2")
    return fields


def decode_frame(data: bytes) -> dict[str, Any]:
    frame: dict[str, Any] = {"headers": [], "payload": None}
    names = {1: "SeqID", 2: "LogID", 3: "service", 4: "method"}
    for number, value in _fields(data):
        if number in names:
            frame[names[number]] = value
        elif number == 5 and isinstance(value, bytes):
            parts = dict(_fields(value))
            key, val = parts.get(1, b""), parts.get(2, b"")
            assert isinstance(key, bytes)
            assert isinstance(val, bytes)
            frame["headers"].append((key.decode(), val.decode()))
        elif number == 8:
            frame["payload"] = value
    return frame


def header(frame: dict[str, Any], key: str) -> str | None:
    return next((v for k, v in frame["headers"] if k == key), None)


# -- webhook crypto (the sender side) -----------------------------------------------------------


def encrypt(plaintext: bytes, encrypt_key: str) -> str:
    key = hashlib.sha256(encrypt_key.encode()).digest()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode()


def sign(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


# -- state --------------------------------------------------------------------------------------


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(10)


@dataclasses.dataclass
class App:
    app_id: str
    app_secret: str
    brand: str = "feishu"
    bot_open_id: str = dataclasses.field(default_factory=lambda: _id("ou_bot"))
    app_name: str = "Emulated Bot"
    activate_status: int = 2
    encrypt_key: str | None = None
    verification_token: str | None = None
    token_expire: int = 7200

    def view(self) -> dict[str, Any]:
        return {
            "appId": self.app_id,
            "appSecret": self.app_secret,
            "brand": self.brand,
            "botOpenId": self.bot_open_id,
            "appName": self.app_name,
            "activateStatus": self.activate_status,
            "encryptKey": self.encrypt_key,
            "verificationToken": self.verification_token,
        }


@dataclasses.dataclass
class Message:
    message_id: str
    chat_id: str
    chat_type: str
    msg_type: str
    content: str
    sender_id: str
    sender_type: str
    create_time: int
    parent_id: str | None = None
    root_id: str | None = None
    thread_id: str | None = None
    withdrawn: bool = False

    def view(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "msg_type": self.msg_type,
            "create_time": str(self.create_time),
            "update_time": str(self.create_time),
            "deleted": self.withdrawn,
            "updated": False,
            "chat_id": self.chat_id,
            "sender": {
                "id": self.sender_id,
                "id_type": "app_id" if self.sender_type == "app" else "open_id",
                "sender_type": self.sender_type,
                "tenant_key": "tenant_emulated",
            },
            "body": {"content": self.content},
            "mentions": [],
        }
        for key in ("parent_id", "root_id", "thread_id"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data


@dataclasses.dataclass
class Fault:
    op: str
    status: int
    code: int
    msg: str
    retry_after: float | None
    remaining: int


@dataclasses.dataclass
class WsConn:
    app_id: str
    ws: ServerConnection
    device_id: str
    service_id: int
    muted: bool = False
    open: bool = True
    pings: int = 0
    bad_pings: int = 0


@dataclasses.dataclass
class Delivery:
    app_id: str
    message_id: str
    envelope: dict[str, Any]
    fragments: int = 1
    drop_after_send: bool = False
    ignore_acks: int = 0
    event_ids: list[str] = dataclasses.field(default_factory=list)
    frame_ids: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0
    acked: bool = False
    acks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    conn: WsConn | None = None
    sent_at: float = 0.0
    raw_payload: bytes | None = None  # sent instead of the envelope: a malformed event

    def view(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "eventIds": list(self.event_ids),
            "attempts": self.attempts,
            "acked": self.acked,
            "acks": list(self.acks),
        }


@dataclasses.dataclass
class Registration:
    device_code: str
    user_code: str
    expires_at: float
    interval: int
    slow_down: int = 0
    status: str = "pending"  # pending, approved, denied
    app: App | None = None
    owner_open_id: str | None = None
    polls: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class WebhookPush:
    app_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    event_id: str
    retries_left: int
    retry_delay: float
    attempts: list[int] = dataclasses.field(default_factory=list)  # HTTP statuses, 0 = no answer

    @property
    def delivered(self) -> bool:
        return bool(self.attempts) and self.attempts[-1] == 200


class FeishuEmulator:
    def __init__(self, *, ws_host: str = "127.0.0.1", ws_port: int = 0) -> None:
        self.ws_host = ws_host
        self.ws_port = ws_port
        self.apps: dict[str, App] = {}
        self.tokens: dict[str, tuple[str, float]] = {}
        self.messages: dict[str, Message] = {}
        self.resources: dict[str, Resource] = {}
        self.uploads = 0
        self.uuids: dict[tuple[str, str], tuple[str, float]] = {}
        self.faults: list[Fault] = []
        self.sent: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.conns: list[WsConn] = []
        self.connects: dict[str, int] = {}
        self.endpoint_calls: dict[str, int] = {}
        self.tickets: dict[str, tuple[str, str, int]] = {}
        self.issued_tickets: list[str] = []  # every ticket handed out, for tests to look for
        self.deliveries: list[Delivery] = []
        self.registrations: list[Registration] = []
        self.webhooks: list[WebhookPush] = []
        self.client_config: dict[str, int] = {
            "PingInterval": 120,
            "ReconnectCount": -1,
            "ReconnectInterval": 2,
            "ReconnectNonce": 1,
        }
        self.ack_timeout = 3.0
        self.pong_config: dict[str, float] | None = None  # what pongs carry, when not client_config
        self.registration_interval = 1
        self.registration_expires_in = 600
        self._seq = 0
        self._rng = random.Random()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = Starlette(
            routes=[
                *self._control_routes(),
                Mount("/lark", routes=self._vendor_routes("lark")),
                *self._vendor_routes("feishu"),
            ]
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start_ws(self) -> None:
        self._server = await serve(
            self._ws_handler,
            self.ws_host,
            self.ws_port,
            process_request=self._ws_check,
            ping_interval=None,
            max_size=None,
        )
        sock = next(iter(self._server.sockets))
        self.ws_port = sock.getsockname()[1]
        self._spawn(self._redeliver_loop())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- faults -------------------------------------------------------------------------------

    def _fault(self, *ops: str) -> JSONResponse | None:
        for fault in self.faults:
            if fault.op in ops and fault.remaining > 0:
                fault.remaining -= 1
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                return JSONResponse(
                    {"code": fault.code, "msg": fault.msg},
                    status_code=fault.status,
                    headers=headers,
                )
        return None

    # -- the vendor's routes -------------------------------------------------------------------

    def _vendor_routes(self, brand: str) -> list[BaseRoute]:
        def route(path: str, handler: Callable[..., Awaitable[Response]], method: str) -> Route:
            async def endpoint(request: Request) -> Response:
                self.calls.append(
                    {
                        "brand": brand,
                        "method": request.method,
                        "path": request.url.path,
                        "query": dict(request.query_params),
                        "headers": {
                            k: v
                            for k, v in request.headers.items()
                            if k in ("authorization", "content-type", "locale")
                        },
                        "body": (await request.body()).decode(errors="replace"),
                    }
                )
                try:
                    return await handler(request, brand)
                except Answered as exc:
                    return exc.response

            return Route(path, endpoint, methods=[method])

        return [
            route("/open-apis/auth/v3/tenant_access_token/internal", self._token, "POST"),
            route("/open-apis/bot/v3/info", self._bot_info, "GET"),
            route("/open-apis/im/v1/messages", self._create, "POST"),
            route("/open-apis/im/v1/messages/{message_id}/reply", self._reply, "POST"),
            route("/open-apis/im/v1/messages/{message_id}", self._get_message, "GET"),
            route("/open-apis/im/v1/images", self._upload_image, "POST"),
            route("/open-apis/im/v1/files", self._upload_file, "POST"),
            route("/open-apis/im/v1/messages/{message_id}/resources/{key}", self._resource, "GET"),
            route("/callback/ws/endpoint", self._endpoint, "POST"),
            route("/oauth/v1/app/registration", self._registration, "POST"),
        ]

    async def _token(self, request: Request, brand: str) -> Response:
        if fault := self._fault("token"):
            return fault
        body = await request.json()
        app = self.apps.get(body.get("app_id", ""))
        if app is None or app.brand != brand:
            # An unknown app (or one of the other brand) is [unconfirmed] at the vendor.
            return JSONResponse({"code": 10003, "msg": "invalid param: app_id"})
        if body.get("app_secret") != app.app_secret:
            return JSONResponse({"code": 10014, "msg": "app secret invalid"})
        now = time.monotonic()
        for token, (app_id, expires_at) in self.tokens.items():
            if app_id == app.app_id and expires_at - now >= 1800:
                return JSONResponse(
                    {
                        "code": 0,
                        "msg": "ok",
                        "tenant_access_token": token,
                        "expire": int(expires_at - now),
                    }
                )
        token = _id("t-")
        self.tokens[token] = (app.app_id, now + app.token_expire)
        return JSONResponse(
            {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": app.token_expire}
        )

    def _authorised(self, request: Request, brand: str) -> App:
        """The app whose tenant token the call carries; else :class:`Answered` with the code."""

        def refused(kind: str, msg: str) -> Answered:
            return Answered(JSONResponse({"code": TOKEN_CODES[kind], "msg": msg}, status_code=400))

        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            raise refused("missing", "Missing access token for authorization.")
        entry = self.tokens.get(auth[len("Bearer ") :])
        app = self.apps.get(entry[0]) if entry else None
        if entry is None or app is None or entry[1] < time.monotonic() or app.brand != brand:
            raise refused("invalid", "Invalid access token for authorization.")
        return app

    async def _bot_info(self, request: Request, brand: str) -> Response:
        app = self._authorised(request, brand)
        return JSONResponse(
            {
                "code": 0,
                "msg": "ok",
                "bot": {
                    "activate_status": app.activate_status,
                    "app_name": app.app_name,
                    "avatar_url": "",
                    "ip_white_list": [],
                    "open_id": app.bot_open_id,
                },
            }
        )

    def _check_content(self, msg_type: str, content: Any) -> JSONResponse | None:
        bad = JSONResponse(
            {"code": 230001, "msg": "Your request contains an invalid request parameter."},
            status_code=400,
        )
        if not isinstance(content, str):
            return bad
        try:
            parsed = json.loads(content)
        except ValueError:
            return bad
        limit = 150 * 1024 if msg_type == "text" else 30 * 1024
        if len(content.encode()) > limit:
            return JSONResponse(
                {"code": 230025, "msg": "The message length exceeds the limit."}, status_code=400
            )
        if msg_type == "text" and not isinstance(parsed.get("text"), str):
            return bad
        if msg_type in MEDIA_MSG_TYPES:
            field, wanted = MEDIA_MSG_TYPES[msg_type]
            resource = self.resources.get(str(parsed.get(field)))
            if resource is None or resource.file_type not in wanted:
                return bad
        # A post is a locale map; the {"post": …} wrapper of custom-bot webhooks is refused.
        if msg_type == "post" and (
            "post" in parsed
            or not parsed
            or not all(
                isinstance(v, dict) and isinstance(v.get("content"), list) for v in parsed.values()
            )
        ):
            return bad
        return None

    def _dedupe(self, app: App, uuid: Any) -> Message | JSONResponse | None:
        if uuid is None:
            return None
        if not isinstance(uuid, str) or not 0 < len(uuid) <= 50:
            return JSONResponse(
                {"code": 99992402, "msg": "field validation failed: uuid"}, status_code=400
            )
        hit = self.uuids.get((app.app_id, uuid))
        if hit is not None and time.monotonic() - hit[1] < UUID_WINDOW:
            return self.messages[hit[0]]
        return None

    def _record(self, app: App, message: Message, uuid: str | None, **extra: Any) -> JSONResponse:
        self.messages[message.message_id] = message
        if message.msg_type in MEDIA_MSG_TYPES:
            field = MEDIA_MSG_TYPES[message.msg_type][0]
            resource = self.resources[json.loads(message.content)[field]]
            extra |= {
                "fileName": resource.file_name,
                "size": len(resource.data),
                "sha256": hashlib.sha256(resource.data).hexdigest(),
                "dataB64": base64.b64encode(resource.data).decode(),
            }
        if uuid:
            self.uuids[(app.app_id, uuid)] = (message.message_id, time.monotonic())
        self.sent.append(
            {
                "appId": app.app_id,
                "messageId": message.message_id,
                "chatId": message.chat_id,
                "msgType": message.msg_type,
                "content": message.content,
                "uuid": uuid,
                "parentId": message.parent_id,
                "rootId": message.root_id,
                "threadId": message.thread_id,
                **extra,
            }
        )
        return JSONResponse({"code": 0, "msg": "success", "data": message.view()})

    async def _send_request(
        self, request: Request, brand: str, op: str
    ) -> tuple[App, dict[str, Any]]:
        """What create and reply check first: the tenant token, then an injected fault."""
        app = self._authorised(request, brand)
        if fault := self._fault(op, "send"):
            raise Answered(fault)
        body = await request.json()
        return app, body

    def _refused_or_repeated(self, app: App, body: dict[str, Any]) -> Response | None:
        """A refusal of the content, or the first answer again for a uuid used within the hour."""
        if bad := self._check_content(body.get("msg_type", ""), body.get("content")):
            return bad
        hit = self._dedupe(app, body.get("uuid"))
        if isinstance(hit, Message):
            return JSONResponse({"code": 0, "msg": "success", "data": hit.view()})
        return hit

    async def _create(self, request: Request, brand: str) -> Response:
        app, body = await self._send_request(request, brand, "create")
        id_type = request.query_params.get("receive_id_type")
        if id_type not in ("open_id", "user_id", "union_id", "email", "chat_id"):
            return JSONResponse(
                {"code": 99992402, "msg": "field validation failed: receive_id_type"},
                status_code=400,
            )
        if answer := self._refused_or_repeated(app, body):
            return answer
        message = Message(
            message_id=_id("om_"),
            chat_id=body["receive_id"] if id_type == "chat_id" else _id("oc_p2p"),
            chat_type="group",
            msg_type=body["msg_type"],
            content=body["content"],
            sender_id=app.app_id,
            sender_type="app",
            create_time=int(time.time() * 1000),
        )
        return self._record(app, message, body.get("uuid"), op="create", receiveIdType=id_type)

    async def _reply(self, request: Request, brand: str) -> Response:
        app, body = await self._send_request(request, brand, "reply")
        parent = self.messages.get(request.path_params["message_id"])
        if parent is None:
            return JSONResponse(
                {"code": 231003, "msg": "The message is not found."}, status_code=400
            )
        if parent.withdrawn:
            return JSONResponse(
                {"code": 230011, "msg": "The message was withdrawn."}, status_code=400
            )
        if answer := self._refused_or_repeated(app, body):
            return answer
        in_thread = bool(body.get("reply_in_thread"))
        thread_id = parent.thread_id or (_id("omt_") if in_thread else None)
        if thread_id and not parent.thread_id:
            parent.thread_id = thread_id  # the parent becomes the root of the new thread
        message = Message(
            message_id=_id("om_"),
            chat_id=parent.chat_id,
            chat_type=parent.chat_type,
            msg_type=body["msg_type"],
            content=body["content"],
            sender_id=app.app_id,
            sender_type="app",
            create_time=int(time.time() * 1000),
            parent_id=parent.message_id,
            root_id=parent.root_id or parent.message_id,
            thread_id=thread_id,
        )
        return self._record(app, message, body.get("uuid"), op="reply", replyInThread=in_thread)

    async def _form(self, request: Request, brand: str) -> tuple[App, dict[str, Any]]:
        app = self._authorised(request, brand)
        if fault := self._fault("upload"):
            raise Answered(fault)
        try:
            form = parse_multipart(request.headers.get("content-type", ""), await request.body())
        except ValueError:
            raise Answered(self._invalid("the body must be multipart/form-data")) from None
        return app, form

    def _invalid(self, msg: str) -> JSONResponse:
        return JSONResponse({"code": 234001, "msg": f"Invalid request param: {msg}"}, 400)

    def _new_resource(self, app: App, file_type: str, data: bytes, name: str) -> str:
        key = _id("img_v3_" if file_type == "image" else "file_v3_")
        self.resources[key] = Resource(app.app_id, file_type, data, name)
        self.uploads += 1
        return key

    async def _upload_image(self, request: Request, brand: str) -> Response:
        app, form = await self._form(request, brand)
        if form.get("image_type", (None, b""))[1] != b"message":
            return self._invalid("image_type must be message")
        name, data = form.get("image", (None, b""))
        if not data or not data.startswith(IMAGE_MAGIC):
            return self._invalid("image is missing or not an image")
        if len(data) > IMAGE_LIMIT:
            return JSONResponse({"code": 234006, "msg": "The file size exceed the max value."}, 400)
        key = self._new_resource(app, "image", data, name or "image")
        return JSONResponse({"code": 0, "msg": "success", "data": {"image_key": key}})

    async def _upload_file(self, request: Request, brand: str) -> Response:
        app, form = await self._form(request, brand)
        file_type = form.get("file_type", (None, b""))[1].decode()
        file_name = form.get("file_name", (None, b""))[1].decode()
        _, data = form.get("file", (None, b""))
        if file_type not in FILE_TYPES or not file_name:
            return self._invalid("file_type and file_name are required")
        if not data:
            return self._invalid("the file is empty")
        if len(data) > FILE_LIMIT:
            return JSONResponse({"code": 234006, "msg": "The file size exceed the max value."}, 400)
        if file_type == "opus" and not data.startswith(b"OggS"):
            return self._invalid("an opus file must be Ogg")
        if file_type == "mp4" and data[4:8] != b"ftyp":
            return self._invalid("an mp4 file must be MP4")
        key = self._new_resource(app, file_type, data, file_name)
        return JSONResponse({"code": 0, "msg": "success", "data": {"file_key": key}})

    async def _resource(self, request: Request, brand: str) -> Response:
        app = self._authorised(request, brand)
        if fault := self._fault("resource"):
            return fault
        message = self.messages.get(request.path_params["message_id"])
        key = request.path_params["key"]
        resource = self.resources.get(key)
        if message is None or resource is None or key not in message.content:
            return JSONResponse({"code": 234003, "msg": "File not in msg."}, 400)
        wanted = "image" if resource.file_type == "image" else "file"
        if request.query_params.get("type") != wanted or resource.app_id != app.app_id:
            return self._invalid(f"type must be {wanted}")
        return Response(
            resource.data,
            media_type="image/png" if wanted == "image" else "application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{resource.file_name}"'},
        )

    async def _get_message(self, request: Request, brand: str) -> Response:
        self._authorised(request, brand)
        message = self.messages.get(request.path_params["message_id"])
        if message is None:
            return JSONResponse(
                {"code": 231003, "msg": "The message is not found."}, status_code=400
            )
        return JSONResponse({"code": 0, "msg": "success", "data": {"items": [message.view()]}})

    async def _endpoint(self, request: Request, brand: str) -> Response:
        if fault := self._fault("endpoint"):
            return fault
        body = await request.json()
        app = self.apps.get(body.get("AppID", ""))
        if app is None or app.brand != brand or body.get("AppSecret") != app.app_secret:
            return JSONResponse({"code": 10014, "msg": "app secret invalid"})
        self.endpoint_calls[app.app_id] = self.endpoint_calls.get(app.app_id, 0) + 1
        ticket = secrets.token_hex(12)
        device_id = str(self._rng.randrange(10**17, 10**18))
        service_id = self._rng.randrange(1, 100_000)
        self.tickets[ticket] = (app.app_id, device_id, service_id)
        self.issued_tickets.append(ticket)
        url = f"ws://{self.ws_host}:{self.ws_port}/ws?device_id={device_id}&service_id={service_id}&ticket={ticket}"
        return JSONResponse(
            {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": dict(self.client_config)}}
        )

    async def _registration(self, request: Request, brand: str) -> Response:
        # Parsed by hand: Starlette's form parser needs python-multipart, not installed here.
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        action = form.get("action")
        if action == "init":
            return JSONResponse({"supported_auth_methods": ["client_secret"]})
        if action == "begin":
            if (
                form.get("archetype") != "PersonalAgent"
                or form.get("auth_method") != "client_secret"
            ):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            reg = Registration(
                device_code=secrets.token_hex(16),
                user_code=secrets.token_hex(4).upper(),
                expires_at=time.monotonic() + self.registration_expires_in,
                interval=self.registration_interval,
            )
            self.registrations.append(reg)
            base = str(request.base_url).rstrip("/")
            return JSONResponse(
                {
                    "device_code": reg.device_code,
                    "user_code": reg.user_code,
                    "verification_uri": f"{base}/page/cli",
                    "verification_uri_complete": f"{base}/page/cli?user_code={reg.user_code}",
                    "interval": reg.interval,
                    "expires_in": self.registration_expires_in,
                }
            )
        if action == "poll":
            found = [r for r in self.registrations if r.device_code == form.get("device_code")]
            if not found or found[0].expires_at < time.monotonic():
                return JSONResponse(
                    {"error": "expired_token", "error_description": "the device code expired"},
                    status_code=400,
                )
            reg = found[0]
            reg.polls.append(brand)
            if reg.status == "denied":
                return JSONResponse(
                    {"error": "access_denied", "error_description": "the user declined"},
                    status_code=400,
                )
            if reg.status == "approved" and reg.app is not None:
                if reg.app.brand != brand:
                    return JSONResponse(
                        {
                            "error": "authorization_pending",
                            "user_info": {"tenant_brand": reg.app.brand},
                        },
                        status_code=400,
                    )
                return JSONResponse(
                    {
                        "client_id": reg.app.app_id,
                        "client_secret": reg.app.app_secret,
                        "user_info": {"open_id": reg.owner_open_id, "tenant_brand": reg.app.brand},
                    }
                )
            if reg.slow_down > 0:
                reg.slow_down -= 1
                return JSONResponse({"error": "slow_down"}, status_code=400)
            return JSONResponse({"error": "authorization_pending"}, status_code=400)
        return JSONResponse({"error": "invalid_request"}, status_code=400)

    # -- the long connection ------------------------------------------------------------------

    def _ws_check(self, connection: ServerConnection, request: WsRequest) -> WsResponse | None:
        query = parse_qs(urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        if ticket not in self.tickets:
            response = connection.respond(HTTPStatus.FORBIDDEN, "bad ticket\n")
            response.headers["handshake-status"] = "403"
            response.headers["handshake-msg"] = "bad ticket"
            return response
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        app_id, device_id, service_id = self.tickets.pop(query["ticket"][0])
        conn = WsConn(app_id=app_id, ws=ws, device_id=device_id, service_id=service_id)
        self.conns.append(conn)
        self.connects[app_id] = self.connects.get(app_id, 0) + 1
        try:
            async for data in ws:
                if isinstance(data, bytes):
                    await self._on_frame(conn, decode_frame(data))
        except ConnectionClosed:
            pass
        finally:
            conn.open = False

    async def _on_frame(self, conn: WsConn, frame: dict[str, Any]) -> None:
        if frame.get("method", 0) == 0:
            if header(frame, "type") == "ping":
                conn.pings += 1
                if frame.get("service") != conn.service_id:
                    conn.bad_pings += 1
                if not conn.muted:
                    pong = {
                        "SeqID": 0,
                        "LogID": 0,
                        "service": conn.service_id,
                        "method": 0,
                        "headers": [("type", "pong")],
                        "payload": json.dumps(self.pong_config or self.client_config).encode(),
                    }
                    with contextlib.suppress(ConnectionClosed):
                        await conn.ws.send(encode_frame(pong))
            return
        frame_id = header(frame, "message_id")
        delivery = next((d for d in self.deliveries if frame_id in d.frame_ids), None)
        if delivery is None:
            return
        ack = json.loads(frame["payload"] or b"{}")
        delivery.acks.append(
            {"code": ack.get("code"), "bizRt": header(frame, "biz_rt"), "frameId": frame_id}
        )
        if delivery.ignore_acks > 0:
            delivery.ignore_acks -= 1  # as if this ack were lost on the way
            return
        if ack.get("code") == 200 and frame_id == delivery.frame_ids[-1]:
            delivery.acked = True

    async def _send(self, delivery: Delivery, conn: WsConn) -> None:
        """Send one delivery attempt to ``conn``: a fresh event_id on every redelivery."""
        if delivery.attempts > 0:
            delivery.envelope["header"]["event_id"] = _id("ev_")
        delivery.attempts += 1
        delivery.event_ids.append(delivery.envelope["header"]["event_id"])
        frame_id = _id("fr_")
        delivery.frame_ids.append(frame_id)
        delivery.conn = conn
        delivery.sent_at = time.monotonic()
        payload = delivery.raw_payload or json.dumps(delivery.envelope).encode()
        count = max(1, delivery.fragments)
        size = -(-len(payload) // count)
        parts = [payload[i * size : (i + 1) * size] for i in range(count)]
        try:
            for seq, part in enumerate(parts):
                self._seq += 1
                frame = {
                    "SeqID": self._seq,
                    "LogID": self._rng.randrange(1, 2**40),
                    "service": conn.service_id,
                    "method": 1,
                    "headers": [
                        ("type", "event"),
                        ("message_id", frame_id),
                        ("sum", str(count)),
                        ("seq", str(seq)),
                        ("trace_id", secrets.token_hex(8)),
                    ],
                    "payload": part,
                }
                await conn.ws.send(encode_frame(frame))
        except ConnectionClosed:
            conn.open = False
            return
        if delivery.drop_after_send:
            delivery.drop_after_send = False
            conn.open = False
            conn.ws.transport.abort()

    def _live(self, app_id: str) -> list[WsConn]:
        return [c for c in self.conns if c.app_id == app_id and c.open and not c.muted]

    async def _redeliver_loop(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for delivery in list(self.deliveries):
                if delivery.acked or delivery.attempts >= MAX_REDELIVERIES:
                    continue
                live = self._live(delivery.app_id)
                if not live:
                    continue
                gone = delivery.conn is None or not delivery.conn.open
                late = now - delivery.sent_at > self.ack_timeout
                if gone or late:
                    await self._send(delivery, self._rng.choice(live))

    # -- building events ----------------------------------------------------------------------

    def build_event(self, app: App, spec: dict[str, Any]) -> tuple[Message, dict[str, Any]]:
        chat_type = spec.get("chatType", "p2p")
        chat_id = spec.get("chatId") or _id("oc_")
        sender = spec.get("senderOpenId", "ou_user_1")
        mentions = [dict(m) for m in spec.get("mentions", [])]
        text = spec.get("text")
        if spec.get("mentionBot"):
            mentions.insert(0, {"openId": app.bot_open_id, "name": app.app_name})
        for i, mention in enumerate(mentions, start=1):
            mention.setdefault("key", f"@_user_{i}")
        if spec.get("mentionBot") and text is not None:
            text = f"{mentions[0]['key']} {text}"
        msg_type = spec.get("msgType", "text")
        content = spec.get("content")
        if content is None:
            content = {"text": text or ""} if msg_type == "text" else {}
        parent = self.messages.get(spec.get("parentId") or "")
        message = Message(
            message_id=spec.get("messageId") or _id("om_"),
            chat_id=chat_id,
            chat_type=chat_type,
            msg_type=msg_type,
            content=json.dumps(content, ensure_ascii=False),
            sender_id=sender,
            sender_type=spec.get("senderType", "user"),
            create_time=int(spec.get("createTime") or time.time() * 1000),
            parent_id=spec.get("parentId"),
            root_id=spec.get("rootId") or (parent.root_id or parent.message_id if parent else None),
            thread_id=spec.get("threadId") or (parent.thread_id if parent else None),
        )
        self.messages[message.message_id] = message
        body: dict[str, Any] = {
            "message_id": message.message_id,
            "create_time": str(message.create_time),
            "update_time": str(message.create_time),
            "chat_id": chat_id,
            "chat_type": chat_type,
            "message_type": msg_type,
            "content": message.content,
            "mentions": [
                {
                    "key": m["key"],
                    "id": {"open_id": m.get("openId"), "user_id": None, "union_id": None},
                    "name": m.get("name", ""),
                    "tenant_key": "tenant_emulated",
                }
                for m in mentions
            ],
            "user_agent": "emulator",
        }
        for key in ("parent_id", "root_id", "thread_id"):
            if getattr(message, key):
                body[key] = getattr(message, key)
        envelope = {
            "schema": "2.0",
            "header": {
                "event_id": spec.get("eventId") or _id("ev_"),
                "event_type": "im.message.receive_v1",
                "create_time": str(message.create_time),
                "token": spec.get("token", app.verification_token or ""),
                "app_id": app.app_id,
                "tenant_key": "tenant_emulated",
            },
            "event": {
                "sender": {
                    "sender_id": {"open_id": sender, "user_id": None, "union_id": None},
                    "sender_type": message.sender_type,
                    "tenant_key": "tenant_emulated",
                },
                "message": body,
            },
        }
        return message, envelope

    def signed_request(
        self, app: App, payload: dict[str, Any], *, bad_signature: bool = False
    ) -> tuple[bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json"}
        if not app.encrypt_key:
            return json.dumps(payload).encode(), headers
        body = json.dumps(
            {"encrypt": encrypt(json.dumps(payload).encode(), app.encrypt_key)}
        ).encode()
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        signature = sign(timestamp, nonce, app.encrypt_key, body)
        if bad_signature:
            signature = hashlib.sha256(b"forged").hexdigest()
        headers |= {
            "X-Lark-Request-Timestamp": timestamp,
            "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": signature,
        }
        return body, headers

    async def _post_webhook(self, push: WebhookPush) -> tuple[int, str]:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.post(push.url, content=push.body, headers=push.headers)
            push.attempts.append(response.status_code)
            return response.status_code, response.text
        except httpx.HTTPError as exc:
            push.attempts.append(0)
            return 0, f"{type(exc).__name__}: {exc}"

    async def _retry_webhook(self, push: WebhookPush) -> None:
        while not push.delivered and push.retries_left > 0:
            await asyncio.sleep(push.retry_delay)
            push.retries_left -= 1
            await self._post_webhook(push)

    # -- control ------------------------------------------------------------------------------

    def _control_routes(self) -> list[BaseRoute]:
        def route(
            path: str, handler: Callable[[Request], Awaitable[Any]], method: str = "POST"
        ) -> Route:
            async def endpoint(request: Request) -> Response:
                result = await handler(request)
                if isinstance(result, Response):
                    return result
                return JSONResponse(result)

            return Route(f"/_emulator{path}", endpoint, methods=[method])

        return [
            route("/health", self._c_health, "GET"),
            route("/apps", self._c_create_app),
            route("/apps/{app_id}", self._c_update_app),
            route("/apps/{app_id}/events", self._c_push),
            route("/apps/{app_id}/verify-url", self._c_verify_url),
            route("/apps/{app_id}/ws", self._c_ws_state, "GET"),
            route("/apps/{app_id}/ws/drop", self._c_ws_drop),
            route("/apps/{app_id}/webhooks", self._c_webhooks, "GET"),
            route("/config", self._c_config),
            route("/faults", self._c_faults),
            route("/apps/{app_id}/resources", self._c_resource),
            route("/uploads", self._c_uploads, "GET"),
            route("/sent", self._c_sent, "GET"),
            route("/calls", self._c_calls, "GET"),
            route("/messages/{message_id}/withdraw", self._c_withdraw),
            route("/registrations", self._c_registrations, "GET"),
            route("/registrations/scan", self._c_scan),
        ]

    async def _json(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        value = json.loads(body) if body.strip() else {}
        assert isinstance(value, dict)
        return value

    def _app(self, request: Request) -> App:
        app = self.apps.get(request.path_params["app_id"])
        if app is None:
            raise LookupError(request.path_params["app_id"])
        return app

    async def _c_health(self, request: Request) -> Any:
        return {"ok": True, "wsPort": self.ws_port}

    def create_app(self, spec: dict[str, Any]) -> App:
        app = App(
            app_id=spec.get("appId") or _id("cli_"),
            app_secret=spec.get("appSecret") or secrets.token_hex(16),
            brand=spec.get("brand", "feishu"),
            app_name=spec.get("appName", "Emulated Bot"),
            activate_status=spec.get("activateStatus", 2),
            encrypt_key=spec.get("encryptKey"),
            verification_token=spec.get("verificationToken"),
            token_expire=spec.get("tokenExpire", 7200),
        )
        if spec.get("botOpenId"):
            app.bot_open_id = spec["botOpenId"]
        self.apps[app.app_id] = app
        return app

    async def _c_create_app(self, request: Request) -> Any:
        return self.create_app(await self._json(request)).view()

    async def _c_update_app(self, request: Request) -> Any:
        app = self._app(request)
        spec = await self._json(request)
        for key, attr in (
            ("appSecret", "app_secret"),
            ("activateStatus", "activate_status"),
            ("appName", "app_name"),
            ("encryptKey", "encrypt_key"),
            ("verificationToken", "verification_token"),
        ):
            if key in spec:
                setattr(app, attr, spec[key])
        if spec.get("revokeTokens"):
            for token in [t for t, (a, _) in self.tokens.items() if a == app.app_id]:
                del self.tokens[token]
        return app.view()

    async def _c_push(self, request: Request) -> Any:
        app = self._app(request)
        spec = await self._json(request)
        message, envelope = self.build_event(app, spec)
        result: dict[str, Any] = {
            "messageId": message.message_id,
            "eventId": envelope["header"]["event_id"],
            "chatId": message.chat_id,
            "threadId": message.thread_id,
        }
        if spec.get("via", "ws") == "webhook":
            body, headers = self.signed_request(
                app, envelope, bad_signature=bool(spec.get("badSignature"))
            )
            push = WebhookPush(
                app_id=app.app_id,
                url=spec["url"],
                body=body,
                headers=headers,
                event_id=envelope["header"]["event_id"],
                retries_left=int(spec.get("retries", 0)),
                retry_delay=float(spec.get("retryDelay", 1.0)),
            )
            self.webhooks.append(push)
            status, text = await self._post_webhook(push)
            if not push.delivered and push.retries_left > 0:
                self._spawn(self._retry_webhook(push))
            return result | {"status": status, "response": text}
        return result | await self.push_ws(app, message, envelope, spec)

    async def push_ws(
        self, app: App, message: Message, envelope: dict[str, Any], spec: dict[str, Any]
    ) -> dict[str, Any]:
        """Queue an event for the long connection; sent now if a client is connected."""
        delivery = Delivery(
            app_id=app.app_id,
            message_id=message.message_id,
            envelope=envelope,
            fragments=int(spec.get("fragments", 1)),
            drop_after_send=bool(spec.get("dropAfterSend")),
            ignore_acks=int(spec.get("ignoreAcks", 0)),
            raw_payload=spec["rawPayload"].encode() if "rawPayload" in spec else None,
        )
        self.deliveries.append(delivery)
        live = self._live(app.app_id)
        if live:
            await self._send(delivery, self._rng.choice(live))
        return {"delivered": bool(live)}

    async def _c_verify_url(self, request: Request) -> Any:
        app = self._app(request)
        spec = await self._json(request)
        challenge = secrets.token_hex(12)
        payload = {
            "challenge": challenge,
            "token": spec.get("token", app.verification_token or ""),
            "type": "url_verification",
        }
        body, headers = self.signed_request(app, payload)
        if spec.get("unsigned"):
            headers = {"Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(spec["url"], content=body, headers=headers)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        ok = (
            response.status_code == 200
            and isinstance(answer, dict)
            and answer.get("challenge") == challenge
        )
        return {"ok": ok, "status": response.status_code, "body": answer}

    async def _c_ws_state(self, request: Request) -> Any:
        app = self._app(request)
        conns = [c for c in self.conns if c.app_id == app.app_id]
        return {
            "connected": len([c for c in conns if c.open]),
            "connects": self.connects.get(app.app_id, 0),
            "endpointCalls": self.endpoint_calls.get(app.app_id, 0),
            "pings": sum(c.pings for c in conns),
            "badPings": sum(c.bad_pings for c in conns),
            "deliveries": [d.view() for d in self.deliveries if d.app_id == app.app_id],
        }

    async def _c_ws_drop(self, request: Request) -> Any:
        app = self._app(request)
        mode = (await self._json(request)).get("mode", "abort")
        dropped = 0
        for conn in [c for c in self.conns if c.app_id == app.app_id and c.open]:
            dropped += 1
            if mode == "mute":
                conn.muted = True
            elif mode == "close":
                conn.open = False
                await conn.ws.close(1011, "emulator drop")
            else:
                conn.open = False
                conn.ws.transport.abort()
        return {"dropped": dropped}

    async def _c_webhooks(self, request: Request) -> Any:
        app = self._app(request)
        return {
            "items": [
                {"eventId": p.event_id, "attempts": list(p.attempts), "delivered": p.delivered}
                for p in self.webhooks
                if p.app_id == app.app_id
            ]
        }

    async def _c_config(self, request: Request) -> Any:
        spec = await self._json(request)
        for key in ("PingInterval", "ReconnectCount", "ReconnectInterval", "ReconnectNonce"):
            if key in spec:
                self.client_config[key] = spec[key]
        if "ackTimeout" in spec:
            self.ack_timeout = float(spec["ackTimeout"])
        if "pongConfig" in spec:
            self.pong_config = spec["pongConfig"]
        if "registrationInterval" in spec:
            self.registration_interval = int(spec["registrationInterval"])
        if "registrationExpiresIn" in spec:
            self.registration_expires_in = int(spec["registrationExpiresIn"])
        return {"clientConfig": self.client_config, "ackTimeout": self.ack_timeout}

    async def _c_faults(self, request: Request) -> Any:
        spec = await self._json(request)
        fault = Fault(
            op=spec["op"],
            status=int(spec.get("status", 400)),
            code=int(spec["code"]),
            msg=spec.get("msg", "injected"),
            retry_after=spec.get("retryAfter"),
            remaining=int(spec.get("count", 1)),
        )
        self.faults.append(fault)
        return {"ok": True}

    async def _c_resource(self, request: Request) -> Any:
        """Store bytes a pushed message can carry: ``{"dataB64", "fileType", "fileName"}``."""
        app = self._app(request)
        spec = await self._json(request)
        file_type = spec.get("fileType", "image")
        key = self._new_resource(
            app, file_type, base64.b64decode(spec["dataB64"]), spec.get("fileName", "file")
        )
        self.uploads -= 1  # not an upload by the bot
        return {"key": key}

    async def _c_uploads(self, request: Request) -> Any:
        return {"count": self.uploads}

    async def _c_sent(self, request: Request) -> Any:
        app_id = request.query_params.get("appId")
        return {"items": [s for s in self.sent if app_id is None or s["appId"] == app_id]}

    async def _c_calls(self, request: Request) -> Any:
        path = request.query_params.get("path")
        return {"items": [c for c in self.calls if path is None or c["path"].endswith(path)]}

    async def _c_withdraw(self, request: Request) -> Any:
        message = self.messages.get(request.path_params["message_id"])
        if message is None:
            return JSONResponse({"error": "no such message"}, status_code=404)
        message.withdrawn = True
        return {"ok": True}

    async def _c_registrations(self, request: Request) -> Any:
        return {
            "items": [
                {
                    "userCode": r.user_code,
                    "status": r.status,
                    "polls": r.polls,
                    "interval": r.interval,
                }
                for r in self.registrations
            ]
        }

    def scan(self, spec: dict[str, Any]) -> Registration:
        """The person scans the newest pending code (or ``userCode``): approve, deny, or make
        the next ``slowDown`` polls answer slow_down."""
        pending = [r for r in self.registrations if r.status == "pending"]
        reg = next((r for r in pending if r.user_code == spec.get("userCode")), None)
        if reg is None and pending and not spec.get("userCode"):
            reg = pending[-1]
        if reg is None:
            raise LookupError("no pending registration")
        if spec.get("slowDown"):
            reg.slow_down = int(spec["slowDown"])
        elif spec.get("deny"):
            reg.status = "denied"
        else:
            reg.app = self.create_app(
                {
                    "brand": spec.get("brand", "feishu"),
                    "appName": spec.get("appName", "Scanned Agent"),
                    "activateStatus": spec.get("activateStatus", 2),
                }
            )
            reg.owner_open_id = spec.get("ownerOpenId", "ou_owner_1")
            reg.status = "approved"
        return reg

    async def _c_scan(self, request: Request) -> Any:
        try:
            reg = self.scan(await self._json(request))
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return {
            "userCode": reg.user_code,
            "status": reg.status,
            "app": reg.app.view() if reg.app else None,
        }


# -- the process entry --------------------------------------------------------------------------


async def _main(port: int, ws_port: int) -> None:
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    emulator = FeishuEmulator(ws_port=ws_port)
    await emulator.start_ws()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    try:
        await hypercorn_serve(emulator.app, config)  # type: ignore[arg-type]
    finally:
        await emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws-port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_main(args.port, args.ws_port))


if __name__ == "__main__":
    main()
