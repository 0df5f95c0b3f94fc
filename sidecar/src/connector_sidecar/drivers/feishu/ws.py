"""Feishu's long connection, natively on asyncio (docs/protocols/feishu.md §7).

Per connection attempt: ``POST /callback/ws/endpoint`` for a fresh URL (the SDK re-fetches it
every time; its lifetime is [unconfirmed]), connect, ping at once and then every ``PingInterval`` (the server adjusts it in
its pongs), read frames. A DATA ``event`` frame (or the last of its fragments) is handed to the
event handler, and acknowledged with the same frame plus ``biz_rt`` and ``{"code":200}`` only
after the handler returns, which for the driver means after the outbox commit. A watchdog drops
the socket after ``3 × PingInterval`` of silence (our choice: Python's SDK has no watchdog, Node's
has one). Any drop leads to a reconnect with backoff and jitter; the server's ReconnectNonce is
the jitter before the first retry [sdk]. The values real servers send are [unconfirmed].

lark-oapi's own client is not used: it blocks its thread in ``run_until_complete`` on a loop
grabbed at import time (issues #96, #119, #133).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connector_sidecar.drivers.feishu.api import WsEndpoint
from connector_sidecar.drivers.feishu.pbbp2 import (
    METHOD_CONTROL,
    METHOD_DATA,
    Frame,
    FrameError,
    decode_frame,
    encode_frame,
    ping_frame,
)

__all__ = ["ClientConfig", "LongConnection"]

log = logging.getLogger(__name__)

MAX_FRAGMENTS = 1000
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# What the server may set is taken as it comes, within bounds that keep a bad value from
# flooding the socket or silencing the watchdog (our choice).
MIN_PING_INTERVAL = 0.5
MAX_CONFIG_SECONDS = 86_400.0


@dataclasses.dataclass
class ClientConfig:
    """The server's say on timing; SDK defaults until the endpoint or a pong says otherwise."""

    ping_interval: float = 120.0
    reconnect_count: int = -1
    reconnect_interval: float = 120.0
    reconnect_nonce: float = 30.0

    def apply(self, config: Any) -> None:
        if not isinstance(config, dict):
            return
        for key, attr in (
            ("PingInterval", "ping_interval"),
            ("ReconnectInterval", "reconnect_interval"),
            ("ReconnectNonce", "reconnect_nonce"),
        ):
            value = config.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                setattr(self, attr, min(value, MAX_CONFIG_SECONDS) * 1.0)
        count = config.get("ReconnectCount")
        if isinstance(count, int) and not isinstance(count, bool):
            self.reconnect_count = count


@dataclasses.dataclass
class _Fragments:
    started: float
    total: int
    parts: dict[int, bytes]


class _Dropped(Exception):
    """The connection ended; ``str()`` says why. ``healthy``: the server had answered."""

    def __init__(self, reason: str, *, healthy: bool) -> None:
        super().__init__(reason)
        self.healthy = healthy


EventHandler = Callable[[bytes], Awaitable[None]]


