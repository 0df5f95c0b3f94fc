"""The feishu driver in the real app, in-process, against the emulator: pairing both ways,
sending (create, reply, threads, markdown, fallbacks, error classes) and the webhook route."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from connector_sidecar.drivers.feishu import driver as feishu_driver
from connector_sidecar.store import event_id_for

from ...emulators.feishu import App, Fault, encrypt, sign
from .conftest import FeishuSidecar, wait_for

# -- pairing ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pair_with_credentials_connects_as_the_bot(feishu: FeishuSidecar) -> None:
    """Token, then bot info: accountId is the bot's open_id, displayName the app name."""
    app = feishu.new_app(appName="Helper Bot")
    view = await feishu.pair(app)
    assert view["accountId"] == app.bot_open_id
    assert view["displayName"] == "Helper Bot"
    assert view["metadata"]["appId"] == app.app_id
    connection = await feishu.connection()
    assert (connection["status"], connection["accountId"]) == ("connected", app.bot_open_id)
    paths = [c["path"] for c in feishu.emulator.calls]
    assert paths[:2] == [
        "/open-apis/auth/v3/tenant_access_token/internal",
        "/open-apis/bot/v3/info",
    ]


@pytest.mark.anyio
async def test_bad_secret_is_a_session_error_with_the_vendors_message(
    feishu: FeishuSidecar,
) -> None:
    """A wrong secret: the session ends in error carrying "app secret invalid (code 10014)"."""
    app = feishu.new_app()
    view = await feishu.start_session(appId=app.app_id, appSecret="wrong")
    view = await feishu.wait_session(view["sessionId"], "error")
    assert "app secret invalid (code 10014)" in view["error"]


@pytest.mark.anyio
async def test_bot_not_enabled_is_a_session_error(feishu: FeishuSidecar) -> None:
    """activate_status other than 2 is explained and ends the session."""
    app = feishu.new_app(activateStatus=3)
    view = await feishu.start_session(appId=app.app_id, appSecret=app.app_secret)
    view = await feishu.wait_session(view["sessionId"], "error")
    assert "installed but not enabled" in view["error"]


