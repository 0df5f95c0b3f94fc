"""``POST /send`` and ``GET /send/{requestId}``: every rule of docs/CONTRACT.md §4, against the sim."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_contracts import SendRequest, decode
from connector_sdk import SendExpired, SidecarClient
from connector_sidecar import sending
from connector_sidecar.chunking import split_text
from connector_sidecar.drivers.base import DeferredSendError

from .conftest import (
    TOKEN,
    FakeClock,
    Sidecar,
    SidecarFactory,
    assert_problem,
    paragraphs,
    send_body,
)

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


async def wait_for_status(sidecar: Sidecar, request_id: str, status: str) -> dict[str, Any]:
    """Poll ``GET /send/{id}`` until it reports ``status``; at most 5 s."""
    body: dict[str, Any] = {}
    for _ in range(250):
        body = (await sidecar.client.get(f"/send/{request_id}")).json()
        if body.get("status") == status:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{request_id} never became {status}: {body}")


async def test_send_returns_the_send_result(paired: Sidecar) -> None:
    """A send answers 200 SendResult with the vendor's message id; the sim received the text."""
    response = await paired.send("out_weixin-main:s1:out-msg-1", "reply")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True
    assert result["status"] == "sent"
    assert result["requestId"] == "out_weixin-main:s1:out-msg-1"
    assert result["duplicate"] is False
    assert result["providerMessageIds"] == [result["providerMessageId"]]
    [item] = await paired.sent()
    assert (item["content"], item["providerMessageId"]) == ("reply", result["providerMessageId"])


async def test_repeat_returns_the_stored_result(paired: Sidecar) -> None:
    """A repeat with the same payload returns the stored result, ``duplicate: true``, no new vendor send."""
    first = (await paired.send("out_1", "reply")).json()
    # metadata, channelId and kind are not part of what makes a send "the same"
    again = await paired.send("out_1", "reply", metadata={"other": True})
    assert again.status_code == 200
    assert again.json() == {**first, "duplicate": True}
    assert len(await paired.sent()) == 1


async def test_get_send(paired: Sidecar) -> None:
    """``GET /send/{requestId}`` returns the result as it stands, even for ids with ``:`` and ``/``."""
    for request_id in ("out_weixin-main:s1:out-msg-1", "out/with/slashes"):
        sent = (await paired.send(request_id, "x")).json()
        response = await paired.client.get(f"/send/{request_id}")
        assert response.status_code == 200
        assert response.json() == sent


async def test_get_unknown_send_is_404(paired: Sidecar) -> None:
    """``GET /send/{requestId}`` of an unknown id is 404 ``request_not_found``."""
    assert_problem(await paired.client.get("/send/out_nope"), 404, "request_not_found")


@pytest.mark.parametrize(
    "change",
    [
        {"content": "other text"},
        {"peer_id": "peer-2"},
        {"connection_id": "conn_2"},
        {"messageType": "markdown"},
    ],
)
async def test_same_request_id_with_another_payload_is_422(
    paired: Sidecar, change: dict[str, Any]
) -> None:
    """A requestId reused for another connection, target, content or type is 422 ``request_id_conflict``."""
    await paired.pair("conn_2")
    assert (await paired.send("out_1", "reply")).status_code == 200
    kwargs: dict[str, Any] = {"content": "reply", **change}
    response = await paired.send("out_1", **kwargs)
    problem = assert_problem(response, 422, "request_id_conflict")
    assert problem["requestId"] == "out_1"
    assert len(await paired.sent()) == 1
    assert await paired.sent("conn_2") == []


