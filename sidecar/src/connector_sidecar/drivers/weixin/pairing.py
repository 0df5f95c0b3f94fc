"""QR pairing: request a code, long-poll its status, and map every status the server sends.

=========================  ===============================================================
``status`` on the wire     what the session does
=========================  ===============================================================
``wait``                   keeps polling (``qr_ready``)
``scaned`` (sic)           ``scanned``; a pending verify code was accepted
``need_verifycode``        ``verify_code_required`` until the host posts the code, then polls
                           at once with ``verify_code``; a second one means the code was wrong
``verify_code_blocked``    too many wrong codes: a new QR code (counts toward the limit)
``scaned_but_redirect``    polls ``redirect_host`` from now on
``expired``                a new QR code; after 3 codes in all, ``expired``
``binded_redirect``        already bound to a login stored here: ``connected`` with it
``confirmed``              stores the login: ``connected``
=========================  ===============================================================

A client timeout or a network/HTTP error while polling counts as ``wait`` (the reference's
rule). The whole session is capped at 480 s. What a restart needs to resume (the code, the poll
host, how many codes were used, a pending verify code) is kept in ``session.state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from connector_sidecar._clock import now_ms
from connector_sidecar._qr import qr_data_url
from connector_sidecar.drivers.weixin.client import (
    QR_STATUS_TIMEOUT,
    IlinkApiError,
    IlinkClient,
    IlinkError,
)
from connector_sidecar.store import ConnectionRecord, SessionRecord

if TYPE_CHECKING:
    from connector_sidecar.runtime import DriverContext

__all__ = ["PairTiming", "Pairing", "save_session"]

log = logging.getLogger(__name__)

MAX_LOCAL_TOKENS = 10
CODE_RECHECK_SECONDS = 1.0  # a verify code given on another replica is seen this soon


@dataclasses.dataclass
class PairTiming:
    """The reference's limits; tests shrink the pauses."""

    session_seconds: float = 480.0
    poll_pause_seconds: float = 1.0  # after each non-terminal status
    max_qr_codes: int = 3
    fetch_attempts: int = 3  # getting a code: transient failures are retried this often
    fetch_retry_seconds: float = 2.0


class _Finished(Exception):
    """The session reached a terminal status; the loop ends."""


async def save_session(
    ctx: DriverContext, session_id: str, *, state: dict[str, Any] | None = None, **changes: Any
) -> SessionRecord:
    """Update a session, merging ``state`` key by key in the same transaction (None deletes)."""

    def work(conn: Any) -> SessionRecord:
        if state is not None:
            current = ctx.store.sessions.get(conn, session_id)
            merged = {**(current.state if current else {}), **state}
            changes["state"] = {k: v for k, v in merged.items() if v is not None}
        return ctx.store.sessions.update(conn, session_id, **changes)

    return await ctx.store.db.transaction(work)


