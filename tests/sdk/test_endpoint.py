"""``BridgeEndpoint`` mounted in a Starlette app under TestClient, and ``handle_bridge_request``."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from connector_contracts import BridgeEvent, HostAnswer, encode
from connector_sdk import (
    BridgeEndpoint,
    BridgeVerifier,
    DedupeDecision,
    DedupeError,
    MemoryDedupeStore,
    SqliteDedupeStore,
    handle_bridge_request,
)
from connector_sdk.testing import bridge_headers, make_bridge_event

from ._starlette import TestClient

PATH = "/api/channel-connector-bridge/events"
TOKEN = "bridge-token"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NOW = 1_780_000_000


class Recorder:
    """A bridge handler that records events and can be told to fail."""

    def __init__(self) -> None:
        self.events: list[BridgeEvent] = []
        self.fail_next = 0

    async def __call__(self, event: BridgeEvent) -> str | None:
        self.events.append(event)
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("model unavailable")
        return f"host-{event.event_id}"


def request_parts(
    event: BridgeEvent, *, token: str = TOKEN, secret: str = SECRET
) -> tuple[dict[str, str], bytes]:
    """Headers and body of the sidecar's POST of ``event``."""
    body = encode(event)
    headers = bridge_headers(
        body, event_id=event.event_id, token=token, signing_secrets=(secret,), timestamp=NOW
    )
    return headers, body


@pytest.fixture
def handler() -> Recorder:
    """The host's handler."""
    return Recorder()


@pytest.fixture
def store() -> MemoryDedupeStore:
    """The endpoint's dedupe store."""
    return MemoryDedupeStore()


@pytest.fixture
def endpoint(handler: Recorder, store: MemoryDedupeStore) -> BridgeEndpoint:
    """An endpoint whose verifier's clock stands at NOW."""
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET,), now=lambda: NOW)
    return BridgeEndpoint(handler, verifier=verifier, store=store)


@pytest.fixture
def client(endpoint: BridgeEndpoint) -> Iterator[TestClient]:
    """A Starlette app with the endpoint on the bridge path, under TestClient."""
    app = Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])
    with TestClient(app) as test_client:
        yield test_client


def post(
    client: TestClient, event: BridgeEvent, **kwargs: str
) -> tuple[int, dict[str, object], dict[str, str]]:
    """POST ``event`` like the sidecar; returns status, JSON body and headers."""
    headers, body = request_parts(event, **kwargs)
    response = client.post(PATH, content=body, headers=headers)
    return response.status_code, response.json(), dict(response.headers)


def test_event_is_handled_and_accepted(client: TestClient, handler: Recorder) -> None:
    """A good request runs the handler once and answers 200 accepted."""
    event = make_bridge_event(event_id="evt_1")
    status, body, headers = post(client, event)
    assert status == 200
    assert body == {
        "accepted": True,
        "duplicate": False,
        "pending": False,
        "retryAfterSeconds": None,
    }
    assert headers["content-type"] == "application/json"
    assert handler.events == [event]


def test_handler_result_is_stored(client: TestClient, store: MemoryDedupeStore) -> None:
    """What the handler returns is kept as the record's message id, status completed."""
    post(client, make_bridge_event(event_id="evt_2", connection_id="conn_9"))
    record = asyncio.run(store.get("conn_9:evt_2"))
    assert record is not None
    assert (record.status, record.message_id) == ("completed", "host-evt_2")


def test_redelivery_is_a_duplicate(client: TestClient, handler: Recorder) -> None:
    """The same event delivered again answers 200 duplicate without calling the handler."""
    event = make_bridge_event(event_id="evt_3")
    post(client, event)
    status, body, _ = post(client, make_bridge_event(event_id="evt_3", delivery_attempt=2))
    assert status == 200
    assert body["accepted"] is True
    assert body["duplicate"] is True
    assert len(handler.events) == 1


def test_in_progress_answers_409_retry_after_5(
    client: TestClient, handler: Recorder, store: MemoryDedupeStore
) -> None:
    """While an earlier attempt is processing: 409, Retry-After 5, pending, handler not called."""
    asyncio.run(store.begin("conn_test", "evt_4", 1))
    status, body, headers = post(client, make_bridge_event(event_id="evt_4", delivery_attempt=2))
    assert status == 409
    assert headers["retry-after"] == "5"
    assert body == {"accepted": False, "duplicate": True, "pending": True, "retryAfterSeconds": 5}
    assert handler.events == []


