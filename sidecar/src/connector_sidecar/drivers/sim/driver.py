"""The sim driver: pairing by a fake scan, inbound by HTTP, sends recorded in the database.

Faults are held in memory per connection (they are a test's setting, not state to keep). Sends
are recorded in ``sim_sent`` so a test can see, after a restart too, exactly what reached the
"vendor": the sim does not dedupe by the vendor key, so a double send would show.

Media: injected media bytes are the "vendor's" copy, kept as files under
``<data dir>/sim-media/<sha256>`` (the descriptor's ref names the file); attachment uploads
land there too, and each attachment message is a ``sim_sent`` row describing it (kind, name,
type, size, sha256). ``uploads`` counts the uploads per connection, for tests.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import dataclasses
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from connector_contracts import (
    SendTarget,
    SimFaults,
    SimFaultsView,
    SimInboundAccepted,
    SimInboundMessage,
    SimScanRequest,
    SimSentItem,
    SimSentList,
    encode,
)
from connector_sidecar._clock import iso_ms, now_ms
from connector_sidecar._qr import qr_data_url
from connector_sidecar.drivers.attachments import (
    FetchedMedia,
    MediaRejectedError,
    OutboundAttachment,
    guess_mime_type,
)
from connector_sidecar.drivers.base import (
    DeferredSendError,
    Driver,
    LoginExpiredError,
    OptionsError,
    OutboundChunk,
    RejectedSendError,
    SessionClosedError,
    TransientSendError,
)
from connector_sidecar.problems import MAX_BODY_BYTES, ApiProblem, field_problem, read_json
from connector_sidecar.store import ConnectionRecord, InboundMessage, SessionRecord
from connector_sidecar.views import session_view

__all__ = ["SimDriver"]

SESSION_SECONDS = 480
MEDIA_REF_PREFIX = "sim:"
PLACEHOLDERS = {"image": "[image]", "voice": "[voice]", "video": "[video]", "file": "[file]"}


@dataclasses.dataclass
class _Faults:
    send_failures: int = 0
    send_rejects: int = 0
    send_latency_ms: int = 0
    expire_login: bool = False
    reply_window_closed: bool = False
    send_failures_after: int = 0
    upload_failures: int = 0
    upload_rejects: int = 0

    def view(self) -> SimFaultsView:
        return SimFaultsView(**dataclasses.asdict(self))


class SimDriver(Driver):
    kind: ClassVar[str] = "sim"
    display_name: ClassVar[str] = "Simulator"
    pairing: ClassVar[str] = "qr"
    capabilities: ClassVar[tuple[str, ...]] = (
        "receive_text",
        "send_text",
        "receive_media",
        "send_media",
        "direct_messages",
        "groups",
        "threads",
    )
    send_media_kinds: ClassVar[frozenset[str]] = frozenset({"image", "file", "video", "voice"})
    chunk_limit: ClassVar[int] = 2000
    options_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "autoConfirm": {
                "type": "boolean",
                "default": False,
                "description": "connect at once, no scan",
            },
            "accountId": {
                "type": "string",
                "description": "the account id to report when connected",
            },
            "chunkLimit": {
                "type": "integer",
                "minimum": 1,
                "description": "unused: the sim splits at 2000",
            },
        },
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._faults: dict[str, _Faults] = {}
        self.uploads: collections.Counter[str] = collections.Counter()

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        auto = options.get("autoConfirm", False)
        if not isinstance(auto, bool):
            raise OptionsError("$.options.autoConfirm", "must be true or false")
        account = options.get("accountId")
        if account is not None and (not isinstance(account, str) or not account):
            raise OptionsError("$.options.accountId", "must be a non-empty string")
        return options

    def _faults_of(self, connection_id: str) -> _Faults:
        return self._faults.setdefault(connection_id, _Faults())

    # -- pairing ----------------------------------------------------------------------------------

    async def pair(self, session: SessionRecord) -> None:
        if session.options.get("autoConfirm"):
            await self._confirm(session, None, None)
            return
        expires_at = session.expires_at or now_ms(self.ctx.clock) + SESSION_SECONDS * 1000
        if session.status == "pending":
            content = f"sim://pair/{session.session_id}"
            await self.ctx.update_session(
                session.session_id,
                status="qr_ready",
                qr_content=content,
                qr_image=qr_data_url(content),
                expires_at=expires_at,
            )
        remaining = expires_at / 1000 - self.ctx.clock()
        if remaining > 0:
            await asyncio.sleep(remaining)
        await self.ctx.update_session(
            session.session_id, status="expired", error="the QR code was not scanned in time"
        )

    async def _confirm(
        self, session: SessionRecord, account_id: str | None, display_name: str | None
    ) -> None:
        account = account_id or session.options.get("accountId") or f"sim-{session.connection_id}"
        await self.ctx.session_connected(
            session.session_id,
            account_id=account,
            display_name=display_name or session.display_name or "Sim account",
            credentials={"simToken": secrets.token_hex(8)},
        )

    # -- sending ----------------------------------------------------------------------------------

    async def send(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str:
        await self._vendor_checks(connection)
        return await self._record(
            connection, chunk.request_id, chunk.index, chunk.key, chunk.target, chunk.text, None
        )

    async def _vendor_checks(self, connection: ConnectionRecord) -> None:
        faults = self._faults_of(connection.connection_id)
        if faults.send_latency_ms:
            await asyncio.sleep(faults.send_latency_ms / 1000)
        if faults.expire_login:
            raise LoginExpiredError("the sim login has expired")
        if faults.reply_window_closed:
            raise DeferredSendError("the sim reply window is closed until the peer writes")
        if faults.send_rejects > 0:
            faults.send_rejects -= 1
            raise RejectedSendError("sim_rejected", "the sim refused this message (injected)")
        if faults.send_failures > 0:
            if faults.send_failures_after > 0:
                faults.send_failures_after -= 1
            else:
                faults.send_failures -= 1
                raise TransientSendError("the sim failed transiently (injected)")

    async def _record(
        self,
        connection: ConnectionRecord,
        request_id: str,
        index: int,
        key: str,
        target: SendTarget,
        text: str,
        attachment: dict[str, Any] | None,
    ) -> str:
        provider_id = "sim_" + secrets.token_hex(10)
        await self.ctx.store.db.transaction(
            lambda c: c.execute(
                "INSERT INTO sim_sent (connection_id, request_id, chunk_index, vendor_key, provider_message_id,"
                " peer_id, thread_id, content, sent_at, attachment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    connection.connection_id,
                    request_id,
                    index,
                    key,
                    provider_id,
                    target.peer_id,
                    target.thread_id,
                    text,
                    now_ms(self.ctx.clock),
                    json.dumps(attachment) if attachment is not None else None,
                ),
            )
        )
        return provider_id

    # -- media ------------------------------------------------------------------------------------

    @property
    def media_dir(self) -> Path:
        return self.ctx.settings.data_dir / "sim-media"

    def _store_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self.media_dir / sha256
        if not path.exists():
            partial = path.with_name(f".{sha256}.{os.getpid()}.part")
            partial.write_bytes(data)
            os.replace(partial, path)
        return sha256

    async def upload_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment
    ) -> dict[str, Any]:
        faults = self._faults_of(connection.connection_id)
        if faults.expire_login:
            raise LoginExpiredError("the sim login has expired")
        if faults.upload_rejects > 0:
            faults.upload_rejects -= 1
            raise RejectedSendError("sim_upload_rejected", "the sim refused this upload (injected)")
        if faults.upload_failures > 0:
            faults.upload_failures -= 1
            raise TransientSendError("the sim upload failed transiently (injected)")
        data = await asyncio.to_thread(part.read)
        sha256 = await asyncio.to_thread(self._store_bytes, data)
        self.uploads[connection.connection_id] += 1
        return {"fileId": sha256}

    async def send_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment, upload: dict[str, Any]
    ) -> str:
        await self._vendor_checks(connection)
        if not (self.media_dir / str(upload["fileId"])).exists():
            raise RejectedSendError("sim_file_unknown", "the sim has no such uploaded file")
        attachment = {
            "kind": part.kind,
            "fileName": part.file_name,
            "mimeType": part.mime_type,
            "size": part.size,
            "sha256": part.sha256,
        }
        return await self._record(
            connection, part.request_id, part.index, part.key, part.target, "", attachment
        )

    async def fetch_media(
        self, connection: ConnectionRecord, ref: str, *, max_bytes: int
    ) -> FetchedMedia:
        sha256 = ref.removeprefix(MEDIA_REF_PREFIX)
        path = self.media_dir / sha256
        if not ref.startswith(MEDIA_REF_PREFIX) or not sha256.isalnum():
            raise MediaRejectedError("bad_media_reference", "not a sim media reference")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise MediaRejectedError("sim_media_gone", "the sim no longer has this item") from None
        return FetchedMedia(data=data)

    async def find_sent(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str | None:
        """The sim can be asked by vendor key, as a vendor with a lookup API could."""
        row = await self.ctx.store.db.run(
            lambda c: c.execute(
                "SELECT provider_message_id FROM sim_sent WHERE connection_id = ? AND vendor_key = ?"
                " ORDER BY id LIMIT 1",
                (connection.connection_id, chunk.key),
            ).fetchone()
        )
        return str(row["provider_message_id"]) if row else None

    # -- routes -----------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/sim/sessions/{session_id}/scan", self._scan, methods=["POST"]),
            Route("/sim/connections/{connection_id}/messages", self._inbound, methods=["POST"]),
            Route("/sim/connections/{connection_id}/sent", self._sent, methods=["GET"]),
            Route("/sim/connections/{connection_id}/faults", self._set_faults, methods=["POST"]),
        ]

    async def _scan(self, request: Request) -> Response:
        session_id = request.path_params["session_id"]
        body = await read_json(request, SimScanRequest, empty_ok=True)
        session = await self.ctx.get_session(session_id)
        if session is None or session.kind != self.kind:
            raise ApiProblem(404, "session_not_found", f"no sim session {session_id!r}")
        if session.status not in ("pending", "qr_ready", "scanned"):
            raise ApiProblem(409, "session_not_scannable", f"the session is {session.status}")
        try:
            await self._confirm(session, body.account_id, body.display_name)
        except SessionClosedError as exc:  # cancelled or expired while this scan was on its way
            raise ApiProblem(409, "session_not_scannable", f"the session is {exc.status}") from None
        await self.ctx.cancel_pairing(session_id)
        session = await self.ctx.get_session(session_id)
        assert session is not None
        return _json(session_view(session))

    async def _connection(self, request: Request) -> ConnectionRecord:
        connection_id = request.path_params["connection_id"]
        connection = await self.ctx.get_connection(connection_id)
        return self._known(connection_id, connection)

    def _known(self, connection_id: str, connection: ConnectionRecord | None) -> ConnectionRecord:
        if connection is None or connection.kind != self.kind:
            raise ApiProblem(404, "connection_not_found", f"no sim connection {connection_id!r}")
        return connection

    def _accepting(self, connection_id: str) -> Callable[[ConnectionRecord | None], None]:
        """The check an injected message passes: a sim connection, connected."""

        def check(connection: ConnectionRecord | None) -> None:
            status = self._known(connection_id, connection).status
            if status != "connected":
                raise ApiProblem(409, "connection_not_ready", f"the connection is {status}")

        return check

    async def _inbound_media(self, body: SimInboundMessage) -> list[dict[str, Any]]:
        """Each injected item kept as the "vendor's" file, and its descriptor."""
        descriptors: list[dict[str, Any]] = []
        for index, item in enumerate(body.media or []):
            try:
                data = base64.b64decode(item.data, validate=True)
            except (binascii.Error, ValueError):
                raise field_problem(f"$.media[{index}].data", "is not base64") from None
            sha256 = await asyncio.to_thread(self._store_bytes, data)
            descriptors.append(
                {
                    "kind": item.kind,
                    "mimeType": guess_mime_type(data, item.kind, item.mime_type),
                    "fileName": item.file_name,
                    "size": len(data),
                    "ref": MEDIA_REF_PREFIX + sha256,
                }
            )
        return descriptors

    async def _inbound(self, request: Request) -> Response:
        limit = -(-self.ctx.settings.media_max_bytes // 3) * 4 + MAX_BODY_BYTES
        body = await read_json(request, SimInboundMessage, limit=limit, vendor_text=True)
        connection_id = request.path_params["connection_id"]
        accepting = self._accepting(connection_id)
        if body.media:  # refused before its files are kept; otherwise checked as it is stored
            accepting(await self.ctx.get_connection(connection_id))
        if (faults := self._faults.get(connection_id)) is not None:
            # A message from the peer reopens the reply window (before it can flush a send).
            faults.reply_window_closed = False
        message_id = body.message_id or "sim_" + secrets.token_hex(10)
        media = await self._inbound_media(body)
        message_type = body.message_type
        content = body.content
        if media and message_type == "text" and not content:
            message_type = media[0]["kind"]
            content = PLACEHOLDERS.get(message_type, "[file]")
        [result] = await self.ctx.ingest(
            connection_id,
            [
                InboundMessage(
                    message_id=message_id,
                    peer_id=body.peer_id,
                    peer_type=body.peer_type,
                    user_id=body.user_id or body.peer_id,
                    thread_id=body.thread_id,
                    message_type=message_type,
                    content=content,
                    metadata={"media": media} if media else {},
                )
            ],
            check=accepting,
        )
        stored_id = result.message.message_id  # as stored: repaired if it had to be
        return _json(SimInboundAccepted(event_id=result.event_id, message_id=stored_id), status=202)

    async def _sent(self, request: Request) -> Response:
        connection = await self._connection(request)
        rows = await self.ctx.store.db.run(
            lambda c: c.execute(
                "SELECT * FROM sim_sent WHERE connection_id = ? ORDER BY id",
                (connection.connection_id,),
            ).fetchall()
        )
        items = [
            SimSentItem(
                request_id=r["request_id"],
                chunk_index=r["chunk_index"],
                provider_message_id=r["provider_message_id"],
                peer_id=r["peer_id"],
                thread_id=r["thread_id"],
                content=r["content"],
                sent_at=iso_ms(r["sent_at"]) or "",
                **_attachment_fields(r["attachment"]),
            )
            for r in rows
        ]
        return _json(SimSentList(items=items))

    async def _set_faults(self, request: Request) -> Response:
        body = await read_json(request, SimFaults)
        connection = await self._connection(request)
        faults = self._faults_of(connection.connection_id)
        for field in dataclasses.fields(_Faults):
            value = getattr(body, field.name)
            if value is not None:
                setattr(faults, field.name, value)
        if body.expire_login:
            faults.expire_login = False  # the login is dead now; a re-pair starts clean
            await self.ctx.set_status(
                connection.connection_id, "auth_expired", last_error="the sim login has expired"
            )
        return _json(faults.view())


def _attachment_fields(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    value = json.loads(raw)
    return {
        "kind": value.get("kind"),
        "file_name": value.get("fileName"),
        "mime_type": value.get("mimeType"),
        "size": value.get("size"),
        "sha256": value.get("sha256"),
    }


def _json(value: Any, *, status: int = 200) -> Response:
    return Response(encode(value), status_code=status, media_type="application/json")
