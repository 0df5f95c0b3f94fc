"""The OpenAPI client against respx: request shapes, the tenant token cache, error classes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from connector_sidecar.drivers.feishu.api import (
    CredentialsRejected,
    FeishuApi,
    FeishuApiError,
    FeishuUnavailable,
    TokenCache,
)
from connector_sidecar.drivers.feishu.registration import (
    Approved,
    FlowExpired,
    FlowState,
    Pending,
    RegistrationClient,
    RegistrationError,
    RegistrationUnavailable,
    SwitchToLark,
    run_device_flow,
)

from ..conftest import FakeClock

BASE = "https://open.feishu.cn"
TOKEN_URL = f"{BASE}/open-apis/auth/v3/tenant_access_token/internal"
MESSAGES_URL = f"{BASE}/open-apis/im/v1/messages"


def token_ok(token: str = "t-1", expire: int = 7200) -> httpx.Response:
    return httpx.Response(
        200, json={"code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire}
    )


def sent(message_id: str = "om_1") -> httpx.Response:
    return httpx.Response(
        200,
        json={"code": 0, "msg": "success", "data": {"message_id": message_id, "chat_id": "oc_1"}},
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api(http: httpx.AsyncClient, clock: FakeClock) -> FeishuApi:
    return FeishuApi(http, BASE, "cli_a", "secret-a", tokens=TokenCache(clock))


@pytest.mark.anyio
@respx.mock
async def test_token_request_shape(api: FeishuApi) -> None:
    """POST …/tenant_access_token/internal with a JSON body of app_id and app_secret."""
    route = respx.post(TOKEN_URL).mock(return_value=token_ok())
    assert await api.tenant_token() == "t-1"
    request = route.calls.last.request
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(request.content) == {"app_id": "cli_a", "app_secret": "secret-a"}


@pytest.mark.anyio
@respx.mock
async def test_token_is_cached_and_refreshed_ahead_of_expiry(
    api: FeishuApi, clock: FakeClock
) -> None:
    """One fetch serves calls until 10 min before expiry; then a new token is fetched."""
    route = respx.post(TOKEN_URL).mock(side_effect=[token_ok("t-1"), token_ok("t-2")])
    assert await api.tenant_token() == "t-1"
    clock.now += 7200 - 601
    assert await api.tenant_token() == "t-1"
    assert route.call_count == 1
    clock.now += 2
    assert await api.tenant_token() == "t-2"
    assert route.call_count == 2


@pytest.mark.anyio
@respx.mock
async def test_token_refresh_is_single_flight(api: FeishuApi) -> None:
    """Twenty concurrent callers share one token request."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return token_ok("t-shared")

    route = respx.post(TOKEN_URL).mock(side_effect=slow)
    tokens = await asyncio.gather(*(api.tenant_token() for _ in range(20)))
    assert set(tokens) == {"t-shared"}
    assert route.call_count == 1


@pytest.mark.anyio
@respx.mock
async def test_token_cache_is_per_domain_and_app(http: httpx.AsyncClient, clock: FakeClock) -> None:
    """The same app id on another base URL, or another app, gets its own token."""
    tokens = TokenCache(clock)
    feishu = respx.post(TOKEN_URL).mock(side_effect=[token_ok("t-f1"), token_ok("t-f2")])
    lark = respx.post("https://open.larksuite.com/open-apis/auth/v3/tenant_access_token/internal")
    lark.mock(return_value=token_ok("t-l"))
    a = FeishuApi(http, BASE, "cli_a", "s", tokens=tokens)
    b = FeishuApi(http, BASE, "cli_b", "s", tokens=tokens)
    c = FeishuApi(http, "https://open.larksuite.com", "cli_a", "s", tokens=tokens)
    assert [await a.tenant_token(), await b.tenant_token(), await c.tenant_token()] == [
        "t-f1",
        "t-f2",
        "t-l",
    ]
    assert await a.tenant_token() == "t-f1"
    assert (feishu.call_count, lark.call_count) == (2, 1)


