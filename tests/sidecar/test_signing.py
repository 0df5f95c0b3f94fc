"""Standard Webhooks signatures (docs/CONTRACT.md §5), checked with the reference ``standardwebhooks``
package: its published test vector, a key rotation, and the headers on real bridge POSTs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from connector_sidecar._secret import Secret
from connector_sidecar.config import Settings
from connector_sidecar.delivery import DeliveryWorker
from connector_sidecar.signing import Signer, decode_secret
from connector_sidecar.store import InboundMessage, Store

from .conftest import DatabaseFactory
from .test_delivery import FakeTime, settled

# The test vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD_SECRET = "whsec_" + base64.b64encode(b"the old secret, 32 bytes long!!!").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"the new secret, rotated in today").decode()
URL = "http://host.test/events"


def test_the_reference_test_vector() -> None:
    """Our signature of the published vector is exactly the published one."""
    signer = Signer([Secret(VECTOR_SECRET)])
    assert signer.signature(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    reference = Webhook(VECTOR_SECRET).sign(
        VECTOR_ID, datetime.fromtimestamp(VECTOR_TIMESTAMP, UTC), VECTOR_BODY.decode()
    )
    assert reference == VECTOR_SIGNATURE


def test_headers_verify_with_the_reference_library() -> None:
    """The three headers we send pass ``standardwebhooks.Webhook.verify``; a changed body does not."""
    now = int(datetime.now(UTC).timestamp())
    body = b'{"eventId":"evt_1","content":"\xe4\xbd\xa0\xe5\xa5\xbd"}'
    headers = Signer([VECTOR_SECRET]).headers("evt_1", now, body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "evt_1"
    assert headers["webhook-timestamp"] == str(now)
    assert Webhook(VECTOR_SECRET).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(VECTOR_SECRET).verify(body.replace(b"evt_1", b"evt_2"), headers)


def test_rotation_signs_with_every_secret() -> None:
    """With two secrets there are two ``v1,`` signatures, and a host knowing either one verifies."""
    now = int(datetime.now(UTC).timestamp())
    body = b'{"eventId":"evt_9"}'
    headers = Signer([Secret(OLD_SECRET), Secret(NEW_SECRET)]).headers("evt_9", now, body)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    Webhook(OLD_SECRET).verify(body, headers)
    Webhook(NEW_SECRET).verify(body, headers)
    stranger = "whsec_" + base64.b64encode(b"somebody else's secret").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, headers)


def test_no_secret_no_headers() -> None:
    """Without BRIDGE_SIGNING_SECRET there are no webhook-* headers."""
    signer = Signer([])
    assert not signer
    assert signer.headers("evt_1", 1, b"{}") == {}


def test_secret_decoding() -> None:
    """The whsec_ prefix is stripped and missing base64 padding tolerated; garbage is refused."""
    assert decode_secret("whsec_dGVzdA==") == b"test"
    assert decode_secret("whsec_dGVzdA") == b"test"
    assert decode_secret("dGVzdA==") == b"test"
    with pytest.raises(ValueError, match="base64"):
        decode_secret("whsec_not base64!")
    with pytest.raises(ValueError, match="empty"):
        decode_secret("whsec_")


def test_signer_repr_hides_the_keys() -> None:
    """A Signer never shows its keys."""
    text = repr(Signer([Secret(VECTOR_SECRET)]))
    assert "MfKQ" not in text
    assert decode_secret(VECTOR_SECRET).hex() not in text


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_bridge_posts_are_signed_per_attempt(make_database: DatabaseFactory) -> None:
    """Each attempt carries webhook-id = eventId, a fresh timestamp and both rotation signatures."""
    clock = FakeTime(start=datetime.now(UTC).timestamp())  # the verifier allows 5 minutes of skew
    store = Store(make_database(), clock)
    await store.db.open()

    def setup(c: Any) -> None:
        store.connections.ensure(c, connection_id="conn_1", channel_id="chan", kind="sim")
        record = store.connections.update(c, "conn_1", status="connected")
        store.outbox.enqueue(
            c, record, [InboundMessage(message_id="m1", peer_id="p", content="hi")]
        )

    await store.db.transaction(setup)
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if len(requests) == 1:
            return httpx.Response(503, headers={"Retry-After": "2"})
        return httpx.Response(200, json={"accepted": True})

    settings = Settings(
        token=Secret("sidecar-token-123"),
        bridge_url=URL,
        bridge_token=Secret("bridge-token-123"),
        bridge_signing_secrets=(Secret(OLD_SECRET), Secret(NEW_SECRET)),
    )
    worker = DeliveryWorker(
        settings, store, clock=clock, sleep=clock.sleep, purge_interval_seconds=None
    )
    with respx.mock() as mock:
        mock.post(URL).mock(side_effect=answer)
        await worker.start()
        try:
            await settled(store)
        finally:
            await worker.stop()
            await store.db.close()
    first, second = requests
    event_id = json.loads(first.content)["eventId"]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event_id
    assert int(second.headers["webhook-timestamp"]) >= int(first.headers["webhook-timestamp"]) + 2
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    assert first.headers["authorization"] == "Bearer bridge-token-123"
    for request in requests:
        headers = dict(request.headers)
        for secret in (OLD_SECRET, NEW_SECRET):
            verified = Webhook(secret).verify(request.content, headers)
            assert verified["eventId"] == event_id
    assert [json.loads(r.content)["deliveryAttempt"] for r in requests] == [1, 2]
