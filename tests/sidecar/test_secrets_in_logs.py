"""Secrets stay out of logs: the bearer token is never written, whatever the requests do."""

from __future__ import annotations

import logging

import httpx
import pytest

from .conftest import TOKEN, SidecarFactory

pytestmark = pytest.mark.anyio


async def test_the_bearer_token_and_credentials_are_never_logged(
    make_sidecar: SidecarFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Across start, pairing, sends, failures, auth errors and stop, no log line holds the token or a login."""
    caplog.set_level(logging.DEBUG)
    async with make_sidecar(bridge_token=None) as sidecar:
        await sidecar.pair()
        store = sidecar.app.state.services.store
        connection = await store.db.run(store.connections.get, "conn_1")
        assert connection is not None
        credential = connection.credentials["simToken"]
        await sidecar.inbound(messageId="m1")
        await sidecar.send("out_1", "hello")
        await sidecar.faults(sendRejects=1)
        await sidecar.send("out_2", "refused")
        await sidecar.faults(sendFailures=1)
        await sidecar.send("out_3", "unavailable")
        await sidecar.client.post("/send", content=b"{not json")
        await sidecar.client.get("/no/such/route")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sidecar.app), base_url="http://sidecar"
        ) as anonymous:
            # A near-miss token and the real one under the wrong scheme must not be echoed either.
            await anonymous.get("/connections", headers={"Authorization": f"Bearer {TOKEN}x"})
            await anonymous.get("/connections", headers={"Authorization": f"Basic {TOKEN}"})
        await sidecar.client.post("/connections/conn_1/logout", json={})
    assert caplog.records, "the sidecar logged nothing at all: the check would be vacuous"
    formatter = logging.Formatter("%(message)s %(args)s")
    for record in caplog.records:
        line = formatter.format(record) + (record.exc_text or "")
        assert TOKEN not in line, line
        assert credential not in line, line


async def test_credentials_in_the_bridge_url_are_never_logged(
    make_sidecar: SidecarFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A BRIDGE_URL carrying a password or a query token is logged without them."""
    caplog.set_level(logging.DEBUG)
    url = "http://bridge-user:url-password-123@127.0.0.1:9/events?token=query-secret-456"
    async with make_sidecar(bridge_url=url) as sidecar:
        assert (await sidecar.client.get("/healthz")).status_code == 200
    lines = [logging.Formatter("%(message)s").format(r) for r in caplog.records]
    assert any("127.0.0.1:9/events" in line for line in lines), lines
    assert not [line for line in lines if "url-password-123" in line or "query-secret-456" in line]
