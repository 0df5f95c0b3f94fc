"""``POST /send``: idempotent by requestId, resumable per chunk, truthful about vendor refusals.

One logical send runs at most once at a time, across every replica: its ledger row is its lock
(owned by one replica until its hold runs out or that replica's heartbeat stops). A repeat that
arrives while it runs, here or on another replica, waits for it, briefly, and gets the same
answer marked ``duplicate``; a repeat that waits too long gets 409 ``request_in_progress``.
The ledger row is written before the first vendor call and after every accepted chunk, so after
a crash or a 503 the next attempt continues after the chunks already sent. The last chunk and
the final status are one commit.

The crash window: a SIGKILL after the vendor accepted a chunk and before its commit leaves the
chunk unrecorded. The ledger marks each chunk as tried before its vendor call (in the commit
before it, at no extra cost), so the resumed send knows which chunk may have gone out; it asks
the driver (``Driver.find_sent``: the sim answers by vendor key) and records the vendor's id
instead of posting again. Where the vendor cannot be asked, the chunk is posted again with the
same vendor key (Feishu's ``uuid`` makes that no new message within an hour; WeChat's
``client_id`` is not known to be deduplicated): README "When storage fails".

Attachments (``outbound_media``) are parts after the text chunks, each its own vendor message
with its own vendor key (from requestId and the part index). All of them are resolved and
checked before the first vendor call; then each is uploaded (the upload recorded in the
ledger at once) and posted (recorded like a chunk). A retry skips finished uploads and parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)
from tenacity.wait import wait_base, wait_exponential, wait_random

from connector_contracts import ProblemError, SendRequest, SendResult
from connector_sidecar._clock import Sleep, now_ms
from connector_sidecar.chunking import split_text
from connector_sidecar.drivers.attachments import OutboundAttachment
from connector_sidecar.drivers.base import (
    DeferredSendError,
    Driver,
    LoginExpiredError,
    OutboundChunk,
    RejectedSendError,
    TransientSendError,
)
from connector_sidecar.leases import wall_ms
from connector_sidecar.media import MediaCache
from connector_sidecar.outbound_media import (
    AttachmentFiles,
    PreparedAttachment,
    attachment_digests,
    strip_data,
)
from connector_sidecar.problems import ApiProblem
from connector_sidecar.runtime import Runtime
from connector_sidecar.store import ConnectionRecord, EnqueueResult, LedgerEntry
from connector_sidecar.store._sql import Connection
from connector_sidecar.store.ledger import fingerprint_of
from connector_sidecar.store.replicas import Holder

__all__ = ["MAX_DEFERRED_PER_PEER", "SendOutcome", "Sender", "chunks_for", "vendor_key"]

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_DEFERRED_PER_PEER = 3
DEFERRED_TTL_MS = 24 * 3600 * 1000
LEDGER_RETENTION_MS = 48 * 3600 * 1000  # the contract promises at least 24 h
PURGE_BATCH_SIZE = 500
PURGE_MAX_BATCHES = 2000  # a bound, not a plan: a million entries per housekeeping pass
UNAVAILABLE_RETRY_AFTER = 10
IN_PROGRESS_RETRY_AFTER = 2
ELSEWHERE_POLL_SECONDS = 0.1  # how often a replica looks at a send another replica runs
LONG_CONTENT = 20_000  # characters; shorter texts split in about a millisecond


def vendor_key(request_id: str, index: int, max_length: int = 50) -> str:
    """The vendor idempotency key of one chunk: the same for every retry of that chunk."""
    suffix = f"-{index}"
    digest = hashlib.sha256(f"{request_id}\n{index}".encode()).hexdigest()
    return digest[: max(8, min(40, max_length - len(suffix)))] + suffix


@dataclasses.dataclass
class _PeerWatch:
    """Sends in flight to one peer, and how many messages the peer wrote meanwhile."""

    sends: int = 0
    messages: int = 0


@dataclasses.dataclass(frozen=True)
class SendOutcome:
    status_code: int
    result: SendResult


class _WaitRetryAfter(wait_base):
    """Exponential backoff with jitter, but never shorter than a vendor's Retry-After."""

    def __init__(self) -> None:
        # wait_exponential + wait_random rather than wait_exponential_jitter, whose ``initial``
        # is deprecated in tenacity 9 and whose ``multiplier`` does not exist in 8.3.
        self._backoff = wait_exponential(multiplier=0.5, max=8.0) + wait_random(0, 0.5)

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, TransientSendError) and exc.retry_after:
                delay = max(delay, min(exc.retry_after, 60.0))
        return delay


