"""Pairing sessions: one vendor login attempt for a connection."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

import msgspec

from connector_contracts import TERMINAL_SESSION_STATUSES
from connector_sidecar._clock import Clock, now_ms
from connector_sidecar._secret import without_secrets
from connector_sidecar.store._rows import record_from_row, update_row
from connector_sidecar.store._sql import Connection

__all__ = ["SessionRecord", "Sessions", "new_session_id"]

_json = msgspec.json.Encoder()
_JSON_FIELDS = ("options", "metadata", "state")


def new_session_id() -> str:
    return "cs_" + secrets.token_hex(12)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionRecord:
    session_id: str
    kind: str
    connection_id: str
    channel_id: str
    status: str
    display_name: str | None = None
    callback_base_url: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    qr_image: str | None = dataclasses.field(default=None, repr=False)
    qr_content: str | None = None
    account_id: str | None = None
    vendor_name: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    state: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    expires_at: int | None = None
    created_at: int = 0
    updated_at: int = 0
    replica: str | None = None  # the replica running the pairing

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_SESSION_STATUSES


def _row(row: Any) -> SessionRecord:
    return record_from_row(SessionRecord, row, _JSON_FIELDS)


class Sessions:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def get(self, conn: Connection, session_id: str) -> SessionRecord | None:
        row = conn.execute("SELECT * FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
        return _row(row) if row else None

    def active_for(self, conn: Connection, connection_id: str) -> SessionRecord | None:
        """The newest non-terminal session of a connection, if any."""
        placeholders = ",".join("?" * len(TERMINAL_SESSION_STATUSES))
        row = conn.execute(
            f"SELECT * FROM sessions WHERE connection_id = ? AND status NOT IN ({placeholders})"  # noqa: S608
            " ORDER BY created_at DESC LIMIT 1",
            (connection_id, *sorted(TERMINAL_SESSION_STATUSES)),
        ).fetchone()
        return _row(row) if row else None

    def non_terminal(self, conn: Connection) -> list[SessionRecord]:
        placeholders = ",".join("?" * len(TERMINAL_SESSION_STATUSES))
        rows = conn.execute(
            f"SELECT * FROM sessions WHERE status NOT IN ({placeholders}) ORDER BY created_at",  # noqa: S608
            tuple(sorted(TERMINAL_SESSION_STATUSES)),
        )
        return [_row(r) for r in rows]

    def insert(self, conn: Connection, record: SessionRecord) -> SessionRecord:
        now = now_ms(self.clock)
        record = dataclasses.replace(record, created_at=now, updated_at=now)
        values = dataclasses.asdict(record)
        for key in _JSON_FIELDS:
            values[key] = _json.encode(values[key]).decode()
        columns = ", ".join(values)
        conn.execute(
            f"INSERT INTO sessions ({columns}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
            tuple(values.values()),
        )
        return record

    def update(self, conn: Connection, session_id: str, **changes: Any) -> SessionRecord:
        """Change a session. When it becomes terminal, what only a running pairing needed goes:
        the driver's state, the QR image, and secret-looking options (a Feishu appSecret): the
        login, if any, now lives on the connection."""
        if changes.get("status") in TERMINAL_SESSION_STATUSES:
            current = self.get(conn, session_id)
            changes.setdefault("state", {})
            changes.setdefault("qr_image", None)
            if current is not None:
                changes.setdefault("options", without_secrets(current.options))
        return update_row(
            conn,
            table="sessions",
            key=("session_id", session_id),
            record=SessionRecord,
            json_fields=_JSON_FIELDS,
            changes=changes,
            now=now_ms(self.clock),
        )
