"""Placeholder until the feishu driver lands: it is listed but refuses to pair or send."""

from __future__ import annotations

from typing import ClassVar

from connector_sidecar.drivers.base import Driver, OutboundChunk, RejectedSendError
from connector_sidecar.store import ConnectionRecord, SessionRecord

__all__ = ["FeishuDriver"]


class FeishuDriver(Driver):
    kind: ClassVar[str] = "feishu"
    display_name: ClassVar[str] = "Feishu"
    pairing: ClassVar[str] = "qr"
    capabilities: ClassVar[tuple[str, ...]] = ("receive_text", "send_text", "direct_messages")
    chunk_limit: ClassVar[int] = 2000

    async def pair(self, session: SessionRecord) -> None:
        await self.ctx.update_session(
            session.session_id, status="error", error="not implemented yet"
        )

    async def send(self, connection: ConnectionRecord, chunk: OutboundChunk) -> str:
        raise RejectedSendError("not_implemented", "this connector is not implemented yet")