class LongConnection:
    """Runs until cancelled: connect, receive, acknowledge, reconnect.

    ``fetch_endpoint`` is called before every attempt; exceptions of the types in ``fatal`` end
    :meth:`run` (bad credentials), all others count as a failed attempt and are retried.
    """

    def __init__(
        self,
        *,
        fetch_endpoint: Callable[[], Awaitable[WsEndpoint]],
        handle_event: EventHandler,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], Awaitable[None]] | None = None,
        fatal: tuple[type[BaseException], ...] = (),
        name: str = "feishu",
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        silence_factor: float = 3.0,
        fragment_ttl: float = 10.0,
        min_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self.fetch_endpoint = fetch_endpoint
        self.handle_event = handle_event
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.fatal = fatal
        self.name = name
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.clock = clock
        self.silence_factor = silence_factor
        self.fragment_ttl = fragment_ttl
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.config = ClientConfig()
        self._fragments: dict[str, _Fragments] = {}

    # -- the outer loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        while True:
            endpoint: WsEndpoint | None = None
            try:
                endpoint = await self.fetch_endpoint()
                self.config.apply(endpoint.client_config)
                await self._connection(endpoint)
            except asyncio.CancelledError:
                raise
            except self.fatal:
                raise
            except _Dropped as exc:
                # A connection that worked starts the backoff over; one that the server dropped
                # before answering anything counts as a failed attempt.
                failures = 0 if exc.healthy else failures + 1
                reason = str(exc)
            except InvalidStatus as exc:
                failures += 1
                reason = _handshake_failure(exc)
            except Exception as exc:
                failures += 1
                reason = f"{type(exc).__name__}: {exc}"
            if endpoint is not None:
                reason = _without_url(reason, endpoint.url)
            delay = self._delay(failures)
            log.warning(
                "%s: long connection down (%s); reconnecting in %.1f s", self.name, reason, delay
            )
            if self.on_disconnected is not None:
                await self.on_disconnected(reason)
            await self.sleep(delay)

    def _delay(self, failures: int) -> float:
        """ReconnectNonce jitter before the first retry, then exponential with jitter, capped.

        The SDK gives up after ReconnectCount attempts; a sidecar must not go quiet, so past it
        the retries only slow to the cap.
        """
        nonce = max(0.0, self.config.reconnect_nonce)
        if failures == 0:
            return float(self.rng.uniform(0, nonce))
        cap = max(self.min_backoff, min(self.max_backoff, self.config.reconnect_interval))
        if 0 <= self.config.reconnect_count < failures:
            return cap
        base = min(cap, self.min_backoff * 2 ** (failures - 1))
        return float(base / 2 + self.rng.uniform(0, base / 2))

    # -- one connection ---------------------------------------------------------------------------

    async def _connection(self, endpoint: WsEndpoint) -> None:
        async with connect(
            endpoint.url,
            ping_interval=None,  # the protocol's own ping frames and our watchdog keep it alive
            close_timeout=2,
            open_timeout=10,
            max_size=MAX_MESSAGE_BYTES,
        ) as ws:
            log.info(
                "%s: long connection up (device %s, service %s)",
                self.name,
                endpoint.device_id,
                endpoint.service_id,
            )
            if self.on_connected is not None:
                await self.on_connected()
            last_rx = [self.clock()]
            received = False
            reason: list[str] = []
            keepalive = asyncio.create_task(
                self._keepalive(ws, endpoint.service_id, last_rx, reason)
            )
            try:
                async for message in ws:
                    last_rx[0] = self.clock()
                    received = True
                    if isinstance(message, bytes):
                        await self._on_message(ws, message)
            except ConnectionClosed as exc:
                why = reason[0] if reason else f"closed: {exc}"
                raise _Dropped(why, healthy=received) from None
            finally:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
            raise _Dropped(reason[0] if reason else "closed by the server", healthy=received)

    async def _keepalive(
        self, ws: ClientConnection, service_id: int, last_rx: list[float], reason: list[str]
    ) -> None:
        """Ping now and every PingInterval; abort the socket after too long a silence.

        The interval is read afresh on every turn: a pong that changes it takes effect for the
        very next ping, not one old interval later (the watchdog already uses the new value).
        """
        last_ping: float | None = None
        while True:
            now = self.clock()
            interval = max(MIN_PING_INTERVAL, self.config.ping_interval)
            silence = now - last_rx[0]
            if silence > interval * self.silence_factor:
                reason.append(f"nothing received for {silence:.1f} s")
                ws.transport.abort()
                return
            if last_ping is None or now - last_ping >= interval:
                try:
                    await ws.send(encode_frame(ping_frame(service_id)))
                except ConnectionClosed:
                    return
                last_ping = now
            await asyncio.sleep(max(0.05, min(last_ping + interval - now, 1.0)))

    async def _on_message(self, ws: ClientConnection, data: bytes) -> None:
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            log.warning("%s: undecodable frame dropped: %s", self.name, exc)
            return
        if frame.method == METHOD_CONTROL:
            if frame.type == "pong" and frame.payload:
                try:
                    self.config.apply(json.loads(frame.payload))
                except ValueError:
                    log.debug("%s: pong payload is not JSON", self.name)
            return  # an inbound ping needs no answer
        if frame.method != METHOD_DATA or frame.type != "event":
            # "card" frames are legacy and both SDKs ignore them; newer card callbacks arriving
            # as "event" frames is [unconfirmed] (they are acked and dropped by the mapping).
            return
        payload = self._reassemble(frame)
        if payload is None:
            return
        started = self.clock()
        try:
            await self.handle_event(payload)
            code = 200
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: handling an event failed; answering 500", self.name)
            code = 500
        elapsed_ms = int((self.clock() - started) * 1000)
        ack = dataclasses.replace(
            frame,
            headers=(*frame.headers, ("biz_rt", str(elapsed_ms))),
            payload=json.dumps({"code": code}).encode(),
        )
        await ws.send(encode_frame(ack))

    def _reassemble(self, frame: Frame) -> bytes | None:
        """The whole payload once every fragment (``sum`` parts by ``message_id``) is in."""
        try:
            total = int(frame.header("sum") or "1")
            seq = int(frame.header("seq") or "0")
        except ValueError:
            log.warning("%s: a frame with a malformed sum/seq was dropped", self.name)
            return None
        if not 1 <= total <= MAX_FRAGMENTS or not 0 <= seq < total:
            log.warning("%s: a frame with sum=%d seq=%d was dropped", self.name, total, seq)
            return None
        if total == 1:
            return frame.payload or b""
        now = self.clock()
        for key in [k for k, v in self._fragments.items() if now - v.started > self.fragment_ttl]:
            log.warning("%s: incomplete fragments of %s dropped", self.name, key)
            del self._fragments[key]
        key = frame.header("message_id") or ""
        pending = self._fragments.setdefault(key, _Fragments(now, total, {}))
        if pending.total != total:
            log.warning("%s: fragments of %s disagree on sum; dropped", self.name, key)
            del self._fragments[key]
            return None
        pending.parts[seq] = frame.payload or b""
        if len(pending.parts) < total:
            return None
        del self._fragments[key]
        return b"".join(pending.parts[i] for i in range(total))


def _without_url(reason: str, url: str) -> str:
    """``reason`` with the endpoint URL taken out: its query carries the connection's auth."""
    return reason.replace(url, urlsplit(url)._replace(query="…").geturl())


def _handshake_failure(exc: InvalidStatus) -> str:
    """Why the upgrade was refused; 514 + 1000040350 means too many connections for the app."""
    headers = exc.response.headers
    status = headers.get("handshake-status") or str(exc.response.status_code)
    message = headers.get("handshake-msg") or ""
    code = headers.get("handshake-autherrcode") or ""
    if status == "514" and code == "1000040350":
        return "the app already holds the maximum of 50 long connections"
    if status == "403":
        return f"the long connection was refused (403 {message})".rstrip()
    return f"handshake failed: {status} {message} {code}".strip()
