"""The smallest HTTP/1.1 client connection the benchmarks need: keep-alive, Content-Length bodies.

Why not httpx here: the load generator and the baseline client must cost the machine as little
as possible per request, so the server (or the host) is what runs out first. httpx's
``AsyncClient`` spends a few hundred microseconds of CPU per request in its pool, models and
hooks; a closed loop over asyncio streams spends a fraction of that, so one load-generator
process saturates a Hypercorn worker with room to spare on this 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Connection", "HttpError"]


class HttpError(Exception):
    """The peer answered something this tiny client does not read (or closed the connection)."""


class Connection:
    """One keep-alive HTTP/1.1 connection; ``request`` answers ``(status, body)``."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._fixed = f"Host: {host}:{port}\r\n{extra}".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        reader, writer = await self._open()
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._fixed
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        writer.write(head + b"\r\n" + (body or b""))
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            await self.close()
            raise HttpError("the connection closed before an answer") from exc
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length: int | None = None
        chunked = close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and "close" in value.lower():
                close = True
        if chunked:
            answer = await self._read_chunked(reader)
        elif length is not None:
            answer = await reader.readexactly(length)
        else:
            raise HttpError("an answer without Content-Length")
        if close:
            await self.close()
        return status, answer

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        for _ in range(100_000):
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])
        raise HttpError("too many chunks")

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
