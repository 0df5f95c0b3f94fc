"""Prometheus metrics of one sidecar app (``GET /metrics``, the text exposition format).

Rules
    Each app has its own ``CollectorRegistry``: several apps in one process (tests, benchmarks)
    never share or collide on a metric. Counters and the latency histogram move where the thing
    happens, through the one-line calls of :class:`Metrics` in the runtime, the delivery worker,
    the sender and the drivers' HTTP clients. What describes the store (outbox events pending
    and dead, connections by kind and status, pairing sessions by kind and status) is read from
    the store when Prometheus scrapes, in one trip to the database thread, so it is never stale
    and survives restarts. Label values are a small fixed set (kinds, statuses, outcomes); no
    connection id, event id or free text becomes a label.

Names follow the Prometheus conventions: a ``connector_`` prefix, ``_total`` for counters,
``_seconds`` for durations.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from connector_sidecar._version import __version__
from connector_sidecar.store._sql import Connection

__all__ = ["CONTENT_TYPE", "CountingClient", "Metrics", "StoreSnapshot", "vendor_outcome"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a local host answering at once to one retried for an hour.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


@dataclasses.dataclass(frozen=True)
class StoreSnapshot:
    """What the scrape-time gauges show, read in one database round trip."""

    outbox: dict[str, int]  # status -> events (pending, dead)
    connections: dict[tuple[str, str], int]  # (kind, status) -> connections
    sessions: dict[tuple[str, str], int]  # (kind, status) -> pairing sessions

    @classmethod
    def read(cls, conn: Connection) -> StoreSnapshot:
        outbox = {"pending": 0, "dead": 0}
        outbox.update(
            (status, count)
            for status, count in conn.execute(
                "SELECT status, COUNT(*) FROM outbox WHERE status IN ('pending', 'dead')"
                " GROUP BY status"
            )
        )
        connections = {
            (kind, status): count
            for kind, status, count in conn.execute(
                "SELECT kind, status, COUNT(*) FROM connections GROUP BY kind, status"
            )
        }
        sessions = {
            (kind, status): count
            for kind, status, count in conn.execute(
                "SELECT kind, status, COUNT(*) FROM sessions GROUP BY kind, status"
            )
        }
        return cls(outbox, connections, sessions)


class _StoreCollector(Collector):
    """Yields the gauges of the last :class:`StoreSnapshot` (taken just before the scrape)."""

    def __init__(self) -> None:
        self.snapshot: StoreSnapshot | None = None
        self.bridge_paused: Callable[[], bool] = lambda: False

    def collect(self) -> Iterator[GaugeMetricFamily]:
        paused = GaugeMetricFamily(
            "connector_bridge_paused",
            "1 while bridge delivery is paused (by an operator, or the host refused the credentials), else 0",
        )
        paused.add_metric([], 1.0 if self.bridge_paused() else 0.0)
        yield paused
        snapshot = self.snapshot
        if snapshot is None:
            return
        outbox = GaugeMetricFamily(
            "connector_outbox_events",
            "Outbox events waiting for the host (pending) or dead-lettered (dead)",
            labels=["status"],
        )
        for status, count in sorted(snapshot.outbox.items()):
            outbox.add_metric([status], count)
        yield outbox
        connections = GaugeMetricFamily(
            "connector_connections", "Connections by kind and status", labels=["kind", "status"]
        )
        for (kind, status), count in sorted(snapshot.connections.items()):
            connections.add_metric([kind, status], count)
        yield connections
        sessions = GaugeMetricFamily(
            "connector_pairing_sessions",
            "Pairing sessions kept in the store, by kind and status (connected, expired, ...)",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(snapshot.sessions.items()):
            sessions.add_metric([kind, status], count)
        yield sessions


def vendor_outcome(status_code: int | None, error: BaseException | None = None) -> str:
    """The ``outcome`` label of a vendor API call: ``2xx``..``5xx``, ``timeout`` or ``error``."""
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if error is not None or status_code is None:
        return "error"
    return f"{status_code // 100}xx"


class Metrics:
    """The metrics of one app; every method is a cheap, non-blocking counter update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._info = Gauge(
            "connector_sidecar_info", "The sidecar's version", ["version"], registry=r
        )
        self._info.labels(__version__).set(1)
        self._inbound = Counter(
            "connector_inbound_messages",
            "Inbound messages committed to the outbox (redeliveries by the vendor not counted)",
            ["kind"],
            registry=r,
        )
        self._deliveries = Counter(
            "connector_deliveries",
            "Bridge delivery attempts by outcome: delivered, retry, conflict, paused, dead,"
            " and expired (dead-lettered for age)",
            ["outcome"],
            registry=r,
        )
        self._latency = Histogram(
            "connector_delivery_latency_seconds",
            "From the commit of an inbound event (or its replay) to the host accepting it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._sends = Counter(
            "connector_sends",
            "POST /send requests by connector kind and outcome (a send status or a problem code)",
            ["kind", "outcome"],
            registry=r,
        )
        self._vendor_calls = Counter(
            "connector_vendor_api_calls",
            "HTTP calls to the vendors' APIs by connector kind and outcome (2xx..5xx, timeout, error)",
            ["kind", "outcome"],
            registry=r,
        )
        self._store = _StoreCollector()
        r.register(self._store)

    # -- counters, called where things happen -----------------------------------------------------

    def inbound(self, kind: str, results: Sequence[Any]) -> None:
        """A batch committed by ``Runtime.ingest``: count the messages that were new."""
        new = sum(1 for result in results if result.inserted)
        if new:
            self._inbound.labels(kind).inc(new)

    def delivery(self, outcome: str, latency_seconds: float | None = None, count: int = 1) -> None:
        """One delivery attempt's outcome; a delivered one also records its latency."""
        if count <= 0:
            return
        self._deliveries.labels(outcome).inc(count)
        if outcome == "delivered" and latency_seconds is not None:
            self._latency.observe(max(0.0, latency_seconds))

    def send_finished(self, kind: str | None, future: asyncio.Future[Any]) -> None:
        """A done-callback for the future of a send: its status, or the problem code.

        ``kind`` is the request's (``unknown`` when the host left it out).
        """
        if future.cancelled():
            outcome = "cancelled"
        elif (error := future.exception()) is not None:
            outcome = str(getattr(error, "code", "internal_error"))
        else:
            outcome = str(future.result().result.status)
        self._sends.labels(kind or "unknown", outcome).inc()

    def vendor_call(self, kind: str, outcome: str) -> None:
        self._vendor_calls.labels(kind, outcome).inc()

    def watch_bridge(self, paused: Callable[[], bool]) -> None:
        self._store.bridge_paused = paused

    # -- scraping ---------------------------------------------------------------------------------

    def render(self, snapshot: StoreSnapshot | None) -> bytes:
        """The text exposition of every metric, with the store gauges from ``snapshot``."""
        self._store.snapshot = snapshot
        return generate_latest(self.registry)


class CountingClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` that reports the outcome of every request it sends.

    Overriding ``send`` (which ``get``, ``post`` and ``stream`` all go through) sees transport
    errors and timeouts too, and keeps httpx's own transport choice (proxies from the
    environment included), which an explicit wrapping transport would switch off.
    """

    def __init__(self, *, on_call: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_call = on_call

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            response = await super().send(request, **kwargs)
        except httpx.HTTPError as exc:
            self._on_call(vendor_outcome(None, exc))
            raise
        self._on_call(vendor_outcome(response.status_code))
        return response
