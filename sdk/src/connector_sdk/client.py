"""``SidecarClient``: the sidecar's HTTP API (docs/CONTRACT.md §1–§4, §6) as async methods.

Every method returns contract types and raises a :mod:`connector_sdk.errors` type for every
failure. Calls the contract makes idempotent are retried under one :class:`RetryPolicy`;
``send()`` is the important one: its requestId is fixed, and its body encoded, before the
first attempt, so every retry is the same request and the sidecar's ledger sends it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from connector_contracts import (
    Attachment,
    CancelSessionRequest,
    ConnectionList,
    ConnectionView,
    ConnectorInfo,
    ConnectorSessionView,
    DeliveryList,
    DeliveryStatus,
    DeliveryView,
    LogoutRequest,
    LogoutResult,
    MessageType,
    PeerType,
    Problem,
    ReplayRequest,
    ReplayResult,
    SendRequest,
    SendResult,
    SendTarget,
    StartSessionRequest,
    TypingRequest,
    TypingResult,
    VerifyCodeRequest,
    decode,
    encode,
)
from connector_contracts.codec import json_decoder
from connector_sdk._retry import RetryPolicy, retrying_call
from connector_sdk._secret import Secret
from connector_sdk._version import __version__
from connector_sdk.errors import (
    ConfigurationError,
    InvalidResponse,
    SidecarError,
    SidecarHTTPError,
    SidecarUnavailable,
    code_for_status,
    error_class_for,
)

__all__ = ["DEFAULT_SIDECAR_URL", "SidecarClient"]

T = TypeVar("T")
log = logging.getLogger(__name__)
TYPING_INTERVAL = 5.0  # how often a typing indicator is renewed while a handler runs

DEFAULT_SIDECAR_URL = "http://127.0.0.1:8787"
_NO_RETRY = RetryPolicy(attempts=1)
_JSON = {"Content-Type": "application/json"}


class _BearerAuth(httpx.Auth):
    """Adds the bearer token per request, so it never sits in the client's default headers."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request


def _segment(value: str) -> str:
    """One path segment, percent-encoded (requestIds contain ``:``, ids may contain ``/``)."""
    return quote(value, safe="")


def _retry_after(response: httpx.Response, body: object) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date), else the body's ``retryAfterSeconds``."""
    header = response.headers.get("retry-after")
    if header is not None:
        header = header.strip()
        if header.isascii() and header.isdigit():  # str.isdigit() alone takes "²"
            return float(header)
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    if isinstance(body, dict):
        seconds = body.get("retryAfterSeconds")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            return float(seconds)
    return None


