"""Feishu end to end: the real sidecar process, the Feishu emulator process and a recording host.

Both event transports (the long connection and webhooks), pairing both ways, groups with and
without @mention, threads, a long connection dropped mid-stream, SIGKILL and restart, rate
limits and a reply to a withdrawn message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar.store import event_id_for
from connector_sidecar.testing import SidecarProcess, wait_until

from ..emulators.feishu_harness import FeishuEmulatorProcess
from .conftest import RecordingHost

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]
SECRET = "app-secret-1"
ENCRYPT_KEY = "e2e-encrypt-key-1"
VERIFICATION_TOKEN = "e2e-verification-token-1"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[FeishuEmulatorProcess]:
    process = FeishuEmulatorProcess(tmp_path / "emulator")
    process.start()
    try:
        yield process
    finally:
        process.terminate()


def start_sidecar(
    factory: SidecarFactory, emulator: FeishuEmulatorProcess, host: RecordingHost, **env: str
) -> SidecarProcess:
    sidecar = factory(
        env={**emulator.sidecar_env(), "BRIDGE_URL": host.url, "BRIDGE_TOKEN": host.token, **env}
    )
    sidecar.start()
    return sidecar


def pair(
    client: httpx.Client,
    connection_id: str = "fs1",
    *,
    callback_base_url: str = "",
    **options: Any,
) -> dict[str, Any]:
    """Start a session and wait until it is terminal; returns the final view."""
    started = client.post(
        "/connector-sessions",
        json={
            "kind": "feishu",
            "connectionId": connection_id,
            "channelId": f"feishu-{connection_id}",
            "displayName": "E2E",
            "callbackBaseUrl": callback_base_url,
            "options": options,
        },
    )
    assert started.status_code == 201, started.text
    session_id = started.json()["sessionId"]

    def terminal() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/connector-sessions/{session_id}").json()
        return view if view["status"] in ("connected", "error", "expired") else None

    view: dict[str, Any] = wait_until(terminal, timeout=15, what="the pairing to finish")
    return view


def host_events(host: RecordingHost, connection_id: str = "fs1") -> dict[str, dict[str, Any]]:
    """What the host accepted for a connection, by messageId (at-least-once: repeats collapse)."""
    events: dict[str, dict[str, Any]] = {}
    for event in host.accepted():
        if event["connectionId"] == connection_id:
            events.setdefault(event["messageId"], event)
    return events


def wait_host(
    host: RecordingHost, message_ids: set[str], connection_id: str = "fs1", timeout: float = 15
) -> dict[str, dict[str, Any]]:
    def arrived() -> dict[str, dict[str, Any]] | None:
        events = host_events(host, connection_id)
        return events if message_ids <= events.keys() else None

    result: dict[str, dict[str, Any]] = wait_until(
        arrived, timeout=timeout, what=f"{len(message_ids)} events at the host"
    )
    return result


def wait_ws(emulator: FeishuEmulatorProcess, app_id: str, connects: int = 1) -> None:
    wait_until(
        lambda: (s := emulator.ws_state(app_id))["connected"] and s["connects"] >= connects,
        timeout=15,
        what=f"long connection number {connects}",
    )


def all_acked(emulator: FeishuEmulatorProcess, app_id: str) -> list[dict[str, Any]]:
    deliveries: list[dict[str, Any]] = emulator.ws_state(app_id)["deliveries"]
    return deliveries if deliveries and all(d["acked"] for d in deliveries) else []


def send(
    client: httpx.Client, request_id: str, content: str, peer_id: str, **extra: Any
) -> httpx.Response:
    return client.post(
        "/send",
        json={
            "requestId": request_id,
            "connectionId": "fs1",
            "channelId": "feishu-fs1",
            "kind": "feishu",
            "target": {
                "peerId": peer_id,
                "peerType": "group",
                "threadId": extra.pop("thread_id", None),
            },
            "content": content,
            "metadata": {},
            **extra,
        },
    )


def test_websocket_mode_groups_threads_and_sends(
    sidecar_factory: SidecarFactory,
    emulator: FeishuEmulatorProcess,
    recording_host: RecordingHost,
) -> None:
    """Pair over the long connection; DMs, groups with and without @mention and a thread reach
    the host; replies go into the thread; rate limits are retried; a reply to a withdrawn
    message falls back to a new message in the chat."""
    app = emulator.create_app(appSecret=SECRET, appName="E2E Bot")
    sidecar = start_sidecar(sidecar_factory, emulator, recording_host)
    with sidecar.client() as client:
        view = pair(client, appId=app["appId"], appSecret=SECRET)
        assert view["status"] == "connected", view
        assert (view["accountId"], view["displayName"]) == (app["botOpenId"], "E2E Bot")
        wait_ws(emulator, app["appId"])

        dm = emulator.push(app["appId"], chatId="oc_dm", chatType="p2p", text="hello")
        ignored = emulator.push(app["appId"], chatId="oc_g", chatType="group", text="chatter")
        mentioned = emulator.push(
            app["appId"],
            chatId="oc_g",
            chatType="group",
            mentionBot=True,
            text="ping @_user_2",
            mentions=[{"openId": "ou_bob", "name": "Bob"}],
        )
        threaded = emulator.push(
            app["appId"],
            chatId="oc_g",
            chatType="group",
            mentionBot=True,
            text="in thread",
            threadId="omt_e2e",
        )
        events = wait_host(
            recording_host, {dm["messageId"], mentioned["messageId"], threaded["messageId"]}
        )
        wait_until(lambda: all_acked(emulator, app["appId"]), timeout=10, what="all acks")
        assert ignored["messageId"] not in events
        assert len(events) == 3
        assert (events[dm["messageId"]]["peerType"], events[dm["messageId"]]["peerId"]) == (
            "dm",
            "oc_dm",
        )
        group = events[mentioned["messageId"]]
        assert (group["peerType"], group["content"]) == ("group", "ping @Bob")
        assert group["metadata"]["botMentioned"] is True
        assert group["eventId"] == event_id_for("fs1", mentioned["messageId"])
        assert events[threaded["messageId"]]["threadId"] == "omt_e2e"

        reply = send(
            client,
            "out-thread",
            "answer in thread",
            "oc_g",
            thread_id="omt_e2e",
            replyToMessageId=threaded["messageId"],
        )
        assert reply.status_code == 200, reply.text

        emulator.fault("create", 99991400)
        emulator.fault("create", 230020)
        limited = send(client, "out-limited", "after a rate limit", "oc_g")
        assert limited.status_code == 200, limited.text

        emulator.withdraw(dm["messageId"])
        fallback = send(
            client, "out-withdrawn", "answer", "oc_dm", replyToMessageId=dm["messageId"]
        )
        assert fallback.status_code == 200, fallback.text

    sent = {s["messageId"]: s for s in emulator.sent(app["appId"])}
    in_thread = sent[reply.json()["providerMessageId"]]
    assert (in_thread["op"], in_thread["replyInThread"], in_thread["threadId"]) == (
        "reply",
        True,
        "omt_e2e",
    )
    assert json.loads(in_thread["content"]) == {"text": "answer in thread"}
    creates = [
        c for c in emulator.calls("/open-apis/im/v1/messages") if "after a rate limit" in c["body"]
    ]
    assert len(creates) == 3
    assert len({json.loads(c["body"])["uuid"] for c in creates}) == 1
    assert [s["content"] for s in sent.values()].count('{"text": "after a rate limit"}') == 1
    moved = sent[fallback.json()["providerMessageId"]]
    assert (moved["op"], moved["chatId"]) == ("create", "oc_dm")


def test_websocket_dropped_mid_stream_loses_nothing(
    sidecar_factory: SidecarFactory,
    emulator: FeishuEmulatorProcess,
    recording_host: RecordingHost,
) -> None:
    """Lost acks and a socket cut right after sending: the emulator redelivers under new
    event_ids after the reconnect, the sidecar dedupes, every message reaches the host once."""
    emulator.configure(ackTimeout=1.0)
    app = emulator.create_app(appSecret=SECRET)
    sidecar = start_sidecar(sidecar_factory, emulator, recording_host)
    with sidecar.client() as client:
        assert pair(client, appId=app["appId"], appSecret=SECRET)["status"] == "connected"
        wait_ws(emulator, app["appId"])
        pushed = [
            emulator.push(app["appId"], chatId="oc_dm", text=f"m{i}", ignoreAcks=1)
            for i in range(3)
        ]
        pushed.append(emulator.push(app["appId"], chatId="oc_dm", text="cut", dropAfterSend=True))
        pushed += [emulator.push(app["appId"], chatId="oc_dm", text=f"after {i}") for i in range(3)]
        wait_ws(emulator, app["appId"], connects=2)
        ids = {p["messageId"] for p in pushed}
        events = wait_host(recording_host, ids)
        deliveries = wait_until(
            lambda: all_acked(emulator, app["appId"]), timeout=15, what="all acks"
        )
        assert events.keys() == ids
        assert {e["eventId"] for e in events.values()} == {event_id_for("fs1", i) for i in ids}
        outbox = client.get("/deliveries", params={"connectionId": "fs1"}).json()["items"]
        assert len(outbox) == len(ids)
    redelivered = [d for d in deliveries if d["attempts"] > 1]
    assert len(redelivered) >= 3
    assert all(len(set(d["eventIds"])) == d["attempts"] for d in redelivered)
    assert emulator.ws_state(app["appId"])["endpointCalls"] >= 2


def test_websocket_sidecar_sigkilled_and_restarted(
    sidecar_factory: SidecarFactory,
    emulator: FeishuEmulatorProcess,
    recording_host: RecordingHost,
) -> None:
    """An event stored but not acked when the sidecar is SIGKILLed, and events sent while it is
    down, all reach the host once after the restart; nothing is re-paired."""
    app = emulator.create_app(appSecret=SECRET)
    sidecar = start_sidecar(sidecar_factory, emulator, recording_host)
    with sidecar.client() as client:
        assert pair(client, appId=app["appId"], appSecret=SECRET)["status"] == "connected"
        wait_ws(emulator, app["appId"])
        before = emulator.push(app["appId"], chatId="oc_dm", text="before", ignoreAcks=5)
        wait_host(recording_host, {before["messageId"]})
    sidecar.kill()
    during = [emulator.push(app["appId"], chatId="oc_dm", text=f"down {i}") for i in range(2)]
    assert not any(d["delivered"] for d in during)
    sidecar.start()
    wait_ws(emulator, app["appId"], connects=2)
    ids = {before["messageId"], *(d["messageId"] for d in during)}
    events = wait_host(recording_host, ids)
    assert events.keys() == ids
    with sidecar.client() as client:
        assert client.get("/connections/fs1").json()["status"] == "connected"
        outbox = client.get("/deliveries", params={"connectionId": "fs1"}).json()["items"]
        assert sorted(item["event"]["messageId"] for item in outbox) == sorted(ids)
    first = next(
        d
        for d in emulator.ws_state(app["appId"])["deliveries"]
        if d["messageId"] == before["messageId"]
    )
    assert first["attempts"] >= 2
    assert len(set(first["eventIds"])) == first["attempts"]


def test_webhook_mode_end_to_end(
    sidecar_factory: SidecarFactory,
    emulator: FeishuEmulatorProcess,
    recording_host: RecordingHost,
) -> None:
    """Webhook mode end to end: challenge, signed events, threads, SIGKILL, clean stop."""
    app = emulator.create_app(
        appSecret=SECRET, encryptKey=ENCRYPT_KEY, verificationToken=VERIFICATION_TOKEN
    )
    sidecar = start_sidecar(sidecar_factory, emulator, recording_host, LOG_LEVEL="debug")
    with sidecar.client() as client:
        view = pair(
            client,
            callback_base_url=sidecar.url,
            appId=app["appId"],
            appSecret=SECRET,
            mode="webhook",
            encryptKey=ENCRYPT_KEY,
            verificationToken=VERIFICATION_TOKEN,
        )
        assert view["status"] == "connected", view
        url = view["metadata"]["callbackUrl"]
        assert url == f"{sidecar.url}/webhooks/feishu/fs1"
        assert emulator.verify_url(app["appId"], url)["ok"] is True

        def hook(**spec: Any) -> dict[str, Any]:
            return emulator.push(app["appId"], via="webhook", url=url, **spec)

        dm = hook(chatId="oc_dm", text="hello hook")
        assert dm["status"] == 200, dm
        plain = hook(chatId="oc_g", chatType="group", text="no @")
        assert plain["status"] == 200
        threaded = hook(
            chatId="oc_g", chatType="group", mentionBot=True, text="thread q", threadId="omt_h"
        )
        assert threaded["status"] == 200
        forged = hook(chatId="oc_dm", text="forged", badSignature=True)
        assert forged["status"] == 401
        events = wait_host(recording_host, {dm["messageId"], threaded["messageId"]})
        assert events[threaded["messageId"]]["threadId"] == "omt_h"
        answer = send(client, "out-hook", "thread answer", "oc_g", thread_id="omt_h")
        assert answer.status_code == 200, answer.text
        assert emulator.ws_state(app["appId"])["endpointCalls"] == 0
    sidecar.kill()
    late = hook(
        chatId="oc_g",
        chatType="group",
        mentionBot=True,
        text="while down",
        retries=30,
        retryDelay=0.5,
    )
    assert late["status"] == 0
    sidecar.start()
    expected = {dm["messageId"], threaded["messageId"], late["messageId"]}
    events = wait_host(recording_host, expected)
    assert set(events) == expected
    assert events[late["messageId"]]["content"] == "while down"
    assert events[dm["messageId"]]["content"] == "hello hook"
    [retried] = [w for w in emulator.webhooks(app["appId"]) if w["eventId"] == late["eventId"]]
    assert retried["delivered"] is True
    assert retried["attempts"][0] == 0
    [reply] = emulator.sent(app["appId"])
    assert (reply["op"], reply["replyInThread"], reply["threadId"]) == ("reply", True, "omt_h")
    assert reply["parentId"] == threaded["messageId"]
    assert sidecar.terminate() == 0
    log = sidecar.log_path.read_text(errors="replace")
    assert "DEBUG" in log
    for secret in (SECRET, ENCRYPT_KEY, VERIFICATION_TOKEN):
        assert secret not in log
    assert "Task was destroyed" not in log


def test_scan_to_create_pairing(
    sidecar_factory: SidecarFactory,
    emulator: FeishuEmulatorProcess,
    recording_host: RecordingHost,
) -> None:
    """No credentials: a QR code; a Lark tenant scans it; polling moves to LARK_BASE_URL; the new
    app connects and its long connection runs against the Lark side."""
    emulator.configure(registrationInterval=1)
    sidecar = start_sidecar(sidecar_factory, emulator, recording_host)
    with sidecar.client() as client:
        started = client.post(
            "/connector-sessions",
            json={"kind": "feishu", "connectionId": "fs1", "channelId": "c", "options": {}},
        )
        assert started.status_code == 201, started.text
        view = started.json()
        assert view["status"] == "qr_ready", view
        assert view["qrContent"].startswith(f"{emulator.url}/page/cli?user_code=")
        assert view["qrImage"].startswith("data:image/png;base64,")
        scanned = emulator.scan(brand="lark")["app"]

        def connected() -> dict[str, Any] | None:
            current: dict[str, Any] = client.get(f"/connector-sessions/{view['sessionId']}").json()
            return current if current["status"] in ("connected", "error") else None

        final = wait_until(connected, timeout=15, what="the scan to connect")
        assert final["status"] == "connected", final
        assert final["accountId"] == scanned["botOpenId"]
        assert final["metadata"]["domain"] == "lark"
        wait_ws(emulator, scanned["appId"])
        pushed = emulator.push(scanned["appId"], chatId="oc_dm", text="hi new bot")
        wait_host(recording_host, {pushed["messageId"]})
    [registration] = emulator.registrations()
    assert registration["polls"][-1] == "lark"
    endpoint_calls = emulator.calls("/callback/ws/endpoint")
    assert endpoint_calls[-1]["brand"] == "lark"