class Pairing:
    """One pairing session, from the first QR code to a terminal status."""

    def __init__(
        self,
        ctx: DriverContext,
        client: IlinkClient,
        session: SessionRecord,
        *,
        timing: PairTiming,
    ) -> None:
        self.ctx = ctx
        self.client = client
        self.session = session
        self.session_id = session.session_id
        self.timing = timing
        self.base_url = ctx.settings.weixin_base_url
        # The poll host after a redirect keeps the scheme of the configured base: https for the
        # vendor (the reference's `https://{redirect_host}`), http for a local emulator.
        self.scheme = urlsplit(self.base_url).scheme or "https"
        self.expires_at = session.expires_at or now_ms(ctx.clock) + int(
            timing.session_seconds * 1000
        )

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not self.session.state.get("qrcode"):
                await self._new_code(codes=1)
            while True:
                await self._step()
        except _Finished:
            return

    async def _step(self) -> None:
        remaining = self.expires_at / 1000 - self.ctx.clock()
        if remaining <= 0:
            await self._finish(
                "expired",
                f"the QR code was not confirmed within {self.timing.session_seconds:.0f} s",
            )
        session = await self.ctx.get_session(self.session_id)
        if session is None or session.is_terminal:
            raise _Finished
        state = session.state
        code = state.get("verifyCode")
        signal = self.ctx.session_signal(self.session_id)
        if session.status == "verify_code_required" and not code:
            # Wait for POST /verify-code, then poll at once. The signal comes from this replica;
            # a code given on another replica is in the session's state: look again each second.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.wait(), min(remaining, CODE_RECHECK_SECONDS))
            signal.clear()
            return
        poll_base = state.get("pollBaseUrl") or self.base_url
        try:
            answer = await self.client.get_qrcode_status(
                poll_base,
                state["qrcode"],
                verify_code=code,
                timeout_s=min(QR_STATUS_TIMEOUT, remaining),
            )
        except IlinkError as exc:
            log.info("%s: QR status poll failed, counted as wait: %s", self.session_id, exc)
            answer = {"status": "wait"}
        status = answer.get("status")
        if status == "confirmed":
            await self._confirmed(answer)
        elif status == "binded_redirect":
            await self._bound(answer)
        elif status == "need_verifycode":
            if code:
                log.info("%s: the verify code was wrong; asking for a new one", self.session_id)
            signal.clear()
            await save_session(
                self.ctx, self.session_id, status="verify_code_required", state={"verifyCode": None}
            )
            return  # no pause: the code is awaited above, then polled at once
        elif status == "verify_code_blocked":
            log.info("%s: too many wrong verify codes; a new QR code", self.session_id)
            await self._refresh(state, "too many wrong verify codes")
        elif status == "expired":
            await self._refresh(state, "the QR code expired")
        elif status == "scaned_but_redirect":
            host = answer.get("redirect_host")
            changes: dict[str, Any] = {}
            if isinstance(host, str) and host:
                changes["pollBaseUrl"] = f"{self.scheme}://{host}"
                log.info("%s: QR status polls move to %s", self.session_id, host)
            else:
                log.warning("%s: redirect without redirect_host; staying", self.session_id)
            await self._scanned(session, changes)
        elif status == "scaned":
            await self._scanned(session, {"verifyCode": None} if code else {})
        elif status != "wait":
            log.warning("%s: unknown QR status %r, counted as wait", self.session_id, status)
        await asyncio.sleep(self.timing.poll_pause_seconds)

    # -- steps ------------------------------------------------------------------------------------

    async def _finish(self, status: str, error: str) -> NoReturn:
        await save_session(self.ctx, self.session_id, status=status, error=error, qr_image=None)
        log.info("pairing session %s is %s: %s", self.session_id, status, error)
        raise _Finished

    async def _stored_logins(self) -> list[ConnectionRecord]:
        """The weixin connections of this sidecar that hold a bot token."""
        connections = await self.ctx.store.db.run(self.ctx.store.connections.all)
        return [c for c in connections if c.kind == "weixin" and c.credentials.get("bot_token")]

    async def _local_tokens(self) -> list[str]:
        """Up to 10 stored bot tokens, newest first: lets the server answer ``binded_redirect``."""
        stored = sorted(await self._stored_logins(), key=lambda c: c.updated_at, reverse=True)
        return [str(c.credentials["bot_token"]) for c in stored][:MAX_LOCAL_TOKENS]

    async def _fetch_code(self) -> dict[str, Any]:
        tokens = await self._local_tokens()
        for attempt in range(1, self.timing.fetch_attempts + 1):
            try:
                answer = await self.client.get_bot_qrcode(self.base_url, tokens)
            except IlinkApiError as exc:
                await self._finish("error", f"WeChat refused to issue a QR code: {exc}")
            except IlinkError as exc:
                if attempt == self.timing.fetch_attempts:
                    await self._finish("error", f"could not get a QR code from WeChat: {exc}")
                await asyncio.sleep(self.timing.fetch_retry_seconds)
                continue
            if not answer.get("qrcode") or not answer.get("qrcode_img_content"):
                await self._finish("error", "WeChat answered without a QR code")
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def _new_code(self, *, codes: int) -> None:
        answer = await self._fetch_code()
        # qrcode_img_content is the *text* to encode (a URL), not an image.
        content = str(answer["qrcode_img_content"])
        await save_session(
            self.ctx,
            self.session_id,
            status="qr_ready",
            qr_content=content,
            qr_image=qr_data_url(content),
            expires_at=self.expires_at,
            state={"qrcode": str(answer["qrcode"]), "codes": codes, "verifyCode": None},
        )
        log.info(
            "pairing session %s: QR code %d of %d", self.session_id, codes, self.timing.max_qr_codes
        )

    async def _refresh(self, state: dict[str, Any], why: str) -> None:
        codes = int(state.get("codes") or 1)
        if codes >= self.timing.max_qr_codes:
            await self._finish("expired", f"{why}; {codes} QR codes were not confirmed")
        # The reference keeps polling a redirected host after a refresh; we do the same
        # [unconfirmed whether a new code may live on another host].
        await self._new_code(codes=codes + 1)

    async def _scanned(self, session: SessionRecord, state: dict[str, Any]) -> None:
        if session.status != "scanned" or state:
            await save_session(self.ctx, self.session_id, status="scanned", state=state)

    async def _confirmed(self, answer: dict[str, Any]) -> None:
        bot_id = answer.get("ilink_bot_id")
        token = answer.get("bot_token")
        if not bot_id:
            await self._finish("error", "WeChat confirmed the login but sent no ilink_bot_id")
        if not token:
            await self._finish("error", "WeChat confirmed the login but sent no bot_token")
        user_id = answer.get("ilink_user_id") or None
        await self.ctx.session_connected(
            self.session_id,
            account_id=str(bot_id),
            display_name=self.session.display_name,
            credentials={
                "bot_token": str(token),
                "base_url": _api_base(answer.get("baseurl")) or self.base_url,
                "ilink_user_id": user_id,
            },
            metadata={"ilinkUserId": user_id} if user_id else None,
        )
        raise _Finished

    async def _bound(self, answer: dict[str, Any]) -> None:
        """``binded_redirect``: the bot is bound to a token we sent; reuse that stored login.

        Whether the answer names the bot (``ilink_bot_id``) is [unconfirmed]; without it, the
        login is the one this connection already holds (a re-pair of the same bot).
        """
        bot_id = answer.get("ilink_bot_id")
        stored = await self._stored_logins()
        own = self.session.connection_id
        if bot_id:
            matches = [c for c in stored if c.account_id == str(bot_id)]
            matches.sort(key=lambda c: c.connection_id != own)  # this connection's own first
        else:
            matches = [c for c in stored if c.connection_id == own]
        if not matches:
            await self._finish(
                "error",
                "WeChat says this bot is already bound, but no stored login for it was found",
            )
        found = matches[0]
        if found.connection_id != own and found.is_live:
            await self._finish(
                "error",
                f"this WeChat bot is already connected as connection {found.connection_id!r}; "
                "log that connection out first",
            )
        await self.ctx.session_connected(
            self.session_id,
            account_id=found.account_id or str(bot_id),
            display_name=self.session.display_name or found.display_name,
            credentials=dict(found.credentials),
        )
        raise _Finished


def _api_base(value: Any) -> str | None:
    """The confirm's ``baseurl``; empty falls back to the configured base (the reference)."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip().rstrip("/")
    return value if "://" in value else f"https://{value}"  # a bare host [unconfirmed]
