"""The window between a vendor's answer and its ledger commit, and the commits a send costs.

A chunk the vendor accepted whose commit never happened (the process killed, the storage gone
at that moment) is marked as tried in the ledger; the resumed send asks the vendor (the sim
answers by vendor key) and records the vendor's id instead of posting the chunk again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connector_sidecar.store import StorageUnavailableError

from .conftest import Sidecar, SidecarFactory, assert_problem, paragraphs, send_body

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]

REQUEST_ID = "out_sim-main:s1:crash-window"


def fail_recording(sidecar: Sidecar, index: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the commit of chunk ``index`` fail after the vendor accepted it, as a crash would."""
    ledger = sidecar.app.state.services.store.ledger
    real: Callable[..., Any] = ledger.record_chunk
    failed: list[int] = []

    def record_chunk(conn: Any, request_id: str, i: int, *args: Any, **kwargs: Any) -> Any:
        if i == index and not failed:
            failed.append(i)
            raise StorageUnavailableError("injected: the process died before this commit")
        return real(conn, request_id, i, *args, **kwargs)

    monkeypatch.setattr(ledger, "record_chunk", record_chunk)
    return failed


@pytest.mark.parametrize("lost_chunk", [0, 1, 2])
async def test_a_chunk_the_vendor_took_before_a_crash_is_not_posted_again(
    make_sidecar: SidecarFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lost_chunk: int,
) -> None:
    """The vendor took chunk N, its commit was lost; after a restart the retry finds chunk N
    at the vendor by its key, records it and sends only the rest: every chunk once."""
    data_dir = tmp_path / "data"
    body = send_body(REQUEST_ID, paragraphs(3))
    async with make_sidecar(data_dir=data_dir) as first:
        await first.pair()
        failed = fail_recording(first, lost_chunk, monkeypatch)
        interrupted = await first.client.post("/send", json=body)
        assert failed == [lost_chunk]
        assert_problem(interrupted, 503, "storage_unavailable")
        assert len(await first.sent()) == lost_chunk + 1  # the vendor has it; the ledger does not
        monkeypatch.undo()

    async with make_sidecar(data_dir=data_dir) as second:  # a restart on the same data
        resumed = await second.client.post("/send", json=body)
        assert resumed.status_code == 200, resumed.text
        result = resumed.json()
        sent = await second.sent()
    assert [item["chunkIndex"] for item in sent] == [0, 1, 2]
    assert result["status"] == "sent"
    assert result["providerMessageIds"] == [item["providerMessageId"] for item in sent]


async def test_a_chunk_the_vendor_did_not_take_is_posted_on_resume(
    make_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    """A chunk marked as tried that the vendor never took (a transient failure) is posted on
    the retry: the lookup finds nothing, and nothing is lost."""
    async with make_sidecar(data_dir=tmp_path / "data") as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendFailures=5, sendFailuresAfter=1)
        interrupted = await sidecar.send(REQUEST_ID, paragraphs(3))
        assert_problem(interrupted, 503, "provider_unavailable")
        await sidecar.faults(sendFailures=0, sendFailuresAfter=0)
        resumed = await sidecar.send(REQUEST_ID, paragraphs(3))
        assert resumed.status_code == 200, resumed.text
        sent = await sidecar.sent()
    assert [item["chunkIndex"] for item in sent] == [0, 1, 2]


async def test_the_last_chunk_and_the_final_status_are_one_commit(
    paired: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-chunk send writes the send's own transactions: begin, last chunk + status, release."""
    services = paired.app.state.services
    db = services.store.db
    real = db.transaction
    mine: list[str] = []

    async def transaction(fn: Callable[..., Any], *args: Any) -> Any:
        owner = getattr(fn, "__self__", None)
        if owner is services.store.ledger or owner is services.sender:
            mine.append(fn.__name__)
        elif getattr(fn, "__module__", "") == "connector_sidecar.sending":
            mine.append(fn.__qualname__)
        return await real(fn, *args)

    monkeypatch.setattr(db, "transaction", transaction)
    response = await paired.send(REQUEST_ID, "one chunk")
    assert response.status_code == 200, response.text
    assert mine == ["begin", "_record_last", "release"]