async def test_repeat_while_in_flight_is_409_with_retry_after(
    make_sidecar: SidecarFactory,
) -> None:
    """A repeat that waits longer than the send wait is 409 ``request_in_progress`` with Retry-After."""
    async with make_sidecar(send_wait_seconds=0.05) as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendLatencyMs=400)
        first = asyncio.create_task(sidecar.send("out_slow", "slow"))
        await asyncio.sleep(0.1)
        repeat = await sidecar.send("out_slow", "slow")
        problem = assert_problem(repeat, 409, "request_in_progress")
        assert int(repeat.headers["retry-after"]) >= 1
        assert problem["requestId"] == "out_slow"
        in_flight = (await sidecar.client.get("/send/out_slow")).json()
        assert in_flight["ok"] is False
        assert in_flight["status"] not in ("sent", "failed")
        conflict = await sidecar.send("out_slow", "another text")
        assert_problem(conflict, 422, "request_id_conflict")
        done = await asyncio.wait_for(first, 5)
        assert done.status_code == 200
        after = await sidecar.send("out_slow", "slow")
        assert after.json() == {**done.json(), "duplicate": True}
        assert len(await sidecar.sent()) == 1


async def test_repeat_within_the_wait_gets_the_result(paired: Sidecar) -> None:
    """A repeat that arrives while the first runs waits for it and answers the same, ``duplicate: true``."""
    await paired.faults(sendLatencyMs=100)
    first, second = await asyncio.gather(paired.send("out_2", "x"), paired.send("out_2", "x"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert sorted([first.json()["duplicate"], second.json()["duplicate"]]) == [False, True]
    assert first.json()["providerMessageIds"] == second.json()["providerMessageIds"]
    assert len(await paired.sent()) == 1


async def test_vendor_refusal_is_502_and_recorded(paired: Sidecar) -> None:
    """A permanent refusal is 502 ``provider_rejected`` with the vendor's code; a repeat gets the same 502."""
    await paired.faults(sendRejects=1)
    first = await paired.send("out_rejected", "x")
    problem = assert_problem(first, 502, "provider_rejected")
    assert "sim_rejected" in str(problem["detail"])
    # The fault is used up: a new vendor call would succeed, so the same 502 proves the record.
    second = await paired.send("out_rejected", "x")
    assert second.status_code == 502
    assert second.json() == first.json()
    assert await paired.sent() == []
    stored = (await paired.client.get("/send/out_rejected")).json()
    assert (stored["ok"], stored["status"], stored["providerMessageId"]) == (False, "failed", None)


async def test_transient_failure_is_retried_inside(make_sidecar: SidecarFactory) -> None:
    """One transient vendor failure is retried inside the sidecar after a backoff: a plain 200."""
    clock = FakeClock()
    async with make_sidecar(
        send_retry_attempts=2, send_retry_max_seconds=3.0, clock=clock, sleep=clock.sleep
    ) as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendFailures=1)
        response = await sidecar.send("out_retried", "x")
        assert response.status_code == 200, response.text
        assert len(await sidecar.sent()) == 1
        assert (await sidecar.faults())["sendFailures"] == 0
        [backoff] = clock.slept
        assert 0.5 <= backoff <= 1.0  # the first wait: 0.5 s and up to 0.5 s of jitter


async def test_vendor_unavailable_is_503_after_bounded_retries(
    make_sidecar: SidecarFactory,
) -> None:
    """Still failing after the bounded retries: 503 ``provider_unavailable`` with Retry-After; a retry continues."""
    clock = FakeClock()
    async with make_sidecar(
        send_retry_attempts=2, send_retry_max_seconds=3.0, clock=clock, sleep=clock.sleep
    ) as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendFailures=5)
        response = await sidecar.send("out_down", "x")
        problem = assert_problem(response, 503, "provider_unavailable")
        assert int(response.headers["retry-after"]) >= 1
        assert problem["requestId"] == "out_down"
        assert (await sidecar.faults())["sendFailures"] == 3  # exactly two attempts were made
        assert len(clock.slept) == 1  # one backoff between them, and no real waiting
        await sidecar.faults(sendFailures=0)
        retried = await sidecar.send("out_down", "x")
        assert retried.status_code == 200
        assert retried.json()["duplicate"] is False
        assert len(await sidecar.sent()) == 1