@pytest.mark.anyio
async def test_bad_options_are_422_naming_the_field(feishu: FeishuSidecar) -> None:
    """mode must be websocket or webhook; webhook mode needs a verificationToken."""
    for options, path in (
        ({"mode": "sse"}, "$.options.mode"),
        ({"mode": "webhook", "appId": "cli_x", "appSecret": "s"}, "$.options.verificationToken"),
    ):
        response = await feishu.api.post(
            "/connector-sessions",
            json={"kind": "feishu", "connectionId": "bad", "channelId": "c", "options": options},
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == path


@pytest.mark.anyio
async def test_scan_to_create_with_lark_switch(feishu: FeishuSidecar) -> None:
    """No credentials: a QR of verification_uri_complete; a Lark tenant scans, polling moves to
    the Lark host, and the new app connects on the Lark OpenAPI."""
    view = await feishu.start_session()
    assert view["status"] == "qr_ready", view
    assert view["qrContent"].startswith("http://feishu.test/page/cli?user_code=")
    assert view["qrImage"].startswith("data:image/png;base64,")
    scanned = feishu.emulator.scan({"brand": "lark", "ownerOpenId": "ou_owner"}).app
    assert scanned is not None
    view = await feishu.wait_session(view["sessionId"], "connected", "error")
    assert view["status"] == "connected", view
    assert view["accountId"] == scanned.bot_open_id
    assert view["metadata"]["domain"] == "lark"
    assert view["metadata"]["ownerOpenId"] == "ou_owner"
    [registration] = feishu.emulator.registrations
    assert registration.polls[-1] == "lark"
    assert "feishu" in registration.polls
    token_calls = [c for c in feishu.emulator.calls if c["path"].endswith("/internal")]
    assert token_calls[-1]["brand"] == "lark"
    await feishu.wait_ws(scanned)


@pytest.mark.anyio
async def test_scanned_app_is_waited_for_until_its_bot_is_enabled(feishu: FeishuSidecar) -> None:
    """A scanned app whose bot is not enabled yet keeps the session in scanned; once enabled,
    it connects, and the session no longer holds the app secret."""
    view = await feishu.start_session()
    scanned = feishu.emulator.scan({"activateStatus": 0}).app
    assert scanned is not None
    view = await feishu.wait_session(view["sessionId"], "scanned")
    assert view["metadata"]["appId"] == scanned.app_id
    assert view["qrImage"] is None
    scanned.activate_status = 2
    view = await feishu.wait_session(view["sessionId"], "connected")
    assert view["accountId"] == scanned.bot_open_id
    store = feishu.services.store
    record = await store.db.run(store.sessions.get, view["sessionId"])
    assert record is not None
    assert record.state == {}


@pytest.mark.anyio
async def test_scan_declined_is_an_error(feishu: FeishuSidecar) -> None:
    """access_denied ends the session in error."""
    view = await feishu.start_session()
    feishu.emulator.registrations[-1].status = "denied"
    view = await feishu.wait_session(view["sessionId"], "error")
    assert "declined" in view["error"]


@pytest.mark.anyio
async def test_webhook_mode_session_carries_the_callback_url(feishu: FeishuSidecar) -> None:
    """callbackUrl = callbackBaseUrl + /webhooks/feishu/{connectionId}, kept on connected."""
    app = feishu.new_app(verificationToken="vt")
    view = await feishu.start_session(
        "hook1",
        callback_base_url="https://sidecar.example.com/",
        appId=app.app_id,
        appSecret=app.app_secret,
        mode="webhook",
        verificationToken="vt",
    )
    url = "https://sidecar.example.com/webhooks/feishu/hook1"
    assert view["metadata"]["callbackUrl"] == url
    view = await feishu.wait_session(view["sessionId"], "connected")
    assert view["metadata"]["callbackUrl"] == url
    assert feishu.emulator.endpoint_calls.get(app.app_id) is None  # no long connection


# -- sending ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_send_creates_in_the_chat_with_the_chunk_key_as_uuid(feishu: FeishuSidecar) -> None:
    """receive_id_type=chat_id, text content as a JSON string, uuid ≤ 50 chars; a repeat of the
    requestId is answered from the ledger without a second vendor call."""
    app = feishu.new_app()
    await feishu.pair(app)
    response = await feishu.send("req-1", "hello", peer_id="oc_room")
    assert response.status_code == 200, response.text
    [sent] = feishu.emulator.sent
    assert response.json()["providerMessageId"] == sent["messageId"]
    assert (sent["op"], sent["receiveIdType"], sent["chatId"]) == ("create", "chat_id", "oc_room")
    assert json.loads(sent["content"]) == {"text": "hello"}
    assert 0 < len(sent["uuid"]) <= 50
    again = await feishu.send("req-1", "hello", peer_id="oc_room")
    assert again.json()["duplicate"] is True
    assert len(feishu.emulator.sent) == 1


@pytest.mark.anyio
async def test_long_text_is_chunked_at_4000(feishu: FeishuSidecar) -> None:
    """9000 characters in paragraphs go out as three messages of at most 4000, distinct uuids."""
    app = feishu.new_app()
    await feishu.pair(app)
    content = "\n\n".join(["a" * 2900, "b" * 2900, "c" * 2900])
    response = await feishu.send("req-long", content, peer_id="oc_room")
    assert response.status_code == 200, response.text
    texts = [json.loads(s["content"])["text"] for s in feishu.emulator.sent]
    assert len(texts) >= 3
    assert all(len(t) <= 4000 for t in texts)
    assert "".join(texts) == content
    assert len({s["uuid"] for s in feishu.emulator.sent}) == len(texts)


@pytest.mark.anyio
async def test_markdown_goes_out_as_a_post(feishu: FeishuSidecar) -> None:
    """messageType markdown: msg_type post, a locale map with one md element, no wrapper."""
    app = feishu.new_app()
    await feishu.pair(app)
    response = await feishu.send(
        "req-md", "**bold** and `code`", peer_id="oc_room", messageType="markdown"
    )
    assert response.status_code == 200, response.text
    [sent] = feishu.emulator.sent
    assert sent["msgType"] == "post"
    assert json.loads(sent["content"]) == {
        "zh_cn": {"title": "", "content": [[{"tag": "md", "text": "**bold** and `code`"}]]}
    }


@pytest.mark.anyio
async def test_markdown_with_a_code_fence_is_split_into_rows(feishu: FeishuSidecar) -> None:
    """A markdown reply holding a code block goes out as rows split at the fences, so the text
    after the block is a row of its own (Feishu clients may swallow it otherwise)."""
    app = feishu.new_app()
    await feishu.pair(app)
    text = "Try this:\n```sh\nmake test\n```\nThen tell me."
    response = await feishu.send("req-fence", text, peer_id="oc_room", messageType="markdown")
    assert response.status_code == 200, response.text
    [sent] = feishu.emulator.sent
    rows = json.loads(sent["content"])["zh_cn"]["content"]
    assert rows == [
        [{"tag": "md", "text": "Try this:"}],
        [{"tag": "md", "text": "```sh\nmake test\n```"}],
        [{"tag": "md", "text": "Then tell me."}],
    ]


@pytest.mark.anyio
async def test_reply_in_a_thread(feishu: FeishuSidecar) -> None:
    """replyToMessageId with a threadId: a reply with reply_in_thread; the thread's next answer
    without replyToMessageId replies to the latest message seen in that thread."""
    app = feishu.new_app()
    await feishu.pair(app)
    pushed = await feishu.push(
        app, chatType="group", chatId="oc_g", mentionBot=True, text="q", threadId="omt_1"
    )
    [event] = await feishu.wait_events(1)
    assert event["threadId"] == "omt_1"
    response = await feishu.send(
        "req-t1", "a1", peer_id="oc_g", thread_id="omt_1", replyToMessageId=pushed["messageId"]
    )
    assert response.status_code == 200, response.text
    response = await feishu.send("req-t2", "a2", peer_id="oc_g", thread_id="omt_1")
    assert response.status_code == 200, response.text
    first, second = feishu.emulator.sent
    assert (first["op"], first["replyInThread"], first["parentId"]) == (
        "reply",
        True,
        pushed["messageId"],
    )
    assert (second["op"], second["replyInThread"], second["parentId"]) == (
        "reply",
        True,
        pushed["messageId"],
    )
    assert first["threadId"] == second["threadId"] == "omt_1"


@pytest.mark.anyio
async def test_reply_to_a_withdrawn_message_falls_back_to_create(feishu: FeishuSidecar) -> None:
    """230011 on reply: the answer is created in the chat instead, with its own uuid."""
    app = feishu.new_app()
    await feishu.pair(app)
    pushed = await feishu.push(app, chatId="oc_dm", text="hi")
    await feishu.wait_events(1)
    feishu.emulator.messages[pushed["messageId"]].withdrawn = True
    response = await feishu.send(
        "req-w", "answer", peer_id="oc_dm", replyToMessageId=pushed["messageId"]
    )
    assert response.status_code == 200, response.text
    [sent] = feishu.emulator.sent
    assert (sent["op"], sent["chatId"]) == ("create", "oc_dm")
    replies = [c for c in feishu.emulator.calls if c["path"].endswith("/reply")]
    assert len(replies) == 1
    assert json.loads(replies[0]["body"])["uuid"] != sent["uuid"]


@pytest.mark.anyio
async def test_rate_limits_are_retried_with_the_same_uuid(feishu: FeishuSidecar) -> None:
    """99991400 then 230020: retried inside the send, the same uuid each time, then sent once."""
    app = feishu.new_app()
    await feishu.pair(app)
    feishu.emulator.faults.append(_fault("create", 99991400))
    feishu.emulator.faults.append(_fault("create", 230020))
    response = await feishu.send("req-rl", "hi", peer_id="oc_room")
    assert response.status_code == 200, response.text
    creates = [c for c in feishu.emulator.calls if c["path"] == "/open-apis/im/v1/messages"]
    assert len(creates) == 3
    assert len({json.loads(c["body"])["uuid"] for c in creates}) == 1
    assert len(feishu.emulator.sent) == 1


@pytest.mark.anyio
async def test_other_codes_are_provider_rejected(feishu: FeishuSidecar) -> None:
    """230002 (bot not in chat) is a 502 provider_rejected with the vendor's code and message."""
    app = feishu.new_app()
    await feishu.pair(app)
    feishu.emulator.faults.append(_fault("create", 230002, msg="Bot is not in the chat."))
    response = await feishu.send("req-rej", "hi", peer_id="oc_room")
    assert response.status_code == 502
    problem = response.json()
    assert problem["code"] == "provider_rejected"
    assert "230002" in problem["detail"]
    assert "Bot is not in the chat." in problem["detail"]


@pytest.mark.anyio
async def test_expired_token_is_refreshed_during_a_send(feishu: FeishuSidecar) -> None:
    """Tokens revoked at the vendor: 99991663, a new token, the send goes through."""
    app = feishu.new_app()
    await feishu.pair(app)
    feishu.emulator.tokens.clear()
    response = await feishu.send("req-tok", "hi", peer_id="oc_room")
    assert response.status_code == 200, response.text
    assert len(feishu.emulator.sent) == 1


@pytest.mark.anyio
async def test_rotated_secret_makes_the_connection_auth_expired(feishu: FeishuSidecar) -> None:
    """Credentials rejected while sending: 409 connection_not_ready, connection auth_expired."""
    app = feishu.new_app()
    await feishu.pair(app, wait_ws=False)
    app.app_secret = "rotated"
    feishu.emulator.tokens.clear()
    feishu.driver.tokens.forget("http://feishu.test", app.app_id)
    response = await feishu.send("req-exp", "hi", peer_id="oc_room")
    assert response.status_code == 409, response.text
    view = await feishu.wait_connection("fs1", "auth_expired")
    assert "app secret invalid" in view["lastError"]


def _fault(op: str, code: int, *, msg: str = "injected") -> Fault:
    return Fault(op=op, status=400, code=code, msg=msg, retry_after=None, remaining=1)


# -- inbound ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_inbound_groups_mentions_and_quoted(feishu: FeishuSidecar) -> None:
    """Group messages without @bot are dropped (but acked); with @bot they arrive stripped; a
    reply to the bot's own message carries the quoted text."""
    app = feishu.new_app()
    await feishu.pair(app)
    await feishu.send("req-q", "what I said", peer_id="oc_g")
    [bot_message] = feishu.emulator.sent
    await feishu.push(app, chatType="group", chatId="oc_g", text="no mention")
    pushed = await feishu.push(
        app,
        chatType="group",
        chatId="oc_g",
        mentionBot=True,
        text="hey @_user_2",
        mentions=[{"openId": "ou_bob", "name": "Bob"}],
        parentId=bot_message["messageId"],
    )
    await feishu.push(app, chatType="group", chatId="oc_g", senderOpenId=app.bot_open_id, text="me")
    [event] = await feishu.wait_events(1)
    await wait_for(lambda: _all_acked(feishu), what="all three acked")
    assert event["messageId"] == pushed["messageId"]
    assert event["eventId"] == event_id_for("fs1", pushed["messageId"])
    assert (event["peerType"], event["content"]) == ("group", "hey @Bob")
    assert event["metadata"]["botMentioned"] is True
    quoted = event["metadata"]["quoted"]
    assert quoted["messageId"] == bot_message["messageId"]
    assert quoted["content"] == "what I said"
    assert quoted["fromSelf"] is True
    assert len(await feishu.events()) == 1


async def _all_acked(feishu: FeishuSidecar) -> bool:
    return len(feishu.emulator.deliveries) == 3 and all(d.acked for d in feishu.emulator.deliveries)


@pytest.mark.anyio
async def test_require_mention_off_passes_group_chatter(feishu: FeishuSidecar) -> None:
    """requireMention false: every group message becomes an event, botMentioned false."""
    app = feishu.new_app()
    await feishu.pair(app, requireMention=False)
    await feishu.push(app, chatType="group", chatId="oc_g", text="chatter")
    [event] = await feishu.wait_events(1)
    assert (event["content"], event["metadata"]["botMentioned"]) == ("chatter", False)


# -- webhooks ---------------------------------------------------------------------------------


async def _pair_webhook(feishu: FeishuSidecar, *, key: str | None = "ek") -> App:
    app = feishu.new_app(encryptKey=key, verificationToken="vt")
    options: dict[str, Any] = {"mode": "webhook", "verificationToken": "vt"}
    if key:
        options["encryptKey"] = key
    await feishu.pair(app, **options)
    return app


@pytest.mark.anyio
async def test_webhook_challenge_plain_and_encrypted(feishu: FeishuSidecar) -> None:
    """The URL check is answered with the challenge, encrypted (signed or not) or in clear."""
    app = await _pair_webhook(feishu)
    payload = json.dumps({"challenge": "c-1", "token": "vt", "type": "url_verification"}).encode()
    body = json.dumps({"encrypt": encrypt(payload, "ek")}).encode()
    response = await feishu.api.post("/webhooks/feishu/fs1", content=body, headers={})
    assert response.status_code == 200, response.text
    assert response.json() == {"challenge": "c-1"}
    headers = {
        "x-lark-request-timestamp": "1",
        "x-lark-request-nonce": "n",
        "x-lark-signature": sign("1", "n", "ek", body),
    }
    response = await feishu.api.post("/webhooks/feishu/fs1", content=body, headers=headers)
    assert response.json() == {"challenge": "c-1"}
    assert app is not None


@pytest.mark.anyio
async def test_webhook_route_is_public(feishu: FeishuSidecar) -> None:
    """Feishu sends no bearer token: the route answers without one."""
    await _pair_webhook(feishu, key=None)
    body = json.dumps({"challenge": "c-2", "token": "vt", "type": "url_verification"})
    response = await feishu.api.post(
        "/webhooks/feishu/fs1", content=body, headers={"Authorization": ""}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"challenge": "c-2"}


@pytest.mark.anyio
async def test_webhook_event_is_committed_before_200(feishu: FeishuSidecar) -> None:
    """An encrypted, signed event is in the outbox when the 200 comes back; a redelivery under a
    new event_id is a 200 with no second event."""
    app = await _pair_webhook(feishu)
    response = await feishu.webhook(app, chatId="oc_dm", text="via webhook", messageId="om_w1")
    assert response.status_code == 200, response.text
    [event] = await feishu.events()
    assert (event["messageId"], event["content"], event["peerType"]) == (
        "om_w1",
        "via webhook",
        "dm",
    )
    again = await feishu.webhook(app, chatId="oc_dm", text="via webhook", messageId="om_w1")
    assert again.status_code == 200
    assert len(await feishu.events()) == 1


@pytest.mark.anyio
async def test_webhook_bad_signature_and_token_are_401(feishu: FeishuSidecar) -> None:
    """A forged signature or a wrong Verification Token: 401 problem, nothing stored."""
    app = await _pair_webhook(feishu)
    response = await feishu.webhook(app, text="x", bad_signature=True)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthorized"
    forged_token = await feishu.webhook(app, text="x", token="forged")
    assert (forged_token.status_code, forged_token.text) == (401, response.text)
    assert await feishu.events() == []


@pytest.mark.anyio
async def test_webhook_unknown_or_websocket_connection_is_404(feishu: FeishuSidecar) -> None:
    """No such connection, or one in websocket mode: 404."""
    response = await feishu.api.post("/webhooks/feishu/nope", content=b"{}")
    assert response.status_code == 404
    app = feishu.new_app()
    await feishu.pair(app, "ws1")
    response = await feishu.api.post("/webhooks/feishu/ws1", content=b"{}")
    assert response.status_code == 404


@pytest.mark.anyio
async def test_a_scanned_app_that_never_gets_enabled_leaves_no_secret_behind(
    feishu: FeishuSidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scanned app never enabled in time: session error, and no app secret left in it."""
    monkeypatch.setattr(feishu_driver, "SCANNED_ACTIVATION_SECONDS", 0.2)
    view = await feishu.start_session()
    scanned = feishu.emulator.scan({"activateStatus": 0}).app
    assert scanned is not None
    view = await feishu.wait_session(view["sessionId"], "error")
    assert "not installed yet" in view["error"]
    store = feishu.services.store
    record = await store.db.run(store.sessions.get, view["sessionId"])
    assert record is not None
    assert scanned.app_secret not in json.dumps(record.state)


def _tampered(body: bytes, value: int) -> bytes:
    """The encrypted body with the last byte of the next-to-last cipher block set to ``value``:
    it XORs into the last plaintext byte, the padding, as a padding-oracle attack does."""
    raw = bytearray(base64.b64decode(json.loads(body)["encrypt"]))
    raw[-17] = value
    return json.dumps({"encrypt": base64.b64encode(bytes(raw)).decode()}).encode()


@pytest.mark.anyio
async def test_webhook_is_no_padding_oracle(feishu: FeishuSidecar) -> None:
    """256 tamperings of an event's padding, unsigned or wrongly signed, get one answer: the
    same status and the same body, whether the padding happened to be valid or not."""
    app = await _pair_webhook(feishu)
    _, envelope = feishu.emulator.build_event(app, {"text": "secret"})
    body, headers = feishu.emulator.signed_request(app, envelope)
    forged = {**headers, "X-Lark-Signature": "0" * 64}
    answers: set[tuple[int, str]] = set()
    for value in range(256):
        tampered = _tampered(body, value)
        for sent_headers in ({"Content-Type": "application/json"}, forged):
            response = await feishu.api.post(
                "/webhooks/feishu/fs1", content=tampered, headers=sent_headers
            )
            answers.add((response.status_code, response.text))
    assert len(answers) == 1, answers
    [(status, _)] = answers
    assert status == 401
    assert await feishu.events() == []


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["ek", None])
async def test_webhook_failures_before_authentication_look_alike(
    feishu: FeishuSidecar, key: str | None
) -> None:
    """Not JSON, encrypted without a key, a wrong or surrogate token: one 401 answer, never 500."""
    await _pair_webhook(feishu, key=key)
    challenge = '{"challenge": "c", "token": %s, "type": "url_verification"}'
    bodies = [
        b"{nope",
        b"\xff\xfe",
        challenge.encode() % b'"forged"',
        challenge.encode() % b'"\\ud800"',
        json.dumps({"encrypt": "bm90IGEgYmxvY2s="}).encode(),
    ]
    answers = set()
    for body in bodies:
        response = await feishu.api.post("/webhooks/feishu/fs1", content=body)
        answers.add((response.status_code, response.text))
    assert len(answers) == 1, answers
    assert next(iter(answers))[0] == 401


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["ek", None])
async def test_webhook_event_with_a_lone_surrogate_is_stored(
    feishu: FeishuSidecar, key: str | None
) -> None:
    """A verified event whose text holds "\\ud800" is stored repaired (U+FFFD), answered 200."""
    app = await _pair_webhook(feishu, key=key)
    response = await feishu.webhook(app, chatId="oc_dm", text="bad \ud800", messageId="om_s1")
    assert response.status_code == 200, response.text
    [event] = await feishu.events()
    assert event["content"] == "bad \ufffd"
    assert event["metadata"]["textRepaired"] is True


@pytest.mark.anyio
async def test_long_connection_event_with_a_lone_surrogate_is_stored(feishu: FeishuSidecar) -> None:
    """Over the long connection too: text and sender holding "\\ud800" are stored repaired and
    the next event follows."""
    app = feishu.new_app()
    await feishu.pair(app)
    await feishu.push(app, chatId="oc_dm", text="bad \ud800", senderOpenId="ou_\udfff")
    await feishu.push(app, chatId="oc_dm", text="good")
    first, second = await feishu.wait_events(2)
    assert (first["content"], first["userId"]) == ("bad \ufffd", "ou_\ufffd")
    assert first["metadata"]["textRepaired"] is True
    assert second["content"] == "good"
