"""``POST /bridge/test``: one signed ``ping`` event POSTed to the host at once (Svix's "send
test event"), to check the URL, the token and the signing secret without waiting for a message.

The ping is never stored, retried or counted as a delivery; its answer is reported as it came:
the status code, how long it took and the start of the body, or why the host could not be
reached. It is signed and authorised exactly like every bridge event.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

import httpx

from connector_contracts import BridgeTestResult, PingEvent, encode, format_timestamp
from connector_sidecar._clock import Clock
from connector_sidecar.config import Settings
from connector_sidecar.signing import Signer

__all__ = ["ping_host"]

EXCERPT_CHARS: Final = 300
MAX_ANSWER_BYTES: Final = 16 * 1024


def _excerpt(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


async def ping_host(
    settings: Settings, *, clock: Clock, transport: httpx.AsyncBaseTransport | None = None
) -> BridgeTestResult:
    """POST one ``ping`` to ``BRIDGE_URL`` (which must be set) and report the answer."""
    assert settings.bridge_url
    event = PingEvent(
        event_id=f"evt_ping_{secrets.token_hex(12)}",
        timestamp=format_timestamp(clock()),
        delivery_attempt=1,
    )
    body = encode(event)
    headers = {"Content-Type": "application/json", "User-Agent": "connector-sidecar"}
    if settings.bridge_token:
        headers["Authorization"] = f"Bearer {settings.bridge_token.reveal()}"
    headers.update(
        Signer(settings.bridge_signing_secrets).headers(event.event_id, int(clock()), body)
    )
    started = time.perf_counter()
    try:
        async with (
            httpx.AsyncClient(
                timeout=httpx.Timeout(settings.bridge_timeout_seconds),
                transport=transport,
                follow_redirects=False,
            ) as client,
            client.stream("POST", settings.bridge_url, content=body, headers=headers) as response,
        ):
            answer = bytearray()
            async for chunk in response.aiter_bytes():
                answer += chunk
                if len(answer) >= MAX_ANSWER_BYTES:
                    break
    except httpx.TimeoutException:
        return BridgeTestResult(
            status_code=None,
            latency_ms=_since(started),
            error=f"no answer within {settings.bridge_timeout_seconds:g} s",
        )
    except httpx.RequestError as exc:
        return BridgeTestResult(
            status_code=None,
            latency_ms=_since(started),
            error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS],
        )
    return BridgeTestResult(
        status_code=response.status_code,
        latency_ms=_since(started),
        body_excerpt=_excerpt(bytes(answer)),
    )


def _since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