async def test_retries_stop_within_the_time_budget(make_sidecar: SidecarFactory) -> None:
    """With a budget shorter than one backoff, the sidecar answers 503 at once instead of sleeping."""
    async with make_sidecar(send_retry_attempts=10, send_retry_max_seconds=0.2) as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendFailures=50)
        started = asyncio.get_running_loop().time()
        response = await sidecar.send("out_budget", "x")
        elapsed = asyncio.get_running_loop().time() - started
        assert_problem(response, 503, "provider_unavailable")
        assert elapsed < 0.2


async def test_closed_reply_window_defers_then_sends_when_the_peer_writes(
    paired: Sidecar,
) -> None:
    """A closed reply window answers 202 ``deferred``; the send goes out when the peer next writes."""
    await paired.faults(replyWindowClosed=True)
    response = await paired.send("out_later", "see you")
    assert response.status_code == 202, response.text
    assert response.json() == {
        "ok": True,
        "requestId": "out_later",
        "status": "deferred",
        "providerMessageId": None,
        "providerMessageIds": [],
        "duplicate": False,
    }
    repeat = await paired.send("out_later", "see you")
    assert repeat.status_code == 202
    assert repeat.json()["duplicate"] is True
    assert await paired.sent() == []
    assert (await paired.client.get("/send/out_later")).json()["status"] == "deferred"

    await paired.inbound(content="I'm back", messageId="back-1")
    result = await wait_for_status(paired, "out_later", "sent")
    assert result["ok"] is True
    [item] = await paired.sent()
    assert (item["requestId"], item["content"]) == ("out_later", "see you")
    assert result["providerMessageId"] == item["providerMessageId"]
    after = await paired.send("out_later", "see you")
    assert (after.status_code, after.json()["status"], after.json()["duplicate"]) == (
        200,
        "sent",
        True,
    )


