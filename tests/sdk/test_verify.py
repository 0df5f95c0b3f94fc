"""``BridgeVerifier``: bearer token, Standard Webhooks signatures, tolerance, malformed headers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from connector_contracts import encode
from connector_sdk import (
    BridgeRequestError,
    BridgeTimestampOutOfTolerance,
    BridgeVerifier,
    InvalidBridgeEvent,
    InvalidBridgeSignature,
    InvalidBridgeToken,
    WebhookSecret,
    sign_webhook,
)
from connector_sdk.testing import bridge_headers, make_bridge_event
from connector_sdk.verify import decode_event

from ._fakes import FakeClock

# The example of the Standard Webhooks specification (standard-webhooks/spec.md).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

TOKEN = "bridge-token-xyz"
SECRET_A = "whsec_" + base64.b64encode(b"secret-a" * 4).decode()
SECRET_B = "whsec_" + base64.b64encode(b"secret-b" * 4).decode()
NOW = 1_780_000_000

EVENT = make_bridge_event(event_id="evt_v1", content="hello 世界")
BODY = encode(EVENT)


def signed(
    secrets: tuple[str, ...] = (SECRET_A,), *, timestamp: int = NOW, token: str | None = TOKEN
) -> dict[str, str]:
    """The headers the sidecar would send with BODY."""
    return bridge_headers(
        BODY, event_id=EVENT.event_id, token=token, signing_secrets=secrets, timestamp=timestamp
    )


def verifier(
    *, secrets: tuple[str, ...] = (SECRET_A,), token: str | None = TOKEN, tolerance: float = 300
) -> BridgeVerifier:
    """A verifier whose clock stands at NOW."""
    return BridgeVerifier(
        token=token, signing_secrets=secrets, tolerance_seconds=tolerance, now=lambda: NOW
    )


def test_spec_vector_is_reproduced() -> None:
    """Our signer yields the signature of the Standard Webhooks spec example."""
    assert sign_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_spec_vector_is_accepted() -> None:
    """Our verifier accepts the spec example's headers (signature only)."""
    spec_verifier = BridgeVerifier(
        token=None, signing_secrets=(SPEC_SECRET,), now=lambda: SPEC_TIMESTAMP + 10
    )
    headers = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    # The spec body is not a BridgeEvent: the signature passes, then decoding refuses it.
    with pytest.raises(InvalidBridgeEvent) as caught:
        spec_verifier.verify(headers, SPEC_BODY)
    assert caught.value.status == 422
    headers["webhook-signature"] = "v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    with pytest.raises(InvalidBridgeSignature):
        spec_verifier.verify(headers, SPEC_BODY)


def test_signed_request_returns_the_event() -> None:
    """A request with the right token and signature decodes to its BridgeEvent."""
    assert verifier().verify(signed(), BODY) == EVENT


def test_signature_by_the_standardwebhooks_package_is_accepted() -> None:
    """A signature made by the reference library verifies with ours."""
    timestamp = datetime.fromtimestamp(NOW, UTC)
    signature = Webhook(SECRET_A).sign(EVENT.event_id, timestamp, BODY.decode())
    headers = {
        "authorization": f"Bearer {TOKEN}",
        "webhook-id": EVENT.event_id,
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature,
    }
    assert verifier().verify(headers, BODY).event_id == EVENT.event_id


def test_our_signature_is_accepted_by_the_standardwebhooks_package() -> None:
    """Headers signed by us pass the reference library's verify (its clock is real time)."""
    import time

    now = int(time.time())
    headers = bridge_headers(
        BODY, event_id=EVENT.event_id, signing_secrets=(SECRET_A,), timestamp=now
    )
    assert Webhook(SECRET_A).verify(BODY, headers)["eventId"] == EVENT.event_id


@given(
    body=st.binary(max_size=256),
    msg_id=st.text(min_size=1, max_size=40, alphabet="abcdefghijk_0123456789"),
    ts=st.integers(0, 4_000_000_000),
)
def test_signatures_agree_with_the_reference(body: bytes, msg_id: str, ts: int) -> None:
    """For any id, timestamp and UTF-8 body, our signature equals the reference library's."""
    text = body.decode("utf-8", "replace")
    reference = Webhook(SECRET_B).sign(msg_id, datetime.fromtimestamp(ts, UTC), text)
    assert sign_webhook(SECRET_B, msg_id, ts, text.encode()) == reference


def test_rotation_accepts_either_secret() -> None:
    """With two secrets configured, a request signed by either one verifies."""
    both = verifier(secrets=(SECRET_A, SECRET_B))
    assert both.verify(signed((SECRET_A,)), BODY) == EVENT
    assert both.verify(signed((SECRET_B,)), BODY) == EVENT


def test_rotation_header_with_two_signatures() -> None:
    """A header carrying one signature per secret verifies against a single new secret."""
    headers = signed((SECRET_A, SECRET_B))
    assert len(headers["webhook-signature"].split()) == 2
    assert verifier(secrets=(SECRET_B,)).verify(headers, BODY) == EVENT


