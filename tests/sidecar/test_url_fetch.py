"""Fetching ``url`` attachments: http(s) only, no private addresses unless allowed, redirects
checked again, a size cap and a deadline."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from connector_sidecar.url_fetch import UrlFetchError, UrlTooLargeError, fetch_url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://localhost/x",
        "ftp://example.com/x",
    ],
)
async def test_private_and_odd_urls_are_refused(url: str) -> None:
    """Loopback, private, link-local (cloud metadata) and non-http URLs are never fetched."""
    async with httpx.AsyncClient() as http:
        with pytest.raises(UrlFetchError):
            await fetch_url(http, url, max_bytes=100, allow_private=False)


@respx.mock
async def test_redirects_are_checked_again_and_size_is_capped() -> None:
    """A redirect to a private address is refused; a body over the cap is UrlTooLargeError."""
    respx.get("http://93.184.216.34/r").respond(302, headers={"Location": "http://127.0.0.1/x"})
    respx.get("http://93.184.216.34/big").respond(200, content=b"x" * 200)
    respx.get("http://93.184.216.34/ok").respond(
        200, content=b"fine", headers={"Content-Type": "image/png; q=1"}
    )
    async with httpx.AsyncClient() as http:
        with pytest.raises(UrlFetchError, match=r"127\.0\.0\.1"):
            await fetch_url(http, "http://93.184.216.34/r", max_bytes=100, allow_private=False)
        with pytest.raises(UrlTooLargeError):
            await fetch_url(http, "http://93.184.216.34/big", max_bytes=100, allow_private=False)
        fetched = await fetch_url(
            http, "http://93.184.216.34/ok", max_bytes=100, allow_private=False
        )
        assert (fetched.data, fetched.mime_type, fetched.file_name) == (b"fine", "image/png", "ok")


@respx.mock
async def test_a_slow_url_hits_the_deadline() -> None:
    """A server that never finishes is cut off at the deadline."""

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200)

    respx.get("http://93.184.216.34/slow").mock(side_effect=slow)
    async with httpx.AsyncClient() as http:
        with pytest.raises(UrlFetchError, match="within"):
            await fetch_url(
                http, "http://93.184.216.34/slow", max_bytes=10, allow_private=True, deadline=0.1
            )