# The HTTP status and ``ok`` of each ledger status, as POST /send answers it (GET is always 200).
_ANSWERS: dict[str, tuple[int, bool]] = {
    "sent": (200, True),
    "deferred": (202, True),
    "failed": (502, False),
    "expired": (410, False),  # POST answers a 410 send_expired problem instead (GET: 200)
    "pending": (
        202,
        False,
    ),  # in progress or interrupted: an addition to docs/CONTRACT.md §4's statuses
}


def _stored_result(entry: LedgerEntry, *, duplicate: bool) -> SendOutcome:
    """The answer a ledger entry stands for (a final one, or the current state for GET).

    ``providerMessageId`` names the message only once all of it reached the vendor (``sent``);
    until then it is null, as docs/CONTRACT.md §4 shows for a deferred send, and ``providerMessageIds``
    lists the chunks that did go out.
    """
    status = entry.status if entry.status in _ANSWERS else "pending"
    status_code, ok = _ANSWERS[status]
    ids = list(entry.provider_ids)
    result = SendResult(
        ok=ok,
        request_id=entry.request_id,
        status=status,
        provider_message_id=ids[0] if status == "sent" and ids else None,
        provider_message_ids=ids,
        duplicate=duplicate,
    )
    return SendOutcome(status_code, result)


def chunks_for(driver: Driver, request: SendRequest) -> list[str]:
    """The chunks of one send, the same on every attempt. A whitespace-only chunk (a long run of
    blank lines) is left out: vendors refuse blank messages, and chat clients trim them anyway."""
    text = driver.prepare_text(request.content, request.message_type)
    return [chunk for chunk in split_text(text, driver.chunk_limit) if chunk.strip()]


async def _split_for(driver: Driver, request: SendRequest) -> list[str]:
    """:func:`chunks_for`, in a thread for long content: up to 200,000 characters take ~0.1 s
    of CPU, which would stall every other request and the delivery worker."""
    if len(request.content) <= LONG_CONTENT:
        return chunks_for(driver, request)
    return await asyncio.to_thread(chunks_for, driver, request)


def _field_problem(path: str, message: str, request_id: str) -> ApiProblem:
    """A 422 naming the field in ``errors``, as every other validation failure does."""
    return ApiProblem(
        422,
        "validation_failed",
        f"{path}: {message}",
        errors=[ProblemError(path=path, message=message)],
        request_id=request_id,
    )


def _rejected_problem(entry: LedgerEntry) -> ApiProblem:
    return ApiProblem(
        502,
        "provider_rejected",
        entry.error_detail or "the vendor refused the message",
        request_id=entry.request_id,
    )