@pytest.mark.anyio
@respx.mock
async def test_bad_secret_is_credentials_rejected(api: FeishuApi) -> None:
    """10014 from the token endpoint (HTTP 200) means the credentials are wrong: not retried."""
    respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(200, json={"code": 10014, "msg": "app secret invalid"})
    )
    with pytest.raises(CredentialsRejected) as caught:
        await api.tenant_token()
    assert caught.value.code == 10014
    assert "app secret invalid" in str(caught.value)


@pytest.mark.anyio
@respx.mock
async def test_token_endpoint_outage_is_unavailable(api: FeishuApi) -> None:
    """A 5xx or a network error on the token endpoint is transient."""
    respx.post(TOKEN_URL).mock(
        side_effect=[httpx.Response(502, text="bad gateway"), httpx.ConnectError("refused")]
    )
    with pytest.raises(FeishuUnavailable):
        await api.tenant_token()
    with pytest.raises(FeishuUnavailable):
        await api.tenant_token()


@pytest.mark.anyio
@respx.mock
async def test_create_message_request_shape(api: FeishuApi) -> None:
    """receive_id_type in the query; content a JSON string; uuid; the bearer tenant token."""
    respx.post(TOKEN_URL).mock(return_value=token_ok("t-9"))
    route = respx.post(MESSAGES_URL).mock(return_value=sent("om_42"))
    result = await api.create_message(
        receive_id_type="chat_id",
        receive_id="oc_1",
        msg_type="text",
        content=json.dumps({"text": "hi"}),
        uuid="u-1",
    )
    assert result.message_id == "om_42"
    request = route.calls.last.request
    assert request.url.params["receive_id_type"] == "chat_id"
    assert request.headers["authorization"] == "Bearer t-9"
    body = json.loads(request.content)
    assert body == {
        "receive_id": "oc_1",
        "msg_type": "text",
        "content": '{"text": "hi"}',
        "uuid": "u-1",
    }
    assert isinstance(body["content"], str)


@pytest.mark.anyio
@respx.mock
async def test_reply_request_shape(api: FeishuApi) -> None:
    """POST …/messages/{id}/reply with content, msg_type, reply_in_thread and uuid; no receive_id."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    route = respx.post(f"{MESSAGES_URL}/om_parent/reply").mock(return_value=sent("om_r"))
    result = await api.reply_message(
        message_id="om_parent",
        msg_type="text",
        content='{"text":"x"}',
        uuid="u-2",
        reply_in_thread=True,
    )
    assert result.message_id == "om_r"
    body = json.loads(route.calls.last.request.content)
    assert body == {
        "content": '{"text":"x"}',
        "msg_type": "text",
        "reply_in_thread": True,
        "uuid": "u-2",
    }


@pytest.mark.anyio
@respx.mock
async def test_token_invalid_refreshes_once_and_retries(api: FeishuApi) -> None:
    """99991663 drops the token, fetches a new one and repeats the call with it, once."""
    tokens = respx.post(TOKEN_URL).mock(side_effect=[token_ok("t-old"), token_ok("t-new")])
    invalid = httpx.Response(400, json={"code": 99991663, "msg": "Invalid access token"})
    route = respx.post(MESSAGES_URL).mock(side_effect=[invalid, sent("om_ok")])
    result = await api.create_message(
        receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
    )
    assert result.message_id == "om_ok"
    assert tokens.call_count == 2
    assert [c.request.headers["authorization"] for c in route.calls] == [
        "Bearer t-old",
        "Bearer t-new",
    ]


@pytest.mark.anyio
@respx.mock
async def test_token_invalid_twice_is_unavailable(api: FeishuApi) -> None:
    """A fresh token refused again is not retried in a loop: the caller retries later."""
    respx.post(TOKEN_URL).mock(side_effect=[token_ok("t-1"), token_ok("t-2")])
    invalid = httpx.Response(400, json={"code": 99991661, "msg": "Missing access token"})
    route = respx.post(MESSAGES_URL).mock(return_value=invalid)
    with pytest.raises(FeishuUnavailable):
        await api.create_message(
            receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
        )
    assert route.call_count == 2


@pytest.mark.anyio
@respx.mock
@pytest.mark.parametrize(
    ("status", "code", "retry_after"),
    [(400, 99991400, None), (400, 230020, "2"), (200, 11232, None), (429, None, "7")],
)
async def test_rate_limits_are_unavailable(
    api: FeishuApi, status: int, code: int | None, retry_after: str | None
) -> None:
    """99991400, 230020, 11232 and HTTP 429 are rate limits: retry later, honouring Retry-After."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    headers = {"Retry-After": retry_after} if retry_after else {}
    body = {"code": code, "msg": "limited"} if code is not None else {}
    respx.post(MESSAGES_URL).mock(return_value=httpx.Response(status, json=body, headers=headers))
    with pytest.raises(FeishuUnavailable) as caught:
        await api.create_message(
            receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
        )
    assert caught.value.retry_after == (float(retry_after) if retry_after else None)


