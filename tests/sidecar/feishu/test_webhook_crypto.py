"""Opening webhook requests: the challenge, decryption, the signature and the token."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from connector_sidecar.drivers.feishu.webhook import WebhookSecrets, open_webhook
from connector_sidecar.problems import ApiProblem

from ...emulators import feishu as emulator

KEY = "encrypt-key-1"
TOKEN = "verify-token-1"
SECRETS = WebhookSecrets(encrypt_key=KEY, verification_token=TOKEN)


def encrypted(payload: Mapping[str, object], *, key: str = KEY) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"encrypt": emulator.encrypt(json.dumps(payload).encode(), key)}).encode()
    headers = {
        "x-lark-request-timestamp": "1700000000",
        "x-lark-request-nonce": "n1",
        "x-lark-signature": emulator.sign("1700000000", "n1", key, body),
    }
    return body, headers


def v2(token: str = TOKEN) -> dict[str, object]:
    return {"schema": "2.0", "header": {"event_id": "e", "token": token}, "event": {}}


def test_plain_challenge_is_answered() -> None:
    """Without an Encrypt Key the challenge comes in clear and is answered with its value."""
    body = json.dumps({"challenge": "c1", "token": TOKEN, "type": "url_verification"}).encode()
    opened = open_webhook(body, {}, WebhookSecrets(verification_token=TOKEN))
    assert opened.challenge == "c1"


def test_encrypted_challenge_is_answered_signed_or_not() -> None:
    """An encrypted challenge is decrypted first; it may come without signature headers."""
    payload = {"challenge": "c2", "token": TOKEN, "type": "url_verification"}
    body, headers = encrypted(payload)
    assert open_webhook(body, headers, SECRETS).challenge == "c2"
    assert open_webhook(body, {}, SECRETS).challenge == "c2"


def test_challenge_with_a_wrong_token_is_refused() -> None:
    """The challenge carries the Verification Token; a different one is a 401."""
    body = json.dumps({"challenge": "c", "token": "other", "type": "url_verification"}).encode()
    with pytest.raises(ApiProblem) as caught:
        open_webhook(body, {}, WebhookSecrets(verification_token=TOKEN))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_encrypted_event_is_opened() -> None:
    """A signed, encrypted v2 event comes out as its JSON body."""
    body, headers = encrypted(v2())
    opened = open_webhook(body, headers, SECRETS)
    assert opened.challenge is None
    assert opened.body["schema"] == "2.0"


@pytest.mark.parametrize("change", ["signature", "timestamp", "body", "missing"])
def test_bad_or_missing_signature_is_401(change: str) -> None:
    """Any change to what was signed, or no signature on an event, is refused with 401."""
    body, headers = encrypted(v2())
    if change == "signature":
        headers["x-lark-signature"] = "0" * 64
    elif change == "timestamp":
        headers["x-lark-request-timestamp"] = "1700000001"
    elif change == "body":
        body = body.replace(b'{"encrypt": ', b'{"encrypt":')
    else:
        headers = {}
    with pytest.raises(ApiProblem) as caught:
        open_webhook(body, headers, SECRETS)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_wrong_verification_token_in_event_is_401() -> None:
    """header.token must be the configured Verification Token."""
    body, headers = encrypted(v2(token="forged"))
    with pytest.raises(ApiProblem) as caught:
        open_webhook(body, headers, SECRETS)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_event_encrypted_with_another_key_is_refused() -> None:
    """A body that does not decrypt with our key never reaches the token check."""
    body, headers = encrypted(v2(), key="someone-else")
    with pytest.raises(ApiProblem) as caught:
        open_webhook(body, headers, SECRETS)
    assert caught.value.status == 401


def test_plain_event_with_token_only() -> None:
    """Without an Encrypt Key there is no signature; the token alone is checked."""
    opened = open_webhook(json.dumps(v2()).encode(), {}, WebhookSecrets(verification_token=TOKEN))
    assert opened.body["header"] == {"event_id": "e", "token": TOKEN}


def test_unsigned_malformed_bodies_get_the_one_401() -> None:
    """Not JSON (or too deep to parse), or encrypted while no key is configured: unsigned, these
    are refused like any unauthenticated request, with the same 401."""
    for junk in (b"{nope", b"[" * 100_000, b"\xff\xfe"):
        with pytest.raises(ApiProblem) as caught:
            open_webhook(junk, {}, SECRETS)
        assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    body, headers = encrypted(v2())
    with pytest.raises(ApiProblem) as caught:
        open_webhook(body, headers, WebhookSecrets(verification_token=TOKEN))
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


def test_signed_malformed_bodies_are_400() -> None:
    """A validly signed body comes from the key holder: what is wrong with it may be said."""
    for junk in (b"{nope", b'{"encrypt": "bm90IGEgYmxvY2s="}'):
        headers = {
            "x-lark-request-timestamp": "1",
            "x-lark-request-nonce": "n",
            "x-lark-signature": emulator.sign("1", "n", KEY, junk),
        }
        with pytest.raises(ApiProblem) as caught:
            open_webhook(junk, headers, SECRETS)
        assert (caught.value.status, caught.value.code) == (400, "invalid_json")


def test_signature_is_checked_before_decrypting(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a wrong signature the body is never decrypted (no padding oracle to time)."""
    from connector_sidecar.drivers.feishu import webhook

    def no_decrypt(*args: object) -> bytes:
        raise AssertionError("decrypted before the signature was checked")

    monkeypatch.setattr(webhook, "decrypt", no_decrypt)
    body, headers = encrypted(v2())
    headers["x-lark-signature"] = "0" * 64
    with pytest.raises(ApiProblem) as caught:
        open_webhook(body, headers, SECRETS)
    assert caught.value.status == 401
