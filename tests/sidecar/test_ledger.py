"""The send ledger under concurrency, partial failure and restart (docs/CONTRACT.md §4)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from connector_contracts import SendRequest, SendTarget
from connector_sidecar.sending import vendor_key

from .conftest import FakeClock, SidecarFactory, assert_problem, paragraphs

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


async def test_fifty_concurrent_identical_sends_reach_the_vendor_once(
    make_sidecar: SidecarFactory,
) -> None:
    """50 identical concurrent sends: one vendor send per chunk, and all 50 answers agree."""
    text = paragraphs(5)
    async with make_sidecar() as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendLatencyMs=10)
        responses = await asyncio.gather(*(sidecar.send("out_many", text) for _ in range(50)))
        assert {r.status_code for r in responses} == {200}
        results = [r.json() for r in responses]
        assert sum(not r["duplicate"] for r in results) == 1
        first = next(r for r in results if not r["duplicate"])
        assert all(r == {**first, "duplicate": r["duplicate"]} for r in results)
        assert len(first["providerMessageIds"]) == 5
        sent = await sidecar.sent()
        assert [s["chunkIndex"] for s in sent] == [0, 1, 2, 3, 4]
        assert [s["providerMessageId"] for s in sent] == first["providerMessageIds"]


async def test_concurrent_sends_with_one_id_and_two_payloads(make_sidecar: SidecarFactory) -> None:
    """Concurrent sends reusing one requestId for another text get 422; the vendor gets only the first."""
    async with make_sidecar() as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendLatencyMs=50)
        first = asyncio.create_task(sidecar.send("out_pair", "the first"))
        await asyncio.sleep(0.02)
        others = await asyncio.gather(*(sidecar.send("out_pair", "another") for _ in range(10)))
        for response in others:
            assert_problem(response, 422, "request_id_conflict")
        assert (await first).status_code == 200
        assert [s["content"] for s in await sidecar.sent()] == ["the first"]
        later = await sidecar.send("out_pair", "another")
        assert_problem(later, 422, "request_id_conflict")


async def test_transient_failure_mid_send_then_retry_delivers_each_chunk_once(
    make_sidecar: SidecarFactory,
) -> None:
    """A 5-chunk send failing after 2 chunks answers 503; the retry sends chunks 2–4 once, in order."""
    text = paragraphs(5)
    async with make_sidecar(send_retry_attempts=1, send_retry_max_seconds=0.1) as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendFailures=1, sendFailuresAfter=2)
        failed = await sidecar.send("out_mid", text)
        assert_problem(failed, 503, "provider_unavailable")
        assert [s["chunkIndex"] for s in await sidecar.sent()] == [0, 1]

        retried = await sidecar.send("out_mid", text)
        assert retried.status_code == 200, retried.text
        result = retried.json()
        assert result["duplicate"] is False
        sent = await sidecar.sent()
        assert [(s["requestId"], s["chunkIndex"]) for s in sent] == [
            ("out_mid", i) for i in range(5)
        ]
        assert [s["providerMessageId"] for s in sent] == result["providerMessageIds"]
        assert "".join(s["content"] for s in sent) == text

        repeat = await sidecar.send("out_mid", text)
        assert repeat.json() == {**result, "duplicate": True}
        assert len(await sidecar.sent()) == 5


async def test_concurrent_retries_of_a_half_sent_request_send_each_chunk_once(
    make_sidecar: SidecarFactory,
) -> None:
    """Many concurrent retries after a 503 half-way still send each remaining chunk exactly once."""
    text = paragraphs(5)
    async with make_sidecar() as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendFailures=1, sendFailuresAfter=3)
        assert (await sidecar.send("out_half", text)).status_code == 503
        await sidecar.faults(sendLatencyMs=10)
        responses = await asyncio.gather(*(sidecar.send("out_half", text) for _ in range(20)))
        assert {r.status_code for r in responses} == {200}
        assert len({tuple(r.json()["providerMessageIds"]) for r in responses}) == 1
        assert [s["chunkIndex"] for s in await sidecar.sent()] == [0, 1, 2, 3, 4]


async def test_ledger_survives_a_restart(make_sidecar: SidecarFactory, tmp_path: Path) -> None:
    """After a restart a repeat is still a duplicate, and a half-sent request resumes where it stopped."""
    data_dir = tmp_path / "restart"
    text = paragraphs(5)
    async with make_sidecar(data_dir=data_dir) as first:
        await first.pair()
        done = (await first.send("out_done", "hello")).json()
        await first.faults(sendFailures=1, sendFailuresAfter=1)
        assert (await first.send("out_half", text)).status_code == 503
        await first.faults(sendRejects=1)
        refused = await first.send("out_refused", "no")
        assert refused.status_code == 502
    async with make_sidecar(data_dir=data_dir) as second:
        assert (await second.send("out_done", "hello")).json() == {**done, "duplicate": True}
        assert (await second.send("out_refused", "no")).json() == refused.json()
        resumed = await second.send("out_half", text)
        assert resumed.status_code == 200
        sent = await second.sent()
        assert [(s["requestId"], s["chunkIndex"]) for s in sent] == [
            ("out_done", 0),
            ("out_half", 0),
            *[("out_half", i) for i in range(1, 5)],
        ]


async def test_ledger_entries_live_at_least_24_hours(make_sidecar: SidecarFactory) -> None:
    """Housekeeping keeps a sent entry for more than 24 h (repeats stay duplicates), then purges it."""
    clock = FakeClock()
    async with make_sidecar(clock=clock) as sidecar:
        await sidecar.pair()
        first = (await sidecar.send("out_old", "x")).json()
        sender = sidecar.app.state.services.sender
        clock.advance(25 * 3600)
        await sender.housekeeping()
        assert (await sidecar.send("out_old", "x")).json() == {**first, "duplicate": True}
        clock.advance(24 * 3600)
        await sender.housekeeping()
        assert_problem(await sidecar.client.get("/send/out_old"), 404, "request_not_found")
        assert len(await sidecar.sent()) == 1


async def test_housekeeping_purges_a_whole_day_of_old_entries(
    make_sidecar: SidecarFactory,
) -> None:
    """One housekeeping pass purges every old entry, however many, and abandoned pending ones too."""
    clock = FakeClock()
    async with make_sidecar(clock=clock) as sidecar:
        services = sidecar.app.state.services
        store = services.store

        def fill(conn: sqlite3.Connection) -> None:
            for i in range(1234):
                request = SendRequest(
                    request_id=f"out_{i}",
                    connection_id="conn_1",
                    target=SendTarget(peer_id="peer-1"),
                    content="x",
                )
                store.ledger.create(conn, request, 1)
                if i % 2:  # the others stay pending: a host that got a 503 and gave up
                    store.ledger.set_status(conn, request.request_id, "sent")

        await store.db.transaction(fill)
        clock.advance(49 * 3600)
        await services.sender.housekeeping()
        left = await store.db.run(
            lambda c: c.execute("SELECT COUNT(*) FROM send_ledger").fetchone()[0]
        )
        assert left == 0


async def test_deferred_sends_are_dropped_after_24_hours(make_sidecar: SidecarFactory) -> None:
    """A send still deferred after 24 h expires and is not sent when the peer finally writes."""
    clock = FakeClock()
    async with make_sidecar(clock=clock) as sidecar:
        await sidecar.pair()
        await sidecar.faults(replyWindowClosed=True)
        assert (await sidecar.send("out_stale", "too late")).status_code == 202
        clock.advance(24 * 3600 + 60)
        await sidecar.app.state.services.sender.housekeeping()
        stale = (await sidecar.client.get("/send/out_stale")).json()
        assert (stale["status"], stale["ok"]) == ("expired", False)
        await sidecar.inbound(messageId="finally")
        await sidecar.send("out_fresh", "now")
        assert [s["requestId"] for s in await sidecar.sent()] == ["out_fresh"]


@pytest.mark.parametrize("max_length", [16, 32, 36, 50, 64])
def test_vendor_keys_are_stable_distinct_and_short_enough(max_length: int) -> None:
    """A chunk's vendor key is the same on every retry, distinct per chunk and request, within the vendor's length."""
    keys = {
        (request_id, index): vendor_key(request_id, index, max_length)
        for request_id in ("out_1", "out_2", "out_weixin-main:s1:out-msg-1")
        for index in range(1000)
    }
    assert len(set(keys.values())) == len(keys)
    assert all(len(key) <= max_length for key in keys.values())
    assert vendor_key("out_1", 3, max_length) == keys[("out_1", 3)]
