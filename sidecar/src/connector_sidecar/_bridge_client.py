"""The delivery worker's HTTP client: one keep-alive connection per lane slot.

Why not one ``httpx.AsyncClient`` with a pool of ``BRIDGE_CONCURRENCY`` connections: httpcore
walks every connection of its pool twice per request (to hand the request out and again when the
response closes), asking each idle one whether the host closed it, which costs a
``getsockname``/``getpeername`` and a ``select`` per connection. With 16 connections that walk
was a quarter of the delivery loop's CPU (py-spy, ``make bench``). Here each slot is a transport
whose pool holds exactly one connection, so a request looks at one connection only; a slot is
taken for the length of one POST, so no two requests ever wait on the same pool.

The slots are handed out last-in first-out: when traffic is light, the same few connections stay
warm and the rest expire after ``keepalive_expiry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx

__all__ = ["BridgeClient", "environment_proxy"]

KEEPALIVE_EXPIRY_SECONDS = 30.0


def environment_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, minus ``NO_PROXY``), as an ``httpx.AsyncClient`` would have used it."""
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all") or None


class BridgeClient:
    """``size`` single-connection transports behind one ``stream()``; at most ``size`` at once.

    Requests go straight to an httpx transport: the worker needs none of ``AsyncClient``'s
    cookies, redirects, auth flows or default headers, and those layers were a further 15% of the
    delivery loop's CPU. The environment's proxy for ``url`` is still honoured. An injected
    ``transport`` (a test's or a benchmark's) serves every slot.
    """

    def __init__(
        self,
        size: int,
        *,
        url: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        limits = httpx.Limits(
            max_connections=1,
            max_keepalive_connections=1,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        )
        self._transports = (
            [transport]
            if transport is not None
            else [
                httpx.AsyncHTTPTransport(limits=limits, proxy=environment_proxy(url))
                for _ in range(size)
            ]
        )
        self._timeout = httpx.Timeout(timeout).as_dict()
        self._idle: asyncio.LifoQueue[httpx.AsyncBaseTransport] = asyncio.LifoQueue()
        for slot in range(size):
            self._idle.put_nowait(self._transports[slot % len(self._transports)])

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str]
    ) -> AsyncIterator[httpx.Response]:
        """Send one request on a free slot; the slot is free again once the response is closed."""
        transport = await self._idle.get()
        try:
            request = httpx.Request(
                method, url, content=content, headers=headers, extensions={"timeout": self._timeout}
            )
            response = await transport.handle_async_request(request)
            response.request = request
            try:
                yield response
            finally:
                await response.aclose()
        finally:
            self._idle.put_nowait(transport)

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.aclose()
