"""The example echo host: settings, the echo through ``SidecarClient.send``, and its process."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from examples.echo_host import BRIDGE_PATH, ENV_NAMES, Settings, SettingsError, create_app
from examples.echo_host.app import SEND_RETRY

from connector_contracts import BridgeEvent, encode
from connector_sdk import MemoryDedupeStore, SidecarClient, request_id_for
from connector_sdk.testing import bridge_headers, make_bridge_event

from ._fakes import FakeClock
from ._starlette import TestClient

ROOT = Path(__file__).resolve().parents[2]
SIDECAR_TOKEN = "sidecar-token"
BRIDGE_TOKEN = "bridge-token"
SECRET = "whsec_" + base64.b64encode(b"e" * 32).decode()
ENV = {
    "SIDECAR_URL": "http://sidecar.test:8787",
    "EXTERNAL_CONNECTOR_TOKEN": SIDECAR_TOKEN,
    "BRIDGE_TOKEN": BRIDGE_TOKEN,
    "BRIDGE_SIGNING_SECRET": SECRET,
}


class FakeSidecar:
    """A MockTransport sidecar that records sends and answers as the ledger would."""

    def __init__(self) -> None:
        self.sends: list[dict[str, object]] = []
        self.answer_status = 200
        self.answer_code = ""
        self.ledger: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/send"
        assert request.headers["authorization"] == f"Bearer {SIDECAR_TOKEN}"
        body = json.loads(request.content)
        self.sends.append(body)
        if self.answer_status != 200:
            code = self.answer_code or {401: "unauthorized", 502: "provider_rejected"}.get(
                self.answer_status, "server_error"
            )
            return httpx.Response(
                self.answer_status, json={"title": "x", "status": self.answer_status, "code": code}
            )
        duplicate = body["requestId"] in self.ledger
        self.ledger.add(body["requestId"])
        return httpx.Response(
            200,
            json={
                "ok": True,
                "requestId": body["requestId"],
                "status": "sent",
                "providerMessageId": "pm-1",
                "duplicate": duplicate,
            },
        )


@pytest.fixture
def sidecar() -> FakeSidecar:
    """The fake sidecar behind the echo host's client."""
    return FakeSidecar()


@pytest.fixture
def store() -> MemoryDedupeStore:
    """The echo host's dedupe store (in memory for these tests)."""
    return MemoryDedupeStore()


@pytest.fixture
def echo(sidecar: FakeSidecar, store: MemoryDedupeStore) -> Iterator[TestClient]:
    """The echo host app under TestClient, talking to the fake sidecar."""
    # The echo's own retry budget, with sleeps that only move a fake clock.
    retry = dataclasses.replace(SEND_RETRY, sleep=FakeClock().sleep)
    app = create_app(
        Settings.from_env(ENV), transport=httpx.MockTransport(sidecar), store=store, retry=retry
    )
    with TestClient(app) as client:
        yield client


def deliver(client: TestClient, event: BridgeEvent) -> httpx.Response:
    """POST ``event`` to the echo host as the sidecar does."""
    body = encode(event)
    headers = bridge_headers(
        body, event_id=event.event_id, token=BRIDGE_TOKEN, signing_secrets=(SECRET,)
    )
    response: httpx.Response = client.post(BRIDGE_PATH, content=body, headers=headers)
    return response


def test_echoes_through_send(echo: TestClient, sidecar: FakeSidecar) -> None:
    """An inbound message is answered with ``echo: <content>`` to the same peer and thread."""
    event = make_bridge_event(
        event_id="evt_1", content="hi there", peer_type="group", thread_id="t-9", message_id="m-1"
    )
    assert deliver(echo, event).json()["accepted"] is True
    assert len(sidecar.sends) == 1
    sent = sidecar.sends[0]
    assert sent["content"] == "echo: hi there"
    assert sent["target"] == {"peerId": "peer-1", "peerType": "group", "threadId": "t-9"}
    assert (sent["connectionId"], sent["channelId"], sent["kind"]) == (
        "conn_test",
        "sim-main",
        "sim",
    )
    assert sent["requestId"] == request_id_for(
        "sim-main",
        "conn_test:peer-1",
        content="echo: hi there",
        inbound_message_id="m-1",
        peer_id="peer-1",
    )
    assert sent["metadata"] == {"inboundMessageId": "m-1", "sessionId": "conn_test:peer-1"}