@pytest.mark.anyio
@respx.mock
@pytest.mark.parametrize("code", [99991402, 11020, 11021])
async def test_the_sdk_rate_limit_codes_are_unavailable(api: FeishuApi, code: int) -> None:
    """The codes lark-oapi's channel layer reads as "too many requests" are retried later too."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    respx.post(MESSAGES_URL).mock(
        return_value=httpx.Response(400, json={"code": code, "msg": "too many requests"})
    )
    with pytest.raises(FeishuUnavailable) as caught:
        await api.create_message(
            receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
        )
    assert caught.value.code == code


@pytest.mark.anyio
@respx.mock
@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ogw-ratelimit-reset": "9"}, 9.0),
        ({"x-ogw-ratelimit-reset": "9", "Retry-After": "3"}, 3.0),
        ({"x-ogw-ratelimit-reset": "600"}, 60.0),
        ({"x-ogw-ratelimit-reset": "soon"}, None),
        ({b"x-ogw-ratelimit-reset": "٣".encode()}, None),  # float() would read 3
    ],
    ids=["reset-only", "retry-after-wins", "capped", "unreadable", "not-ascii-digits"],
)
async def test_the_ratelimit_reset_header_is_read(
    api: FeishuApi, headers: dict[str, str] | dict[bytes, bytes], expected: float | None
) -> None:
    """Feishu's x-ogw-ratelimit-reset (seconds) says when to retry where Retry-After does not."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    respx.post(MESSAGES_URL).mock(
        return_value=httpx.Response(400, json={"code": 99991400, "msg": "limited"}, headers=headers)
    )
    with pytest.raises(FeishuUnavailable) as caught:
        await api.create_message(
            receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
        )
    assert caught.value.retry_after == expected


@pytest.mark.anyio
@respx.mock
async def test_other_codes_are_api_errors(api: FeishuApi) -> None:
    """230002 (bot not in chat) is the vendor refusing the request, with its code and msg."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    respx.post(MESSAGES_URL).mock(
        return_value=httpx.Response(400, json={"code": 230002, "msg": "Bot is not in the chat."})
    )
    with pytest.raises(FeishuApiError) as caught:
        await api.create_message(
            receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
        )
    assert caught.value.code == 230002
    assert caught.value.msg == "Bot is not in the chat."


@pytest.mark.anyio
@respx.mock
async def test_server_errors_are_unavailable(api: FeishuApi) -> None:
    """HTTP 5xx without a code, and timeouts, are transient."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    respx.post(MESSAGES_URL).mock(
        side_effect=[httpx.Response(503, text="busy"), httpx.ReadTimeout("slow")]
    )
    for _ in range(2):
        with pytest.raises(FeishuUnavailable):
            await api.create_message(
                receive_id_type="chat_id",
                receive_id="oc_1",
                msg_type="text",
                content="{}",
                uuid="u",
            )