def test_one_valid_signature_among_bad_ones() -> None:
    """A wrong v1 signature before or after the right one does not stop it verifying."""
    good = signed()["webhook-signature"]
    wrong = sign_webhook(SECRET_B, EVENT.event_id, NOW, BODY)
    for value in (f"{wrong} {good}", f"{good} {wrong}", f"v1,AAAA {good}"):
        headers = {**signed(), "webhook-signature": value}
        assert verifier().verify(headers, BODY) == EVENT


def test_other_versions_are_ignored() -> None:
    """``v1a`` and unknown versions are skipped, never verified as v1, with or without a v1."""
    good = signed()["webhook-signature"]
    digest = good.removeprefix("v1,")
    headers = {**signed(), "webhook-signature": f"v1a,{digest} v2,{digest} {good}"}
    assert verifier().verify(headers, BODY) == EVENT
    for value in (f"v1a,{digest}", f"v2,{digest}", f"V1,{digest}"):
        with pytest.raises(InvalidBridgeSignature, match="no v1 signature"):
            verifier().verify({**signed(), "webhook-signature": value}, BODY)


@pytest.mark.parametrize(
    "body",
    [BODY, BODY.decode("utf-8"), bytearray(BODY), memoryview(BODY)],
    ids=["bytes", "str", "bytearray", "memoryview"],
)
def test_body_as_bytes_or_str(body: bytes | bytearray | memoryview | str) -> None:
    """The raw body may be bytes, a bytes-like object, or the str it decodes to (UTF-8)."""
    assert verifier().verify(signed(), body) == EVENT


def test_secrets_from_the_comma_separated_env_value() -> None:
    """``BRIDGE_SIGNING_SECRET`` as one comma-separated string configures rotation."""
    env_style = BridgeVerifier(
        token=TOKEN, signing_secrets=f"{SECRET_A}, {SECRET_B}", now=lambda: NOW
    )
    assert env_style.verify(signed((SECRET_B,)), BODY) == EVENT


def test_unknown_secret_is_refused() -> None:
    """A signature by a secret we do not hold is refused."""
    with pytest.raises(InvalidBridgeSignature, match="no signature matches"):
        verifier(secrets=(SECRET_B,)).verify(signed((SECRET_A,)), BODY)


def test_tampered_body_is_refused() -> None:
    """Changing one byte of the body breaks the signature."""
    with pytest.raises(InvalidBridgeSignature):
        verifier().verify(signed(), BODY.replace(b"hello", b"hellp"))


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamp_within_tolerance(skew: int) -> None:
    """Timestamps up to the tolerance either side of now are accepted."""
    clock = FakeClock(now=NOW)
    v = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET_A,), tolerance_seconds=300, now=clock)
    clock.advance(-skew)
    assert v.verify(signed(), BODY) == EVENT


@pytest.mark.parametrize("skew", [-301, 301, 86_400])
def test_timestamp_outside_tolerance(skew: int) -> None:
    """A timestamp further than the tolerance from now is refused, old or future."""
    clock = FakeClock(now=NOW + skew)
    v = BridgeVerifier(token=TOKEN, signing_secrets=(SECRET_A,), tolerance_seconds=300, now=clock)
    with pytest.raises(BridgeTimestampOutOfTolerance) as caught:
        v.verify(signed(), BODY)
    assert caught.value.status == 401
    assert caught.value.event_id == EVENT.event_id


def test_wrong_token_is_refused_even_with_a_good_signature() -> None:
    """The bearer token is checked as well as the signature."""
    with pytest.raises(InvalidBridgeToken, match="wrong bearer token"):
        verifier().verify(signed(token="nope"), BODY)


