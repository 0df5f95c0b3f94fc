"""The pairing console and /docs in headless Chromium (Debian's ``chromium`` driven by Playwright)
against a real sidecar process: pair a sim connection by clicking through, see it connected,
replay a dead delivery; the pages load nothing but the sidecar and keep the token out of
cookies.

Chromium comes from ``make browser`` (part of ``make test``); without it the test is skipped
locally and fails when ``CI=true``. ``playwright install`` is never used.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_contracts import build_openapi
from connector_sidecar.testing import SidecarProcess, free_port, wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]


class Host:
    """A bridge host on a thread: answers ``status`` (404 turns events dead) and records events."""

    def __init__(self) -> None:
        self.status = 404
        self.events: list[dict[str, Any]] = []
        self.port = free_port()
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                event = json.loads(self.rfile.read(length))
                status = host.status
                host.events.append({"event": event, "status": status})
                body = json.dumps({"accepted": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"


@pytest.fixture
def host() -> Iterator[Host]:
    server = Host()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) and shutil.which("chromium")):
        if os.environ.get("CI") == "true":
            pytest.fail(
                "chromium is missing: `make browser` installs it (apt-get install chromium)"
            )
        pytest.skip(
            "chromium is missing: run `make browser` (apt-get install chromium) to run this"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def test_pair_see_connected_and_replay_a_dead_delivery(
    tmp_path: Path, host: Host, browser: Any
) -> None:
    """Click through a sim pairing (live QR, scan, connected) and replay a dead delivery."""
    from playwright.sync_api import expect

    sidecar = SidecarProcess(tmp_path / "sidecar", env={"BRIDGE_URL": host.url})
    with sidecar:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.set_default_timeout(20_000)

        page.goto(f"{sidecar.url}/console")
        expect(page.locator("#notice")).to_contain_text("API token")
        page.get_by_label("API token").fill(sidecar.token)
        page.get_by_role("button", name="Use token").click()
        expect(page.locator("#connectors")).to_contain_text("(sim)")
        assert page.evaluate("Object.keys(sessionStorage)") == ["connector-sidecar.token"]

        page.get_by_label("Kind").select_option("sim")
        page.get_by_label("Connection ID").fill("conn_web")
        page.get_by_label("Channel ID").fill("sim-web")
        page.get_by_label("Display name").fill("Support desk")
        page.get_by_label("Options (JSON, optional)").fill("{not json")
        page.get_by_role("button", name="Start pairing").click()
        expect(page.locator("#notice")).to_have_text(re.compile("Options must be a JSON object"))
        expect(page.locator("#session")).to_be_hidden()
        page.get_by_label("Options (JSON, optional)").fill('{"accountId": "sim-web-account"}')
        page.get_by_role("button", name="Start pairing").click()
        qr = page.locator("#session-qr")
        expect(qr).to_be_visible()
        expect(page.locator("#session-status")).to_have_text("qr_ready")
        session_id = page.locator("#session-id").inner_text()
        with sidecar.client() as client:
            view = client.get(f"/connector-sessions/{session_id}").json()
            assert qr.get_attribute("src") == view["qrImage"]
            assert page.evaluate("document.getElementById('session-qr').naturalWidth") > 0
            # The phone scans the code.
            scanned = client.post(f"/sim/sessions/{session_id}/scan", json={})
            assert scanned.status_code == 200, scanned.text
        expect(page.locator("#session-status")).to_have_text("connected")
        expect(qr).to_be_hidden()
        row = page.locator("#connections tr[data-connection-id='conn_web']")
        expect(row).to_contain_text("connected")
        with sidecar.client() as client:
            assert client.get("/connections/conn_web").json()["accountId"] == "sim-web-account"

        with sidecar.client() as client:
            accepted = client.post(
                "/sim/connections/conn_web/messages", json={"peerId": "p1", "content": "hello"}
            )
            assert accepted.status_code == 202, accepted.text
            event_id = accepted.json()["eventId"]
            wait_until(lambda: host.events, what="the host to refuse the event")
        page.get_by_role("button", name="Refresh").click()
        dead = page.locator(f"#deliveries tr[data-event-id='{event_id}']")
        expect(dead).to_contain_text("dead")
        expect(dead).to_contain_text("404")
        expect(row.locator("td").nth(5)).to_have_text("1")  # the connection's dead count
        # A second pairing under way, so the picture (README) shows a live QR code too.
        page.get_by_label("Connection ID").fill("conn_web2")
        page.get_by_label("Options (JSON, optional)").fill("")
        page.get_by_role("button", name="Start pairing").click()
        expect(page.locator("#session-status")).to_have_text("qr_ready")
        expect(qr).to_be_visible()
        screenshot = tmp_path / "console.png"
        page.screenshot(path=str(screenshot), full_page=True)
        if target := os.environ.get("CONSOLE_SCREENSHOT"):
            shutil.copyfile(screenshot, target)

        host.status = 200
        dead.get_by_role("button", name="Replay").click()
        wait_until(
            lambda: any(e["status"] == 200 for e in host.events),
            what="the replayed event to reach the host",
        )
        assert [e["event"]["eventId"] for e in host.events] == [event_id, event_id]
        expect(page.locator("#deliveries")).to_contain_text("No dead deliveries.")

        # The operator's controls: pause, resume, then delete (confirmed in a dialog).
        row.get_by_role("button", name="Pause").click()
        expect(row.locator("td").nth(2)).to_have_text("paused")
        row.get_by_role("button", name="Resume").click()
        expect(row.locator("td").nth(2)).to_have_text("connected")
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Delete").click()
        expect(row).to_have_count(0)
        with sidecar.client() as client:
            assert client.get("/connections/conn_web").status_code == 404
        assert context.cookies() == []
        context.close()
    assert requested
    assert all(url.startswith(sidecar.url) for url in requested), requested


def test_console_and_docs_are_public_static_pages(tmp_path: Path, browser: Any) -> None:
    """/console and /docs need no token and load nothing from elsewhere; /docs lists the routes."""
    from playwright.sync_api import expect

    with SidecarProcess(tmp_path / "sidecar") as sidecar:
        for path in ("/console", "/console/app.js", "/console/style.css", "/docs"):
            response = httpx.get(f"{sidecar.url}{path}", timeout=10)
            assert response.status_code == 200, path
            assert "script-src 'self'" in response.headers["content-security-policy"]
        assert httpx.get(f"{sidecar.url}/console/secrets.txt", timeout=10).status_code == 404
        assert httpx.get(f"{sidecar.url}/connections", timeout=10).status_code == 401

        context = browser.new_context()
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        page.goto(f"{sidecar.url}/docs")
        expect(page.locator("#title")).to_have_text(build_openapi()["info"]["title"])
        operations = page.locator("details.operation")
        expect(operations.first).to_be_visible()
        assert operations.count() >= 10
        send = page.locator("details.operation", has_text="/send").first
        send.locator("summary").click()
        expect(send).to_contain_text("Request body")
        page.locator("#schemas summary", has_text="ConnectionView").click()
        expect(page.locator("#schema-ConnectionView")).to_contain_text("lastError")
        context.close()
    assert all(url.startswith(sidecar.url) for url in requested), requested
