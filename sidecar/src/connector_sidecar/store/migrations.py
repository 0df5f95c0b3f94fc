"""Numbered schema migrations, the same for both backends, applied in order at start.

Never edit a migration that has shipped: add the next one. Times are Unix milliseconds.

Each migration is written once, in SQLite's terms; PostgreSQL gets the same script with its
types (:func:`postgres_ddl`: ``INTEGER`` → ``BIGINT``, ``BLOB`` → ``BYTEA``, an autoincrement key
→ ``BIGSERIAL``), or a text of its own where the two must differ. SQLite keeps the number in
``PRAGMA user_version``; PostgreSQL in the ``schema_version`` table, and applies them under an
advisory lock so that replicas starting together do not race.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["MIGRATIONS", "Migration", "postgres_ddl"]

_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)


def postgres_ddl(script: str) -> str:
    """A SQLite migration script with PostgreSQL's column types."""
    for pattern, replacement in _TYPES:
        script = pattern.sub(replacement, script)
    return script


@dataclasses.dataclass(frozen=True)
class Migration:
    number: int
    sqlite: str
    postgres: str | None = None  # None: ``postgres_ddl(sqlite)``

    def statements(self, dialect: str) -> list[str]:
        if dialect == "sqlite":
            script = self.sqlite
        else:
            script = self.postgres if self.postgres is not None else postgres_ddl(self.sqlite)
        return [s.strip() for s in script.split(";\n") if s.strip()]


_0001_initial = """
CREATE TABLE connections (
    connection_id    TEXT PRIMARY KEY,
    channel_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    account_id       TEXT,
    display_name     TEXT,
    credentials      TEXT,              -- JSON; the vendor login. Never logged.
    options          TEXT NOT NULL DEFAULT '{}',
    last_error       TEXT,
    last_inbound_at  INTEGER,
    last_outbound_at INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE TABLE sessions (
    session_id        TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    connection_id     TEXT NOT NULL,
    channel_id        TEXT NOT NULL,
    status            TEXT NOT NULL,
    display_name      TEXT,
    callback_base_url TEXT,
    options           TEXT NOT NULL DEFAULT '{}',   -- JSON; may hold an app secret. Never logged.
    qr_image          TEXT,
    qr_content        TEXT,
    account_id        TEXT,
    vendor_name       TEXT,
    error             TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    state             TEXT NOT NULL DEFAULT '{}',   -- the driver's progress, to resume after a restart
    expires_at        INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX sessions_by_connection ON sessions (connection_id, created_at);
CREATE TABLE outbox (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL UNIQUE,
    connection_id    TEXT NOT NULL,
    lane             TEXT NOT NULL,
    status           TEXT NOT NULL,     -- pending | delivered | dead
    attempts         INTEGER NOT NULL DEFAULT 0,
    payload          BLOB NOT NULL,     -- the BridgeEvent as JSON, deliveryAttempt 0
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    delivered_at     INTEGER,
    last_status_code INTEGER,
    last_error       TEXT
);
CREATE INDEX outbox_pending ON outbox (status, seq);
CREATE INDEX outbox_by_connection ON outbox (connection_id, status, seq);
CREATE INDEX outbox_lane ON outbox (lane, seq);
CREATE TABLE send_ledger (
    request_id     TEXT PRIMARY KEY,
    connection_id  TEXT NOT NULL,
    peer_id        TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,
    request        BLOB NOT NULL,      -- the SendRequest as JSON, to resume or flush later
    status         TEXT NOT NULL,      -- pending | sent | deferred | failed | expired
    chunk_count    INTEGER NOT NULL,
    provider_ids   TEXT NOT NULL DEFAULT '[]',   -- one per chunk already sent, in order
    http_status    INTEGER,
    error_code     TEXT,
    error_detail   TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX send_ledger_deferred ON send_ledger (connection_id, peer_id, status, created_at);
CREATE INDEX send_ledger_age ON send_ledger (status, updated_at);
CREATE TABLE connection_state (
    connection_id TEXT NOT NULL,
    key           TEXT NOT NULL,        -- 'cursor', 'ctx:<peer>', …: vendor cursors and reply tokens
    value         TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (connection_id, key)
);
CREATE TABLE sim_sent (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id       TEXT NOT NULL,
    request_id          TEXT NOT NULL,
    chunk_index         INTEGER NOT NULL,
    vendor_key          TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    peer_id             TEXT NOT NULL,
    thread_id           TEXT,
    content             TEXT NOT NULL,
    sent_at             INTEGER NOT NULL
);
CREATE INDEX sim_sent_by_connection ON sim_sent (connection_id, id)
"""

