"""App secrets, tenant tokens, Encrypt Keys and Verification Tokens stay out of the logs."""

from __future__ import annotations

import json
import logging

import pytest

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
