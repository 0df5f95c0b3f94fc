"""``SidecarClient`` against a respx-mocked sidecar: every method, every retry path, every error."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx

from connector_contracts import (
    ConnectionList,
    ConnectionView,
    ConnectorInfo,
    ConnectorSessionView,
    DeliveryList,
    DeliveryView,
    LogoutResult,
    ReplayResult,
    SendRequest,
    SendResult,
    SendTarget,
)
from connector_sdk import (
    ConnectionNotFound,
    ConnectionNotReady,
    ConnectorNotFound,
    ConnectorSDKError,
    DeliveryNotFound,
    Gone,
    InvalidResponse,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    RequestIdConflict,
    RequestInProgress,
    RequestNotFound,
    RetryPolicy,
    SendExpired,
    ServerError,
    SessionNotAwaitingCode,
    SessionNotFound,
    SidecarClient,
    SidecarError,
    SidecarHTTPError,
    SidecarUnavailable,
    Unauthorized,
    ValidationFailed,
)

from ._fakes import FakeClock

pytestmark = pytest.mark.anyio

BASE = "http://sidecar.test"
TOKEN = "sidecar-token-123"

SESSION: dict[str, Any] = {
    "sessionId": "cs_1",
    "kind": "sim",
    "connectionId": "conn_1",
    "channelId": "sim-main",
    "status": "qr_ready",
    "qrImage": None,
    "qrContent": "sim://pair/cs_1",
    "metadata": {},
}
CONNECTION: dict[str, Any] = {
    "connectionId": "conn_1",
    "channelId": "sim-main",
    "kind": "sim",
    "status": "connected",
}
SENT: dict[str, Any] = {
    "ok": True,
    "requestId": "out_c:s:m",
    "status": "sent",
    "providerMessageId": "pm_1",
    "providerMessageIds": ["pm_1"],
    "duplicate": False,
}
EVENT: dict[str, Any] = {
    "eventId": "evt_1",
    "timestamp": "2026-06-02T09:30:00Z",
    "deliveryAttempt": 1,
    "connectionId": "conn_1",
    "channelId": "sim-main",
    "kind": "sim",
    "accountId": "bot",
    "peerId": "peer-1",
    "peerType": "dm",
    "messageId": "m1",
    "messageType": "text",
    "content": "hi",
}
DELIVERY: dict[str, Any] = {
    "eventId": "evt_1",
    "connectionId": "conn_1",
    "status": "dead",
    "attempts": 3,
    "createdAt": "2026-06-02T09:30:00Z",
    "event": EVENT,
}


def problem(status: int, code: str, detail: str = "it went wrong", **extra: Any) -> httpx.Response:
    """An RFC 9457 problem answer as the sidecar sends it."""
    body = {
        "type": "about:blank",
        "title": "Error",
        "status": status,
        "code": code,
        "detail": detail,
    }
    headers = {"content-type": "application/problem+json"}
    if "retry_after" in extra:
        headers["retry-after"] = str(extra.pop("retry_after"))
    body.update(extra)
    return httpx.Response(status, json=body, headers=headers)


def sent_ids(route: respx.Route) -> list[str]:
    """The requestId of every request a route received."""
    return [json.loads(call.request.content)["requestId"] for call in route.calls]


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock; the client's retry sleeps advance it instead of waiting."""
    return FakeClock(now=0.0)


@pytest.fixture
def sidecar() -> Iterator[respx.MockRouter]:
    """A respx router standing in for the sidecar."""
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[SidecarClient]:
    """A client with 4 attempts and a 30 s budget, sleeping on the fake clock."""
    policy = RetryPolicy(attempts=4, total_seconds=30, sleep=clock.sleep, clock=clock)
    async with SidecarClient(BASE, token=TOKEN, retry=policy) as sidecar_client:
        yield sidecar_client


# every method --------------------------------------------------------------------------------


