"""``connector-sidecar pair --kind weixin`` under a pseudo-terminal against the iLink emulator:
the QR is drawn again when WeChat refreshes it, a verify code is asked for (again when it was
wrong), and the command exits 0 once the login is confirmed."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector_sidecar._terminal_qr import qr_lines
from connector_sidecar.testing import SidecarProcess, wait_until

from ..emulators.ilink import IlinkEmulatorProcess
from .test_cli_client_e2e import CLI, SESSION, Terminal, cli_env

pytestmark = pytest.mark.e2e

BOT = "c1d2e3f4a5b6@im.bot"
PROMPT = "Verify code shown on the phone: "


@pytest.fixture
def ilink(tmp_path: Path) -> Iterator[IlinkEmulatorProcess]:
    emulator = IlinkEmulatorProcess(tmp_path, poll_hold_seconds=1.0)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.terminate()


def qrcode_of(view: dict[str, Any]) -> str:
    return str(httpx.URL(view["qrContent"]).params["qrcode"])


def test_pair_redraws_a_refreshed_qr_and_asks_for_the_verify_code(
    tmp_path: Path, ilink: IlinkEmulatorProcess
) -> None:
    """Expire → a new QR drawn; a wrong code, then the right one; confirm → exit 0."""
    sidecar = SidecarProcess(
        tmp_path / "sidecar", env={"SIDECAR_CONNECTORS": "weixin", "WEIXIN_BASE_URL": ilink.url}
    )
    with sidecar, sidecar.client() as client:
        terminal = Terminal(
            [*CLI, "pair", "--kind", "weixin", "--connection-id", "wx_cli", "--channel-id", "wx"],
            cli_env(sidecar),
        )
        try:
            session_id = terminal.expect(SESSION).group(1)
            first = client.get(f"/connector-sessions/{session_id}").json()
            for line in qr_lines(first["qrContent"], color=True):
                assert line in terminal.output

            ilink.qr_action("expire", qrcode_of(first))
            terminal.expect(re.compile(r"The QR code was refreshed\."))
            second: dict[str, Any] = wait_until(
                lambda: (
                    view
                    if (view := client.get(f"/connector-sessions/{session_id}").json())["qrContent"]
                    != first["qrContent"]
                    else None
                ),
                what="a new QR code",
            )
            # Under load the emulator's QR can expire once more before the code is scanned: the
            # CLI then draws the newest one. Look for the QR the session shows now, each time.
            for attempt in range(4):
                drawn = re.escape("\n".join(qr_lines(second["qrContent"], color=True)))
                try:
                    terminal.expect(
                        re.compile(f"(?s)The QR code was refreshed\\.\n{drawn}\n"), timeout=15
                    )
                    break
                except AssertionError:
                    if attempt == 3:
                        raise
                    second = client.get(f"/connector-sessions/{session_id}").json()

            qrcode = qrcode_of(second)
            ilink.qr_action("scan", qrcode)
            ilink.qr_action("require-code", qrcode, code="246810")
            terminal.expect(re.compile(re.escape(PROMPT)))
            os.write(terminal.master, b"111111\n")
            terminal.expect(re.compile(r"The code was wrong"))
            terminal.expect(re.compile(f"(?s){re.escape(PROMPT)}.*{re.escape(PROMPT)}"))
            os.write(terminal.master, b"246810\n")
            wait_until(
                lambda: any(
                    p["verifyCode"] == "246810"
                    for p in ilink.call("GET", "/_emulator/qrcodes")["items"][-1]["polls"]
                ),
                timeout=20,
                what="the right code to reach WeChat",
            )
            ilink.qr_action("confirm", qrcode, botId=BOT)
            terminal.expect(re.compile(r"Connected: wx_cli \(weixin\)"))
            assert terminal.wait() == 0, terminal.output
        finally:
            terminal.close()
        assert client.get("/connections/wx_cli").json()["accountId"] == BOT