def test_handler_failure_answers_500_and_is_retried(
    client: TestClient, handler: Recorder, store: MemoryDedupeStore
) -> None:
    """A raising handler: 500 accepted false, record failed; the next delivery processes it."""
    handler.fail_next = 1
    status, body, _ = post(client, make_bridge_event(event_id="evt_5"))
    assert status == 500
    assert body["accepted"] is False
    record = asyncio.run(store.get("conn_test:evt_5"))
    assert record is not None
    assert record.status == "failed"
    assert record.last_error == "RuntimeError: model unavailable"
    status, body, _ = post(client, make_bridge_event(event_id="evt_5", delivery_attempt=2))
    assert (status, body["accepted"], body["duplicate"]) == (200, True, False)
    assert len(handler.events) == 2


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"token": "wrong"}, "bearer"),
        ({"secret": "whsec_" + base64.b64encode(b"z" * 32).decode()}, "signature"),
    ],
)
def test_bad_token_or_signature_is_401(
    client: TestClient, handler: Recorder, kwargs: dict[str, str], reason: str
) -> None:
    """A wrong token or signature answers 401 with a problem document; nothing is handled."""
    status, body, headers = post(client, make_bridge_event(), **kwargs)
    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    assert body["code"] == "unauthorized"
    assert reason in str(body["detail"])
    assert handler.events == []


def test_missing_headers_is_401(client: TestClient) -> None:
    """A request with no auth headers at all answers 401."""
    response = client.post(PATH, content=encode(make_bridge_event()))
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{oops", 400, "invalid_json"),
        (b'{"eventId": 1}', 422, "validation_failed"),
        (b"", 400, "invalid_json"),
    ],
)
def test_bad_bodies(
    client: TestClient, handler: Recorder, body: bytes, status: int, code: str
) -> None:
    """A signed body that is not JSON is 400; JSON that is not a BridgeEvent is 422."""
    headers = bridge_headers(
        body, event_id="evt_x", token=TOKEN, signing_secrets=(SECRET,), timestamp=NOW
    )
    response = client.post(PATH, content=body, headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert handler.events == []


def test_only_post_is_allowed(endpoint: BridgeEndpoint) -> None:
    """Served without a method filter, a GET answers 405 with ``Allow: POST``."""
    with TestClient(endpoint) as test_client:
        response = test_client.get(PATH)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_body_too_large_is_413(handler: Recorder) -> None:
    """A body over the endpoint's limit answers 413 before any verification."""
    verifier = BridgeVerifier(token=TOKEN, now=lambda: NOW)
    small = BridgeEndpoint(handler, verifier=verifier, max_body_bytes=100)
    with TestClient(small) as test_client:
        response = test_client.post(
            "/", content=b"x" * 101, headers={"authorization": f"Bearer {TOKEN}"}
        )
    assert response.status_code == 413
    assert handler.events == []


def test_mount_and_top_level(handler: Recorder) -> None:
    """The endpoint works under ``Mount`` and as the top-level ASGI app (with lifespan)."""
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET,), now=lambda: NOW)
    endpoint = BridgeEndpoint(handler, verifier=verifier)
    event = make_bridge_event(event_id="evt_m")
    headers, body = request_parts(event)
    app = Starlette(routes=[Mount("/api/channel-connector-bridge", app=endpoint)])
    with TestClient(app, follow_redirects=False) as mounted:
        assert mounted.post(PATH, content=body, headers=headers).status_code == 200
    with TestClient(endpoint) as top_level:
        answer = top_level.post("/", content=body, headers=headers).json()
    assert answer["duplicate"] is True
    assert [e.event_id for e in handler.events] == ["evt_m"]


def test_default_store_is_in_memory(handler: Recorder) -> None:
    """Without a store, the endpoint dedupes in memory."""
    endpoint = BridgeEndpoint(handler, verifier=BridgeVerifier(token=TOKEN))
    assert isinstance(endpoint.store, MemoryDedupeStore)