def _str_or_none(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _http_error(response: httpx.Response, request_id: str | None) -> SidecarHTTPError:
    """The typed error for an error answer, from its problem document when there is one."""
    try:
        body: object = json_decoder.decode(response.content)
    except (msgspec.DecodeError, UnicodeDecodeError):
        body = None  # a proxy's HTML page (in any charset), an empty 502, ...
    problem: Problem | None = None
    code = detail = title = None
    if isinstance(body, dict):
        code = _str_or_none(body, "code")
        detail = _str_or_none(body, "detail")
        title = _str_or_none(body, "title")
        request_id = _str_or_none(body, "requestId") or request_id
        try:
            problem = msgspec.convert(body, Problem)
        except msgspec.ValidationError:
            problem = None
    status = response.status_code
    code = code or code_for_status(status)
    error_class = error_class_for(status, code)
    return error_class(
        status=status,
        code=code,
        detail=detail,
        title=title or response.reason_phrase or None,
        problem=problem,
        retry_after=_retry_after(response, body),
        method=response.request.method,
        url=str(response.request.url),
        request_id=request_id,
    )


class SidecarClient:
    """An async client of one sidecar, with one connection pool.

    ::

        async with SidecarClient("http://127.0.0.1:8787", token=token) as sidecar:
            result = await sidecar.send(connection_id="conn_1", peer_id="u1", content="hi")

    ``timeout`` applies to each attempt; ``retry`` bounds the attempts and their total time.
    ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_SIDECAR_URL,
        *,
        token: str | Secret,
        timeout: float | httpx.Timeout = 15.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        token = Secret(token)
        if not token:
            raise ConfigurationError(
                "SidecarClient needs the sidecar's token (EXTERNAL_CONNECTOR_TOKEN)"
            )
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=_BearerAuth(token),
            timeout=timeout,
            transport=transport,
            limits=limits or httpx.Limits(),
            headers={"User-Agent": f"connector-sdk/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"SidecarClient({self.base_url!r})"

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    # plumbing ------------------------------------------------------------------------------

    async def _once(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        content: bytes | None,
        params: Mapping[str, str] | None,
        request_id: str | None,
    ) -> T:
        try:
            response = await self._http.request(
                method,
                path,
                content=content,
                params=params,
                headers=_JSON if content is not None else None,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
            raise SidecarError(
                f"cannot call the sidecar: {error}",
                method=method,
                url=f"{self.base_url}{path}",
                request_id=request_id,
            ) from error
        except httpx.TransportError as error:
            raise SidecarUnavailable(
                f"no answer from the sidecar: {type(error).__name__}: {error}",
                method=method,
                url=f"{self.base_url}{path}",
                request_id=request_id,
            ) from error
        if not 200 <= response.status_code < 300:
            raise _http_error(response, request_id)
        try:
            return decode(response.content, type_)
        except (msgspec.DecodeError, UnicodeDecodeError) as error:  # ValidationError: a subclass
            raise InvalidResponse(
                status=response.status_code,
                code="invalid_response",
                detail=f"not a {getattr(type_, '__name__', type_)}: {error}",
                method=method,
                url=str(response.request.url),
                request_id=request_id,
            ) from error

    async def _call(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        body: object = None,
        params: Mapping[str, str] | None = None,
        request_id: str | None = None,
        retry: bool = True,
    ) -> T:
        # Encoded once: every attempt sends the same bytes.
        content = None if body is None else encode(body)

        async def once() -> T:
            return await self._once(
                method, path, type_, content=content, params=params, request_id=request_id
            )

        return await retrying_call(self.retry if retry else _NO_RETRY, once)

    # §1 connectors ---------------------------------------------------------------------------

    async def list_connectors(self) -> list[ConnectorInfo]:
        """The connector kinds this sidecar offers."""
        return await self._call("GET", "/connectors", list[ConnectorInfo])

    # §2 pairing sessions -----------------------------------------------------------------------

    async def start_session(
        self,
        *,
        kind: str,
        connection_id: str,
        channel_id: str,
        display_name: str = "",
        callback_base_url: str = "",
        options: Mapping[str, Any] | None = None,
    ) -> ConnectorSessionView:
        """Start pairing ``connection_id`` (or get the session already running for it).

        Retried: the sidecar returns the running session for a connection instead of
        starting a second one.
        """
        request = StartSessionRequest(
            kind=kind,
            connection_id=connection_id,
            channel_id=channel_id,
            display_name=display_name,
            callback_base_url=callback_base_url,
            options=dict(options) if options is not None else None,
        )
        return await self._call("POST", "/connector-sessions", ConnectorSessionView, body=request)

    async def get_session(self, session_id: str) -> ConnectorSessionView:
        """A pairing session as it stands (poll it to show the QR and follow its status)."""
        return await self._call(
            "GET", f"/connector-sessions/{_segment(session_id)}", ConnectorSessionView
        )

    async def cancel_session(self, session_id: str) -> ConnectorSessionView:
        """Cancel a pairing session; a terminal one comes back unchanged."""
        return await self._call(
            "POST",
            f"/connector-sessions/{_segment(session_id)}/cancel",
            ConnectorSessionView,
            body=CancelSessionRequest(),
        )

    async def submit_verify_code(self, session_id: str, code: str) -> ConnectorSessionView:
        """Submit the code WeChat shows on the phone. Not retried: a code is used once."""
        return await self._call(
            "POST",
            f"/connector-sessions/{_segment(session_id)}/verify-code",
            ConnectorSessionView,
            body=VerifyCodeRequest(code=code),
            retry=False,
        )

    # §3 connections ----------------------------------------------------------------------------

    async def list_connections(self) -> ConnectionList:
        """Every connection the sidecar knows."""
        return await self._call("GET", "/connections", ConnectionList)

    async def get_connection(self, connection_id: str) -> ConnectionView:
        """One connection, with its status and delivery counts."""
        return await self._call("GET", f"/connections/{_segment(connection_id)}", ConnectionView)

    async def logout(self, connection_id: str) -> LogoutResult:
        """Log the connection out and forget its credentials (idempotent)."""
        return await self._call(
            "POST",
            f"/connections/{_segment(connection_id)}/logout",
            LogoutResult,
            body=LogoutRequest(),
        )

    # §4 sending --------------------------------------------------------------------------------

    async def send(
        self,
        *,
        connection_id: str,
        peer_id: str,
        content: str = "",
        request_id: str | None = None,
        peer_type: PeerType = "dm",
        thread_id: str | None = None,
        channel_id: str | None = None,
        kind: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        message_type: MessageType = "text",
        reply_to_message_id: str | None = None,
        attachments: Sequence[Attachment] | None = None,
    ) -> SendResult:
        """Send a message, exactly once per ``request_id``.

        Pass a deterministic ``request_id`` (see :func:`request_id_for`) so that handling the
        same inbound event twice cannot send twice; without one, a random id is fixed here,
        which protects only the retries of this call. A deferred send (WeChat's closed reply
        window) returns ``status == "deferred"``. ``attachments`` (see
        :class:`connector_sdk.Attachment`) go after the text, each as its own message;
        ``content`` may then be empty.
        """
        request = SendRequest(
            request_id=request_id or f"out_{uuid.uuid4().hex}",
            connection_id=connection_id,
            target=SendTarget(peer_id=peer_id, peer_type=peer_type, thread_id=thread_id),
            content=content,
            channel_id=channel_id,
            kind=kind,
            metadata=dict(metadata) if metadata is not None else None,
            message_type=message_type,
            reply_to_message_id=reply_to_message_id,
            attachments=list(attachments) if attachments else None,
        )
        return await self.send_request(request)

    async def send_request(self, request: SendRequest) -> SendResult:
        """Send a prepared :class:`SendRequest`, retried under its own ``request_id``."""
        return await self._call(
            "POST", "/send", SendResult, body=request, request_id=request.request_id
        )

    async def get_send(self, request_id: str) -> SendResult:
        """A send's result as it stands (``sent``, ``deferred``, ``failed``, ``expired`` or ``pending``)."""
        return await self._call(
            "GET", f"/send/{_segment(request_id)}", SendResult, request_id=request_id
        )

    # §10.1 media and typing ---------------------------------------------------------------------

    async def get_media(self, media_id: str) -> bytes:
        """The bytes of an inbound media item (its ``mediaId`` or its descriptor's ``url``)."""
        chunks = [chunk async for chunk in self.iter_media(media_id)]
        return b"".join(chunks)

    async def iter_media(self, media_id: str, *, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        """The bytes of an inbound media item as they arrive, without holding them all.

        The request is retried under the client's policy until the first byte arrives; a
        failure after that raises :class:`SidecarUnavailable` (start again).
        """
        path = f"/media/{_segment(media_id.rsplit('/', 1)[-1])}"
        async with contextlib.AsyncExitStack() as stack:

            async def opened() -> httpx.Response:
                try:
                    response = await stack.enter_async_context(
                        self._http.stream("GET", path, headers={"Accept": "*/*"})
                    )
                except httpx.TransportError as error:
                    raise SidecarUnavailable(
                        f"no answer from the sidecar: {type(error).__name__}: {error}",
                        method="GET",
                        url=f"{self.base_url}{path}",
                    ) from error
                if not 200 <= response.status_code < 300:
                    await response.aread()
                    raise _http_error(response, None)
                return response

            response = await retrying_call(self.retry, opened)
            try:
                async for chunk in response.aiter_bytes(chunk_size):
                    yield chunk
            except httpx.TransportError as error:
                raise SidecarUnavailable(
                    f"the media download broke off: {type(error).__name__}: {error}",
                    method="GET",
                    url=f"{self.base_url}{path}",
                ) from error

    async def set_typing(
        self,
        *,
        connection_id: str,
        peer_id: str,
        typing: bool = True,
        peer_type: PeerType = "dm",
        thread_id: str | None = None,
    ) -> TypingResult:
        """Show (or stop) the typing indicator; ``ok`` is false where the connector has none."""
        request = TypingRequest(
            connection_id=connection_id,
            target=SendTarget(peer_id=peer_id, peer_type=peer_type, thread_id=thread_id),
            status="typing" if typing else "stop",
        )
        return await self._call("POST", "/typing", TypingResult, body=request, retry=False)

    @contextlib.asynccontextmanager
    async def typing(
        self,
        *,
        connection_id: str,
        peer_id: str,
        peer_type: PeerType = "dm",
        thread_id: str | None = None,
        interval: float = TYPING_INTERVAL,
    ) -> AsyncIterator[None]:
        """Show "typing…" while the block runs, renewed every ``interval`` seconds, then stop.

        A typing indicator is a courtesy: failures are logged, never raised into the block, and
        a connector without one is asked once.
        """

        async def call(on: bool) -> bool:
            try:
                result = await self.set_typing(
                    connection_id=connection_id,
                    peer_id=peer_id,
                    typing=on,
                    peer_type=peer_type,
                    thread_id=thread_id,
                )
            except SidecarError as error:
                log.info("typing indicator for %s failed: %s", peer_id, error)
                return True
            return result.ok

        async def keep_alive() -> None:
            while True:
                await asyncio.sleep(interval)
                await call(True)

        supported = await call(True)
        renewer = asyncio.ensure_future(keep_alive()) if supported else None
        try:
            yield
        finally:
            if renewer is not None:
                renewer.cancel()
                # asyncio.wait, not suppress(CancelledError): our caller's own cancellation
                # arriving meanwhile must propagate, not be taken for the renewer's.
                await asyncio.wait({renewer})
                if not renewer.cancelled() and (failure := renewer.exception()) is not None:
                    raise failure
                await call(False)

    # §6 deliveries -----------------------------------------------------------------------------

    async def list_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        connection_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DeliveryList:
        """One page of bridge deliveries, newest first; pass ``next_cursor`` for the next."""
        params = {
            name: str(value)
            for name, value in (
                ("status", status),
                ("connectionId", connection_id),
                ("limit", limit),
                ("cursor", cursor),
            )
            if value is not None
        }
        return await self._call("GET", "/deliveries", DeliveryList, params=params)

    async def iter_deliveries(
        self,
        *,
        status: DeliveryStatus | None = None,
        connection_id: str | None = None,
        page_size: int = 100,
        max_pages: int = 1000,
    ) -> AsyncGenerator[DeliveryView, None]:
        """Every delivery, page by page (at most ``max_pages`` pages)."""
        cursor: str | None = None
        for _ in range(max_pages):
            page = await self.list_deliveries(
                status=status, connection_id=connection_id, limit=page_size, cursor=cursor
            )
            for item in page.items:
                yield item
            cursor = page.next_cursor
            if not cursor:
                return

    async def replay_delivery(self, event_id: str) -> DeliveryView:
        """Re-queue one dead or delivered event. Not retried: each replay re-delivers."""
        return await self._call(
            "POST", f"/deliveries/{_segment(event_id)}/replay", DeliveryView, retry=False
        )

    async def replay_deliveries(
        self,
        *,
        connection_id: str | None = None,
        status: Literal["dead", "delivered"] = "dead",
        created_from: datetime | str | None = None,
        created_to: datetime | str | None = None,
    ) -> ReplayResult:
        """Re-queue every dead (or delivered) event, optionally of one connection, and with
        ``created_from <= createdAt < created_to`` (datetimes, or RFC 3339 strings) when given."""
        body: dict[str, Any] = {"connectionId": connection_id, "status": status}
        if created_from is not None or created_to is not None:
            # Sent only when given: the body stays what it was for every other call.
            request = ReplayRequest(
                connection_id=connection_id,
                status=status,
                from_=_as_datetime(created_from),
                to=_as_datetime(created_to),
            )
            body = msgspec.to_builtins(request)
        return await self._call("POST", "/deliveries/replay", ReplayResult, body=body, retry=False)


def _as_datetime(value: datetime | str | None) -> datetime | None:
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value
