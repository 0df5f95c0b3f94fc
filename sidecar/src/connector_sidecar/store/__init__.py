"""The store: one database interface (SQLite or PostgreSQL) and the queries on each table."""

from __future__ import annotations

from collections.abc import Iterable

from connector_sidecar._clock import Clock
from connector_sidecar.store.bridge import BridgeState
from connector_sidecar.store.connections import ConnectionRecord, Connections
from connector_sidecar.store.db import Database, database_for
from connector_sidecar.store.errors import (
    DatabaseLockedError,
    SchemaTooNewError,
    StorageUnavailableError,
    StoreError,
)
from connector_sidecar.store.events import LifecycleEvents
from connector_sidecar.store.ledger import LedgerEntry, SendLedger
from connector_sidecar.store.media import MediaRecord, MediaTable
from connector_sidecar.store.outbox import (
    EnqueueResult,
    InboundMessage,
    Outbox,
    OutboxRow,
    event_id_for,
)
from connector_sidecar.store.replicas import Replicas
from connector_sidecar.store.sessions import SessionRecord, Sessions, new_session_id
from connector_sidecar.store.sqlite import SqliteDatabase
from connector_sidecar.store.state import ConnectionState

__all__ = [
    "BridgeState",
    "ConnectionRecord",
    "ConnectionState",
    "Connections",
    "Database",
    "DatabaseLockedError",
    "EnqueueResult",
    "InboundMessage",
    "LedgerEntry",
    "LifecycleEvents",
    "MediaRecord",
    "MediaTable",
    "Outbox",
    "OutboxRow",
    "Replicas",
    "SchemaTooNewError",
    "SendLedger",
    "SessionRecord",
    "Sessions",
    "SqliteDatabase",
    "StorageUnavailableError",
    "Store",
    "StoreError",
    "database_for",
    "event_id_for",
    "new_session_id",
]


class Store:
    """The database and one query object per table, sharing one clock."""

    def __init__(
        self, db: Database, clock: Clock, *, event_types: Iterable[str] = ("message",)
    ) -> None:
        self.db = db
        self.clock = clock
        self.connections = Connections(clock)
        self.sessions = Sessions(clock)
        self.outbox = Outbox(clock)
        self.ledger = SendLedger(clock)
        self.state = ConnectionState(clock)
        self.replicas = Replicas()
        self.media = MediaTable(clock)
        self.events = LifecycleEvents(clock, event_types)
        self.bridge = BridgeState(clock)
