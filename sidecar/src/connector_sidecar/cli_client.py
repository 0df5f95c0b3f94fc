"""The operator commands of ``connector-sidecar``, run against a sidecar that is already serving.

``pair``, ``connections``, ``deliveries``, ``replay`` and ``logout`` talk to ``SIDECAR_URL``
(default ``http://127.0.0.1:8787``, or ``--url``) with ``EXTERNAL_CONNECTOR_TOKEN`` as the
bearer token; the token is read from the environment only, never from the command line, where
other users of the machine could see it. Output is for people by default, ``--json`` prints the
API's JSON for scripts.

Exit status: 0 done; 1 the sidecar refused, could not be reached, or the pairing failed (the
reason on stderr); 2 a usage or configuration error; 130 interrupted (a pairing under way is
cancelled first). Every wait is bounded (``--timeout`` for ``pair``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import httpx

from connector_sidecar._terminal_qr import qr_lines

__all__ = ["COMMANDS", "ClientError", "SidecarClient", "add_commands", "run"]

DEFAULT_URL = "http://127.0.0.1:8787"
POLL_SECONDS = 1.0
TERMINAL_SESSION = ("connected", "expired", "cancelled", "error")
WAITING_TEXT = {
    "pending": "Waiting for the vendor's QR code...",
    "qr_ready": "Scan this QR code with the app.",
    "scanned": "Scanned: confirm the login on the phone.",
}


class ClientError(Exception):
    """A failure to report on stderr, with the exit status to leave with."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class SidecarClient:
    """A small synchronous client of the sidecar's API; problems become :class:`ClientError`."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "connector-sidecar-cli"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the sidecar at {self.url}: {exc}") from None
        if response.is_success:
            return response.json()
        raise ClientError(_problem_text(response))


def _problem_text(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if not isinstance(problem, dict):
        return f"HTTP {response.status_code}"
    code = problem.get("code") or problem.get("title") or "error"
    detail = problem.get("detail") or ""
    return f"HTTP {response.status_code} {code}: {detail}".rstrip(": ")


# -- the commands -----------------------------------------------------------------------------------


class Pairing:
    """``pair``: start a session, draw its QR (again when it changes), ask for a verify code."""

    def __init__(
        self,
        client: SidecarClient,
        args: argparse.Namespace,
        *,
        out: TextIO,
        err: TextIO,
        read_line: Callable[[str], str],
    ) -> None:
        self.client = client
        self.args = args
        self.out = out
        self.err = err
        self.read_line = read_line
        self.color = out.isatty() and "NO_COLOR" not in os.environ
        self._shown: tuple[str, str | None] | None = None
        self._drawn: str | None = None  # the QR content last drawn
        self._codes_sent = 0

    def run(self) -> int:
        body: dict[str, Any] = {
            "kind": self.args.kind,
            "connectionId": self.args.connection_id,
            "channelId": self.args.channel_id,
        }
        if self.args.display_name:
            body["displayName"] = self.args.display_name
        if self.args.option:
            body["options"] = dict(self.args.option)
        session = self.client.call("POST", "/connector-sessions", json=body)
        session_id = session["sessionId"]
        deadline = time.monotonic() + self.args.timeout
        try:
            while True:
                self._show(session)
                status = session["status"]
                if status == "connected":
                    return 0
                if status in TERMINAL_SESSION:
                    reason = session.get("error") or "no reason given"
                    raise ClientError(f"the pairing ended {status}: {reason}")
                if status == "verify_code_required":
                    session = self._verify(session_id)
                    continue
                if time.monotonic() > deadline:
                    self._cancel(session_id)
                    raise ClientError(f"not connected after {self.args.timeout:g} s; cancelled")
                time.sleep(POLL_SECONDS)
                session = self.client.call("GET", f"/connector-sessions/{session_id}")
        except KeyboardInterrupt:
            self._cancel(session_id)
            print("\ninterrupted: the pairing was cancelled", file=self.err)
            return 130

    def _show(self, session: dict[str, Any]) -> None:
        """Print what changed: a QR code not drawn yet (in place of the old one), the status."""
        status, content = session["status"], session.get("qrContent")
        if (status, content) == self._shown:
            return
        self._shown = (status, content)
        if self.args.json:
            print(json.dumps(session, ensure_ascii=False), file=self.out, flush=True)
            return
        if content and content != self._drawn and status in ("qr_ready", "scanned"):
            if self._drawn is not None:
                if self.color:
                    self.out.write("\x1b[H\x1b[2J")  # draw the new code in place of the old
                print("The QR code was refreshed.", file=self.out)
            self._drawn = content
            self.out.write("\n".join(qr_lines(content, color=self.color)) + "\n")
        elif status == "qr_ready" and not content and session.get("qrImage"):
            print("The QR code is an image only: open the console (/console).", file=self.out)
        if status == "connected":
            account = session.get("displayName") or session.get("accountId") or ""
            print(
                f"Connected: {session['connectionId']} ({session['kind']}) as {account}",
                file=self.out,
            )
        elif status in WAITING_TEXT:
            print(f"Session {session['sessionId']}: {WAITING_TEXT[status]}", file=self.out)
        self.out.flush()

    def _verify(self, session_id: str) -> dict[str, Any]:
        if self._codes_sent:
            print("The code was wrong, or the phone shows a new one.", file=self.err)
        try:
            code = self.read_line("Verify code shown on the phone: ").strip()
        except EOFError:
            self._cancel(session_id)
            raise ClientError("a verify code is required but stdin is closed; cancelled") from None
        if not code:
            return dict(self.client.call("GET", f"/connector-sessions/{session_id}"))
        self._codes_sent += 1
        try:
            return dict(
                self.client.call(
                    "POST", f"/connector-sessions/{session_id}/verify-code", json={"code": code}
                )
            )
        except ClientError as exc:
            print(f"the code was not accepted: {exc}", file=self.err)
            return dict(self.client.call("GET", f"/connector-sessions/{session_id}"))

    def _cancel(self, session_id: str) -> None:
        try:
            self.client.call("POST", f"/connector-sessions/{session_id}/cancel", json={})
        except ClientError as exc:
            print(f"could not cancel the session: {exc}", file=self.err)


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str], out: TextIO) -> None:
    if not rows:
        print("(none)", file=out)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip(),
            file=out,
        )


def _short(text: str | None, size: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= size else text[: size - 1] + "…"


def _connections(client: SidecarClient, args: argparse.Namespace, out: TextIO) -> int:
    items = client.call("GET", "/connections")["items"]
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False), file=out)
        return 0
    rows = [
        (
            c["connectionId"],
            c["kind"],
            c["status"],
            c.get("displayName") or c.get("accountId") or "",
            str(c.get("pendingDeliveries", 0)),
            str(c.get("deadDeliveries", 0)),
            _short(c.get("lastError")),
        )
        for c in items
    ]
    _table(rows, ("CONNECTION", "KIND", "STATUS", "ACCOUNT", "PENDING", "DEAD", "LAST ERROR"), out)
    return 0


def _deliveries(client: SidecarClient, args: argparse.Namespace, out: TextIO) -> int:
    params = {"limit": str(args.limit)}
    if args.status:
        params["status"] = args.status
    if args.connection_id:
        params["connectionId"] = args.connection_id
    if args.cursor:
        params["cursor"] = args.cursor
    page = client.call("GET", "/deliveries", params=params)
    if args.json:
        print(json.dumps(page, indent=2, ensure_ascii=False), file=out)
        return 0
    rows = [
        (
            d["eventId"],
            d["connectionId"],
            d["status"],
            str(d["attempts"]),
            "" if d.get("lastStatusCode") is None else str(d["lastStatusCode"]),
            d["createdAt"],
            _short(d.get("lastError"), 50),
        )
        for d in page["items"]
    ]
    _table(
        rows, ("EVENT", "CONNECTION", "STATUS", "ATTEMPTS", "CODE", "CREATED", "LAST ERROR"), out
    )
    if page.get("nextCursor"):
        print(f"more: --cursor {page['nextCursor']}", file=out)
    return 0


def _replay(client: SidecarClient, args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.event_id) == bool(args.dead):
        raise ClientError("give an EVENT_ID or --dead (not both)", 2)
    if args.event_id:
        result = client.call("POST", f"/deliveries/{args.event_id}/replay", json={})
        text = f"Replayed {result['eventId']}: {result['status']}"
    else:
        body: dict[str, Any] = {"status": "dead"}
        if args.connection_id:
            body["connectionId"] = args.connection_id
        result = client.call("POST", "/deliveries/replay", json=body)
        text = f"Replayed {result['replayed']} dead event(s)"
    print(json.dumps(result, ensure_ascii=False) if args.json else text, file=out)
    return 0


def _logout(client: SidecarClient, args: argparse.Namespace, out: TextIO) -> int:
    result = client.call("POST", f"/connections/{args.connection_id}/logout", json={})
    print(json.dumps(result) if args.json else f"Logged out {args.connection_id}", file=out)
    return 0


# -- wiring into argparse ---------------------------------------------------------------------------


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for ``pair --option``: VALUE as JSON when it parses (true, 3), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], version: str
) -> None:
    """Add the client commands to the ``connector-sidecar`` parser."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--version", action="version", version=version)
        parser.add_argument("--url", help=f"the sidecar (default: $SIDECAR_URL or {DEFAULT_URL})")
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        return parser

    pair = command("pair", "pair a connection: draws the login QR code in the terminal")
    pair.add_argument("--kind", required=True, help="connector kind: weixin, feishu, sim")
    pair.add_argument("--connection-id", required=True)
    pair.add_argument("--channel-id", required=True)
    pair.add_argument("--display-name")
    pair.add_argument(
        "--option",
        action="append",
        type=_option,
        metavar="KEY=VALUE",
        help="a connector option (repeatable; VALUE is JSON or text)",
    )
    pair.add_argument(
        "--timeout", type=float, default=900.0, help="give up after this many seconds (900)"
    )
    command("connections", "list the connections with their status and last error")
    deliveries = command("deliveries", "list outbox events, newest first")
    deliveries.add_argument("--status", choices=("pending", "delivered", "dead"))
    deliveries.add_argument("--connection-id")
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.add_argument("--cursor", help="the next page (printed after a full page)")
    replay = command("replay", "deliver an event again: one EVENT_ID, or every dead one")
    replay.add_argument("event_id", nargs="?", metavar="EVENT_ID")
    replay.add_argument("--dead", action="store_true", help="replay every dead event")
    replay.add_argument("--connection-id", help="with --dead: only this connection's")
    logout = command("logout", "log a connection out (it stops; accepted events are delivered)")
    logout.add_argument("connection_id", metavar="CONNECTION_ID")


COMMANDS = frozenset({"pair", "connections", "deliveries", "replay", "logout"})


def run(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Run one client command; returns the exit status (messages already printed)."""
    out = out or sys.stdout
    err = err or sys.stderr
    env = dict(os.environ) if env is None else env
    token = env.get("EXTERNAL_CONNECTOR_TOKEN", "").strip()
    if not token:
        print("connector-sidecar: set EXTERNAL_CONNECTOR_TOKEN to the sidecar's token", file=err)
        return 2
    url = args.url or env.get("SIDECAR_URL") or DEFAULT_URL
    client = SidecarClient(url, token)
    try:
        if args.command == "pair":
            return Pairing(client, args, out=out, err=err, read_line=input).run()
        handler = {
            "connections": _connections,
            "deliveries": _deliveries,
            "replay": _replay,
            "logout": _logout,
        }[args.command]
        return handler(client, args, out)
    except ClientError as exc:
        print(f"connector-sidecar {args.command}: {exc}", file=err)
        return exc.status
    finally:
        client.close()