def test_redelivery_sends_no_second_echo(echo: TestClient, sidecar: FakeSidecar) -> None:
    """The same event delivered twice is handled once: one send."""
    event = make_bridge_event(event_id="evt_2")
    deliver(echo, event)
    second = deliver(echo, make_bridge_event(event_id="evt_2", delivery_attempt=2))
    assert second.json()["duplicate"] is True
    assert len(sidecar.sends) == 1


def test_rehandled_event_reuses_the_request_id(echo: TestClient, sidecar: FakeSidecar) -> None:
    """A failed first attempt and its retry send the same requestId (the ledger dedupes)."""
    sidecar.answer_status = 401
    event = make_bridge_event(event_id="evt_3")
    assert deliver(echo, event).status_code == 500
    sidecar.answer_status = 200
    assert deliver(echo, make_bridge_event(event_id="evt_3", delivery_attempt=2)).status_code == 200
    assert len(sidecar.sends) == 2
    assert sidecar.sends[0]["requestId"] == sidecar.sends[1]["requestId"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (502, "provider_rejected"),
        (404, "connection_not_found"),
        (404, "not_found"),
        (409, "connection_not_ready"),
        (422, "request_id_conflict"),
        (422, "validation_failed"),
        (400, "invalid_json"),
    ],
)
def test_permanent_refusal_completes_the_event(
    echo: TestClient, sidecar: FakeSidecar, store: MemoryDedupeStore, status: int, code: str
) -> None:
    """A permanent refusal is logged and the event is done: 200, so the sidecar stops retrying."""
    sidecar.answer_status, sidecar.answer_code = status, code
    first = deliver(echo, make_bridge_event(event_id="evt_4"))
    assert (first.status_code, first.json()["accepted"]) == (200, True)
    again = deliver(echo, make_bridge_event(event_id="evt_4", delivery_attempt=2))
    assert again.json()["duplicate"] is True
    assert len(sidecar.sends) == 1
    record = asyncio.run(store.get("conn_test:evt_4"))
    assert record is not None
    assert (record.status, record.message_id) == ("completed", None)


@pytest.mark.parametrize(
    ("status", "code", "sends"),
    [
        (401, "unauthorized", 1),
        (503, "provider_unavailable", SEND_RETRY.attempts),
        (500, "", SEND_RETRY.attempts),
    ],
)
def test_transient_or_config_failure_is_retried_later(
    echo: TestClient,
    sidecar: FakeSidecar,
    store: MemoryDedupeStore,
    status: int,
    code: str,
    sends: int,
) -> None:
    """A sidecar that is down or misconfigured: 500 and a failed record, so a redelivery retries."""
    sidecar.answer_status, sidecar.answer_code = status, code
    response = deliver(echo, make_bridge_event(event_id="evt_t"))
    assert (response.status_code, response.json()["accepted"]) == (500, False)
    assert len(sidecar.sends) == sends  # 5xx retried within the echo's budget; 401 is not
    record = asyncio.run(store.get("conn_test:evt_t"))
    assert record is not None
    assert record.status == "failed"


def test_echo_retries_fit_the_bridge_timeout() -> None:
    """The echo's send retries end well before the sidecar gives up on the bridge POST (15 s)."""
    app = create_app(Settings.from_env(ENV), store=MemoryDedupeStore())
    client = app.state.sidecar
    assert isinstance(client, SidecarClient)
    timeout = client._http.timeout
    assert timeout.read is not None
    assert timeout.connect is not None
    # The last attempt may start just inside the budget and then run for its whole timeout.
    assert client.retry.total_seconds + max(timeout.read, timeout.connect) < 15