def test_token_only_verifier() -> None:
    """Without secrets, the token alone is checked and no webhook headers are needed."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert verifier(secrets=()).verify(headers, BODY) == EVENT


def test_needs_token_or_secret() -> None:
    """A verifier with neither a token nor a secret would accept anything: refused."""
    with pytest.raises(ValueError, match="token, signing secrets"):
        BridgeVerifier(token=None, signing_secrets=())


@pytest.mark.parametrize("secret", ["whsec_!!!notbase64", "whsec_", ""])
def test_bad_secret_is_a_configuration_error(secret: str) -> None:
    """A secret that is not base64 (or is empty) is refused at construction."""
    with pytest.raises(ValueError, match="secret"):
        WebhookSecret(secret)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic abc",
        "bearer wrong",
        "Bearer \udcff\u00e9",
        "Bearer 令牌",
    ],
)
def test_malformed_authorization(authorization: str | None) -> None:
    """Missing, non-bearer, or non-ASCII Authorization values raise InvalidBridgeToken."""
    headers = signed()
    del headers["authorization"]
    if authorization is not None:
        headers["authorization"] = authorization
    with pytest.raises(InvalidBridgeToken):
        verifier().verify(headers, BODY)


def test_bearer_scheme_is_case_insensitive() -> None:
    """``bearer`` in lower case is the same scheme."""
    headers = signed()
    headers["authorization"] = f"bearer {TOKEN}"
    assert verifier().verify(headers, BODY) == EVENT


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-id", None),
        ("webhook-timestamp", None),
        ("webhook-signature", None),
        ("webhook-timestamp", "yesterday"),
        ("webhook-timestamp", "1.5e9"),
        ("webhook-timestamp", "-1780000000"),
        ("webhook-timestamp", "9" * 40),
        ("webhook-signature", "v1"),
        ("webhook-signature", "v1,"),
        ("webhook-signature", "v1,***not base64***"),
        ("webhook-signature", "v1,abc"),
        ("webhook-signature", "v2,AAAA"),
        ("webhook-signature", ",,, ,"),
        ("webhook-signature", "v1,\u00e9\u00e9"),
        ("webhook-signature", "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
    ],
)
def test_malformed_webhook_headers(name: str, value: str | None) -> None:
    """Missing or malformed webhook headers raise InvalidBridgeSignature, nothing else."""
    headers = signed()
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    with pytest.raises(InvalidBridgeSignature) as caught:
        verifier().verify(headers, BODY)
    assert caught.value.status == 401


@given(
    headers=st.dictionaries(
        st.sampled_from(
            ["authorization", "webhook-id", "webhook-timestamp", "webhook-signature", "x"]
        ),
        st.text(max_size=80),
    ),
    body=st.binary(max_size=64),
)
def test_arbitrary_headers_only_raise_typed_errors(headers: dict[str, str], body: bytes) -> None:
    """Whatever the headers and body, verify raises only BridgeRequestError subclasses."""
    with pytest.raises(BridgeRequestError) as caught:
        verifier().verify(headers, body)
    assert caught.value.status in (400, 401, 422)


def test_header_names_are_case_insensitive() -> None:
    """Headers given with any capitalisation, or as a list of pairs, are found."""
    headers = {name.title(): value for name, value in signed().items()}
    assert verifier().verify(headers, BODY) == EVENT
    upper = [(name.upper(), value) for name, value in signed().items()]
    assert verifier().verify(upper, BODY) == EVENT
    assert verifier().verify(list(signed().items()), BODY) == EVENT


def test_framework_header_objects() -> None:
    """Starlette's and httpx's header objects work as they are."""
    from httpx import Headers as HttpxHeaders
    from starlette.datastructures import Headers as StarletteHeaders

    raw = [(name.title().encode(), value.encode()) for name, value in signed().items()]
    assert verifier().verify(StarletteHeaders(raw=raw), BODY) == EVENT
    assert verifier().verify(HttpxHeaders(signed()), BODY) == EVENT


def test_first_of_a_repeated_header_counts() -> None:
    """With an Authorization header given twice, the first one is the one checked."""
    pairs = [*signed().items(), ("Authorization", "Bearer wrong")]
    assert verifier().verify(pairs, BODY) == EVENT
    pairs = [("authorization", "Bearer wrong"), *signed().items()]
    with pytest.raises(InvalidBridgeToken):
        verifier().verify(pairs, BODY)


def test_malformed_json_is_400() -> None:
    """A verified body that is not JSON raises InvalidBridgeEvent with status 400."""
    body = b"{not json"
    headers = bridge_headers(
        body, event_id="e", token=TOKEN, signing_secrets=(SECRET_A,), timestamp=NOW
    )
    with pytest.raises(InvalidBridgeEvent) as caught:
        verifier().verify(headers, body)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


@pytest.mark.parametrize(
    "body",
    [
        b'{"eventId": "evt_\xff"}',
        b'{"ignored": "\xed\xa0\x80"}',
        b"\xc3",
        b'{"metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["invalid-byte", "encoded-surrogate", "truncated-sequence", "nested-too-deep"],
)
def test_body_not_utf8_or_too_deep_is_400(body: bytes) -> None:
    """A verified body that is not UTF-8, or nested too deep, raises InvalidBridgeEvent 400."""
    headers = bridge_headers(
        body, event_id="e", token=TOKEN, signing_secrets=(SECRET_A,), timestamp=NOW
    )
    with pytest.raises(InvalidBridgeEvent) as caught:
        verifier().verify(headers, body)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    with pytest.raises(InvalidBridgeEvent):
        decode_event(body)


def test_wrong_shape_is_422_naming_the_field() -> None:
    """A verified JSON body missing a field raises 422 with the field's path."""
    body = b'{"eventId": "evt_1", "deliveryAttempt": "one"}'
    headers = bridge_headers(body, event_id="e", token=TOKEN, timestamp=NOW)
    with pytest.raises(InvalidBridgeEvent) as caught:
        verifier(secrets=()).verify(headers, body)
    assert (caught.value.status, caught.value.code) == (422, "validation_failed")
    assert caught.value.errors
    assert caught.value.errors[0].path.startswith("$")


def test_secrets_never_in_repr() -> None:
    """Neither the token nor a signing secret shows in the verifier's repr."""
    text = repr(verifier(secrets=(SECRET_A, SECRET_B))) + repr(WebhookSecret(SECRET_A))
    assert TOKEN not in text
    assert SECRET_A.removeprefix("whsec_") not in text
    assert "signing_secrets=2" in text
