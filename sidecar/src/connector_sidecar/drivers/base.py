"""The one small interface every vendor driver implements, and the errors a send can raise.

A driver is constructed once per sidecar with a :class:`~connector_sidecar.runtime.DriverContext`
(the store, settings, and callbacks into the runtime). The runtime calls:

- :meth:`Driver.pair` as a background task per pairing session, until the session is terminal
  (``ctx.session_connected`` raises :class:`SessionClosedError` if the host cancelled it first);
- :meth:`Driver.run` as a background task per live connection (the inbound loop); it hands each
  batch of vendor messages *and* the new vendor cursor to ``ctx.ingest`` in one transaction
  before acknowledging the vendor or polling again;
- :meth:`Driver.send` once per chunk with the chunk's vendor idempotency key;
- :meth:`Driver.upload_attachment` then :meth:`Driver.send_attachment` once per attachment part
  (the ledger records each step; see ``attachments``), :meth:`Driver.fetch_media` for the media
  cache, :meth:`Driver.typing` for ``POST /typing``;
- :meth:`Driver.logout` when the host logs a connection out.

Send errors tell the ledger what happened::

    SendError
    ├── TransientSendError   network, 5xx, rate limit: retried, then 503 provider_unavailable
    ├── RejectedSendError    the vendor refused: 502 provider_rejected, recorded, final
    ├── DeferredSendError    the reply window is closed: 202 deferred until the peer writes
    └── LoginExpiredError    the login is dead: connection auth_expired, 409 connection_not_ready
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from connector_contracts import ConnectorInfo, SendTarget
from connector_sidecar._text import storable_text

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from connector_sidecar.drivers.attachments import FetchedMedia, OutboundAttachment
    from connector_sidecar.runtime import DriverContext
    from connector_sidecar.store import ConnectionRecord, SessionRecord

__all__ = [
    "DeferredSendError",
    "Driver",
    "LoginExpiredError",
    "OptionsError",
    "OutboundChunk",
    "RejectedSendError",
    "SendError",
    "SessionClosedError",
    "TransientSendError",
]


class SendError(Exception):
    """Base of what :meth:`Driver.send` raises; ``str()`` is safe to show to a host and to store.

    The message often quotes the vendor (its errmsg), so it is made storable here, once for all
    drivers: a lone surrogate becomes U+FFFD (``_text``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(storable_text(message))


class TransientSendError(SendError):
    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RejectedSendError(SendError):
    def __init__(self, code: str, detail: str) -> None:
        code, detail = storable_text(code), storable_text(detail)
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class DeferredSendError(SendError):
    """The vendor will take the message only after the peer writes again (WeChat ret -2)."""


class LoginExpiredError(SendError):
    """The vendor says the login is dead; a person must pair again."""


class SessionClosedError(RuntimeError):
    """Raised by ``ctx.session_connected`` for a session already terminal (the host cancelled
    it, or it expired): the login is not stored and the connection is left as it was."""

    def __init__(self, session: SessionRecord) -> None:
        super().__init__(
            f"pairing session {session.session_id} is {session.status}; its login is not stored"
        )
        self.session_id = session.session_id
        self.status = session.status


class OptionsError(ValueError):
    """A session's ``options`` fail the kind's schema; ``path`` is a JSON path like ``$.options.appId``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboundChunk:
    request_id: str
    index: int
    count: int
    text: str
    key: str  # the vendor idempotency key: derived from request_id and index, same on every retry
    target: SendTarget
    message_type: str = "text"
    reply_to_message_id: str | None = None


class Driver(abc.ABC):
    kind: ClassVar[str]
    display_name: ClassVar[str]
    pairing: ClassVar[str]
    capabilities: ClassVar[tuple[str, ...]]
    chunk_limit: ClassVar[int]
    options_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    key_max_length: ClassVar[int] = 50
    # The attachment kinds ``send_attachment`` takes (with ``send_media`` in capabilities).
    send_media_kinds: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx

    @classmethod
    def static_info(cls, *, enabled: bool) -> ConnectorInfo:
        """What ``GET /connectors`` says of this kind, also when it is not enabled."""
        return ConnectorInfo(
            kind=cls.kind,
            display_name=cls.display_name,
            pairing=cls.pairing,
            capabilities=list(cls.capabilities),
            options_schema=cls.options_schema,
            enabled=enabled,
        )

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Check and normalise a session's options; raise :class:`OptionsError` naming the field."""
        return options

    @abc.abstractmethod
    async def pair(self, session: SessionRecord) -> None:
        """Drive one pairing session to a terminal status (runs as a background task).

        Update the session with ``ctx.update_session`` as it progresses and finish with
        ``ctx.session_connected`` or a terminal status. Called again after a restart for a
        session that was not terminal; ``session.state`` holds what the driver saved.
        """

    async def submit_verify_code(self, session: SessionRecord, code: str) -> None:
        """Hand a verify code to a running pairing (WeChat); the runtime has checked the status."""
        raise NotImplementedError

    async def run(self, connection: ConnectionRecord) -> None:
        """The inbound loop of one live connection; cancelled on stop, logout or re-pair."""
        await asyncio.Event().wait()

    @abc.abstractmethod
    async def send(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str:
        """Send one chunk; return the vendor's message id or raise a :class:`SendError`."""

    async def find_sent(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str | None:
        """The vendor's id of a message already posted with ``chunk.key``, if the vendor can say.

        Asked only when resuming a chunk that was handed to the vendor before without its
        answer being recorded (a crash between the two). None: not found, or the vendor has no
        way to look a message up by its key; the chunk is then posted again with the same key,
        which vendors that honour it (Feishu's ``uuid``, within an hour) turn into no new message.
        """
        return None

    async def logout(self, connection: ConnectionRecord) -> None:  # noqa: B027 - optional hook
        """Tell the vendor, where it has a logout. Credentials are deleted by the runtime."""

    def attachment_problem(self, kind: str, mime_type: str, size: int) -> tuple[int, str] | None:
        """Why this vendor cannot take an attachment, checked before any upload: ``(413,
        reason)`` for one too large for it, ``(422, reason)`` for a kind or type it refuses."""
        if kind not in self.send_media_kinds:
            return 422, f"{self.display_name} connections cannot send {kind} attachments"
        return None

    async def upload_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment
    ) -> dict[str, Any]:
        """Upload one attachment's bytes; return a small JSON-able record of what the vendor
        needs to send it (recorded in the ledger, so a retry never uploads it twice). Raises a
        :class:`SendError` like :meth:`send`."""
        raise RejectedSendError("unsupported", f"{self.display_name} cannot send attachments")

    async def send_attachment(
        self, connection: ConnectionRecord, part: OutboundAttachment, upload: dict[str, Any]
    ) -> str:
        """Post the message that carries an uploaded attachment; return the vendor's id."""
        raise RejectedSendError("unsupported", f"{self.display_name} cannot send attachments")

    async def fetch_media(
        self, connection: ConnectionRecord, ref: str, *, max_bytes: int
    ) -> FetchedMedia:
        """The bytes of an inbound media item (decrypted), by the ``ref`` its descriptor had.
        Raises a ``MediaError``: too large, refused by the vendor, or unavailable for now."""
        from connector_sidecar.drivers.attachments import MediaRejectedError

        raise MediaRejectedError("unsupported", f"{self.display_name} media cannot be fetched")

    async def typing(self, connection: ConnectionRecord, target: SendTarget, *, on: bool) -> bool:
        """Show (``on``) or stop the typing indicator; False where the vendor has none."""
        return False

    def prepare_text(self, content: str, message_type: str) -> str:
        """Turn the host's content into what the vendor shows well (before chunking).

        A pure function of its arguments: for long content it runs in a worker thread.
        """
        return content

    def routes(self) -> list[BaseRoute]:
        """Extra HTTP routes: vendor callbacks under ``/webhooks/``, the sim's ``/sim/``."""
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the driver holds (HTTP clients) at shutdown."""