def test_sqlite_store_under_starlette(handler: Recorder, tmp_path: Path) -> None:
    """With a SqliteDedupeStore, a redelivery after a 'restart' (new app) is still a duplicate."""
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET,), now=lambda: NOW)
    event = make_bridge_event(event_id="evt_s")
    headers, body = request_parts(event)
    answers = []
    for _ in range(2):
        store = SqliteDedupeStore(tmp_path / "dedupe.sqlite3")
        app = Starlette(
            routes=[
                Route(
                    PATH, BridgeEndpoint(handler, verifier=verifier, store=store), methods=["POST"]
                )
            ]
        )
        with TestClient(app) as test_client:
            answers.append(test_client.post(PATH, content=body, headers=headers).json())
        store.close()
    assert [a["duplicate"] for a in answers] == [False, True]
    assert len(handler.events) == 1


@pytest.mark.anyio
async def test_handle_bridge_request_without_asgi(
    handler: Recorder, store: MemoryDedupeStore
) -> None:
    """The framework-free function gives status, headers, body and the decoded answer."""
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET,), now=lambda: NOW)
    event = make_bridge_event(event_id="evt_h")
    headers, body = request_parts(event)
    response = await handle_bridge_request(headers, body, handler, verifier=verifier, store=store)
    assert response.status_code == 200
    assert response.answer == HostAnswer(accepted=True)
    assert response.event == event
    assert json.loads(response.body)["accepted"] is True
    refused = await handle_bridge_request({}, body, handler, verifier=verifier, store=store)
    assert refused.status_code == 401
    assert refused.answer is None


@pytest.mark.anyio
async def test_concurrent_deliveries_are_handled_once(
    handler: Recorder, store: MemoryDedupeStore
) -> None:
    """Ten simultaneous deliveries of one event: one 200 accepted, the rest 409 pending."""
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET,), now=lambda: NOW)
    gate = asyncio.Event()

    async def slow(event: BridgeEvent) -> None:
        handler.events.append(event)
        await gate.wait()

    headers, body = request_parts(make_bridge_event(event_id="evt_c"))
    tasks = [
        asyncio.ensure_future(
            handle_bridge_request(headers, body, slow, verifier=verifier, store=store)
        )
        for _ in range(10)
    ]
    for _ in range(100):  # bounded: let the nine duplicates finish while the first waits
        if sum(t.done() for t in tasks) == 9:
            break
        await asyncio.sleep(0)
    gate.set()
    statuses = sorted(r.status_code for r in await asyncio.gather(*tasks))
    assert statuses == [200] + [409] * 9
    assert len(handler.events) == 1


class BrokenStore(MemoryDedupeStore):
    """A dedupe store whose chosen operation fails like a locked database."""

    def __init__(self, broken: str) -> None:
        super().__init__()
        self.broken = broken

    async def begin(
        self, connection_id: str, event_id: str, delivery_attempt: int = 1
    ) -> DedupeDecision:
        if self.broken == "begin":
            raise DedupeError("database is locked")
        return await super().begin(connection_id, event_id, delivery_attempt)

    async def complete(self, dedupe_key: str, message_id: str | None = None) -> None:
        if self.broken == "complete":
            raise DedupeError("database is locked")
        await super().complete(dedupe_key, message_id)

    async def fail(self, dedupe_key: str, error: str) -> None:
        if self.broken == "fail":
            raise DedupeError("database is locked")
        await super().fail(dedupe_key, error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("broken", "handler_fails", "status", "handled"),
    [("begin", False, 503, 0), ("complete", False, 200, 1), ("fail", True, 500, 1)],
)
async def test_store_failures(broken: str, handler_fails: bool, status: int, handled: int) -> None:
    """Store failures: begin → 503 (retry later); complete → still 200; fail → still 500."""
    handler = Recorder()
    handler.fail_next = int(handler_fails)
    verifier = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET,), now=lambda: NOW)
    headers, body = request_parts(make_bridge_event(event_id="evt_b"))
    response = await handle_bridge_request(
        headers, body, handler, verifier=verifier, store=BrokenStore(broken)
    )
    assert response.status_code == status
    assert response.answer is not None
    assert response.answer.accepted is (status == 200)
    assert len(handler.events) == handled
