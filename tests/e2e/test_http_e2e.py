"""The real server's HTTP/1.1 connection handling: answers sent before the request body is
read (401, 404, 405, 413) close the connection honestly, so a pooled client's next request works."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from connector_sidecar.testing import SidecarProcess

pytestmark = pytest.mark.e2e

SidecarFactory = Callable[..., SidecarProcess]


def _chunked() -> Iterator[bytes]:
    for _ in range(50):
        yield b"x" * 1000


BODIES: dict[str, Callable[[], dict[str, Any]]] = {
    "16B": lambda: {"content": b"x" * 16},
    "2MiB": lambda: {"content": b"x" * (2 * 1024 * 1024)},
    "chunked": lambda: {"content": _chunked()},
}
EARLY = [
    ("/send", False, 401),
    ("/no-such-route", True, 404),
    ("/connectors", True, 405),
    ("/connector-sessions", True, 413),  # 1 MiB; /send takes media, up to MEDIA_MAX_BYTES
]


def test_early_answers_close_and_the_next_pooled_request_works(
    sidecar_factory: SidecarFactory,
) -> None:
    """An answer given without reading the body says ``Connection: close``; the pooled client's
    next requests then succeed (without it they hit the dead connection: "server disconnected",
    or a read timeout after a chunked body)."""
    sidecar = sidecar_factory()
    sidecar.start()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    for path, authorized, status in EARLY:
        for kind, body in BODIES.items():
            if status == 413 and kind != "2MiB":
                continue  # only a body over 1 MiB is too large
            with sidecar.client(limits=limits) as client:
                headers = {} if authorized else {"Authorization": "Bearer wrong"}
                early = client.post(path, headers=headers, **body())
                assert early.status_code == status, (path, kind, early.text)
                assert early.headers.get("connection") == "close", (path, kind)
                for _ in range(3):
                    good = client.get("/connectors")
                    assert good.status_code == 200, (path, kind, good.text)


def test_a_read_body_keeps_the_connection(sidecar_factory: SidecarFactory) -> None:
    """An answer after the body was read (here a 422) keeps the connection alive."""
    sidecar = sidecar_factory()
    sidecar.start()
    with sidecar.client() as client:
        response = client.post("/send", json={"requestId": "x"})
        assert response.status_code == 422, response.text
        assert "connection" not in response.headers