@pytest.mark.anyio
@respx.mock
async def test_bot_info_reads_top_level_or_data_bot(api: FeishuApi) -> None:
    """``bot`` sits next to code/msg; ``data.bot`` is accepted as a fallback."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    route = respx.get(f"{BASE}/open-apis/bot/v3/info")
    bot = {"activate_status": 2, "app_name": "Helper", "open_id": "ou_bot"}
    route.mock(
        side_effect=[
            httpx.Response(200, json={"code": 0, "msg": "ok", "bot": bot}),
            httpx.Response(200, json={"code": 0, "msg": "ok", "data": {"bot": bot}}),
        ]
    )
    for _ in range(2):
        info = await api.bot_info()
        assert (info.open_id, info.app_name, info.activate_status) == ("ou_bot", "Helper", 2)
    assert route.calls.last.request.headers["authorization"] == "Bearer t-1"


@pytest.mark.anyio
@respx.mock
async def test_ws_endpoint_request_shape(api: FeishuApi) -> None:
    """POST /callback/ws/endpoint (not under /open-apis), PascalCase body, locale: zh."""
    route = respx.post(f"{BASE}/callback/ws/endpoint").mock(
        return_value=httpx.Response(
            200,
            json={
                "code": 0,
                "data": {
                    "URL": "wss://msg-frontier.feishu.cn/ws/v2?device_id=777&service_id=42&x=1",
                    "ClientConfig": {"PingInterval": 90, "ReconnectCount": -1},
                },
            },
        )
    )
    endpoint = await api.ws_endpoint()
    request = route.calls.last.request
    assert json.loads(request.content) == {"AppID": "cli_a", "AppSecret": "secret-a"}
    assert request.headers["locale"] == "zh"
    assert (endpoint.device_id, endpoint.service_id) == ("777", 42)
    assert endpoint.client_config["PingInterval"] == 90


@pytest.mark.anyio
@respx.mock
async def test_ws_endpoint_with_an_odd_service_id(api: FeishuApi) -> None:
    """A service_id that only looks numeric ("²" passes str.isdigit) becomes 0, not a crash."""
    respx.post(f"{BASE}/callback/ws/endpoint").mock(
        return_value=httpx.Response(
            200,
            json={
                "code": 0,
                "data": {"URL": "wss://frontier.example/ws?device_id=1&service_id=%C2%B2"},
            },
        )
    )
    endpoint = await api.ws_endpoint()
    assert endpoint.service_id == 0


@pytest.mark.anyio
@respx.mock
async def test_ws_endpoint_codes(api: FeishuApi) -> None:
    """Codes 1 and 1000040343 are retryable; any other code is a client error."""
    route = respx.post(f"{BASE}/callback/ws/endpoint")
    route.mock(
        side_effect=[
            httpx.Response(200, json={"code": 1, "msg": "system busy"}),
            httpx.Response(200, json={"code": 1000040343, "msg": "internal"}),
            httpx.Response(200, json={"code": 1000040344, "msg": "forbidden"}),
        ]
    )
    for _ in range(2):
        with pytest.raises(FeishuUnavailable):
            await api.ws_endpoint()
    with pytest.raises(FeishuApiError):
        await api.ws_endpoint()


# -- the device flow -----------------------------------------------------------------------------

ACCOUNTS = "https://accounts.feishu.cn/oauth/v1/app/registration"
LARK_ACCOUNTS = "https://accounts.larksuite.com/oauth/v1/app/registration"


def form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


@pytest.mark.anyio
@respx.mock
async def test_registration_request_shapes(http: httpx.AsyncClient) -> None:
    """init, then begin with the PersonalAgent archetype, then poll by device_code, form-encoded."""
    route = respx.post(ACCOUNTS).mock(
        side_effect=[
            httpx.Response(200, json={"supported_auth_methods": ["client_secret"]}),
            httpx.Response(
                200,
                json={
                    "device_code": "dc1",
                    "user_code": "UC",
                    "verification_uri_complete": "https://open.feishu.cn/page/cli?user_code=UC",
                    "interval": 3,
                    "expires_in": 120,
                },
            ),
            httpx.Response(400, json={"error": "authorization_pending"}),
        ]
    )
    client = RegistrationClient(http, "https://accounts.feishu.cn")
    begun = await client.begin()
    assert (begun.device_code, begun.interval, begun.expires_in) == ("dc1", 3.0, 120.0)
    assert await client.poll("dc1", switched=False) == Pending()
    forms = [form(c.request) for c in route.calls]
    assert forms == [
        {"action": "init"},
        {
            "action": "begin",
            "archetype": "PersonalAgent",
            "auth_method": "client_secret",
            "request_user_info": "open_id",
        },
        {"action": "poll", "device_code": "dc1"},
    ]
    assert route.calls.last.request.headers["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.anyio
@respx.mock
@pytest.mark.parametrize(
    ("interval", "expires_in", "expected"),
    [
        (10**400, 10**400, (60.0, 3600.0)),
        (float("inf"), -5, (60.0, 600.0)),
        ("3", None, (5.0, 600.0)),
    ],
    ids=["huge", "infinite", "junk"],
)
async def test_registration_timing_is_bounded(
    http: httpx.AsyncClient, interval: object, expires_in: object, expected: tuple[float, float]
) -> None:
    """Huge, infinite, negative or missing interval/expires_in: defaults or a sane maximum."""
    respx.post(ACCOUNTS).mock(
        side_effect=[
            httpx.Response(200, json={"supported_auth_methods": ["client_secret"]}),
            httpx.Response(
                200,
                content=(
                    '{"device_code": "dc1", "verification_uri_complete": "https://x.test/c",'
                    f' "interval": {json.dumps(interval)}, "expires_in": {json.dumps(expires_in)}}}'
                ).encode(),
            ),
        ]
    )
    begun = await RegistrationClient(http, "https://accounts.feishu.cn").begin()
    assert (begun.interval, begun.expires_in) == expected


@pytest.mark.anyio
@respx.mock
async def test_registration_refuses_without_client_secret(http: httpx.AsyncClient) -> None:
    """An init answer that does not offer client_secret ends the flow."""
    respx.post(ACCOUNTS).mock(return_value=httpx.Response(200, json={"supported_auth_methods": []}))
    with pytest.raises(RegistrationError) as caught:
        await RegistrationClient(http, "https://accounts.feishu.cn").begin()
    assert caught.value.error == "unsupported_auth_method"


@pytest.mark.anyio
@respx.mock
async def test_registration_poll_answers(http: httpx.AsyncClient) -> None:
    """slow_down, the Lark brand switch, approval, and the terminal errors."""
    respx.post(ACCOUNTS).mock(
        side_effect=[
            httpx.Response(400, json={"error": "slow_down"}),
            httpx.Response(
                400, json={"error": "authorization_pending", "user_info": {"tenant_brand": "lark"}}
            ),
            httpx.Response(
                200,
                json={
                    "client_id": "cli_new",
                    "client_secret": "sec",
                    "user_info": {"open_id": "ou_owner", "tenant_brand": "feishu"},
                },
            ),
            httpx.Response(400, json={"error": "access_denied"}),
            httpx.Response(400, json={"error": "expired_token"}),
        ]
    )
    client = RegistrationClient(http, "https://accounts.feishu.cn")
    assert await client.poll("d", switched=False) == Pending(slow_down=True)
    assert await client.poll("d", switched=False) == SwitchToLark()
    approved = await client.poll("d", switched=False)
    assert isinstance(approved, Approved)
    assert (approved.app_id, approved.app_secret, approved.owner_open_id) == (
        "cli_new",
        "sec",
        "ou_owner",
    )
    for error in ("access_denied", "expired_token"):
        with pytest.raises(RegistrationError) as caught:
            await client.poll("d", switched=False)
        assert caught.value.error == error


def begin_answers(device_code: str, *, expires_in: int = 60) -> list[httpx.Response]:
    return [
        httpx.Response(200, json={"supported_auth_methods": ["client_secret"]}),
        httpx.Response(
            200,
            json={
                "device_code": device_code,
                "verification_uri_complete": f"https://x/page?c={device_code}",
                "interval": 2,
                "expires_in": expires_in,
            },
        ),
    ]


@pytest.mark.anyio
@respx.mock
async def test_device_flow_slow_down_adds_five_seconds_and_lark_switch(
    http: httpx.AsyncClient,
) -> None:
    """slow_down makes the interval 2 → 7 s; tenant_brand lark moves polling to the Lark host."""
    feishu = respx.post(ACCOUNTS).mock(
        side_effect=[
            *begin_answers("dc1"),
            httpx.Response(400, json={"error": "authorization_pending"}),
            httpx.Response(400, json={"error": "slow_down"}),
            httpx.Response(
                400, json={"error": "authorization_pending", "user_info": {"tenant_brand": "lark"}}
            ),
        ]
    )
    lark = respx.post(LARK_ACCOUNTS).mock(
        return_value=httpx.Response(
            200,
            json={
                "client_id": "cli_l",
                "client_secret": "s",
                "user_info": {"open_id": "ou_o", "tenant_brand": "lark"},
            },
        )
    )
    clock = FakeClock()
    codes: list[str | None] = []
    state = FlowState()

    async def on_code(flow: FlowState) -> None:
        codes.append(flow.url)

    async def on_change(flow: FlowState) -> None:
        pass

    hosts = {"feishu": "https://accounts.feishu.cn", "lark": "https://accounts.larksuite.com"}
    result = await run_device_flow(
        state,
        client_for=lambda brand: RegistrationClient(http, hosts[brand]),
        on_code=on_code,
        on_change=on_change,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.app_id == "cli_l"
    assert codes == ["https://x/page?c=dc1"]
    assert clock.slept == [2.0, 2.0, 7.0, 7.0]
    assert (state.brand, state.switched) == ("lark", True)
    assert (feishu.call_count, lark.call_count) == (5, 1)
    assert form(lark.calls.last.request) == {"action": "poll", "device_code": "dc1"}


@pytest.mark.anyio
@respx.mock
async def test_device_flow_replaces_expired_codes_then_gives_up(http: httpx.AsyncClient) -> None:
    """An expired code is replaced by a new one, up to max_codes; then FlowExpired."""
    expired = httpx.Response(400, json={"error": "expired_token"})
    respx.post(ACCOUNTS).mock(
        side_effect=[*begin_answers("a"), expired, *begin_answers("b"), expired]
    )
    clock = FakeClock()
    codes: list[str | None] = []

    async def on_code(flow: FlowState) -> None:
        codes.append(flow.device_code)

    async def on_change(flow: FlowState) -> None:
        pass

    with pytest.raises(FlowExpired):
        await run_device_flow(
            FlowState(),
            client_for=lambda brand: RegistrationClient(http, "https://accounts.feishu.cn"),
            on_code=on_code,
            on_change=on_change,
            clock=clock,
            sleep=clock.sleep,
            max_codes=2,
        )
    assert codes == ["a", "b"]


@pytest.mark.anyio
@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html><body>gateway</body></html>"),
        httpx.Response(200, content=b"[" * 100_000),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(200, json={"code": "0"}),
        httpx.Response(502, text="<html>bad gateway</html>"),
    ],
)
async def test_unreadable_answers_are_unavailable(api: FeishuApi, response: httpx.Response) -> None:
    """HTML, unparseable JSON or a non-numeric code: outcome unknown, so unavailable."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    respx.post(MESSAGES_URL).mock(return_value=response)
    with pytest.raises(FeishuUnavailable):
        await api.create_message(
            receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u"
        )


