"""The ``media`` table: every inbound media item by ``mediaId``, and the state of its cached copy.

A row is written in the transaction that stores the message carrying the item (so a host that
sees the event can always fetch it); ``ref`` is the driver's reference to fetch the bytes from
the vendor. The bytes themselves are a file under the data directory (``media.py`` owns them);
``cached_bytes`` and ``sha256`` describe that file and are null while there is none. Eviction
takes the oldest ``fetched_at`` first.

Portable SQL only (``?`` placeholders, ``ON CONFLICT DO NOTHING``, no ``rowid``), for the
store's other backend; ``conn`` is whatever connection the store's database thread hands out
(typed ``Any`` here so that either backend's connection fits).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from connector_sidecar._clock import Clock, now_ms

__all__ = ["MediaRecord", "MediaTable"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class MediaRecord:
    media_id: str
    connection_id: str
    message_id: str
    kind: str
    mime_type: str | None
    file_name: str | None
    size: int | None
    ref: str = dataclasses.field(repr=False)  # may hold a vendor key
    cached_bytes: int | None
    sha256: str | None
    fetched_at: int | None
    created_at: int

    @property
    def cached(self) -> bool:
        return self.cached_bytes is not None


def _record(row: Any) -> MediaRecord:
    return MediaRecord(
        media_id=row["media_id"],
        connection_id=row["connection_id"],
        message_id=row["message_id"],
        kind=row["kind"],
        mime_type=row["mime_type"],
        file_name=row["file_name"],
        size=row["size"],
        ref=row["ref"],
        cached_bytes=row["cached_bytes"],
        sha256=row["sha256"],
        fetched_at=row["fetched_at"],
        created_at=row["created_at"],
    )


class MediaTable:
    """Queries on ``media``; each takes the connection of the database thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def register(
        self,
        conn: Any,
        connection_id: str,
        message_id: str,
        descriptor: dict[str, Any],
    ) -> None:
        """Record one descriptor (with ``mediaId`` and ``ref``); a redelivery changes nothing."""
        size = descriptor.get("size")
        conn.execute(
            "INSERT INTO media (media_id, connection_id, message_id, kind, mime_type, file_name,"
            " size, ref, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (media_id) DO NOTHING",
            (
                descriptor["mediaId"],
                connection_id,
                message_id,
                descriptor["kind"],
                descriptor.get("mimeType"),
                descriptor.get("fileName"),
                size if isinstance(size, int) and not isinstance(size, bool) else None,
                descriptor["ref"],
                now_ms(self.clock),
            ),
        )

    def get(self, conn: Any, media_id: str) -> MediaRecord | None:
        row = conn.execute("SELECT * FROM media WHERE media_id = ?", (media_id,)).fetchone()
        return _record(row) if row else None

    def mark_cached(
        self,
        conn: Any,
        media_id: str,
        *,
        cached_bytes: int,
        sha256: str,
        mime_type: str | None,
        file_name: str | None,
    ) -> MediaRecord | None:
        """The file is in place: record its size and hash (and what the vendor said of it)."""
        conn.execute(
            "UPDATE media SET cached_bytes = ?, sha256 = ?, fetched_at = ?,"
            " mime_type = COALESCE(mime_type, ?), file_name = COALESCE(file_name, ?)"
            " WHERE media_id = ?",
            (cached_bytes, sha256, now_ms(self.clock), mime_type, file_name, media_id),
        )
        return self.get(conn, media_id)

    def mark_evicted(self, conn: Any, media_ids: list[str]) -> None:
        for media_id in media_ids:
            conn.execute(
                "UPDATE media SET cached_bytes = NULL, fetched_at = NULL WHERE media_id = ?",
                (media_id,),
            )

    def cached_total(self, conn: Any) -> int:
        row = conn.execute(
            "SELECT COALESCE(SUM(cached_bytes), 0) AS total FROM media WHERE cached_bytes IS NOT NULL"
        ).fetchone()
        return int(row["total"])

    def purge(self, conn: Any, older_than_ms: int, *, limit: int = 500) -> list[str]:
        """Forget items stored before ``older_than_ms`` (``limit`` at most); their ids, so the
        caller removes their files."""
        rows = conn.execute(
            "SELECT media_id FROM media WHERE created_at < ? ORDER BY created_at LIMIT ?",
            (older_than_ms, limit),
        ).fetchall()
        ids = [str(row["media_id"]) for row in rows]
        for media_id in ids:
            conn.execute("DELETE FROM media WHERE media_id = ?", (media_id,))
        return ids

    def oldest_cached(self, conn: Any, limit: int) -> list[MediaRecord]:
        rows = conn.execute(
            "SELECT * FROM media WHERE cached_bytes IS NOT NULL ORDER BY fetched_at, media_id"
            " LIMIT ?",
            (limit,),
        )
        return [_record(r) for r in rows]
