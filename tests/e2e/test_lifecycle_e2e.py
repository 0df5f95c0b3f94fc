"""Lifecycle events end to end (docs/CONTRACT.md §10.2): the iLink emulator, ``connector-sidecar serve``
with ``BRIDGE_EVENT_TYPES`` naming the lifecycle types, and the recording host as the bridge."""

from __future__ import annotations

import time
from typing import Any

import pytest

from connector_sidecar.testing import wait_until

from ..emulators.ilink import IlinkEmulatorProcess
from .conftest import RecordingHost
from .test_weixin_e2e import (
    BOT,
    SidecarFactory,
    ilink,
    pair,
    send_body,
    unique_events,
    wait_connection,
    weixin_sidecar,
)

pytestmark = pytest.mark.e2e
__all__ = ["ilink"]  # the fixture, imported for its use here

ALL_TYPES = "message,connection.status,send.status"


def of_type(host: RecordingHost, event_type: str) -> list[dict[str, Any]]:
    return [e for e in unique_events(host) if e.get("type") == event_type]


def test_an_expired_login_reaches_the_host_within_5_seconds(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """iLink answers errcode -14: the host receives ``connection.status`` ``auth_expired``
    (after the ``connected`` of the pairing) within 5 s, with the vendor's error."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host, BRIDGE_EVENT_TYPES=ALL_TYPES)
    with sidecar.client() as client:
        pair(client, ilink, "wx1", BOT)
        wait_until(
            lambda: of_type(recording_host, "connection.status"),
            timeout=20,
            what="the connected event",
        )
        started = time.monotonic()
        ilink.faults(BOT, expireToken=True)
        wait_until(
            lambda: len(of_type(recording_host, "connection.status")) >= 2,
            timeout=5,
            what="connection.status auth_expired at the host within 5 s",
        )
        elapsed = time.monotonic() - started
        wait_connection(client, "wx1", "auth_expired")
    connected, expired = of_type(recording_host, "connection.status")[:2]
    assert (connected["previousStatus"], connected["status"]) == ("pairing", "connected")
    assert connected["accountId"] == BOT
    assert (expired["previousStatus"], expired["status"]) == ("connected", "auth_expired")
    assert "-14" in expired["lastError"]
    assert elapsed < 5
    assert ilink.violations() == []


def test_a_deferred_send_flushed_later_is_reported(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """ret -2 defers a send; when the peer writes it goes out and the host gets ``send.status``."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host, BRIDGE_EVENT_TYPES=ALL_TYPES)
    with sidecar.client() as client:
        pair(client, ilink, "wx1", BOT)
        ilink.faults(BOT, closeReplyWindow=["u1@im.wechat"])
        deferred = client.post("/send", json=send_body("out_wx:late", "u1@im.wechat", "later"))
        assert deferred.json()["status"] == "deferred", deferred.text
        ilink.push(BOT, [{"from": "u1@im.wechat", "text": "still there?"}])
        [event] = wait_until(
            lambda: of_type(recording_host, "send.status"), timeout=20, what="send.status"
        )
        [sent] = ilink.sent(BOT)
    assert (event["requestId"], event["status"]) == ("out_wx:late", "sent")
    assert event["providerMessageIds"] == [sent["messageId"]]
    assert [e["content"] for e in of_type(recording_host, "message")] == ["still there?"]
    assert ilink.violations() == []


def test_a_host_that_enables_nothing_new_sees_only_messages(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """Without BRIDGE_EVENT_TYPES, the same story gives the host its messages and nothing else."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host)
    with sidecar.client() as client:
        pair(client, ilink, "wx1", BOT)
        ilink.faults(BOT, closeReplyWindow=["u1@im.wechat"])
        client.post("/send", json=send_body("out_wx:late", "u1@im.wechat", "later"))
        ilink.push(BOT, [{"from": "u1@im.wechat", "text": "still there?"}])
        wait_until(lambda: ilink.sent(BOT), timeout=20, what="the deferred send")
        ilink.faults(BOT, expireToken=True)
        wait_connection(client, "wx1", "auth_expired")
        wait_until(lambda: unique_events(recording_host), timeout=20, what="the message")
        listed = client.get("/deliveries").json()["items"]
    assert [e["type"] for e in unique_events(recording_host)] == ["message"]
    assert [d["event"]["type"] for d in listed] == ["message"]
