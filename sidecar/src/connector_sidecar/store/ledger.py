"""The send ledger: one row per requestId, so a send reaches the vendor at most once per chunk.

``provider_ids`` grows by one as each part (a text chunk, then each attachment) is accepted by
the vendor, in the same commit, so a retry after a crash or a 503 resumes after the parts
already sent. ``parts`` (JSON) describes the attachments (``attachments``: kind, name, type,
size, sha256; their bytes are files, not rows) and holds each finished upload (``uploads``: the
attachment's index → the driver's record), written as soon as the vendor has the bytes, so a
retry never uploads a finished part again either.

``chunks_tried`` counts the chunks handed to the vendor at least once; it is raised before each
vendor call, in the commit that precedes the call anyway (``begin`` for the first chunk, the
previous chunk's ``record_chunk`` for the next), so it costs no commit of its own. A resumed
send whose next chunk is below ``chunks_tried`` knows that chunk may have reached the vendor
before a crash (a SIGKILL between the vendor's answer and its commit), and asks the vendor
before posting it again (``Driver.find_sent``).

Statuses: ``pending`` (started or interrupted; resumable), ``sent``, ``deferred`` (waiting for the
peer to write again), ``failed`` (the vendor refused; final), ``expired`` (a deferred send dropped).

The ledger is also the lock for ``/send`` across replicas: a send runs in the replica that
``owner``s its entry, until ``owner_until`` or until that replica's heartbeat stops. The same
requestId arriving at another replica meanwhile waits for the stored result or is told the send
is in progress; after the owner dies, a retry anywhere takes the entry over and resumes after
the chunks already recorded. An ended send (or one interrupted by a 503) has no owner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from typing import Any

import msgspec

from connector_contracts import SendRequest
from connector_sidecar._clock import Clock, now_ms
from connector_sidecar.store._sql import Connection
from connector_sidecar.store.replicas import Holder

__all__ = ["LedgerEntry", "SendLedger", "fingerprint_of"]

_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(SendRequest)
_ids_decoder = msgspec.json.Decoder(list[str])
_parts_decoder = msgspec.json.Decoder(dict[str, Any])


_last_seq = 0
_seq_lock = threading.Lock()


def _next_seq() -> int:
    """Increasing within this process, roughly in time order across replicas: the ledger's
    insertion order (``seq``), for deferred sends flushed in the order they came."""
    global _last_seq
    with _seq_lock:
        _last_seq = max(time.time_ns(), _last_seq + 1)
        return _last_seq


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
    owner: str | None = None  # the replica running it now, if any
    parts: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def attachments(self) -> list[dict[str, Any]]:
        value = self.parts.get("attachments")
        return value if isinstance(value, list) else []

    def upload_of(self, attachment_index: int) -> dict[str, Any] | None:
        uploads = self.parts.get("uploads")
        record = uploads.get(str(attachment_index)) if isinstance(uploads, dict) else None
        return record if isinstance(record, dict) else None

    chunks_tried: int = 0  # chunks handed to the vendor at least once (see the module docstring)

    @property
    def next_chunk_may_be_sent(self) -> bool:
        """Whether the next chunk was handed to the vendor before, its answer never recorded."""
        return self.chunks_tried > len(self.provider_ids)


def _row(row: Any) -> LedgerEntry:
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
        owner=row["owner"],
        parts=_parts_decoder.decode(row["parts"] or "{}"),
        chunks_tried=row["chunks_tried"],
    )


class SendLedger:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def get(self, conn: Connection, request_id: str) -> LedgerEntry | None:
        row = conn.execute(
            "SELECT * FROM send_ledger WHERE request_id = ?", (request_id,)
        ).fetchone()
        return _row(row) if row else None

    def create(
        self,
        conn: Connection,
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
            " chunk_count, created_at, updated_at, seq, parts)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
            (
                request.request_id,
                request.connection_id,
                request.target.peer_id,
                fingerprint or fingerprint_of(request),
                _encoder.encode(request),
                chunk_count,
                now,
                now,
                _next_seq(),
                _encoder.encode(parts).decode(),
            ),
        )
        entry = self.get(conn, request.request_id)
        assert entry is not None
        return entry

    def begin(
        self,
        conn: Connection,
        request: SendRequest,
        chunk_count: int,
        holder: Holder,
        fingerprint: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> tuple[LedgerEntry, bool]:
        """The entry of ``request`` (created if new, as :meth:`create`), and whether ``holder``
        now owns it.

        Only a ``pending`` entry with the same fingerprint, owned by nobody live, is taken; the
        caller reads the rest (a conflict, a final result, a send running elsewhere). Taken, its
        next chunk is marked as tried (the caller calls the vendor next); the entry returned is
        as it was before, so ``next_chunk_may_be_sent`` tells of an earlier attempt.
        """
        fingerprint = fingerprint or fingerprint_of(request)
        now = now_ms(self.clock)
        parts = {"attachments": attachments, "uploads": {}} if attachments else {}
        cursor = conn.execute(
            "INSERT INTO send_ledger (request_id, connection_id, peer_id, fingerprint, request,"
            " status, chunk_count, created_at, updated_at, seq, parts, owner, owner_until)"
            " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (request_id) DO NOTHING",
            (
                request.request_id,
                request.connection_id,
                request.target.peer_id,
                fingerprint,
                _encoder.encode(request),
                chunk_count,
                now,
                now,
                _next_seq(),
                _encoder.encode(parts).decode(),
                holder.replica_id,
                holder.until,
            ),
        )
        created = cursor.rowcount == 1
        owned = created or self.own(conn, request.request_id, holder, "pending")
        entry = self.get(conn, request.request_id)
        assert entry is not None
        owned = owned and entry.fingerprint == fingerprint
        if owned and entry.status == "pending":
            self.mark_next_tried(conn, entry)
        return entry, owned

    def mark_next_tried(self, conn: Connection, entry: LedgerEntry) -> None:
        """Before the vendor call of ``entry``'s next chunk (its owner calls next)."""
        if entry.chunks_tried <= len(entry.provider_ids):
            self.set_tried(conn, entry.request_id, len(entry.provider_ids) + 1)

    def set_tried(self, conn: Connection, request_id: str, count: int) -> None:
        """``count`` chunks were handed to the vendor; lower it when the vendor said it did not
        post the next one (a refusal, a closed reply window)."""
        conn.execute(
            "UPDATE send_ledger SET chunks_tried = ? WHERE request_id = ?", (count, request_id)
        )

    def own(self, conn: Connection, request_id: str, holder: Holder, status: str) -> bool:
        """Take the entry if it has ``status`` and no live owner (or is ``holder``'s already)."""
        cursor = conn.execute(
            _OWN, (holder.replica_id, holder.until, request_id, status, *holder.free_params())
        )
        return cursor.rowcount == 1

    def release(self, conn: Connection, request_id: str, replica_id: str) -> None:
        conn.execute(
            "UPDATE send_ledger SET owner = NULL, owner_until = NULL"
            " WHERE request_id = ? AND owner = ?",
            (request_id, replica_id),
        )

    def record_chunk(
        self,
        conn: Connection,
        request_id: str,
        index: int,
        provider_id: str,
        owner_until: int | None = None,
        *,
        next_tried: bool = False,
    ) -> LedgerEntry:
        """Record chunk ``index``'s vendor id; ``next_tried``: the next chunk's call follows."""
        entry = self.get(conn, request_id)
        if entry is None:
            raise KeyError(request_id)
        if index != len(entry.provider_ids):
            raise RuntimeError(f"chunk {index} recorded out of order for {request_id!r}")
        ids = [*entry.provider_ids, provider_id]
        now = now_ms(self.clock)
        conn.execute(
            "UPDATE send_ledger SET provider_ids = ?, updated_at = ?,"
            " owner_until = COALESCE(?, owner_until) WHERE request_id = ?",
            (_encoder.encode(ids).decode(), now, owner_until, request_id),
        )
        conn.execute(
            "UPDATE connections SET last_outbound_at = ? WHERE connection_id = ?",
            (now, entry.connection_id),
        )
        tried = max(entry.chunks_tried, len(ids))
        if next_tried:
            tried = max(tried, len(ids) + 1)
        if tried != entry.chunks_tried:
            self.set_tried(conn, request_id, tried)
        return dataclasses.replace(entry, provider_ids=ids, updated_at=now, chunks_tried=tried)

    def record_upload(
        self,
        conn: Connection,
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
        conn: Connection,
        request_id: str,
        status: str,
        *,
        http_status: int | None = None,
        error_code: str | None = None,
        error_detail: str | None = None,
    ) -> LedgerEntry:
        conn.execute(
            "UPDATE send_ledger SET status = ?, http_status = ?, error_code = ?, error_detail = ?,"
            " updated_at = ?, owner = NULL, owner_until = NULL WHERE request_id = ?",
            (status, http_status, error_code, error_detail, now_ms(self.clock), request_id),
        )
        entry = self.get(conn, request_id)
        if entry is None:
            raise KeyError(request_id)
        return entry

    def deferred_for(self, conn: Connection, connection_id: str, peer_id: str) -> list[LedgerEntry]:
        rows = conn.execute(
            "SELECT * FROM send_ledger WHERE connection_id = ? AND peer_id = ? AND status = 'deferred'"
            " ORDER BY created_at, seq",
            (connection_id, peer_id),
        )
        return [_row(r) for r in rows]

    def expire_deferred(self, conn: Connection, older_than_ms: int) -> list[LedgerEntry]:
        """Expire the deferred sends created before ``older_than_ms`` that no replica is
        flushing; returns them as they are now (``expired``)."""
        rows = conn.execute(
            "SELECT request_id FROM send_ledger WHERE status = 'deferred' AND created_at < ?"
            " AND owner IS NULL FOR UPDATE",
            (older_than_ms,),
        ).fetchall()
        expired: list[LedgerEntry] = []
        for (request_id,) in rows:
            cursor = conn.execute(
                "UPDATE send_ledger SET status = 'expired', error_code = 'deferred_expired',"
                " error_detail = 'the peer did not write again within 24 h', updated_at = ?"
                " WHERE request_id = ? AND status = 'deferred'",
                (now_ms(self.clock), request_id),
            )
            entry = self.get(conn, request_id) if cursor.rowcount == 1 else None
            if entry is not None:
                expired.append(entry)
        return expired

    def purge(self, conn: Connection, older_than_ms: int, *, limit: int = 500) -> int:
        """Delete entries not touched since ``older_than_ms`` (at least 24 h ago), ``limit`` at most.

        Final entries, and ``pending`` ones a host abandoned after a 503 (a send in progress
        touches its entry with every chunk). ``deferred`` entries expire first.
        """
        cursor = conn.execute(
            "DELETE FROM send_ledger WHERE request_id IN (SELECT request_id FROM send_ledger"
            " WHERE status IN ('sent', 'failed', 'expired', 'pending') AND updated_at < ? LIMIT ?)",
            (older_than_ms, limit),
        )
        return cursor.rowcount


_OWN = (
    "UPDATE send_ledger SET owner = ?, owner_until = ? WHERE request_id = ? AND status = ?"
    " AND (owner IS NULL OR owner = ? OR owner_until <= ?"
    " OR owner NOT IN (SELECT replica_id FROM replicas WHERE seen_at > ?))"
)
