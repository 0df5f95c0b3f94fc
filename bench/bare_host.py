"""``python -m bench.bare_host --port N``: the cheapest bridge host, for delivery benchmarks.

A raw ``asyncio.Protocol`` HTTP/1.1 server (keep-alive, Content-Length bodies): every POST is
answered ``200 {"accepted":true}`` at once, without checking the token or the signature. It
costs so little per request that a plain keep-alive client saturates it from one process, which
is what makes "delivery events/s ÷ that client's rate against the same host" a measure of the
sidecar's delivery path and not of the host (a Starlette/Hypercorn host would be the bottleneck
at a few thousand requests per second on this machine).

Besides the POSTs it counts, it answers:

- ``GET /healthz``: ``ok``
- ``GET /stats``: ``{"count", "last"}``: POSTs so far, and when the last one arrived
  (``time.monotonic()``, one clock for every process on the machine)
- ``GET /wait?count=N``: answers once N POSTs have arrived (or after 10 s), with ``"at"``: when
  the N-th arrived. The latency benchmark parks one of these while an event travels.
- ``GET /sample``: the first POST body received, so a baseline client can send the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from urllib.parse import parse_qs, urlsplit

__all__ = ["main"]

ACCEPTED = b'{"accepted":true}'
WAIT_SECONDS = 10.0
MAX_TIMES = 2_000_000


class Host:
    def __init__(self) -> None:
        self.count = 0
        self.times: list[float] = []
        self.last = 0.0
        self.sample = b""
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def arrived(self, body: bytes) -> None:
        self.count += 1
        self.last = time.monotonic()
        if len(self.times) < MAX_TIMES:
            self.times.append(self.last)
        if not self.sample:
            self.sample = body
        if self.waiters:
            ready = [w for w in self.waiters if w[0] <= self.count]
            self.waiters = [w for w in self.waiters if w[0] > self.count]
            for _, future in ready:
                if not future.done():
                    future.set_result(None)

    async def wait(self, count: int) -> bytes:
        if self.count < count:
            future = asyncio.get_running_loop().create_future()
            self.waiters.append((count, future))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, WAIT_SECONDS)
        at = self.times[count - 1] if 0 < count <= min(self.count, len(self.times)) else None
        return json.dumps({"count": self.count, "at": at}).encode()


class Protocol(asyncio.Protocol):
    def __init__(self, host: Host) -> None:
        self.host = host
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.process()

    def process(self) -> None:
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, target = head[0].split(" ")[:2]
            self.handle(method, target, body)

    def handle(self, method: str, target: str, body: bytes) -> None:
        url = urlsplit(target)
        if method == "POST":
            self.host.arrived(body)
            self.answer(ACCEPTED)
        elif url.path == "/healthz":
            self.answer(b'"ok"')
        elif url.path == "/stats":
            stats = {"count": self.host.count, "last": self.host.last}
            self.answer(json.dumps(stats).encode())
        elif url.path == "/sample":
            self.answer(self.host.sample)
        elif url.path == "/wait":
            count = int(parse_qs(url.query).get("count", ["1"])[0])
            self.busy = True
            task = asyncio.ensure_future(self.host.wait(count))
            task.add_done_callback(self.waited)
        else:
            self.answer(b'{"error":"not found"}', status=b"404 Not Found")

    def waited(self, task: asyncio.Future[bytes]) -> None:
        self.busy = False
        self.answer(task.result())
        self.process()

    def answer(self, body: bytes, status: bytes = b"200 OK") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body)
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int) -> None:
    host = Host()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Protocol(host), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_host", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