async def test_a_partly_sent_result_names_no_provider_message_id(
    paired: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until every chunk is sent, ``providerMessageId`` is null and ``providerMessageIds`` lists
    the chunks that did go out: a deferred send after its first chunk, and an interrupted one."""
    driver = paired.app.state.services.runtime.drivers["sim"]
    real_send = driver.send
    window_closed = True

    async def close_the_window_after_chunk_0(connection: Any, chunk: Any) -> str:
        if chunk.index == 1 and window_closed:
            raise DeferredSendError("the reply window closed half-way")
        return str(await real_send(connection, chunk))

    monkeypatch.setattr(driver, "send", close_the_window_after_chunk_0)
    text = paragraphs(3)
    deferred = await paired.send("out_half_deferred", text)
    assert deferred.status_code == 202
    [first_id] = [s["providerMessageId"] for s in await paired.sent()]
    expected = {"status": "deferred", "providerMessageId": None, "providerMessageIds": [first_id]}
    assert {k: deferred.json()[k] for k in expected} == expected
    stored = (await paired.client.get("/send/out_half_deferred")).json()
    assert {k: stored[k] for k in expected} == expected

    window_closed = False
    await paired.inbound(content="back", messageId="m-back")
    sent = await wait_for_status(paired, "out_half_deferred", "sent")
    assert sent["providerMessageId"] == first_id == sent["providerMessageIds"][0]
    assert len(sent["providerMessageIds"]) == 3

    await paired.faults(sendFailures=1, sendFailuresAfter=1)
    assert (await paired.send("out_half_down", text)).status_code == 503
    interrupted = (await paired.client.get("/send/out_half_down")).json()
    assert (interrupted["status"], interrupted["ok"]) == ("pending", False)
    assert interrupted["providerMessageId"] is None
    assert len(interrupted["providerMessageIds"]) == 1


async def test_at_most_three_deferred_per_peer(paired: Sidecar) -> None:
    """A fourth deferred send to one peer drops the oldest (``expired``); the other three go out in order."""
    await paired.faults(replyWindowClosed=True)
    for i in range(4):
        assert (await paired.send(f"out_d{i}", f"text {i}")).status_code == 202
    assert (await paired.send("out_other_peer", "other", peer_id="peer-2")).status_code == 202
    dropped = (await paired.client.get("/send/out_d0")).json()
    assert (dropped["status"], dropped["ok"]) == ("expired", False)

    await paired.inbound(content="hello again", messageId="m-again")
    await wait_for_status(paired, "out_d3", "sent")
    sent = await paired.sent()
    assert [s["requestId"] for s in sent] == ["out_d1", "out_d2", "out_d3"]
    assert (await paired.client.get("/send/out_d0")).json()["status"] == "expired"
    # The other peer has not written: its send is still waiting.
    assert (await paired.client.get("/send/out_other_peer")).json()["status"] == "deferred"


async def test_a_repeat_of_an_expired_send_is_410(paired: Sidecar) -> None:
    """Repeating a deferred send that expired is 410 ``send_expired``, never a 200 that reads as sent."""
    await paired.faults(replyWindowClosed=True)
    for i in range(4):
        assert (await paired.send(f"out_x{i}", f"text {i}")).status_code == 202
    repeat = await paired.send("out_x0", "text 0")
    problem = assert_problem(repeat, 410, "send_expired")
    assert problem["requestId"] == "out_x0"
    assert "waiting for this peer" in problem["detail"]
    current = await paired.client.get("/send/out_x0")
    assert current.status_code == 200
    assert (current.json()["status"], current.json()["ok"]) == ("expired", False)
    # The SDK raises its typed error for it, without retrying.
    async with SidecarClient(
        "http://sidecar", token=TOKEN, transport=httpx.ASGITransport(app=paired.app)
    ) as sdk:
        with pytest.raises(SendExpired) as caught:
            await sdk.send_request(decode(json.dumps(send_body("out_x0", "text 0")), SendRequest))
        assert (caught.value.status, caught.value.attempts) == (410, 1)
    await paired.inbound(content="back", messageId="m-back")
    await wait_for_status(paired, "out_x3", "sent")
    assert "out_x0" not in [s["requestId"] for s in await paired.sent()]


async def test_a_redelivered_message_does_not_flush_twice(paired: Sidecar) -> None:
    """Deferred sends go out once even when the peer's message arrives several times at once."""
    await paired.faults(replyWindowClosed=True)
    for i in range(3):
        await paired.send(f"out_r{i}", f"text {i}")
    await asyncio.gather(*(paired.inbound(content="back", messageId=f"m{i}") for i in range(5)))
    await wait_for_status(paired, "out_r2", "sent")
    await asyncio.sleep(0.1)
    assert [s["requestId"] for s in await paired.sent()] == ["out_r0", "out_r1", "out_r2"]


async def test_shutdown_lets_a_send_in_flight_finish(
    make_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    """A send still running at shutdown (its host hung up) finishes before the store closes."""
    data_dir = tmp_path / "drain"
    async with make_sidecar(data_dir=data_dir) as sidecar:
        await sidecar.pair()
        await sidecar.faults(sendLatencyMs=300)
        request = asyncio.create_task(sidecar.send("out_drain", "bye"))
        await wait_for_status(sidecar, "out_drain", "pending")
        request.cancel()  # the host hangs up: the send goes on without it
        with contextlib.suppress(asyncio.CancelledError):
            await request
    async with make_sidecar(data_dir=data_dir) as again:
        result = (await again.client.get("/send/out_drain")).json()
        assert (result["status"], result["ok"]) == ("sent", True)
        assert [s["requestId"] for s in await again.sent()] == ["out_drain"]


async def test_a_send_deferred_as_the_peer_writes_is_not_left_waiting(
    paired: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send the vendor defers while the peer's message is arriving goes out on that message,
    not on the one after it (which may never come: the peer is waiting for this reply)."""
    driver = paired.app.state.services.runtime.drivers["sim"]
    real_send = driver.send
    calls: list[int] = []

    async def send_as_the_peer_writes(connection: Any, chunk: Any) -> str:
        calls.append(chunk.index)
        if len(calls) > 1:
            return str(await real_send(connection, chunk))
        # The peer writes while the vendor is still answering the first try...
        await paired.inbound(content="are you there?", messageId="m-while-sending")
        flushes = {t for t in asyncio.all_tasks() if t.get_name().startswith("flush:")}
        assert flushes
        await asyncio.wait(flushes, timeout=5)
        # ...and the vendor, which had not seen that message yet, says the window is closed.
        raise DeferredSendError("the reply window is closed")

    monkeypatch.setattr(driver, "send", send_as_the_peer_writes)
    response = await paired.send("out_raced", "hello")
    assert response.json()["status"] == "deferred"
    result = await wait_for_status(paired, "out_raced", "sent")
    assert result["ok"] is True
    assert [s["requestId"] for s in await paired.sent()] == ["out_raced"]


async def test_unknown_connection_is_404(paired: Sidecar) -> None:
    """Sending on an unknown connection is 404 ``connection_not_found``."""
    assert_problem(await paired.send("out_1", connection_id="nope"), 404, "connection_not_found")
    assert_problem(await paired.client.get("/send/out_1"), 404, "request_not_found")


async def test_expired_login_is_409_connection_not_ready(paired: Sidecar) -> None:
    """After the login expires, a send is 409 ``connection_not_ready`` without Retry-After."""
    await paired.faults(expireLogin=True)
    response = await paired.send("out_1")
    assert_problem(response, 409, "connection_not_ready")
    assert "retry-after" not in response.headers
    assert await paired.sent() == []


async def test_a_connection_still_pairing_is_not_ready(sidecar: Sidecar) -> None:
    """A connection whose first pairing has not finished is 409 ``connection_not_ready``."""
    await sidecar.client.post(
        "/connector-sessions", json={"kind": "sim", "connectionId": "conn_1", "channelId": "c"}
    )
    assert_problem(await sidecar.send("out_1"), 409, "connection_not_ready")


async def test_long_content_goes_out_in_ordered_chunks(paired: Sidecar) -> None:
    """Content over the sim's 2000 characters is sent as ordered chunks that rejoin to the text."""
    text = paragraphs(5)
    response = await paired.send("out_long", text)
    assert response.status_code == 200
    result = response.json()
    assert len(result["providerMessageIds"]) == 5
    assert result["providerMessageId"] == result["providerMessageIds"][0]
    sent = await paired.sent()
    assert [s["chunkIndex"] for s in sent] == [0, 1, 2, 3, 4]
    assert [s["providerMessageId"] for s in sent] == result["providerMessageIds"]
    assert "".join(s["content"] for s in sent) == text
    assert all(len(s["content"]) <= 2000 for s in sent)


async def test_long_content_is_split_off_the_event_loop(
    paired: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Splitting a long message (up to ~0.1 s of CPU) runs in a thread, not on the event loop."""
    threads: list[str] = []

    def recording_split(text: str, limit: int) -> list[str]:
        threads.append(threading.current_thread().name)
        return split_text(text, limit)

    monkeypatch.setattr(sending, "split_text", recording_split)
    assert (await paired.send("out_short", "short")).status_code == 200
    assert (await paired.send("out_long_text", paragraphs(40))).status_code == 200
    main = threading.main_thread().name
    assert threads[0] == main  # a short text is not worth a thread hop
    assert threads[1] != main
    assert len(threads) == 2


async def test_send_resumes_after_the_chunks_already_sent(paired: Sidecar) -> None:
    """After a 503 half-way, a retry sends only the remaining chunks, each exactly once."""
    text = paragraphs(5)
    await paired.faults(sendFailures=1, sendFailuresAfter=2)
    failed = await paired.send("out_resume", text)
    assert_problem(failed, 503, "provider_unavailable")
    partial = (await paired.client.get("/send/out_resume")).json()
    assert partial["ok"] is False
    assert len(partial["providerMessageIds"]) == 2

    retried = await paired.send("out_resume", text)
    assert retried.status_code == 200
    ids = retried.json()["providerMessageIds"]
    assert ids[:2] == partial["providerMessageIds"]
    sent = await paired.sent()
    assert [(s["requestId"], s["chunkIndex"]) for s in sent] == [
        ("out_resume", i) for i in range(5)
    ]
    assert [s["providerMessageId"] for s in sent] == ids
    assert "".join(s["content"] for s in sent) == text


@pytest.mark.parametrize("content", ["", "   \n\t "])
async def test_empty_content_is_422(paired: Sidecar, content: str) -> None:
    """Empty or blank content is a 422 naming ``$.content``; nothing is recorded."""
    response = await paired.send("out_empty", content)
    problem = assert_problem(response, 422, "validation_failed")
    assert "$.content" in str(problem["detail"])
    assert [e["path"] for e in problem["errors"]] == ["$.content"]
    assert_problem(await paired.client.get("/send/out_empty"), 404, "request_not_found")


async def test_kind_that_does_not_match_the_connection_is_422(paired: Sidecar) -> None:
    """A ``kind`` other than the connection's is a 422 naming ``$.kind``."""
    response = await paired.send("out_kind", kind="weixin")
    problem = assert_problem(response, 422, "validation_failed")
    assert "$.kind" in str(problem["detail"])
    assert [e["path"] for e in problem["errors"]] == ["$.kind"]


async def test_message_type_markdown_and_bad_values(paired: Sidecar) -> None:
    """``messageType`` may be ``markdown``; an unknown type or peerType is a 422 naming the field."""
    assert (await paired.send("out_md", "**bold**", messageType="markdown")).status_code == 200
    problem = assert_problem(
        await paired.send("out_bad", messageType="html"), 422, "validation_failed"
    )
    assert [e["path"] for e in problem["errors"]] == ["$.messageType"]


async def test_reply_to_and_thread_are_passed_through(paired: Sidecar) -> None:
    """``target.threadId`` reaches the vendor with the chunk."""
    body = {
        "requestId": "out_thread",
        "connectionId": "conn_1",
        "target": {"peerId": "group-1", "peerType": "group", "threadId": "t-9"},
        "content": "in thread",
        "replyToMessageId": "vendor-msg-1",
    }
    assert (await paired.client.post("/send", json=body)).status_code == 200
    [item] = await paired.sent()
    assert (item["peerId"], item["threadId"]) == ("group-1", "t-9")


async def test_overlapping_flushes_send_a_deferred_message_once(paired: Sidecar) -> None:
    """A flush that starts while another is about to take over the peer never sends a message twice."""
    sender = paired.app.state.services.sender
    await paired.faults(replyWindowClosed=True)
    assert (await paired.send("out_once", "only once")).status_code == 202
    await paired.faults(sendLatencyMs=150)
    # A tries while the window is still closed (and defers again); B queues behind A.
    first = asyncio.create_task(sender.flush_deferred("conn_1", "peer-1"))
    second = asyncio.create_task(sender.flush_deferred("conn_1", "peer-1"))
    assert await asyncio.wait_for(first, 5) == 0
    await paired.faults(replyWindowClosed=False)
    # C arrives while B is sending: it must wait for B, then find nothing left to send.
    third = asyncio.create_task(sender.flush_deferred("conn_1", "peer-1"))
    counts = await asyncio.wait_for(asyncio.gather(second, third), 5)
    assert sorted(counts) == [0, 1]
    assert [s["requestId"] for s in await paired.sent()] == ["out_once"]


async def test_blank_chunks_are_not_sent(paired: Sidecar) -> None:
    """A run of blank lines longer than a chunk does not make the vendor post a blank message."""
    text = "a" * 1990 + "\n" * 2500 + "b"
    response = await paired.send("out_blank_run", text)
    assert response.status_code == 200
    sent = await paired.sent()
    assert all(s["content"].strip() for s in sent)
    assert "".join(s["content"] for s in sent).replace("\n", "") == "a" * 1990 + "b"
    assert len(response.json()["providerMessageIds"]) == len(sent)
