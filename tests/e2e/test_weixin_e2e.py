"""WeChat end to end with real processes: the iLink emulator, ``connector-sidecar serve`` with
the weixin connector pointed at it (``WEIXIN_BASE_URL``), and the recording host as the bridge."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import SidecarProcess, wait_until

from ..emulators.ilink import IlinkEmulatorProcess
from .conftest import RecordingHost

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]
BOT = "b0f5860fdecb@im.bot"


@pytest.fixture
def ilink(tmp_path: Path) -> Iterator[IlinkEmulatorProcess]:
    """The iLink emulator as a process (a second port serves as the redirect host)."""
    emulator = IlinkEmulatorProcess(tmp_path, poll_hold_seconds=1.0)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.terminate()


def weixin_sidecar(
    factory: SidecarFactory, ilink: IlinkEmulatorProcess, host: RecordingHost, **env: str
) -> SidecarProcess:
    sidecar = factory(
        env={
            "SIDECAR_CONNECTORS": "weixin",
            "WEIXIN_BASE_URL": ilink.url,
            "BRIDGE_URL": host.url,
            "BRIDGE_TOKEN": host.token,
            **env,
        }
    )
    sidecar.start()
    return sidecar


def paired_with_one_message(
    client: httpx.Client, ilink: IlinkEmulatorProcess, host: RecordingHost, text: str
) -> None:
    """Pair wx1 as BOT and let u1 write ``text``; returns once the host has that event."""
    pair(client, ilink, "wx1", BOT)
    ilink.push(BOT, [{"from": "u1@im.wechat", "text": text}])
    wait_until(lambda: len(unique_events(host)) == 1, timeout=20, what="1 event")


def start_session(client: httpx.Client, connection_id: str) -> dict[str, Any]:
    started = client.post(
        "/connector-sessions",
        json={
            "kind": "weixin",
            "connectionId": connection_id,
            "channelId": "weixin-main",
            "displayName": "E2E",
            "callbackBaseUrl": "",
        },
    )
    assert started.status_code == 201, started.text
    view: dict[str, Any] = started.json()
    assert view["status"] == "qr_ready", view
    assert view["qrImage"].startswith("data:image/png;base64,")
    return view


def wait_status(client: httpx.Client, path: str, status: str) -> dict[str, Any]:
    """GET ``path`` until its ``status`` is ``status``; returns that view."""

    def check() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(path).json()
        return view if view["status"] == status else None

    result: dict[str, Any] = wait_until(check, timeout=20, what=f"{path} to be {status}")
    return result


def wait_session(client: httpx.Client, session_id: str, status: str) -> dict[str, Any]:
    return wait_status(client, f"/connector-sessions/{session_id}", status)


def wait_connection(client: httpx.Client, connection_id: str, status: str) -> dict[str, Any]:
    return wait_status(client, f"/connections/{connection_id}", status)


def qrcode_of(view: dict[str, Any]) -> str:
    return str(httpx.URL(view["qrContent"]).params["qrcode"])


def pair(
    client: httpx.Client, ilink: IlinkEmulatorProcess, connection_id: str, bot_id: str
) -> dict[str, Any]:
    """Pair the way a person does: show the QR, scan it, confirm on the phone."""
    view = start_session(client, connection_id)
    qrcode = qrcode_of(view)
    ilink.qr_action("scan", qrcode)
    wait_session(client, view["sessionId"], "scanned")
    ilink.qr_action("confirm", qrcode, botId=bot_id)
    done = wait_session(client, view["sessionId"], "connected")
    assert done["accountId"] == bot_id
    wait_connection(client, connection_id, "connected")
    return done


def unique_events(host: RecordingHost) -> list[dict[str, Any]]:
    """What the host accepted, first occurrence of each eventId (the host dedupes on it)."""
    seen: dict[str, dict[str, Any]] = {}
    for event in host.accepted():
        seen.setdefault(event["eventId"], event)
    return list(seen.values())


def outbox_size(client: httpx.Client, connection_id: str) -> int:
    response = client.get("/deliveries", params={"connectionId": connection_id, "limit": 500})
    return len(response.json()["items"])


def send_body(request_id: str, peer_id: str, content: str) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "connectionId": "wx1",
        "channelId": "weixin-main",
        "kind": "weixin",
        "target": {"peerId": peer_id, "peerType": "dm", "threadId": None},
        "content": content,
        "metadata": {},
    }


def test_500_messages_survive_sigkill_in_per_peer_order(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """500 messages over 20 peers, SIGKILL mid-stream: the host gets all, in order per peer."""
    started = time.monotonic()
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host)
    with sidecar.client() as client:
        pair(client, ilink, "wx1", BOT)
    # Small batches and a slow poll so that the kill lands in the middle of the stream.
    ilink.faults(BOT, batchSize=5, latencyMs={"getupdates": 50})
    peers = [f"user{p:02d}@im.wechat" for p in range(20)]
    messages = [
        {"from": peers[i % 20], "text": f"{peers[i % 20]} #{i // 20:02d}"} for i in range(500)
    ]

    pushed = ilink.push(BOT, messages[:250])
    with sidecar.client() as client:
        wait_until(lambda: outbox_size(client, "wx1") >= 60, timeout=30, what="60 events")
    sidecar.kill()
    assert ilink.bot(BOT)["acked"] < 250  # the cursor stopped mid-stream
    pushed += ilink.push(BOT, messages[250:])
    sidecar.start()

    wait_until(
        lambda: len(unique_events(recording_host)) >= 500, timeout=60, what="500 events at the host"
    )
    events = unique_events(recording_host)
    assert len(events) == 500
    assert {e["messageId"] for e in events} == {p["messageId"] for p in pushed}
    per_peer: dict[str, list[str]] = collections.defaultdict(list)
    for event in events:
        per_peer[event["peerId"]].append(event["content"])
    assert per_peer == {peer: [f"{peer} #{k:02d}" for k in range(25)] for peer in peers}
    with sidecar.client() as client:
        assert outbox_size(client, "wx1") == 500
        assert client.get("/connections/wx1").json()["status"] == "connected"
    assert ilink.violations() == []
    assert time.monotonic() - started < 90


def test_stale_token_then_repair_resumes_inbound(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """-14 → auth_expired with lastError, sends 409; a re-pair brings the messages back."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host)
    with sidecar.client() as client:
        paired_with_one_message(client, ilink, recording_host, "before")

        ilink.faults(BOT, expireToken=True)
        connection = wait_connection(client, "wx1", "auth_expired")
        assert "-14" in connection["lastError"]
        refused = client.post("/send", json=send_body("out_wx:dead", "u1@im.wechat", "hello?"))
        assert refused.status_code == 409
        assert refused.json()["code"] == "connection_not_ready"

        ilink.push(BOT, [{"from": "u1@im.wechat", "text": "while expired"}])
        pair(client, ilink, "wx1", BOT)
        ilink.push(BOT, [{"from": "u1@im.wechat", "text": "after"}])
        wait_until(lambda: len(unique_events(recording_host)) == 3, timeout=20, what="3 events")
        contents = [e["content"] for e in unique_events(recording_host)]
        assert contents == ["before", "while expired", "after"]
    assert ilink.violations() == []