def test_unsigned_request_is_refused(echo: TestClient, sidecar: FakeSidecar) -> None:
    """A request without the bridge token and signature is 401 and sends nothing."""
    response = echo.post(BRIDGE_PATH, content=encode(make_bridge_event()))
    assert response.status_code == 401
    assert sidecar.sends == []


def test_healthz(echo: TestClient) -> None:
    """``GET /healthz`` answers ``{"ok": true}``."""
    assert echo.get("/healthz").json() == {"ok": True}


# settings ------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    """Unset variables take the documented defaults."""
    settings = Settings.from_env({"EXTERNAL_CONNECTOR_TOKEN": "t", "BRIDGE_TOKEN": "b"})
    assert settings.sidecar_url == "http://127.0.0.1:8787"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.dedupe_path == Path("var/echo/dedupe.sqlite3")
    assert settings.bridge_signing_secrets == ()


def test_settings_read_every_documented_name() -> None:
    """Each name in ENV_NAMES changes the settings when set."""
    env = {
        **ENV,
        "ECHO_HOST": "0.0.0.0",
        "ECHO_PORT": "9001",
        "ECHO_DATA_DIR": "/data",
        "LOG_LEVEL": "DEBUG",
    }
    assert set(env) == set(ENV_NAMES)
    settings = Settings.from_env(env)
    assert settings.sidecar_url == "http://sidecar.test:8787"
    assert settings.sidecar_token.reveal() == SIDECAR_TOKEN
    assert settings.bridge_token is not None
    assert settings.bridge_token.reveal() == BRIDGE_TOKEN
    assert [s.reveal() for s in settings.bridge_signing_secrets] == [SECRET]
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 9001, Path("/data"))
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"BRIDGE_TOKEN": "b"}, "EXTERNAL_CONNECTOR_TOKEN"),
        ({"EXTERNAL_CONNECTOR_TOKEN": "t"}, "BRIDGE_TOKEN"),
        ({**ENV, "ECHO_PORT": "http"}, "ECHO_PORT"),
        ({**ENV, "ECHO_PORT": "70000"}, "ECHO_PORT"),
        ({**ENV, "BRIDGE_SIGNING_SECRET": "whsec_!!"}, "BRIDGE_SIGNING_SECRET"),
        ({**ENV, "SIDECAR_URL": "sidecar:8787"}, "SIDECAR_URL"),
        ({**ENV, "LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], name: str) -> None:
    """A missing or malformed setting raises SettingsError naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(env)


def test_settings_repr_hides_secrets() -> None:
    """No token or signing secret appears in the settings' repr."""
    text = repr(Settings.from_env(ENV))
    assert SIDECAR_TOKEN not in text
    assert BRIDGE_TOKEN not in text
    assert SECRET.removeprefix("whsec_") not in text


# the process ---------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    return {**keep, "PYTHONPATH": str(ROOT), **extra}


def test_missing_setting_stops_with_one_line() -> None:
    """``python -m examples.echo_host`` without a token exits 2 with one line naming it."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.echo_host"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "EXTERNAL_CONNECTOR_TOKEN" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serves_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The module opens its store, serves ``/healthz`` on ECHO_PORT, exits 0 on SIGTERM."""
    port = _free_port()
    env = _env(**ENV, ECHO_PORT=str(port), ECHO_DATA_DIR=str(tmp_path / "echo"))
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.echo_host"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        answer = None
        deadline = time.monotonic() + 20
        for _ in range(400):  # bounded in count (400 x 50 ms) and by the deadline
            if answer is not None or time.monotonic() > deadline or process.poll() is not None:
                break
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()
            except httpx.TransportError:
                time.sleep(0.05)
        assert answer == {"ok": True}
        assert (tmp_path / "echo" / "dedupe.sqlite3").is_file()  # opened at start
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0
        # A clean stop: no traceback, no task left pending (the store's purge is stopped).
        assert b"Traceback" not in stderr
        assert b"Task was destroyed" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
