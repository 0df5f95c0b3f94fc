"""App secrets, tenant tokens, Encrypt Keys and Verification Tokens stay out of the logs."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from connector_sidecar._logging import configure_logging, redact

from .._inprocess import assert_not_logged
from .conftest import FeishuFactory, FeishuSidecar


@pytest.mark.anyio
async def test_feishu_secrets_are_never_logged(
    make_feishu: FeishuFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """No log line of a busy Feishu life holds a secret, a key or a tenant token."""
    caplog.set_level(logging.DEBUG)
    async with make_feishu() as feishu:
        secrets = await _a_busy_life(feishu)
    assert_not_logged(caplog.records, secrets)


async def _a_busy_life(feishu: FeishuSidecar) -> set[str]:
    """Everything the test does with the running sidecar; returns every secret it involved."""
    emulator = feishu.emulator
    secrets: set[str] = set()

    app = feishu.new_app(appSecret="ws-app-secret-1")
    await feishu.pair(app)
    await feishu.push(app, chatId="oc_dm", text="over the long connection")
    await feishu.wait_events(1)
    assert (await feishu.send("s1", "hi", peer_id="oc_dm")).status_code == 200
    secrets |= set(emulator.tokens)
    emulator.tokens.clear()  # the next call meets 99991663 and refreshes
    assert (await feishu.send("s2", "again", peer_id="oc_dm")).status_code == 200
    secrets |= set(emulator.tokens)

    hook = feishu.new_app(
        appSecret="hook-app-secret-2", encryptKey="encrypt-key-3", verificationToken="verify-4"
    )
    await feishu.pair(
        hook, "fs2", mode="webhook", encryptKey="encrypt-key-3", verificationToken="verify-4"
    )
    assert (await feishu.webhook(hook, "fs2", text="via webhook")).status_code == 200
    assert (await feishu.webhook(hook, "fs2", text="x", bad_signature=True)).status_code == 401
    assert (await feishu.webhook(hook, "fs2", text="x", token="forged")).status_code == 401
    junk = json.dumps({"encrypt": "bm90IGVuY3J5cHRlZA=="})
    assert (await feishu.api.post("/webhooks/feishu/fs2", content=junk)).status_code in (400, 401)

    view = await feishu.start_session("fs3")
    scanned = emulator.scan({}).app
    assert scanned is not None
    await feishu.wait_session(view["sessionId"], "connected")
    await feishu.wait_ws(scanned)

    app.app_secret = "ws-app-secret-rotated"
    emulator.tokens.clear()
    feishu.driver.tokens.forget("http://feishu.test", app.app_id)
    assert (await feishu.send("s3", "refused", peer_id="oc_dm")).status_code == 409
    await feishu.wait_connection("fs1", "auth_expired")
    assert (await feishu.api.post("/connections/fs2/logout", json={})).status_code == 200
    secrets |= set(emulator.tokens)
    secrets |= {
        "ws-app-secret-1",
        "hook-app-secret-2",
        "encrypt-key-3",
        "verify-4",
        scanned.app_secret,
    }
    assert len(secrets) >= 7
    return secrets


@pytest.fixture
def sidecar_logging() -> Iterator[None]:
    """Lets a test call ``configure_logging``; puts the root logger and levels back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in loggers.items():
            logging.getLogger(name).setLevel(saved)


THIRD_PARTY_LOGGERS = ("websockets", "websockets.client", "httpx", "httpcore", "hypercorn")


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", ["console", "json"])
@pytest.mark.parametrize("websockets_debug", [False, True], ids=["floor", "websockets-at-debug"])
@pytest.mark.usefixtures("sidecar_logging")
async def test_debug_logging_of_the_long_connection_holds_no_ticket(
    make_feishu: FeishuFactory, monkeypatch: pytest.MonkeyPatch, fmt: str, websockets_debug: bool
) -> None:
    """At LOG_LEVEL=debug, with the sidecar's own log set-up, nothing written holds the long
    connection's ticket (a credential in its URL), the app secret or a tenant token; also when
    someone lowers the websockets logger to DEBUG again (its handshake lines are redacted)."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("debug", fmt)
    if websockets_debug:
        logging.getLogger("websockets").setLevel(logging.DEBUG)
    async with make_feishu() as feishu:
        app = feishu.new_app(appSecret="ws-app-secret-debug")
        await feishu.pair(app)
        await feishu.push(app, chatId="oc_dm", text="over the long connection")
        await feishu.wait_events(1)
        assert (await feishu.send("s1", "hi", peer_id="oc_dm")).status_code == 200
        tickets = list(feishu.emulator.issued_tickets)
        tokens = set(feishu.emulator.tokens)
    written = stream.getvalue()
    assert tickets, "no long connection was made: the check would be vacuous"
    assert "debug" in written.lower(), "nothing was logged at debug: the check would be vacuous"
    for secret in [*tickets, *tokens, "ws-app-secret-debug"]:
        assert secret not in written, f"{secret!r} was logged"
    if websockets_debug:
        assert "ticket=***" in written, "the handshake was not logged: the check would be vacuous"


def test_redact_masks_credentials_in_urls_headers_and_bearer_values() -> None:
    """Query credentials, URL passwords, Authorization/Cookie headers and Bearer values."""
    line = (
        "GET wss://h/ws?device_id=7&service_id=3&ticket=T1&access_token=T2#f "
        "https://user:pw@h/x?sign=S&timestamp=1\n> Authorization: Bearer B1\ncookie=C1 bearer B2"
    )
    assert redact(line) == (
        "GET wss://h/ws?device_id=7&service_id=3&ticket=***&access_token=***#f "
        "https://user:***@h/x?sign=***&timestamp=1\n> Authorization: ***\ncookie=***"
    )
    assert redact("sent with bearer B2, then") == "sent with bearer ***, then"
