"""The delivery worker's client: one connection per slot, at most ``size`` requests at once."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from connector_sidecar._bridge_client import BridgeClient, environment_proxy


@pytest.mark.anyio
async def test_no_more_requests_at_once_than_slots() -> None:
    """Five concurrent POSTs through two slots: never more than two reach the host together."""
    in_flight = peak = 0
    release = asyncio.Event()

    async def host(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return httpx.Response(200, json={"accepted": True})

    client = BridgeClient(
        2, url="http://host/events", timeout=5, transport=httpx.MockTransport(host)
    )

    async def post(i: int) -> int:
        async with client.stream("POST", "http://host/events", content=b"{}", headers={}) as r:
            await r.aread()
            return r.status_code

    tasks = [asyncio.create_task(post(i)) for i in range(5)]
    for _ in range(200):  # bounded: until two requests are parked at the host
        if in_flight == 2:
            break
        await asyncio.sleep(0.005)
    assert in_flight == 2
    release.set()
    assert await asyncio.gather(*tasks) == [200] * 5
    assert peak == 2
    await client.aclose()


@pytest.mark.anyio
async def test_a_failed_request_frees_its_slot() -> None:
    """A connection error inside one slot leaves it usable for the next request."""
    calls = 0

    def host(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    client = BridgeClient(
        1, url="http://host/events", timeout=5, transport=httpx.MockTransport(host)
    )
    with pytest.raises(httpx.ConnectError):
        async with client.stream("POST", "http://host/events", content=b"{}", headers={}):
            pass
    async with asyncio.timeout(5):
        async with client.stream("POST", "http://host/events", content=b"{}", headers={}) as r:
            assert r.status_code == 200
    await client.aclose()


def test_the_environment_proxy_still_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY and NO_PROXY pick the bridge's proxy as httpx's AsyncClient did."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("https://host.example/events") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert environment_proxy("https://host.example/events") == "http://proxy.example:3128"
    assert environment_proxy("http://host.example/events") is None
    monkeypatch.setenv("NO_PROXY", "host.example")
    assert environment_proxy("https://host.example/events") is None
