"""``python -m bench.loadgen``: a closed-loop HTTP load generator, run as its own process.

It runs in a process of its own so that the client never shares an event loop (or a GIL) with
the server it measures; the benchmark compares rates taken with the same generator, the same
concurrency and the same server, so what the generator costs cancels out of each ratio.

``--clients`` keep-alive connections each send one request, read the answer, and send the next.
In a body, ``{n}`` becomes a token unique to each request and ``{lane}`` a number below
``--lanes`` (so requests spread over that many conversations). Requests answered during
``--warmup`` are not counted. It prints one JSON object: requests, seconds, rate, p50 and p99
latency in ms, the statuses seen, and how many were not 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from urllib.parse import urlsplit

from bench._wire import Connection, HttpError

__all__ = ["main", "run"]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    clients: int = 16,
    seconds: float = 3.0,
    warmup: float = 0.5,
    max_requests: int | None = None,
    lanes: int = 64,
    prefix: str = "",
) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counted = 0
    accepted = 0  # 2xx answers, the warm-up's included: what the server now holds
    failures: list[str] = []

    async def client(worker: int) -> None:
        nonlocal counted, accepted
        conn = Connection(host, port, headers or {})
        n = 0
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at or (max_requests is not None and counted >= max_requests):
                    return
                payload = None
                if body is not None:
                    token = f"{prefix}{worker}-{n}"
                    payload = body.replace("{n}", token).replace("{lane}", str(n % lanes)).encode()
                n += 1
                try:
                    status, _ = await conn.request(method, path, payload)
                except (HttpError, OSError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    if len(failures) > 100:
                        return
                    continue
                done = time.perf_counter()
                if 200 <= status < 300:
                    accepted += 1
                if done >= measure_from:
                    counted += 1
                    latencies.append(done - now)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = min(time.perf_counter(), stop_at) - measure_from
    errors = sum(count for status, count in statuses.items() if not 200 <= status < 300)
    return {
        "requests": counted,
        "seconds": round(elapsed, 4),
        "rate": counted / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted": accepted,
        "errors": errors + len(failures),
        "failures": failures[:3],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", help="request body template ({n}, {lane})")
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--max-requests", type=int)
    parser.add_argument("--lanes", type=int, default=64)
    parser.add_argument("--prefix", default="", help="makes {n} unique across runs")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    result = asyncio.run(
        run(
            args.url,
            method=args.method,
            body=args.body,
            headers={k.strip(): v.strip() for k, v in headers.items()},
            clients=args.clients,
            seconds=args.seconds,
            warmup=args.warmup,
            max_requests=args.max_requests,
            lanes=args.lanes,
            prefix=args.prefix,
        )
    )
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