async def test_list_connectors(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``list_connectors`` GETs /connectors with the bearer token and decodes the array."""
    route = sidecar.get("/connectors").respond(
        json=[{"kind": "sim", "displayName": "Sim", "pairing": "qr", "capabilities": ["send_text"]}]
    )
    connectors = await client.list_connectors()
    assert connectors == [
        ConnectorInfo(kind="sim", display_name="Sim", pairing="qr", capabilities=["send_text"])
    ]
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"].startswith("connector-sdk/")


async def test_start_session(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``start_session`` POSTs the camelCase request and returns the view (201 or 200)."""
    route = sidecar.post("/connector-sessions").respond(201, json=SESSION)
    view = await client.start_session(
        kind="sim", connection_id="conn_1", channel_id="sim-main", options={"autoConfirm": True}
    )
    assert isinstance(view, ConnectorSessionView)
    assert view.qr_content == "sim://pair/cs_1"
    body = json.loads(route.calls.last.request.content)
    assert body["connectionId"] == "conn_1"
    assert body["channelId"] == "sim-main"
    assert body["options"] == {"autoConfirm": True}
    assert route.calls.last.request.headers["content-type"] == "application/json"


async def test_get_session(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``get_session`` GETs the session by id."""
    sidecar.get("/connector-sessions/cs_1").respond(json={**SESSION, "status": "connected"})
    assert (await client.get_session("cs_1")).status == "connected"


async def test_cancel_session(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``cancel_session`` POSTs ``{}`` to the cancel route."""
    route = sidecar.post("/connector-sessions/cs_1/cancel").respond(
        json={**SESSION, "status": "cancelled"}
    )
    assert (await client.cancel_session("cs_1")).status == "cancelled"
    assert json.loads(route.calls.last.request.content) == {}


async def test_submit_verify_code(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``submit_verify_code`` POSTs the code."""
    route = sidecar.post("/connector-sessions/cs_1/verify-code").respond(json=SESSION)
    await client.submit_verify_code("cs_1", "123456")
    assert json.loads(route.calls.last.request.content) == {"code": "123456"}


async def test_list_connections(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``list_connections`` returns the ConnectionList."""
    sidecar.get("/connections").respond(json={"items": [CONNECTION]})
    listing = await client.list_connections()
    assert isinstance(listing, ConnectionList)
    assert [c.connection_id for c in listing.items] == ["conn_1"]


async def test_get_connection(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``get_connection`` returns one ConnectionView."""
    sidecar.get("/connections/conn_1").respond(json=CONNECTION)
    view = await client.get_connection("conn_1")
    assert isinstance(view, ConnectionView)
    assert view.status == "connected"


async def test_logout(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``logout`` POSTs ``{}`` and returns ``ok``."""
    route = sidecar.post("/connections/conn_1/logout").respond(json={"ok": True})
    assert await client.logout("conn_1") == LogoutResult(ok=True)
    assert json.loads(route.calls.last.request.content) == {}


async def test_send(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``send`` POSTs the contract's SendRequest and returns the SendResult."""
    route = sidecar.post("/send").respond(json=SENT)
    result = await client.send(
        request_id="out_c:s:m",
        connection_id="conn_1",
        channel_id="weixin-main",
        kind="weixin",
        peer_id="peer-1",
        thread_id="t-1",
        content="reply",
        metadata={"inboundMessageId": "in-1", "sessionId": "s1"},
    )
    assert result == SendResult(
        ok=True,
        request_id="out_c:s:m",
        status="sent",
        provider_message_id="pm_1",
        provider_message_ids=["pm_1"],
    )
    body = json.loads(route.calls.last.request.content)
    assert body["requestId"] == "out_c:s:m"
    assert body["target"] == {"peerId": "peer-1", "peerType": "dm", "threadId": "t-1"}
    assert body["metadata"] == {"inboundMessageId": "in-1", "sessionId": "s1"}
    assert body["messageType"] == "text"


async def test_send_deferred(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """A 202 deferred answer is a result, not an error."""
    sidecar.post("/send").respond(
        202,
        json={**SENT, "status": "deferred", "providerMessageId": None, "providerMessageIds": []},
    )
    result = await client.send(request_id="r1", connection_id="c", peer_id="p", content="x")
    assert result.ok
    assert result.status == "deferred"


async def test_send_request(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``send_request`` sends a prepared SendRequest as is."""
    route = sidecar.post("/send").respond(json={**SENT, "requestId": "r9"})
    request = SendRequest(
        request_id="r9", connection_id="c", target=SendTarget(peer_id="p"), content="x"
    )
    assert (await client.send_request(request)).request_id == "r9"
    assert json.loads(route.calls.last.request.content)["requestId"] == "r9"


async def test_get_send_quotes_request_id(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``get_send`` puts the requestId in the path percent-encoded."""
    route = sidecar.get(url__regex=r"/send/.+").respond(json=SENT)
    assert (await client.get_send("out_c:s/x:m")).status == "sent"
    assert route.calls.last.request.url.raw_path == b"/send/out_c%3As%2Fx%3Am"


async def test_list_deliveries(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``list_deliveries`` passes its filters as camelCase query parameters."""
    route = sidecar.get("/deliveries").respond(json={"items": [DELIVERY], "nextCursor": "n2"})
    page = await client.list_deliveries(
        status="dead", connection_id="conn_1", limit=10, cursor="n1"
    )
    assert isinstance(page, DeliveryList)
    assert page.next_cursor == "n2"
    assert page.items[0].event.event_id == "evt_1"
    params = dict(route.calls.last.request.url.params)
    assert params == {"status": "dead", "connectionId": "conn_1", "limit": "10", "cursor": "n1"}


async def test_list_deliveries_without_filters(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """Filters left out are not sent."""
    route = sidecar.get("/deliveries").respond(json={"items": []})
    await client.list_deliveries()
    assert route.calls.last.request.url.query == b""


async def test_iter_deliveries_follows_cursors(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """``iter_deliveries`` walks the pages until ``nextCursor`` is null."""
    route = sidecar.get("/deliveries")
    route.side_effect = [
        httpx.Response(200, json={"items": [DELIVERY], "nextCursor": "p2"}),
        httpx.Response(200, json={"items": [{**DELIVERY, "eventId": "evt_2"}], "nextCursor": None}),
    ]
    seen = [item.event_id async for item in client.iter_deliveries(status="dead", page_size=1)]
    assert seen == ["evt_1", "evt_2"]
    assert route.calls[1].request.url.params["cursor"] == "p2"


async def test_replay_delivery(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``replay_delivery`` POSTs to the event's replay route."""
    sidecar.post("/deliveries/evt_1/replay").respond(json={**DELIVERY, "status": "pending"})
    view = await client.replay_delivery("evt_1")
    assert isinstance(view, DeliveryView)
    assert view.status == "pending"


async def test_replay_deliveries(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """``replay_deliveries`` POSTs the filter and returns the count."""
    route = sidecar.post("/deliveries/replay").respond(json={"replayed": 3})
    assert await client.replay_deliveries(connection_id="conn_1") == ReplayResult(replayed=3)
    assert json.loads(route.calls.last.request.content) == {
        "connectionId": "conn_1",
        "status": "dead",
    }


# retries -------------------------------------------------------------------------------------


async def test_send_retries_5xx_with_the_same_request_id(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """A 503 then a 500 then success: three attempts, one requestId, identical bodies."""
    route = sidecar.post("/send")
    route.side_effect = [
        problem(503, "provider_unavailable"),
        httpx.Response(500, text="oops"),
        httpx.Response(200, json={**SENT, "requestId": "r1"}),
    ]
    result = await client.send(request_id="r1", connection_id="c", peer_id="p", content="x")
    assert result.request_id == "r1"
    assert sent_ids(route) == ["r1", "r1", "r1"]
    assert len({call.request.content for call in route.calls}) == 1
    assert len(clock.sleeps) == 2


async def test_send_generates_one_request_id_for_all_attempts(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """Without a requestId, one is made before the first attempt and reused on each retry."""
    route = sidecar.post("/send")
    route.side_effect = [httpx.Response(502, text="bad gateway"), httpx.Response(200, json=SENT)]
    await client.send(connection_id="c", peer_id="p", content="x")
    ids = sent_ids(route)
    assert len(ids) == 2
    assert ids[0] == ids[1]
    assert re.fullmatch(r"out_[0-9a-f]{32}", ids[0])


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut")],
    ids=["connect-error", "timeout", "protocol-error"],
)
async def test_send_retries_transport_errors(
    client: SidecarClient, sidecar: respx.MockRouter, failure: Exception
) -> None:
    """Connection errors and timeouts are retried with the same requestId."""
    route = sidecar.post("/send")
    route.side_effect = [failure, httpx.Response(200, json=SENT)]
    result = await client.send(request_id="r2", connection_id="c", peer_id="p", content="x")
    assert result.ok
    assert sent_ids(route) == ["r2", "r2"]


async def test_send_retries_429_honouring_retry_after(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """A 429 with ``Retry-After: 7`` waits exactly 7 s before the next attempt."""
    route = sidecar.post("/send")
    route.side_effect = [
        httpx.Response(429, headers={"retry-after": "7"}),
        httpx.Response(200, json=SENT),
    ]
    await client.send(request_id="r3", connection_id="c", peer_id="p", content="x")
    assert clock.sleeps == [7.0]
    assert route.call_count == 2


async def test_send_retries_request_in_progress(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """409 ``request_in_progress`` is retried after its Retry-After; the repeat is a duplicate."""
    route = sidecar.post("/send")
    route.side_effect = [
        problem(409, "request_in_progress", retry_after=2),
        httpx.Response(200, json={**SENT, "requestId": "r4", "duplicate": True}),
    ]
    result = await client.send(request_id="r4", connection_id="c", peer_id="p", content="x")
    assert result.duplicate
    assert clock.sleeps == [2.0]
    assert sent_ids(route) == ["r4", "r4"]


async def test_retry_after_http_date(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """A Retry-After given as an HTTP date is turned into seconds from now."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    route = sidecar.post("/send")
    route.side_effect = [
        httpx.Response(503, headers={"retry-after": when}),
        httpx.Response(200, json=SENT),
    ]
    await client.send(request_id="r5", connection_id="c", peer_id="p", content="x")
    assert len(clock.sleeps) == 1
    assert 15 <= clock.sleeps[0] <= 20


async def test_unreadable_retry_after_falls_back_to_backoff(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """A Retry-After that only looks numeric ("²" passes str.isdigit) is ignored, not a crash."""
    route = sidecar.post("/send")
    route.side_effect = [
        httpx.Response(503, headers={b"retry-after": b"\xb2"}),
        httpx.Response(200, json=SENT),
    ]
    result = await client.send(request_id="r5b", connection_id="c", peer_id="p", content="x")
    assert result.ok
    assert len(clock.sleeps) == 1


async def test_retry_after_from_body(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """Without a header, the problem's ``retryAfterSeconds`` is honoured."""
    route = sidecar.post("/send")
    route.side_effect = [
        problem(503, "provider_unavailable", retryAfterSeconds=3),
        httpx.Response(200, json=SENT),
    ]
    await client.send(request_id="r6", connection_id="c", peer_id="p", content="x")
    assert clock.sleeps == [3.0]


async def test_gives_up_after_max_attempts(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """Four 500s: four attempts, then the last error with ``attempts`` and the requestId."""
    route = sidecar.post("/send").respond(500, text="down")
    with pytest.raises(ServerError) as caught:
        await client.send(request_id="r7", connection_id="c", peer_id="p", content="x")
    assert route.call_count == 4
    assert sent_ids(route) == ["r7"] * 4
    assert caught.value.attempts == 4
    assert caught.value.request_id == "r7"
    assert caught.value.status == 500
    assert len(clock.sleeps) == 3
    assert "after 4 attempts" in str(caught.value)


async def test_gives_up_when_the_time_budget_would_be_exceeded(
    client: SidecarClient, sidecar: respx.MockRouter, clock: FakeClock
) -> None:
    """Retry-After 20 s with a 30 s budget: one wait, then no wait that would end past 30 s."""
    route = sidecar.post("/send").mock(
        return_value=problem(503, "provider_unavailable", retry_after=20)
    )
    with pytest.raises(ProviderUnavailable) as caught:
        await client.send(request_id="r8", connection_id="c", peer_id="p", content="x")
    assert route.call_count == 2
    assert clock.sleeps == [20.0]
    assert caught.value.retry_after == 20.0
    assert caught.value.attempts == 2


async def test_gives_up_on_connection_errors(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """A sidecar that never answers ends in SidecarUnavailable after every attempt."""
    route = sidecar.post("/send").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(SidecarUnavailable) as caught:
        await client.send(request_id="r9", connection_id="c", peer_id="p", content="x")
    assert route.call_count == 4
    assert caught.value.attempts == 4
    assert caught.value.request_id == "r9"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_backoff_is_jittered_and_bounded(sidecar: respx.MockRouter) -> None:
    """Without Retry-After, each wait is a full-jitter draw below the exponential cap."""
    clock = FakeClock(now=0.0)
    policy = RetryPolicy(
        attempts=8,
        total_seconds=1000,
        initial_backoff=0.5,
        max_backoff=4.0,
        sleep=clock.sleep,
        clock=clock,
    )
    sidecar.get("/connections").respond(503)
    async with SidecarClient(BASE, token=TOKEN, retry=policy) as client:
        with pytest.raises(ServerError):
            await client.list_connections()
    assert len(clock.sleeps) == 7
    for n, slept in enumerate(clock.sleeps):
        assert 0 <= slept <= min(4.0, 0.5 * 2 ** (n + 1))


async def test_retry_after_is_capped(sidecar: respx.MockRouter) -> None:
    """A huge Retry-After is cut to ``max_retry_after``."""
    clock = FakeClock(now=0.0)
    policy = RetryPolicy(
        attempts=2, total_seconds=100, max_retry_after=10, sleep=clock.sleep, clock=clock
    )
    sidecar.get("/connections").mock(
        side_effect=[
            httpx.Response(429, headers={"retry-after": "3600"}),
            httpx.Response(200, json={"items": []}),
        ]
    )
    async with SidecarClient(BASE, token=TOKEN, retry=policy) as client:
        await client.list_connections()
    assert clock.sleeps == [10.0]


async def test_reads_are_retried(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """GETs are idempotent and retried like sends."""
    route = sidecar.get("/connections/conn_1")
    route.side_effect = [httpx.Response(503), httpx.Response(200, json=CONNECTION)]
    assert (await client.get_connection("conn_1")).connection_id == "conn_1"
    assert route.call_count == 2


async def test_verify_code_is_not_retried(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """A verification code is used once: a 503 is raised, not retried."""
    route = sidecar.post("/connector-sessions/cs_1/verify-code").respond(503)
    with pytest.raises(ServerError):
        await client.submit_verify_code("cs_1", "123456")
    assert route.call_count == 1


async def test_replay_is_not_retried(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """A replay re-delivers each time it runs, so a failure is not retried."""
    route = sidecar.post("/deliveries/evt_1/replay").mock(side_effect=httpx.ConnectError("no"))
    with pytest.raises(SidecarUnavailable):
        await client.replay_delivery("evt_1")
    assert route.call_count == 1


async def test_bad_url_is_not_retried() -> None:
    """A URL httpx cannot call raises SidecarError at once, naming the full URL."""
    clock = FakeClock(now=0.0)
    policy = RetryPolicy(attempts=4, sleep=clock.sleep, clock=clock)
    async with SidecarClient("ftp://sidecar.test", token=TOKEN, retry=policy) as client:
        with pytest.raises(SidecarError) as caught:
            await client.get_send("r1")
    assert not isinstance(caught.value, SidecarUnavailable)
    assert caught.value.attempts == 1
    assert clock.sleeps == []
    assert "GET ftp://sidecar.test/send/r1" in str(caught.value)
    assert caught.value.request_id == "r1"


# typed errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "error_type"),
    [
        (422, "request_id_conflict", RequestIdConflict),
        (404, "connection_not_found", ConnectionNotFound),
        (409, "connection_not_ready", ConnectionNotReady),
        (502, "provider_rejected", ProviderRejected),
        (401, "unauthorized", Unauthorized),
        (403, "forbidden", Unauthorized),
        (422, "validation_failed", ValidationFailed),
        (400, "invalid_json", ValidationFailed),
        (413, "body_too_large", ValidationFailed),
        (404, "request_not_found", RequestNotFound),
        (410, "send_expired", SendExpired),
        (410, "gone", Gone),
    ],
)
async def test_send_errors_are_typed_and_not_retried(
    client: SidecarClient,
    sidecar: respx.MockRouter,
    status: int,
    code: str,
    error_type: type[SidecarHTTPError],
) -> None:
    """Each permanent answer raises its own type, once, with status, code, detail, requestId."""
    route = sidecar.post("/send").mock(return_value=problem(status, code, detail=f"because {code}"))
    with pytest.raises(error_type) as caught:
        await client.send(request_id="rq", connection_id="c", peer_id="p", content="x")
    error = caught.value
    assert type(error) is error_type
    assert isinstance(error, ConnectorSDKError)
    assert route.call_count == 1
    assert (error.status, error.code, error.detail, error.request_id) == (
        status,
        code,
        f"because {code}",
        "rq",
    )
    assert error.attempts == 1
    assert str(error).startswith(f"{status} {code}: because {code}")
    assert "requestId=rq" in str(error)


@pytest.mark.parametrize(
    ("call", "path", "status", "code", "error_type"),
    [
        ("start", "/connector-sessions", 404, "connector_not_found", ConnectorNotFound),
        ("get_session", "/connector-sessions/cs_x", 404, "session_not_found", SessionNotFound),
        (
            "verify",
            "/connector-sessions/cs_x/verify-code",
            409,
            "session_not_awaiting_code",
            SessionNotAwaitingCode,
        ),
        ("replay", "/deliveries/evt_x/replay", 404, "delivery_not_found", DeliveryNotFound),
        ("logout", "/connections/cs_x/logout", 404, "connection_not_found", ConnectionNotFound),
    ],
)
async def test_other_errors_are_typed(
    client: SidecarClient,
    sidecar: respx.MockRouter,
    call: str,
    path: str,
    status: int,
    code: str,
    error_type: type[SidecarHTTPError],
) -> None:
    """Pairing, connection and delivery calls raise the type their code names."""
    sidecar.route(path=path).mock(return_value=problem(status, code))
    calls = {
        "start": lambda: client.start_session(kind="nope", connection_id="c", channel_id="ch"),
        "get_session": lambda: client.get_session("cs_x"),
        "verify": lambda: client.submit_verify_code("cs_x", "1"),
        "replay": lambda: client.replay_delivery("evt_x"),
        "logout": lambda: client.logout("cs_x"),
    }
    with pytest.raises(error_type) as caught:
        await calls[call]()
    assert caught.value.code == code
    assert caught.value.status == status


async def test_validation_errors_are_listed(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """A 422's field errors are available on the raised error."""
    sidecar.post("/send").mock(
        return_value=problem(
            422, "validation_failed", errors=[{"path": "$.target.peerId", "message": "too short"}]
        )
    )
    with pytest.raises(ValidationFailed) as caught:
        await client.send(request_id="r", connection_id="c", peer_id="", content="x")
    assert [(e.path, e.message) for e in caught.value.errors] == [("$.target.peerId", "too short")]


async def test_rate_limited_is_raised_after_giving_up(sidecar: respx.MockRouter) -> None:
    """With retries off, a 429 is raised as RateLimited carrying its Retry-After."""
    sidecar.get("/connectors").respond(429, headers={"retry-after": "9"})
    async with SidecarClient(BASE, token=TOKEN, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(RateLimited) as caught:
            await client.list_connectors()
    assert caught.value.retry_after == 9.0


async def test_request_in_progress_is_raised_after_giving_up(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """A send still in flight after every attempt raises RequestInProgress."""
    sidecar.post("/send").mock(return_value=problem(409, "request_in_progress", retry_after=1))
    with pytest.raises(RequestInProgress) as caught:
        await client.send(request_id="rr", connection_id="c", peer_id="p", content="x")
    assert caught.value.attempts == 4


async def test_code_must_agree_with_status(
    client: SidecarClient, sidecar: respx.MockRouter
) -> None:
    """A 503 claiming ``provider_rejected`` stays a retryable ServerError."""
    route = sidecar.post("/send").mock(return_value=problem(503, "provider_rejected"))
    with pytest.raises(ServerError) as caught:
        await client.send(request_id="r", connection_id="c", peer_id="p", content="x")
    assert not isinstance(caught.value, ProviderRejected)
    assert route.call_count == 4


async def test_non_json_error_body(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """A proxy's HTML 404 still raises NotFound with a default code."""
    sidecar.get("/connections/x").respond(404, html="<h1>nope</h1>")
    with pytest.raises(SidecarHTTPError) as caught:
        await client.get_connection("x")
    assert caught.value.status == 404
    assert caught.value.code == "not_found"


async def test_invalid_success_body(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """A 200 whose body is not the contract's type raises InvalidResponse."""
    sidecar.get("/connections/conn_1").respond(json={"connectionId": 5})
    with pytest.raises(InvalidResponse) as caught:
        await client.get_connection("conn_1")
    assert caught.value.code == "invalid_response"
    assert "ConnectionView" in str(caught.value)


async def test_bodies_that_are_not_utf8(client: SidecarClient, sidecar: respx.MockRouter) -> None:
    """An error or success body in another charset raises the typed error, not UnicodeDecodeError."""
    latin1 = {"content-type": "text/html; charset=latin-1"}
    sidecar.get("/connections/x").respond(404, content=b"<h1>\xe9chec</h1>", headers=latin1)
    with pytest.raises(SidecarHTTPError) as caught:
        await client.get_connection("x")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    sidecar.get("/connections/y").respond(200, content=b'{"connectionId": "\xff"}')
    with pytest.raises(InvalidResponse):
        await client.get_connection("y")


# lifecycle and secrets -----------------------------------------------------------------------


async def test_context_manager_closes_the_pool() -> None:
    """Leaving the ``async with`` block closes the client's one connection pool."""
    client = SidecarClient(BASE, token=TOKEN)
    async with client as entered:
        assert entered is client
        assert not client._http.is_closed
    assert client._http.is_closed


async def test_mock_transport_can_be_injected() -> None:
    """A transport passed in replaces the network (no respx needed)."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"items": []})

    async with SidecarClient(BASE, token=TOKEN, transport=httpx.MockTransport(handler)) as client:
        await client.list_connections()
    assert seen == [f"Bearer {TOKEN}"]


def test_token_never_in_repr() -> None:
    """Neither the client's nor its HTTP client's repr shows the token."""
    client = SidecarClient(BASE, token=TOKEN)
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(client._http.headers)
    assert TOKEN not in repr(vars(client))


def test_empty_token_is_refused() -> None:
    """A client without a token is a configuration error, raised at once."""
    with pytest.raises(ValueError, match="EXTERNAL_CONNECTOR_TOKEN"):
        SidecarClient(BASE, token="")


def test_retry_policy_needs_an_attempt() -> None:
    """``attempts=0`` is refused."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