def test_closed_reply_window_defers_then_sends_after_the_next_message(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """ret -2 defers the send until the next message; a clean stop, no token in the log."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host, LOG_LEVEL="debug")
    with sidecar.client() as client:
        paired_with_one_message(client, ilink, recording_host, "hi")
        ilink.faults(BOT, closeReplyWindow=["u1@im.wechat"])

        deferred = client.post("/send", json=send_body("out_wx:late", "u1@im.wechat", "later"))
        assert deferred.status_code == 202, deferred.text
        assert deferred.json()["status"] == "deferred"
        assert ilink.sent(BOT) == []

        [pushed] = ilink.push(BOT, [{"from": "u1@im.wechat", "text": "still there?"}])
        [sent] = wait_until(lambda: ilink.sent(BOT), timeout=20, what="the deferred send")
        assert sent["text"] == "later"
        assert sent["contextToken"] == pushed["contextToken"]

        def recorded() -> dict[str, Any] | None:
            result: dict[str, Any] = client.get("/send/out_wx:late").json()
            return result if result["status"] == "sent" else None

        # The vendor has the message before the ledger records it: wait for the record.
        result = wait_until(recorded, timeout=20, what="the deferred send to be recorded as sent")
        assert result["providerMessageId"] == sent["messageId"]
    assert ilink.violations() == []
    assert sidecar.terminate() == 0
    bot_token = ilink.bot(BOT)["token"]
    assert bot_token
    log = sidecar.log_path.read_text(errors="replace")
    assert "DEBUG" in log
    assert bot_token not in log
    assert "Task was destroyed" not in log


def test_verify_code_and_redirect(
    sidecar_factory: SidecarFactory, recording_host: RecordingHost, ilink: IlinkEmulatorProcess
) -> None:
    """Redirect moves the status polls; a wrong code is asked again; the right one connects."""
    sidecar = weixin_sidecar(sidecar_factory, ilink, recording_host)
    with sidecar.client() as client:
        view = start_session(client, "wx1")
        sid, qrcode = view["sessionId"], qrcode_of(view)
        ilink.qr_action("redirect", qrcode, host=ilink.redirect_host)
        wait_session(client, sid, "scanned")
        ilink.qr_action("require-code", qrcode, code="246810")
        wait_session(client, sid, "verify_code_required")

        wrong = client.post(f"/connector-sessions/{sid}/verify-code", json={"code": "111111"})
        assert wrong.status_code == 200, wrong.text
        assert wrong.json()["status"] == "scanned"
        wait_session(client, sid, "verify_code_required")
        right = client.post(f"/connector-sessions/{sid}/verify-code", json={"code": "246810"})
        assert right.status_code == 200, right.text
        wait_until(
            lambda: any(
                p["verifyCode"] == "246810"
                for p in ilink.call("GET", "/_emulator/qrcodes")["items"][-1]["polls"]
            ),
            timeout=20,
            what="a poll with the right code",
        )
        ilink.qr_action("confirm", qrcode, botId=BOT)
        done = wait_session(client, sid, "connected")
        assert done["accountId"] == BOT

    [qr] = ilink.call("GET", "/_emulator/qrcodes")["items"]
    hosts = [p["host"] for p in qr["polls"]]
    assert hosts[0] == f"127.0.0.1:{ilink.port}"
    assert set(hosts[hosts.index(ilink.redirect_host) :]) == {ilink.redirect_host}
    codes = [p["verifyCode"] for p in qr["polls"] if p["verifyCode"]]
    assert codes == ["111111", "246810"]
    assert ilink.violations() == []
