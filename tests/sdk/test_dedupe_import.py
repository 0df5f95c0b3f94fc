"""Dedupe stores: importing an existing host's ``message_dedupe.json``, on every store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector_sdk import DedupeImportError

from ._dedupe_stores import MakeStore, Store

pytestmark = pytest.mark.anyio


SAMPLE = {
    "records": {
        "conn_1:evt_done": {
            "dedupe_key": "conn_1:evt_done",
            "connection_id": "conn_1",
            "event_id": "evt_done",
            "status": "completed",
            "first_seen_at": "2026-06-01T08:00:00Z",
            "updated_at": "2026-06-01T08:00:02.500000+00:00",
            "delivery_attempts": 2,
            "message_id": "host-msg-1",
            "last_error": None,
        },
        "conn_1:evt_failed": {
            "dedupe_key": "conn_1:evt_failed",
            "connection_id": "conn_1",
            "event_id": "evt_failed",
            "status": "failed",
            "first_seen_at": "2026-06-01T09:00:00Z",
            "updated_at": "2026-06-01T09:00:05Z",
            "delivery_attempts": 1,
            "message_id": None,
            "last_error": "TimeoutError: model",
        },
        "conn_2:evt_stuck": {
            "dedupe_key": "conn_2:evt_stuck",
            "connection_id": "conn_2",
            "event_id": "evt_stuck",
            "status": "processing",
            "first_seen_at": "2026-06-01T10:00:00",
            "updated_at": "2026-06-01T10:00:00",
            "delivery_attempts": 3,
            "message_id": None,
            "last_error": None,
        },
    }
}
SAMPLE_NOW = datetime(2026, 6, 2, tzinfo=UTC).timestamp()


@pytest.fixture
async def imported(make_store: MakeStore, tmp_path: Path) -> AsyncIterator[tuple[Store, int]]:
    """A store of each kind that has imported SAMPLE, and how many records it wrote."""
    source = tmp_path / "message_dedupe.json"
    source.write_text(json.dumps(SAMPLE), encoding="utf-8")
    async with make_store(now=lambda: SAMPLE_NOW) as store:
        yield store, await store.import_json(source)


async def test_import_message_dedupe_json(imported: tuple[Store, int]) -> None:
    """Every record of an existing host's file is imported with its fields and times."""
    store, written = imported
    assert written == 3
    assert await store.count() == 3
    done = await store.get("conn_1:evt_done")
    assert done is not None
    assert (done.status, done.delivery_attempts, done.message_id) == ("completed", 2, "host-msg-1")
    assert done.first_seen_at == datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)
    assert done.updated_at == datetime(2026, 6, 1, 8, 0, 2, 500000, tzinfo=UTC)
    failed = await store.get("conn_1:evt_failed")
    assert failed is not None
    assert failed.last_error == "TimeoutError: model"


async def test_imported_records_follow_the_rules(imported: tuple[Store, int]) -> None:
    """After import: completed is a duplicate, failed and stale processing are processed again."""
    store, _ = imported
    assert not (await store.begin("conn_1", "evt_done", 3)).should_process
    retried = await store.begin("conn_1", "evt_failed", 2)
    assert (retried.should_process, retried.record.delivery_attempts) == (True, 2)
    stuck = await store.begin("conn_2", "evt_stuck", 1)
    assert (stuck.should_process, stuck.record.delivery_attempts) == (True, 4)


async def test_import_twice_changes_nothing(imported: tuple[Store, int], tmp_path: Path) -> None:
    """Importing the same file again writes nothing and keeps newer local state."""
    store, _ = imported
    decision = await store.begin("conn_1", "evt_failed", 2)
    await store.complete(decision.dedupe_key, "local")
    assert await store.import_json(tmp_path / "message_dedupe.json") == 0
    record = await store.get("conn_1:evt_failed")
    assert record is not None
    assert (record.status, record.message_id) == ("completed", "local")


@pytest.mark.parametrize(
    "document",
    [
        "not json at all",
        {"records": {"k": {"connection_id": "c", "event_id": "e", "status": "weird"}}},
        {
            "records": {
                "k": {
                    "connection_id": "c",
                    "event_id": "e",
                    "status": "completed",
                    "updated_at": "last tuesday",
                }
            }
        },
        {"nothing": {}},
    ],
    ids=["not-json", "bad-status", "bad-time", "no-records"],
)
async def test_import_of_a_bad_file(
    make_store: MakeStore, tmp_path: Path, document: object
) -> None:
    """A file that is not a dedupe file raises DedupeImportError naming the path."""
    source = tmp_path / "message_dedupe.json"
    source.write_text(document if isinstance(document, str) else json.dumps(document))
    async with make_store() as store:
        with pytest.raises(DedupeImportError, match=r"message_dedupe\.json"):
            await store.import_json(source)
        assert await store.count() == 0


async def test_import_of_a_missing_file(make_store: MakeStore, tmp_path: Path) -> None:
    """A missing file raises DedupeImportError, not OSError."""
    async with make_store() as store:
        with pytest.raises(DedupeImportError):
            await store.import_json(tmp_path / "absent.json")