@pytest.mark.anyio
@respx.mock
@pytest.mark.parametrize("data", [None, {}, {"message_id": 5}, "om_1"])
async def test_success_without_a_message_id_is_still_sent(api: FeishuApi, data: object) -> None:
    """code 0 means Feishu took the message; without a readable message_id the uuid stands in."""
    respx.post(TOKEN_URL).mock(return_value=token_ok())
    body: dict[str, object] = {"code": 0, "msg": "success"}
    if data is not None:
        body["data"] = data
    respx.post(MESSAGES_URL).mock(return_value=httpx.Response(200, json=body))
    sent_message = await api.create_message(
        receive_id_type="chat_id", receive_id="oc_1", msg_type="text", content="{}", uuid="u-1"
    )
    assert sent_message.message_id == "u-1"


@pytest.mark.anyio
@respx.mock
async def test_registration_answers_too_deep_to_parse_are_unavailable(
    http: httpx.AsyncClient,
) -> None:
    """A registration answer that cannot be parsed is a passing outage, not a crash."""
    respx.post("https://accounts.feishu.cn/oauth/v1/app/registration").mock(
        return_value=httpx.Response(503, content=b"[" * 100_000)
    )
    with pytest.raises(RegistrationUnavailable):
        await RegistrationClient(http, "https://accounts.feishu.cn").poll("dc", switched=False)
