"""The send ledger: one row per requestId, so a send reaches the vendor at most once per chunk.

``provider_ids`` grows by one as each part (a text chunk, then each attachment) is accepted by
the vendor, in the same commit, so a retry after a crash or a 503 resumes after the parts
already sent. ``parts`` (JSON) describes the attachments (``attachments``: kind, name, type,
size, sha256; their bytes are files, not rows) and holds each finished upload (``uploads``: the
attachment's index → the driver's record), written as soon as the vendor has the bytes, so a
retry never uploads a finished part again either.

Statuses: ``pending`` (started or interrupted; resumable), ``sent``, ``deferred`` (waiting for the
peer to write again), ``failed`` (the vendor refused; final), ``expired`` (a deferred send dropped).
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
from typing import Any

import msgspec

from connector_contracts import SendRequest
from connector_sidecar._clock import Clock, now_ms

__all__ = ["LedgerEntry", "SendLedger", "fingerprint_of"]

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(SendRequest)
_ids_decoder = msgspec.json.Decoder(list[str])
_parts_decoder = msgspec.json.Decoder(dict[str, Any])


def fingerprint_of(request: SendRequest, attachments: list[str] | None = None) -> str:
    """What makes two sends with one requestId "the same": connection, target, content, type,
    and the attachments (``attachments``: one digest each, by content; see ``outbound_media``).
    A send without attachments keeps the fingerprint it had before attachments existed."""
    fields: list[Any] = [
        request.connection_id,
        request.target,
        request.content,
        request.message_type,
    ]
    if attachments:
        fields.append(attachments)
    return hashlib.sha256(_encoder.encode(fields)).hexdigest()


@dataclasses.dataclass(frozen=True, kw_only=True)
class LedgerEntry:
    request_id: str
    connection_id: str
    peer_id: str
    fingerprint: str
    request: SendRequest = dataclasses.field(repr=False)
    status: str
    chunk_count: int
    provider_ids: list[str]
    http_status: int | None
    error_code: str | None
    error_detail: str | None
    created_at: int
    updated_at: int
    parts: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def attachments(self) -> list[dict[str, Any]]:
        value = self.parts.get("attachments")
        return value if isinstance(value, list) else []

    def upload_of(self, attachment_index: int) -> dict[str, Any] | None:
        uploads = self.parts.get("uploads")
        record = uploads.get(str(attachment_index)) if isinstance(uploads, dict) else None
        return record if isinstance(record, dict) else None


def _row(row: sqlite3.Row) -> LedgerEntry:
    return LedgerEntry(
        request_id=row["request_id"],
        connection_id=row["connection_id"],
        peer_id=row["peer_id"],
        fingerprint=row["fingerprint"],
        request=_request_decoder.decode(row["request"]),
        status=row["status"],
        chunk_count=row["chunk_count"],
        provider_ids=_ids_decoder.decode(row["provider_ids"]),
        http_status=row["http_status"],
        error_code=row["error_code"],
        error_detail=row["error_detail"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        parts=_parts_decoder.decode(row["parts"] or "{}"),
    )


class SendLedger:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def get(self, conn: sqlite3.Connection, request_id: str) -> LedgerEntry | None:
        row = conn.execute(
            "SELECT * FROM send_ledger WHERE request_id = ?", (request_id,)
        ).fetchone()
        return _row(row) if row else None

    def create(
        self,
        conn: sqlite3.Connection,
        request: SendRequest,
        chunk_count: int,
        *,
        fingerprint: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> LedgerEntry:
        """A new pending entry; ``request`` as it should be kept (without attachment bytes),
        ``chunk_count`` counting every part, ``attachments`` their descriptions."""
        now = now_ms(self.clock)
        parts = {"attachments": attachments, "uploads": {}} if attachments else {}
        conn.execute(
            "INSERT INTO send_ledger (request_id, connection_id, peer_id, fingerprint, request, status,"
            " chunk_count, created_at, updated_at, parts) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
            (
                request.request_id,
                request.connection_id,
                request.target.peer_id,
                fingerprint or fingerprint_of(request),
                _encoder.encode(request),
                chunk_count,
                now,
                now,
                _encoder.encode(parts).decode(),
            ),
        )
        entry = self.get(conn, request.request_id)
        assert entry is not None
        return entry

    def record_chunk(
        self, conn: sqlite3.Connection, request_id: str, index: int, provider_id: str
    ) -> LedgerEntry:
        entry = self.get(conn, request_id)
        if entry is None:
            raise KeyError(request_id)
        if index != len(entry.provider_ids):
            raise RuntimeError(f"chunk {index} recorded out of order for {request_id!r}")
        ids = [*entry.provider_ids, provider_id]
        now = now_ms(self.clock)
        conn.execute(
            "UPDATE send_ledger SET provider_ids = ?, updated_at = ? WHERE request_id = ?",
            (_encoder.encode(ids).decode(), now, request_id),
        )
        conn.execute(
            "UPDATE connections SET last_outbound_at = ? WHERE connection_id = ?",
            (now, entry.connection_id),
        )
        return dataclasses.replace(entry, provider_ids=ids, updated_at=now)

    def record_upload(
        self,
        conn: sqlite3.Connection,
        request_id: str,
        attachment_index: int,
        record: dict[str, Any],
    ) -> LedgerEntry:
        """An attachment's bytes reached the vendor: keep what posting its message needs."""
        entry = self.get(conn, request_id)
        if entry is None:
            raise KeyError(request_id)
        uploads = dict(entry.parts.get("uploads") or {})
        uploads[str(attachment_index)] = record
        parts = {**entry.parts, "uploads": uploads}
        now = now_ms(self.clock)
        conn.execute(
            "UPDATE send_ledger SET parts = ?, updated_at = ? WHERE request_id = ?",
            (_encoder.encode(parts).decode(), now, request_id),
        )
        return dataclasses.replace(entry, parts=parts, updated_at=now)

    def set_status(
        self,
        conn: sqlite3.Connection,
        request_id: str,
        status: str,
        *,
        http_status: int | None = None,
        error_code: str | None = None,
        error_detail: str | None = None,
    ) -> LedgerEntry:
        conn.execute(
            "UPDATE send_ledger SET status = ?, http_status = ?, error_code = ?, error_detail = ?, updated_at = ?"
            " WHERE request_id = ?",
            (status, http_status, error_code, error_detail, now_ms(self.clock), request_id),
        )
        entry = self.get(conn, request_id)
        if entry is None:
            raise KeyError(request_id)
        return entry

    def deferred_for(
        self, conn: sqlite3.Connection, connection_id: str, peer_id: str
    ) -> list[LedgerEntry]:
        rows = conn.execute(
            "SELECT * FROM send_ledger WHERE connection_id = ? AND peer_id = ? AND status = 'deferred'"
            " ORDER BY created_at, rowid",
            (connection_id, peer_id),
        )
        return [_row(r) for r in rows]

    def expire_deferred(self, conn: sqlite3.Connection, older_than_ms: int) -> int:
        cursor = conn.execute(
            "UPDATE send_ledger SET status = 'expired', error_code = 'deferred_expired',"
            " error_detail = 'the peer did not write again within 24 h', updated_at = ?"
            " WHERE status = 'deferred' AND created_at < ?",
            (now_ms(self.clock), older_than_ms),
        )
        return cursor.rowcount

    def purge(self, conn: sqlite3.Connection, older_than_ms: int, *, limit: int = 500) -> int:
        """Delete entries not touched since ``older_than_ms`` (at least 24 h ago), ``limit`` at most.

        Final entries, and ``pending`` ones a host abandoned after a 503 (a send in progress
        touches its entry with every chunk). ``deferred`` entries expire first.
        """
        cursor = conn.execute(
            "DELETE FROM send_ledger WHERE rowid IN (SELECT rowid FROM send_ledger"
            " WHERE status IN ('sent', 'failed', 'expired', 'pending') AND updated_at < ? LIMIT ?)",
            (older_than_ms, limit),
        )
        return cursor.rowcount
