"""``GET /metrics`` through the real app: parsed with prometheus_client's own text parser, its
counters follow the traffic (sim inbound → delivery to a respx host; sends; vendor calls)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from prometheus_client.parser import text_string_to_metric_families

from connector_sidecar._secret import Secret
from connector_sidecar._version import __version__
from connector_sidecar.metrics import Metrics

from .conftest import Sidecar, SidecarFactory
from .test_delivery import until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

URL = "http://host.test/bridge/events"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(sidecar: Sidecar) -> Samples:
    response = await sidecar.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Host:
    """The bridge host (respx): answers 200, or what ``status`` says."""

    def __init__(self) -> None:
        self.status = 200
        self.events: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.events.append(json.loads(request.content))
        return httpx.Response(self.status, json={"accepted": self.status == 200})


@pytest.fixture
def host() -> Iterator[Host]:
    recorder = Host()
    with respx.mock(assert_all_called=False) as mock:
        mock.post(URL).mock(side_effect=recorder)
        yield recorder


async def test_metrics_need_a_token(make_sidecar: SidecarFactory) -> None:
    """Without a token /metrics is 401; METRICS_TOKEN opens /metrics and nothing else."""
    async with make_sidecar(metrics_token=Secret("scrape-token-456")) as sidecar:
        anonymous = await sidecar.client.get("/metrics", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        scraper = {"Authorization": "Bearer scrape-token-456"}
        assert (await sidecar.client.get("/metrics", headers=scraper)).status_code == 200
        assert (await sidecar.client.get("/connections", headers=scraper)).status_code == 401
        assert (await sidecar.client.get("/metrics")).status_code == 200  # the API token too


async def test_counters_follow_the_traffic(make_sidecar: SidecarFactory, host: Host) -> None:
    """Inbound messages, deliveries (with latency), dead letters, sends and the store gauges."""
    async with make_sidecar(bridge_url=URL) as sidecar:
        before = await scrape(sidecar)
        assert value(before, "connector_inbound_messages_total", kind="sim") == 0
        await sidecar.pair("conn_1")
        for n in range(3):
            assert (await sidecar.inbound(content=f"m{n}", messageId=f"m-{n}")).status_code == 202
        # The vendor sending a message again is not a new inbound message.
        assert (await sidecar.inbound(content="m0", messageId="m-0")).status_code == 202

        async def delivered() -> bool:
            samples = await scrape(sidecar)
            return value(samples, "connector_deliveries_total", outcome="delivered") == 3

        await until(delivered, what="3 deliveries counted")
        send = await sidecar.send("req-1", "hello")
        assert send.status_code == 200, send.text
        after = await scrape(sidecar)
        assert value(after, "connector_inbound_messages_total", kind="sim") == 3
        assert value(after, "connector_delivery_latency_seconds_count") == 3
        assert value(after, "connector_delivery_latency_seconds_bucket", le="+Inf") == 3
        assert value(after, "connector_sends_total", kind="sim", outcome="sent") == 1
        assert value(after, "connector_connections", kind="sim", status="connected") == 1
        assert value(after, "connector_pairing_sessions", kind="sim", status="connected") == 1
        assert value(after, "connector_outbox_events", status="pending") == 0
        assert value(after, "connector_outbox_events", status="dead") == 0
        assert value(after, "connector_bridge_paused") == 0
        assert value(after, "connector_sidecar_info", version=__version__) == 1

        host.status = 404
        assert (await sidecar.inbound(content="poison", messageId="m-x")).status_code == 202

        async def dead() -> bool:
            samples = await scrape(sidecar)
            return value(samples, "connector_outbox_events", status="dead") == 1

        await until(dead, what="a dead letter in the gauge")
        final = await scrape(sidecar)
        assert value(final, "connector_deliveries_total", outcome="dead") == 1
        assert value(final, "connector_delivery_latency_seconds_count") == 3
        refused = await sidecar.send("req-2", "x", connection_id="conn_unknown")
        assert refused.status_code == 404
        final = await scrape(sidecar)
        assert (
            value(final, "connector_sends_total", kind="sim", outcome="connection_not_found") == 1
        )


async def test_vendor_calls_are_counted_by_outcome(sidecar: Sidecar) -> None:
    """The drivers' HTTP client counts each call: status class, timeout or transport error."""

    def vendor(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            raise httpx.ReadTimeout("slow", request=request)
        if request.url.path == "/down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503 if request.url.path == "/busy" else 200)

    runtime = sidecar.app.state.services.runtime
    async with runtime.ctx.http_client(
        kind="weixin", transport=httpx.MockTransport(vendor), base_url="http://vendor.test"
    ) as client:
        assert (await client.get("/ok")).status_code == 200
        assert (await client.post("/busy")).status_code == 503
        async with client.stream("GET", "/ok") as streamed:
            assert streamed.status_code == 200
        for path in ("/slow", "/down"):
            with pytest.raises(httpx.HTTPError):
                await client.get(path)
    samples = await scrape(sidecar)
    calls = {
        outcome: value(samples, "connector_vendor_api_calls_total", kind="weixin", outcome=outcome)
        for outcome in ("2xx", "5xx", "timeout", "error")
    }
    assert calls == {"2xx": 2, "5xx": 1, "timeout": 1, "error": 1}


def test_each_app_has_its_own_registry() -> None:
    """Two Metrics in one process count separately (no global registry to collide in)."""
    first, second = Metrics(), Metrics()
    first.vendor_call("sim", "2xx")
    one = parse(first.render(None).decode())
    other = parse(second.render(None).decode())
    assert value(one, "connector_vendor_api_calls_total", kind="sim", outcome="2xx") == 1
    assert value(other, "connector_vendor_api_calls_total", kind="sim", outcome="2xx") == 0