class Sender:
    def __init__(
        self, runtime: Runtime, media: MediaCache, *, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.settings = runtime.settings
        self.files = AttachmentFiles(runtime.settings, media)
        self._sleep = sleep
        self._inflight: dict[str, tuple[str, asyncio.Future[SendOutcome]]] = {}
        self._peer_locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        # Only peers with a send in flight: it never outgrows the sends running.
        self._watches: dict[tuple[str, str], _PeerWatch] = {}
        self._tasks: set[asyncio.Future[Any]] = set()  # sends and flushes, for drain()
        self._draining = False
        runtime.on_inbound(self._on_inbound)

    # -- POST /send -------------------------------------------------------------------------------

    async def send(self, request: SendRequest) -> SendOutcome:
        """Run a send, or join the one already running for this requestId."""
        if not request.content.strip() and not request.attachments:
            raise _field_problem("$.content", "must not be empty", request.request_id)
        digests: list[str] = []
        if request.attachments:
            digests = await asyncio.to_thread(attachment_digests, request)
        fingerprint = fingerprint_of(request, digests)
        running = self._inflight.get(request.request_id)
        if running is not None:
            if running[0] != fingerprint:
                raise _conflict(request.request_id)
            try:
                outcome = await asyncio.wait_for(
                    asyncio.shield(running[1]), self.settings.send_wait_seconds
                )
            except TimeoutError:
                raise ApiProblem(
                    409,
                    "request_in_progress",
                    "a send with this requestId is still in progress",
                    headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER)},
                    request_id=request.request_id,
                ) from None
            # SendResult is a msgspec Struct: msgspec.structs.replace, not dataclasses.replace.
            return dataclasses.replace(
                outcome, result=msgspec.structs.replace(outcome.result, duplicate=True)
            )

        future: asyncio.Future[SendOutcome] = asyncio.ensure_future(
            self._execute(request, fingerprint)
        )
        self._inflight[request.request_id] = (fingerprint, future)
        future.add_done_callback(lambda done: self._finished(request.request_id, done))
        future.add_done_callback(
            lambda done: self.runtime.metrics.send_finished(request.kind, done)
        )
        self._track(future)
        # Shield: a host that hangs up does not stop a send half-way; the ledger finishes it.
        return await asyncio.shield(future)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)

    async def drain(self, grace: float) -> None:
        """At shutdown: let sends and flushes in flight finish for ``grace`` seconds, then cancel.

        A send whose host hung up still runs (it is shielded); the store must not close under
        it. One cancelled after the grace stays ``pending``: a retry resumes it, and the vendor
        key keeps a chunk that did reach the vendor from being posted twice.
        """
        self._draining = True
        running = list(self._tasks)
        if not running:
            return
        _, unfinished = await asyncio.wait(running, timeout=grace)
        for future in unfinished:
            future.cancel()
        # Outcomes were delivered to their callers (or marked seen by _finished) already.
        await asyncio.gather(*running, return_exceptions=True)

    def _finished(self, request_id: str, future: asyncio.Future[SendOutcome]) -> None:
        self._inflight.pop(request_id, None)
        # Mark a failure as seen: if the host hung up, nobody else awaits this future, and
        # asyncio would log "exception was never retrieved" for an ordinary 4xx/5xx answer.
        if not future.cancelled():
            future.exception()

    async def get(self, request_id: str) -> SendOutcome:
        entry = await self.store.db.run(self.store.ledger.get, request_id)
        if entry is None:
            raise ApiProblem(404, "request_not_found", f"no send with requestId {request_id!r}")
        outcome = _stored_result(entry, duplicate=False)
        return SendOutcome(200, outcome.result)

    async def _execute(self, request: SendRequest, fingerprint: str) -> SendOutcome:
        entry, connection = await self.store.db.run(
            self._read, request.request_id, request.connection_id
        )
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise _conflict(request.request_id)
            if entry.status != "pending":
                return self._final(entry, duplicate=True)
        if connection is None:
            raise ApiProblem(
                404,
                "connection_not_found",
                f"no connection {request.connection_id!r}",
                request_id=request.request_id,
            )
        if request.kind and request.kind != connection.kind:
            raise _field_problem(
                "$.kind",
                f"the connection is {connection.kind!r}, not {request.kind!r}",
                request.request_id,
            )
        _require_ready(connection, request.request_id)
        driver = self.runtime.drivers.get(connection.kind)
        if driver is None:
            raise ApiProblem(
                409,
                "connection_not_ready",
                f"connector {connection.kind!r} is not enabled",
                request_id=request.request_id,
            )
        chunks = await _split_for(driver, request) if request.content.strip() else []
        if not chunks and not request.attachments:
            raise _field_problem("$.content", "nothing to send", request.request_id)
        # Every attachment is resolved and checked before the first vendor call.
        prepared = [] if entry is not None else await self.files.prepare(request, driver)
        started, owned = await self.store.db.transaction(
            self.store.ledger.begin,
            strip_data(request),
            len(chunks) + len(prepared),
            self._holder(),
            fingerprint,
            [p.to_json() for p in prepared],
        )
        if started.fingerprint != fingerprint:
            raise _conflict(request.request_id)
        if not owned:
            return await self._await_elsewhere(started)
        if started.chunk_count != len(chunks) + len(started.attachments):
            # The driver's formatting changed between versions: keep the chunks already sent.
            log.warning("send %s: chunking changed since the first attempt", request.request_id)
        try:
            return await self._deliver(started, connection, driver, chunks)
        finally:
            await self._release(request.request_id)

    async def _release(self, request_id: str) -> None:
        """Ended sends have no owner already; one cut short (a 503) is free for a retry on any
        replica at once."""
        await self.store.db.transaction(
            self.store.ledger.release, request_id, self.settings.replica_id
        )

    def _holder(self) -> Holder:
        wall = wall_ms()
        lease_ms = int(self.settings.lease_seconds * 1000)
        hold_ms = int((self.settings.send_retry_max_seconds + 60) * 1000)
        return Holder(self.settings.replica_id, wall, wall + hold_ms, wall - lease_ms)

    async def _await_elsewhere(self, entry: LedgerEntry) -> SendOutcome:
        """The send runs in another replica: its stored result, if it comes in time."""
        deadline = asyncio.get_running_loop().time() + self.settings.send_wait_seconds
        while entry.status == "pending":
            if asyncio.get_running_loop().time() >= deadline:
                raise ApiProblem(
                    409,
                    "request_in_progress",
                    "a send with this requestId is still in progress",
                    headers={"Retry-After": str(IN_PROGRESS_RETRY_AFTER)},
                    request_id=entry.request_id,
                )
            await asyncio.sleep(ELSEWHERE_POLL_SECONDS)
            current = await self.store.db.run(self.store.ledger.get, entry.request_id)
            if current is None:
                raise AssertionError(f"the ledger entry of {entry.request_id!r} vanished")
            entry = current
            if entry.status == "pending" and entry.owner is None:
                # Its replica let go (a 503, or it stopped): a retry here resumes it.
                raise ApiProblem(
                    409,
                    "request_in_progress",
                    "the send with this requestId was interrupted; retry to resume it",
                    headers={"Retry-After": "1"},
                    request_id=entry.request_id,
                )
        return self._final(entry, duplicate=True)

    def _read(
        self, conn: Connection, request_id: str, connection_id: str
    ) -> tuple[LedgerEntry | None, ConnectionRecord | None]:
        """A send's ledger entry and its connection, in one trip to the database thread."""
        entry = self.store.ledger.get(conn, request_id)
        return entry, self.store.connections.get(conn, connection_id)

    def _final(self, entry: LedgerEntry, *, duplicate: bool) -> SendOutcome:
        if entry.status == "failed":
            raise _rejected_problem(entry)
        if entry.status == "expired":
            # Hosts read only the status code of a repeat: a 200 would pass for a delivery.
            raise ApiProblem(
                410,
                "send_expired",
                entry.error_detail or "the deferred send expired before the peer wrote again",
                request_id=entry.request_id,
            )
        return _stored_result(entry, duplicate=duplicate)

    async def _deliver(
        self,
        entry: LedgerEntry,
        connection: ConnectionRecord,
        driver: Driver,
        chunks: Sequence[str],
    ) -> SendOutcome:
        with self._watch_peer(entry.connection_id, entry.peer_id) as peer_wrote:
            return await self._send_chunks(entry, connection, driver, chunks, peer_wrote)

    @contextlib.contextmanager
    def _watch_peer(self, connection_id: str, peer_id: str) -> Iterator[Callable[[], bool]]:
        """While a send to this peer runs: a check whether the peer has written since it began."""
        key = (connection_id, peer_id)
        watch = self._watches.setdefault(key, _PeerWatch())
        watch.sends += 1
        before = watch.messages
        try:
            yield lambda: watch.messages != before
        finally:
            watch.sends -= 1
            if watch.sends == 0:
                del self._watches[key]

    async def _send_chunks(
        self,
        entry: LedgerEntry,
        connection: ConnectionRecord,
        driver: Driver,
        chunks: Sequence[str],
        peer_wrote: Callable[[], bool],
    ) -> SendOutcome:
        request = entry.request
        attachments = [PreparedAttachment.from_json(a) for a in entry.attachments]
        total = len(chunks) + len(attachments)
        may_be_sent = entry.next_chunk_may_be_sent  # only the first part of this run can be
        for index in range(len(entry.provider_ids), total):
            try:
                if index < len(chunks):
                    chunk = OutboundChunk(
                        request_id=request.request_id,
                        index=index,
                        count=total,
                        text=chunks[index],
                        key=vendor_key(request.request_id, index, driver.key_max_length),
                        target=request.target,
                        message_type=request.message_type,
                        reply_to_message_id=request.reply_to_message_id,
                    )
                    found = (
                        await self._find_sent(driver, connection, chunk) if may_be_sent else None
                    )
                    may_be_sent = False
                    provider_id = found or await self._send_chunk(driver, connection, chunk)
                else:
                    # An attachment part is posted again with its vendor key (as a chunk the
                    # vendor cannot be asked about); its upload is never repeated.
                    may_be_sent = False
                    attachment_index = index - len(chunks)
                    part = self._part(entry, driver, index, total, attachments[attachment_index])
                    entry, provider_id = await self._send_part(
                        entry, driver, connection, part, attachment_index
                    )
            except RejectedSendError as exc:
                entry = await self._set_status(
                    entry, "failed", http_status=502, code=exc.code, detail=str(exc)
                )
                log.warning("send %s refused by the vendor: %s", request.request_id, exc)
                raise _rejected_problem(entry) from None
            except DeferredSendError as exc:
                entry = await self._defer(entry, str(exc))
                if peer_wrote():
                    # The peer wrote while the vendor answered "window closed": the flush
                    # that message started may have looked before this send was parked.
                    self._spawn_flush(entry.connection_id, entry.peer_id)
                return _stored_result(entry, duplicate=False)
            except LoginExpiredError as exc:
                await self.runtime.set_status(
                    connection.connection_id, "auth_expired", last_error=str(exc)
                )
                raise ApiProblem(
                    409,
                    "connection_not_ready",
                    f"the login of {connection.connection_id!r} has expired; pair again ({exc})",
                    request_id=request.request_id,
                ) from None
            except TransientSendError as exc:
                log.warning(
                    "send %s: vendor unavailable after retries: %s", request.request_id, exc
                )
                raise ApiProblem(
                    503,
                    "provider_unavailable",
                    f"the vendor did not accept part {index + 1} of {total}: {exc}; "
                    "retry with the same requestId to continue",
                    headers={"Retry-After": str(_retry_after(exc))},
                    request_id=request.request_id,
                ) from None
            if index == total - 1:
                entry, events = await self.store.db.transaction(
                    self._record_last, entry, index, provider_id
                )
                if events:
                    self.runtime.outbox_changed()  # after the commit
                return _stored_result(entry, duplicate=False)
            entry = await self.store.db.transaction(
                lambda c, i=index, p=provider_id: self.store.ledger.record_chunk(
                    c, request.request_id, i, p, next_tried=True
                )
            )
        entry = await self._set_status(entry, "sent")  # every part was recorded already
        return _stored_result(entry, duplicate=False)

    def _part(
        self,
        entry: LedgerEntry,
        driver: Driver,
        index: int,
        total: int,
        prepared: PreparedAttachment,
    ) -> OutboundAttachment:
        request = entry.request
        return OutboundAttachment(
            request_id=request.request_id,
            index=index,
            count=total,
            key=vendor_key(request.request_id, index, driver.key_max_length),
            target=request.target,
            kind=prepared.kind,
            file_name=prepared.file_name,
            mime_type=prepared.mime_type,
            size=prepared.size,
            sha256=prepared.sha256,
            path=self.files.path(prepared.sha256),
            reply_to_message_id=request.reply_to_message_id,
        )

    async def _send_part(
        self,
        entry: LedgerEntry,
        driver: Driver,
        connection: ConnectionRecord,
        part: OutboundAttachment,
        attachment_index: int,
    ) -> tuple[LedgerEntry, str]:
        """Upload (unless the ledger has it) and post one attachment part."""
        upload = entry.upload_of(attachment_index)
        if upload is None:
            if not part.path.exists():
                raise RejectedSendError(
                    "attachment_gone", "the attachment's bytes are no longer kept; send again"
                )
            upload = await self._retrying(lambda: driver.upload_attachment(connection, part))
            entry = await self.store.db.transaction(
                lambda c: self.store.ledger.record_upload(
                    c, entry.request_id, attachment_index, upload
                )
            )
        provider_id = await self._retrying(lambda: driver.send_attachment(connection, part, upload))
        return entry, provider_id

    def _record_last(
        self, conn: Connection, entry: LedgerEntry, index: int, provider_id: str
    ) -> tuple[LedgerEntry, int]:
        """The last part and the final status, in one commit; a deferred send that goes out at
        last also gets its ``send.status`` event in it."""
        self.store.ledger.record_chunk(conn, entry.request_id, index, provider_id)
        sent = self.store.ledger.set_status(conn, entry.request_id, "sent")
        events = self.store.events.send_status(conn, [sent]) if entry.status == "deferred" else 0
        return sent, events

    async def _find_sent(
        self, driver: Driver, connection: ConnectionRecord, chunk: OutboundChunk
    ) -> str | None:
        """Ask the vendor about a chunk an interrupted attempt handed over, answer unrecorded."""
        found = await driver.find_sent(connection, chunk)
        if found is not None:
            log.info(
                "send %s: chunk %d reached the vendor before an interruption (%s); not posting"
                " it again",
                chunk.request_id,
                chunk.index + 1,
                found,
            )
        else:
            log.warning(
                "send %s: chunk %d may have reached the vendor before an interruption; posting"
                " it again with the same vendor key",
                chunk.request_id,
                chunk.index + 1,
            )
        return found

    async def _send_chunk(
        self, driver: Driver, connection: ConnectionRecord, chunk: OutboundChunk
    ) -> str:
        return await self._retrying(lambda: driver.send(connection, chunk))

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientSendError),
            # stop_before_delay, not stop_after_delay: never sleep past the budget (a vendor's
            # long Retry-After ends the retries instead of holding the host's request open).
            stop=stop_after_attempt(self.settings.send_retry_attempts)
            | stop_before_delay(self.settings.send_retry_max_seconds),
            wait=_WaitRetryAfter(),
            sleep=self._sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await call()
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _set_status(
        self,
        entry: LedgerEntry,
        status: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        detail: str | None = None,
    ) -> LedgerEntry:
        """Record how a send ended; a deferred send that ends here also gets its
        ``send.status`` event, in the same transaction."""

        def work(conn: Connection) -> tuple[LedgerEntry, int]:
            ended = self.store.ledger.set_status(
                conn,
                entry.request_id,
                status,
                http_status=http_status,
                error_code=code,
                error_detail=detail,
            )
            events = (
                self.store.events.send_status(conn, [ended]) if entry.status == "deferred" else 0
            )
            return ended, events

        ended, events = await self.store.db.transaction(work)
        if events:
            self.runtime.outbox_changed()
        return ended

    async def _defer(self, entry: LedgerEntry, reason: str) -> LedgerEntry:
        """Park the send until the peer writes again, keeping at most 3 per peer (newest)."""

        def work(conn: Any) -> tuple[LedgerEntry, bool]:
            waiting = [
                e
                for e in self.store.ledger.deferred_for(conn, entry.connection_id, entry.peer_id)
                if e.request_id != entry.request_id
            ]
            dropped = [
                self.store.ledger.set_status(
                    conn,
                    old.request_id,
                    "expired",
                    error_code="deferred_dropped",
                    error_detail=f"more than {MAX_DEFERRED_PER_PEER} sends were waiting for this peer",
                )
                for old in waiting[: max(0, len(waiting) - (MAX_DEFERRED_PER_PEER - 1))]
            ]
            queued = bool(self.store.events.send_status(conn, dropped))
            # The vendor answered "not now" for the next chunk: it did not post it.
            self.store.ledger.set_tried(conn, entry.request_id, len(entry.provider_ids))
            deferred = self.store.ledger.set_status(
                conn,
                entry.request_id,
                "deferred",
                http_status=202,
                error_code="reply_window_closed",
                error_detail=reason,
            )
            return deferred, queued

        log.info("send %s deferred until %s writes again", entry.request_id, entry.peer_id)
        deferred, queued = await self.store.db.transaction(work)
        if queued:
            self.runtime.outbox_changed()  # after the commit: the worker must see the events
        return deferred

    # -- deferred sends ---------------------------------------------------------------------------

    async def _on_inbound(
        self, connection: ConnectionRecord, results: Sequence[EnqueueResult]
    ) -> None:
        peers = {r.message.peer_id for r in results if r.inserted}
        for peer_id in peers:
            watch = self._watches.get((connection.connection_id, peer_id))
            if watch is not None:
                watch.messages += 1
            self._spawn_flush(connection.connection_id, peer_id)

    def _spawn_flush(self, connection_id: str, peer_id: str) -> None:
        if self._draining:
            return  # deferred sends wait in the ledger; the peer's next message flushes them
        self._track(
            self.runtime.spawn(self.flush_deferred(connection_id, peer_id), name=f"flush:{peer_id}")
        )

    async def flush_deferred(self, connection_id: str, peer_id: str) -> int:
        """Send what waited for this peer, oldest first; stop at the first that defers again."""
        key = (connection_id, peer_id)
        lock, users = self._peer_locks.get(key) or (asyncio.Lock(), 0)
        # Count the users of the lock: dropping it while a waiter is about to acquire it would
        # let a newcomer create a second lock and flush the same sends in parallel (twice).
        self._peer_locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._flush_locked(connection_id, peer_id)
        finally:
            lock, users = self._peer_locks[key]
            if users <= 1:
                del self._peer_locks[key]
            else:
                self._peer_locks[key] = (lock, users - 1)

    async def _flush_locked(self, connection_id: str, peer_id: str) -> int:
        sent = 0
        entries = await self.store.db.run(self.store.ledger.deferred_for, connection_id, peer_id)
        for listed in entries:
            # Re-read: a newer deferred send may have dropped this one meanwhile.
            entry, connection = await self.store.db.run(
                self._read, listed.request_id, connection_id
            )
            if entry is None or entry.status != "deferred":
                continue
            if connection is None or connection.status != "connected":
                break
            driver = self.runtime.drivers.get(connection.kind)
            if driver is None:
                break
            chunks = await _split_for(driver, entry.request)
            owned = await self.store.db.transaction(self._own_deferred, entry, self._holder())
            if not owned:
                continue  # another replica is flushing it
            try:
                outcome = await self._deliver(entry, connection, driver, chunks)
            except ApiProblem as problem:
                log.warning("deferred send %s failed: %s", entry.request_id, problem.detail)
                if problem.code != "provider_rejected":
                    break
                continue
            finally:
                await self._release(entry.request_id)
            if outcome.result.status != "sent":
                break
            sent += 1
        return sent

    def _own_deferred(self, conn: Connection, entry: LedgerEntry, holder: Holder) -> bool:
        owned = self.store.ledger.own(conn, entry.request_id, holder, "deferred")
        if owned:
            self.store.ledger.mark_next_tried(conn, entry)
        return owned

    # -- housekeeping -----------------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Expire deferred sends older than 24 h and purge ledger entries untouched for 48 h.

        The purge runs in small transactions until nothing old is left (bounded), so a busy day's
        entries go in one pass without holding the database thread for long.
        """
        now = now_ms(self.runtime.clock)

        def expire(conn: Connection) -> tuple[int, int]:
            entries = self.store.ledger.expire_deferred(conn, now - DEFERRED_TTL_MS)
            return len(entries), self.store.events.send_status(conn, entries)

        expired, events = await self.store.db.transaction(expire)
        if events:
            self.runtime.outbox_changed()
        purged = 0
        for _ in range(PURGE_MAX_BATCHES):
            batch = await self.store.db.transaction(
                lambda c: self.store.ledger.purge(
                    c, now - LEDGER_RETENTION_MS, limit=PURGE_BATCH_SIZE
                )
            )
            purged += batch
            if batch < PURGE_BATCH_SIZE:
                break
        removed = await asyncio.to_thread(self.files.purge, LEDGER_RETENTION_MS / 1000)
        if removed:
            log.info("housekeeping: %d outbound attachment files removed", removed)
        if expired or purged:
            log.info(
                "ledger housekeeping: %d deferred sends expired, %d old entries purged",
                expired,
                purged,
            )


def _retry_after(exc: TransientSendError) -> int:
    """Seconds a host should wait: ours, or the vendor's when it asked for longer."""
    if exc.retry_after is None:
        return UNAVAILABLE_RETRY_AFTER
    return max(UNAVAILABLE_RETRY_AFTER, math.ceil(min(exc.retry_after, 3600.0)))


def _conflict(request_id: str) -> ApiProblem:
    return ApiProblem(
        422,
        "request_id_conflict",
        "this requestId was already used for a different message (connection, target, content,"
        " type or attachments)",
        request_id=request_id,
    )


def _require_ready(connection: ConnectionRecord, request_id: str) -> None:
    if connection.status in ("connected", "reconnecting"):
        return
    reason = f" ({connection.last_error})" if connection.last_error else ""
    raise ApiProblem(
        409,
        "connection_not_ready",
        f"connection {connection.connection_id!r} is {connection.status}{reason}; it needs to be paired",
        request_id=request_id,
    )
