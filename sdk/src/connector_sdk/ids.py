"""Deterministic send requestIds, built exactly as existing hosts build them.

A requestId names one logical reply. Building it from what the reply *is* (the conversation,
the inbound message it answers, its text) rather than from a random number means a host that
crashes and handles the same inbound event again sends the same requestId, and the sidecar's
ledger turns the second send into a ``duplicate: true`` instead of a second message.
"""

from __future__ import annotations

import hashlib

__all__ = ["request_id_for"]

_DIGEST_CHARS = 24


def request_id_for(
    channel: str,
    session_id: str,
    message_id: str | None = None,
    *,
    content: str | None,
    inbound_message_id: str | None = None,
    peer_id: str | None,
    finish_reason: str | None = "stop",
) -> str:
    """The requestId ``out_{channel}:{session_id}:{message_id}``.

    When ``message_id`` is None or blank it is the first 24 hex characters of the SHA-256 of
    ``content|inbound_message_id|peer_id|finish_reason`` (UTF-8, None as empty), which is what
    hosts that predate the SDK compute; the result must stay byte-for-byte the same.
    """
    if message_id is None or not message_id.strip():
        parts = (content, inbound_message_id, peer_id, finish_reason)
        joined = "|".join("" if part is None else part for part in parts)
        message_id = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    return f"out_{channel}:{session_id}:{message_id}"
