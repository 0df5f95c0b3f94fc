"""Fetching an attachment's ``url`` source: http(s) only, bounded in time and size, and never
from loopback, private, link-local or other special addresses unless
``MEDIA_FETCH_ALLOW_PRIVATE=true`` (tests and emulators).

Every address the host name resolves to is checked before connecting, and each redirect
(at most :data:`MAX_REDIRECTS`) is checked again. What stays open: a name that resolves to a
public address for the check and a private one for the connection (DNS rebinding); an operator
who needs that closed puts the sidecar behind an egress proxy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import unquote, urljoin, urlsplit

import httpx

__all__ = ["FetchedUrl", "UrlFetchError", "UrlTooLargeError", "fetch_url"]

MAX_REDIRECTS = 3
FETCH_TIMEOUT = httpx.Timeout(30.0, connect=10.0)  # per network operation
FETCH_DEADLINE_SECONDS = 120.0  # for the whole fetch: a server that drips bytes is cut off


class UrlFetchError(Exception):
    """The URL cannot be fetched (not allowed, unreachable, an error status); ``str()`` says why."""


class UrlTooLargeError(UrlFetchError):
    pass


class FetchedUrl:
    def __init__(self, data: bytes, mime_type: str | None, file_name: str | None) -> None:
        self.data = data
        self.mime_type = mime_type
        self.file_name = file_name


async def _check_host(host: str, port: int, *, allow_private: bool) -> None:
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise UrlFetchError(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise UrlFetchError(
                f"{host!r} resolves to {address}, a private, loopback or link-local address"
                " (MEDIA_FETCH_ALLOW_PRIVATE is off)"
            )


async def fetch_url(
    http: httpx.AsyncClient,
    url: str,
    *,
    max_bytes: int,
    allow_private: bool,
    deadline: float = FETCH_DEADLINE_SECONDS,
) -> FetchedUrl:
    """GET ``url`` and return its bytes; never reads more than ``max_bytes``, nor for longer
    than ``deadline`` seconds in all."""
    try:
        async with asyncio.timeout(deadline):
            return await _fetch(http, url, max_bytes=max_bytes, allow_private=allow_private)
    except TimeoutError:
        raise UrlFetchError(f"the URL did not answer in full within {deadline:g} s") from None


async def _fetch(
    http: httpx.AsyncClient, url: str, *, max_bytes: int, allow_private: bool
) -> FetchedUrl:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlFetchError("only http and https URLs with a host can be fetched")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await _check_host(parts.hostname, port, allow_private=allow_private)
        try:
            async with http.stream(
                "GET", url, timeout=FETCH_TIMEOUT, follow_redirects=False
            ) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise UrlFetchError(f"HTTP {response.status_code} without a Location")
                    url = urljoin(url, location)
                    continue
                if not response.is_success:
                    raise UrlFetchError(f"the URL answered HTTP {response.status_code}")
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise UrlTooLargeError(
                        f"the URL holds {declared} bytes; the limit is {max_bytes}"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > max_bytes:
                        raise UrlTooLargeError(f"the URL holds more than {max_bytes} bytes")
                mime = response.headers.get("content-type", "").split(";")[0].strip() or None
                name = unquote(parts.path.rsplit("/", 1)[-1]) or None
                return FetchedUrl(bytes(body), mime, name)
        except httpx.HTTPError as exc:
            raise UrlFetchError(f"{type(exc).__name__}: {exc}") from None
    raise UrlFetchError(f"more than {MAX_REDIRECTS} redirects")
