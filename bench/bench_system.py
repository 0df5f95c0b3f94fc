"""The real system: ``connector-sidecar serve``, a bridge host and the clients as separate
processes over loopback HTTP.

Each figure is a ratio against a baseline taken in the same run, so it compares like with like
on any machine; the table shows the median of ``--runs`` runs (3 by default).

- inject ÷ healthz: ``POST /sim/connections/{id}/messages`` (each a new message over 64
  conversations, durably queued before the 202) against ``GET /healthz``, both with 16
  keep-alive clients from one load-generator process (:mod:`bench.loadgen`).
- send ÷ healthz: ``POST /send`` with a new requestId each time, 50 clients, against
  ``GET /healthz`` with 50 clients; plus the p99 latency of those sends.
- delivery ÷ plain client: events/s the sidecar delivers (with a bearer token and signatures,
  as deployed) to :mod:`bench.bare_host`, from an outbox filled by the inject phase, against
  the rate a minimal keep-alive HTTP/1.1 client (:mod:`bench.loadgen`) reaches posting the same
  bytes to the same host with the same concurrency (16 = ``BRIDGE_CONCURRENCY``).
- idle latency: one message at a time, from just before the inject request to the moment the
  host has read the event (``time.monotonic()`` is one clock for every process here).

The sidecar's store comes from its environment: a temporary ``SIDECAR_DATA_DIR`` (SQLite)
always, and ``--database-url`` sets ``SIDECAR_DATABASE_URL`` for a store that lives elsewhere.
Every run uses a new connection id and waits for its own events only, so a database that
outlives the run does not skew the next one.

Also shown for each phase: the CPU the sidecar used, split into its main thread (the event
loop) and its other threads (the database thread), in percent of one core. A thread near 100%
is what bounds that figure.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import resource
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench._options import Options
from connector_sidecar.testing import ManagedProcess, SidecarProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-" + secrets.token_hex(4)
BRIDGE_TOKEN = "bench-bridge-" + secrets.token_hex(4)
SIGNING_SECRET = "whsec_" + base64.b64encode(b"bench signing secret, 32 bytes!!").decode()
DELIVERY_CONCURRENCY = 16
INJECT_CLIENTS = 16
SEND_CLIENTS = 50
LANES = 64
INJECT_BODY = '{"peerId":"peer-{lane}","content":"hello from the bench","messageId":"m-{n}"}'

# figure -> (label, target, True when higher is better)
FIGURES: dict[str, tuple[str, float, bool]] = {
    "inject_ratio": ("inject ÷ /healthz (16 clients)", 0.5, True),
    "send_ratio": ("/send new requestIds ÷ /healthz (50 clients)", 0.35, True),
    "send_p99_ms": ("/send p99 latency, ms (50 clients)", float("nan"), False),
    "delivery_ratio": ("delivery ÷ plain keep-alive client (16)", 0.5, True),
    "latency_p50_ms": ("idle inject → host handler p50, ms", 5.0, False),
    "latency_p99_ms": ("idle inject → host handler p99, ms", 15.0, False),
    "commit_p50_ms": ("context: one durable SQLite commit p50, ms", float("nan"), False),
}


# -- processes and measurements -------------------------------------------------------------


def _python_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "VIRTUAL_ENV", "PYTHONPATH", "LANG")
    return {k: v for k, v in os.environ.items() if k in keep}


class CpuMeter:
    """CPU seconds of one process's threads from /proc: main thread apart from the others."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def sample(self) -> tuple[float, float, float]:
        main = other = 0.0
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    used = (int(fields[11]) + int(fields[12])) / self.tick
                    if int(task.name) == self.pid:
                        main += used
                    else:
                        other += used
        return time.monotonic(), main, other

    @staticmethod
    def busy(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
        """Percent of one core, all threads."""
        used = after[1] + after[2] - before[1] - before[2]
        return 100 * used / max(after[0] - before[0], 1e-9)

    @staticmethod
    def share(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
        wall = max(after[0] - before[0], 1e-9)
        main = 100 * (after[1] - before[1]) / wall
        other = 100 * (after[2] - before[2]) / wall
        return f"sidecar CPU: loop {main:3.0f}%, other threads {other:3.0f}%"


def load(
    url: str,
    opts: Options,
    *,
    seconds: float | None = None,
    warmup: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """One :mod:`bench.loadgen` process; its JSON result."""
    seconds = opts.seconds if seconds is None else seconds
    warmup = opts.warmup if warmup is None else warmup
    argv = [sys.executable, "-m", "bench.loadgen", url]
    argv += ["--seconds", str(seconds), "--warmup", str(warmup)]
    for name, value in kwargs.items():
        if name == "headers":
            for header, text in value.items():
                argv += ["--header", f"{header}: {text}"]
        elif value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_python_env(),
        timeout=seconds + warmup + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime
    result["client_cpu"] = 100 * cpu / (seconds + warmup)
    if result["errors"] or not result["requests"]:
        raise RuntimeError(f"the load generator saw errors against {url}: {result}")
    return result


class BareHost(ManagedProcess):
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", "bench.bare_host", "--port", str(self.port)],
            env=_python_env(),
            log_path=tmp / "host.log",
            cwd=ROOT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: self.http.get("/healthz", timeout=2).status_code == 200,
            timeout=30,
            what="the bare host",
        )

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.http.get("/stats").json()
        return stats

    def wait_for(self, count: int) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get("/wait", params={"count": count}).json()
        return answer


def _sidecar(data_dir: Path, opts: Options, bridge: str | None) -> SidecarProcess:
    env = {"LOG_LEVEL": "warning"}
    if opts.database_url:
        env["SIDECAR_DATABASE_URL"] = opts.database_url
    if bridge:
        env |= {
            "BRIDGE_URL": bridge,
            "BRIDGE_TOKEN": BRIDGE_TOKEN,
            "BRIDGE_SIGNING_SECRET": SIGNING_SECRET,
            "BRIDGE_CONCURRENCY": str(DELIVERY_CONCURRENCY),
        }
    return SidecarProcess(data_dir, token=TOKEN, env=env)


def _pair(sidecar: SidecarProcess, connection_id: str) -> None:
    with sidecar.client() as client:
        paired = client.post(
            "/connector-sessions",
            json={
                "kind": "sim",
                "connectionId": connection_id,
                "channelId": "sim-bench",
                "options": {"autoConfirm": True},
            },
        )
    if paired.status_code != 201 or paired.json()["status"] != "connected":
        raise RuntimeError(f"pairing the sim connection failed: {paired.text}")


@contextlib.contextmanager
def _running(process: ManagedProcess) -> Iterator[None]:
    process.start()
    try:
        yield
    finally:
        process.terminate()


# -- one run ----------------------------------------------------------------------------------


def run_once(opts: Options, index: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    tag = f"r{index}-{secrets.token_hex(3)}-"
    connection = f"bench-{tag}conn"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp_name:
        tmp = Path(tmp_name)
        host = BareHost(tmp)
        with _running(host):
            sidecar = _sidecar(tmp / "sidecar", opts, bridge=None)
            with _running(sidecar):
                _pair(sidecar, connection)
                assert sidecar.proc is not None
                cpu = CpuMeter(sidecar.proc.pid)

                def phase(name: str, url: str, **kwargs: Any) -> dict[str, Any]:
                    before = cpu.sample()
                    result = load(url, opts, headers=auth, **kwargs)
                    print(
                        f"   {name:<20} {result['rate']:8.0f} req/s  p50 {result['p50_ms']:6.1f} ms"
                        f"  p99 {result['p99_ms']:6.1f} ms  {CpuMeter.share(before, cpu.sample())},"
                        f" client {result['client_cpu']:3.0f}%"
                    )
                    return result

                health16 = phase("healthz ×16", f"{sidecar.url}/healthz", clients=INJECT_CLIENTS)
                inject = phase(
                    "inject ×16",
                    f"{sidecar.url}/sim/connections/{connection}/messages",
                    method="POST",
                    clients=INJECT_CLIENTS,
                    body=INJECT_BODY,
                    lanes=LANES,
                    prefix=tag,
                    max_requests=opts.max_injects,
                )
                backlog = int(inject["accepted"])
                if backlog < opts.min_backlog:  # an outbox big enough to time its drain
                    more = load(
                        f"{sidecar.url}/sim/connections/{connection}/messages",
                        opts,
                        seconds=120,
                        warmup=0,
                        headers=auth,
                        method="POST",
                        clients=INJECT_CLIENTS,
                        body=INJECT_BODY,
                        lanes=LANES,
                        prefix=tag + "more-",
                        max_requests=opts.min_backlog - backlog,
                    )
                    backlog += int(more["accepted"])
                health50 = phase("healthz ×50", f"{sidecar.url}/healthz", clients=SEND_CLIENTS)
                send = phase(
                    "send ×50",
                    f"{sidecar.url}/send",
                    method="POST",
                    clients=SEND_CLIENTS,
                    body=(
                        '{"requestId":"req-{n}","connectionId":"' + connection + '",'
                        '"channelId":"sim-bench","kind":"sim",'
                        '"target":{"peerId":"peer-{lane}","peerType":"dm","threadId":null},'
                        '"content":"a reply from the bench"}'
                    ),
                    lanes=LANES,
                    prefix=tag,
                )
            figures["inject_ratio"] = inject["rate"] / health16["rate"]
            figures["send_ratio"] = send["rate"] / health50["rate"]
            figures["send_p99_ms"] = send["p99_ms"]

            sidecar = _sidecar(tmp / "sidecar", opts, bridge=host.events_url)
            start_count = host.stats()["count"]
            with _running(sidecar):
                assert sidecar.proc is not None
                cpu = CpuMeter(sidecar.proc.pid)
                figures["delivery_rate"] = _delivery_rate(host, start_count, backlog, cpu)
                sample = host.http.get("/sample").content
                assert host.proc is not None
                host_cpu = CpuMeter(host.proc.pid)
                host_before = host_cpu.sample()
                plain = load(
                    host.events_url,
                    opts,
                    method="POST",
                    clients=DELIVERY_CONCURRENCY,
                    body=sample.decode(),
                    headers={"Authorization": f"Bearer {BRIDGE_TOKEN}"},
                )
                print(
                    f"   {'plain client ×16':<20} {plain['rate']:8.0f} req/s  p50"
                    f" {plain['p50_ms']:6.1f} ms  p99 {plain['p99_ms']:6.1f} ms  (to the bare host),"
                    f" host CPU {host_cpu.busy(host_before, host_cpu.sample()):3.0f}%,"
                    f" client {plain['client_cpu']:3.0f}%"
                )
                figures["delivery_ratio"] = figures["delivery_rate"] / plain["rate"]
                p50, p99 = _idle_latency(sidecar, host, connection, tag, opts)
                figures["latency_p50_ms"], figures["latency_p99_ms"] = p50, p99
        figures["commit_p50_ms"] = float("nan") if opts.database_url else _commit_floor(tmp, opts)
    return figures


def _delivery_rate(host: BareHost, start: int, backlog: int, cpu: CpuMeter) -> float:
    """Events/s while the sidecar drains a ``backlog``-event outbox, once under way (the first
    5% open the connections and are left out); returns when the whole outbox is delivered."""
    first = start + max(1, backlog // 20)
    last = start + backlog

    def arrival(count: int) -> float:
        for _ in range(60):  # each wait is at most 10 s: 10 minutes in all
            answer = host.wait_for(count)
            if answer["at"] is not None:
                return float(answer["at"])
        raise RuntimeError(f"the sidecar did not deliver {count - start} of {backlog} events")

    began = arrival(first)
    before = cpu.sample()
    ended = arrival(last)
    after = cpu.sample()
    rate = (last - first) / max(ended - began, 1e-9)
    print(
        f"   {'delivery ×16':<20} {rate:8.0f} ev/s   (draining {backlog} events)"
        f"  {CpuMeter.share(before, after)}"
    )
    return rate


def _idle_latency(
    sidecar: SidecarProcess, host: BareHost, connection: str, tag: str, opts: Options
) -> tuple[float, float]:
    latencies: list[float] = []
    count = host.stats()["count"]
    with sidecar.client() as client:
        for i in range(opts.latency_samples):
            time.sleep(0.02)  # idle: the previous event is recorded, nothing else is moving
            started = time.monotonic()
            answer = client.post(
                f"/sim/connections/{connection}/messages",
                json={"peerId": f"peer-{i % LANES}", "content": "ping", "messageId": f"{tag}l{i}"},
            )
            if answer.status_code != 202:
                raise RuntimeError(f"inject failed: {answer.status_code} {answer.text}")
            count += 1
            arrived = host.wait_for(count)
            if arrived["at"] is None:
                raise RuntimeError("an injected message did not reach the host within 10 s")
            latencies.append((arrived["at"] - started) * 1000)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(
        f"   {'idle latency':<20} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({len(latencies)} events)"
    )
    return p50, p99


def _commit_floor(directory: Path, opts: Options) -> float:
    """p50 of one durable commit on the disk the sidecar used (WAL, ``synchronous=FULL``, as
    the store): an inject then a claim each wait for one before the event leaves, so twice
    this is the floor of the idle latency."""
    samples = 10 if opts.smoke else 200
    conn = sqlite3.connect(directory / "floor.sqlite3", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (x INTEGER)")
        times = []
        for i in range(samples):
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            conn.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    times.sort()
    p50, p99 = times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))]
    print(f"   {'durable commit':<20} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (SQLite, same disk)")
    return p50


# -- the report -------------------------------------------------------------------------------


def report(runs: list[dict[str, float]]) -> None:
    print(f"   median of {len(runs)} run(s):")
    print(f"   {'figure':<46} {'median':>8} {'runs':>24} {'target':>8}")
    for key, (label, target, higher) in FIGURES.items():
        values = [run[key] for run in runs]
        if any(v != v for v in values):  # NaN: not measured with this store
            continue
        median = statistics.median(values)
        each = " ".join(f"{v:.2f}" for v in values)
        if target != target:  # NaN: no target, shown for context
            goal, verdict = "", ""
        else:
            goal = f"{'≥' if higher else '≤'} {target:g}"
            met = median >= target if higher else median <= target
            verdict = "ok" if met else "MISSED"
        print(f"   {label:<46} {median:8.2f} {each:>24} {goal:>8} {verdict}")


def _runs(opts: Options) -> list[dict[str, float]]:
    runs: list[dict[str, float]] = []
    for index in range(opts.runs):
        print(f"   run {index + 1} of {opts.runs}")
        runs.append(run_once(opts, index))
    report(runs)
    return runs


@contextlib.contextmanager
def _postgres_database() -> Iterator[str | None]:
    """A database of its own on the machine's PostgreSQL, dropped after; None if unreachable."""
    import psycopg

    admin_url = os.environ.get(
        "SIDECAR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        print(f"   PostgreSQL skipped: unreachable at {admin_url} ({exc.__class__.__name__})")
        yield None
        return
    name = f"sidecar_bench_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urllib.parse.urlunsplit(
                urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}")
            )
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(opts: Options | None = None) -> None:
    opts = opts or Options()
    runs = _runs(opts)
    if opts.database_url is not None or opts.smoke:
        return
    # The same figures with the store on PostgreSQL, and each against SQLite's in this run.
    with _postgres_database() as url:
        if url is None:
            return
        print("   the same on PostgreSQL (SIDECAR_DATABASE_URL):")
        pg_runs = _runs(dataclasses.replace(opts, database_url=url))
    for key in ("inject_ratio", "send_ratio", "delivery_ratio"):
        sqlite_median = statistics.median(r[key] for r in runs)
        pg_median = statistics.median(r[key] for r in pg_runs)
        label = FIGURES[key][0]
        print(f"   PostgreSQL ÷ SQLite, {label:<46} {pg_median / sqlite_median:6.2f}")