# The outbox remembers what the delivery worker kept in memory. ``failures`` counts the failed
# attempts (a 409 is not a failure): the backoff's exponent, now across restarts too; before, a
# restart counted every attempt, which is what the upgrade assumes. ``queued_at`` is when the
# event was last queued (its first enqueue, or a replay): the age limit counts from it, so a
# replay keeps the original ``created_at``. The worker only ever looks at pending events: a
# partial index on them replaces the index over every event of a lane.
_0002_outbox_failures_queued_at = """
ALTER TABLE outbox ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN queued_at INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET failures = attempts, queued_at = created_at;
CREATE INDEX outbox_pending_lane ON outbox (lane, seq) WHERE status = 'pending';
DROP INDEX outbox_lane
"""

# Several replicas on one database. A connection's inbound loop runs under a lease
# (``lease_owner`` until ``lease_until``); an outbox event in flight is claimed by one replica
# (``claimed_by`` until ``claim_until``), which is the lane's lock; a send in progress is owned by
# one replica (``owner`` until ``owner_until``); ``replicas`` lists the live ones by heartbeat.
# ``seq`` orders the ledger as ``rowid`` did, which PostgreSQL does not have.
_0003_replicas = """
ALTER TABLE connections ADD COLUMN lease_owner TEXT;
ALTER TABLE connections ADD COLUMN lease_until INTEGER;
ALTER TABLE sessions ADD COLUMN replica TEXT;
ALTER TABLE outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox ADD COLUMN claim_until INTEGER;
ALTER TABLE send_ledger ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE send_ledger ADD COLUMN owner TEXT;
ALTER TABLE send_ledger ADD COLUMN owner_until INTEGER;
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);
CREATE INDEX connections_by_lease ON connections (lease_owner)
"""

# Media (docs/CONTRACT.md §10.1). ``media`` names every inbound media item by its ``mediaId``, with the
# driver's reference to fetch it (which may hold a vendor key: never logged) and, once fetched,
# the size and hash of the cached copy. The bytes are files under the data directory, not rows:
# ``cached_bytes`` is null while there is no file. ``send_ledger.parts`` records, per attachment
# of a send, what it was (kind, name, type, size, sha256) and its finished upload, so a retry
# neither uploads nor posts a finished part again. ``sim_sent.attachment`` describes a sim
# attachment part (JSON), null for text chunks.
_0004_media = """
CREATE TABLE media (
    media_id      TEXT PRIMARY KEY,
    connection_id TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    kind          TEXT NOT NULL,
    mime_type     TEXT,
    file_name     TEXT,
    size          INTEGER,
    ref           TEXT NOT NULL,
    cached_bytes  INTEGER,
    sha256        TEXT,
    fetched_at    INTEGER,
    created_at    INTEGER NOT NULL
);
CREATE INDEX media_by_fetched ON media (fetched_at);
CREATE INDEX media_by_created ON media (created_at);
ALTER TABLE send_ledger ADD COLUMN parts TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sim_sent ADD COLUMN attachment TEXT
"""

# Operating it (v1.1). ``delivery_attempts`` keeps every POST of an event (written in the
# transaction that records its answer), as long as the event itself. ``bridge_state`` holds what
# every replica must agree on, such as an operator's pause of delivery. ``dead_at`` is when an
# event was dead-lettered, for DEAD_RETENTION_SECONDS; for the dead letters before this
# migration, their last schedule is the best guess.
_0005_operating = """
CREATE TABLE delivery_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    error       TEXT
);
CREATE INDEX delivery_attempts_by_event ON delivery_attempts (event_id, id);
CREATE TABLE bridge_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
ALTER TABLE outbox ADD COLUMN dead_at INTEGER;
UPDATE outbox SET dead_at = next_attempt_at WHERE status = 'dead'
"""

# How many chunks of a send were handed to the vendor at least once: a chunk below this number
# and past ``provider_ids`` may have reached the vendor without its answer being recorded.
_0006_chunks_tried = """
ALTER TABLE send_ledger ADD COLUMN chunks_tried INTEGER NOT NULL DEFAULT 0
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, _0001_initial),
    Migration(2, _0002_outbox_failures_queued_at),
    Migration(
        3,
        _0003_replicas + ";\nUPDATE send_ledger SET seq = rowid",
        postgres_ddl(_0003_replicas),
    ),
    Migration(4, _0004_media),
    Migration(5, _0005_operating),
    Migration(6, _0006_chunks_tried),
)
