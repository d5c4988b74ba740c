"""Target 6: ``/api/v1/status`` and ``/metrics`` at 20 concurrent clients while a real
collector ingests 1,000 events/s through Mosquitto, with 1,000 checks configured and
1,000,000 outages already stored in the current quarter; beside a bare aiohttp server of
the same data under the same load, in the same run.

Processes (bench/live_load.py): Mosquitto, ``availmon collector``, a publisher of the
agents' event batches, the HTTP clients, and the peer. Each run asks the collector's
status, then its metrics, then the peer's status, for PHASE seconds each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

from availmon.clock import LONDON, to_us, utcnow
from bench.common import AVAILMON, PYTHON, ROOT, Ctx, Figure, Spread, free_port, proc_cpu
from bench.peers import Process, mosquitto, wait_port
from bench.report_data import checks, config_text, make_store
from collector.accounting import quarter_containing

HISTORY = 1_000_000
RATE = 1_000  # events/s
SITES = 20  # agents publishing
CLIENTS = 20
PHASE = 8.0  # seconds of load per endpoint per run
STARTUP = 300.0  # the collector loads its view of the quarter


def get(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        body: bytes = r.read()
    return body


def wait_healthy(base: str, collector: Process, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if collector.proc is not None and collector.proc.poll() is not None:
            raise RuntimeError(f"the collector exited: {collector.log.read_text()[-2000:]}")
        try:
            if json.loads(get(f"{base}/healthz"))["mqtt_connected"]:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the collector was not healthy within {deadline} s")


def ingested(base: str) -> float:
    for line in get(f"{base}/metrics").decode().splitlines():
        if line.startswith("availmon_events_ingested_total "):
            return float(line.split()[1])
    return 0.0


def load(url: str) -> dict[str, Any]:
    args = {"url": url, "concurrency": CLIENTS, "duration": PHASE, "max_requests": 200_000}
    done = subprocess.run(
        [PYTHON, "-m", "bench.live_load", "load", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=PHASE + 60,
        cwd=ROOT,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    if not result.get("requests") or result["errors"]:
        raise RuntimeError(f"{url}: {result}")
    return result


#: A weekly window: the quarter then holds one, and the KPI is no longer the live view's.
WINDOW = """
[[maintenance]]
name = "bench-patching"
every = "sunday"
start = 02:00:00
end = 04:00:00
sites = ["site-00"]
"""


def reload_stamp(base: str) -> float:
    for line in get(f"{base}/metrics", timeout=600).decode().splitlines():
        if line.startswith("availmon_config_last_reload_success_timestamp_seconds "):
            return float(line.split()[1])
    return 0.0


def under_rules(base: str, collector: Process, runs: int) -> tuple[float, list[dict[str, Any]]]:
    """SIGHUP the collector (its config file now has a window), wait for the reload and
    for the first KPI under it (timed), then load /metrics as before."""
    before = reload_stamp(base)
    started = time.monotonic()
    os.kill(collector.pid, signal.SIGHUP)
    end = time.monotonic() + 60
    while reload_stamp(base) == before:
        if time.monotonic() > end:
            raise RuntimeError(f"the collector did not reload: {collector.log.read_text()[-2000:]}")
        time.sleep(0.5)
    # The KPI series are absent until the first figure under the new config is made (or
    # the scrape that saw the reload waited for it: its cost was not known yet).
    while 'availmon_availability_ratio{area="combined"}' not in get(f"{base}/metrics").decode():
        if time.monotonic() - started > 600:
            raise RuntimeError("no KPI on /metrics 600 s after the reload")
        time.sleep(0.5)
    first = time.monotonic() - started
    return first, [load(f"{base}/metrics") for _ in range(runs)]


def run(ctx: Ctx) -> list[Figure]:
    now = utcnow()
    quarter = quarter_containing(now, LONDON)
    lo = quarter.start_us
    hi = to_us(now - timedelta(minutes=30))
    db = ctx.workdir / "collector.db"
    ctx.say(f"bench: reads: a store of {HISTORY:,} outages in {quarter.id}")
    make_store(db, [(lo, max(hi, lo + 3_600_000_000), HISTORY)])
    by_site: dict[str, list[str]] = {}
    areas: dict[str, str] = {}
    for site, check, area in checks():
        by_site.setdefault(site, []).append(check)
        areas[check] = area
    publishing = {s: by_site[s] for s in list(by_site)[:SITES]}
    web_port, peer_port = free_port(), free_port()
    base, peer_base = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{peer_port}"
    duration = ctx.runs * 3 * (PHASE + 5) + 60
    with mosquitto(ctx.workdir) as (_, broker):
        config = ctx.workdir / "estate.toml"
        config.write_text(config_text(db, broker, web_port))
        collector = Process([AVAILMON, "collector", "--config", str(config)], ctx.workdir / "c.log")
        started = time.monotonic()
        collector.start()
        publisher = peer = None
        try:
            wait_port(web_port, deadline=STARTUP)
            wait_healthy(base, collector, STARTUP)
            ctx.say(f"bench: reads: collector up in {time.monotonic() - started:.0f} s")
            args = {
                "port": broker,
                "sites": publishing,
                "areas": areas,
                "rate": RATE,
                "tick": 0.1,
                "duration": duration,
                "max_events": int(RATE * duration),
            }
            publisher = Process(
                [PYTHON, "-m", "bench.live_load", "publish", json.dumps(args)],
                ctx.workdir / "publisher.log",
            )
            publisher.start()
            time.sleep(5)  # the flow settles: a supervision period, not a synchronisation
            (ctx.workdir / "status.json").write_bytes(get(f"{base}/api/v1/status"))
            (ctx.workdir / "metrics.txt").write_bytes(get(f"{base}/metrics"))
            peer_args = {
                "port": peer_port,
                "status": str(ctx.workdir / "status.json"),
                "metrics": str(ctx.workdir / "metrics.txt"),
                "duration": duration,
            }
            peer = Process(
                [PYTHON, "-m", "bench.live_load", "peer", json.dumps(peer_args)],
                ctx.workdir / "peer.log",
            )
            peer.start()
            wait_port(peer_port)
            count0, t0, cpu0 = ingested(base), time.monotonic(), proc_cpu(collector.pid)
            status, metrics, theirs, sizes = [], [], [], []
            for _ in range(ctx.runs):
                status.append(load(f"{base}/api/v1/status"))
                metrics.append(load(f"{base}/metrics"))
                theirs.append(load(f"{peer_base}/api/v1/status"))
            rate = (ingested(base) - count0) / (time.monotonic() - t0)
            cpu = (proc_cpu(collector.pid) - cpu0) / (time.monotonic() - t0)
            sizes = [len(get(f"{base}/api/v1/status")), len(get(f"{base}/metrics"))]
            # Issue 10's rules: a recurring window makes the KPI the store's (a reload).
            config.write_text(config_text(db, broker, web_port) + WINDOW)
            first, ruled = under_rules(base, collector, ctx.runs)
        finally:
            for p in (publisher, peer, collector):
                if p is not None:
                    p.stop()
    ms = 1000.0
    r99 = Spread.of([r["p99"] * ms for r in ruled])
    s99 = Spread.of([r["p99"] * ms for r in status])
    m99 = Spread.of([r["p99"] * ms for r in metrics])
    p99 = Spread.of([r["p99"] * ms for r in theirs])
    note = (
        f"{HISTORY:,} outages stored, 1,000 checks, {rate:,.0f} events/s ingested meanwhile"
        f" (collector {cpu * 100:.0f}% of a core), {CLIENTS} clients x {PHASE:.0f} s per run;"
        f" requests per run: status {Spread.of([r['requests'] for r in status]).text('{:.0f}')},"
        f" metrics {Spread.of([r['requests'] for r in metrics]).text('{:.0f}')},"
        f" peer {Spread.of([r['requests'] for r in theirs]).text('{:.0f}')};"
        f" bodies {sizes[0] // 1024} KiB (status), {sizes[1] // 1024} KiB (metrics)"
    )
    return [
        Figure(
            "status.p99",
            s99,
            "ms",
            s99.median <= 50,
            peer="bare aiohttp",
            peer_value=p99,
            ratio=Spread.of([a["p99"] / b["p99"] for a, b in zip(status, theirs, strict=True)]),
            note=note,
            extra={"status": status, "peer": theirs, "rate": rate},
        ),
        Figure(
            "metrics.p99",
            m99,
            "ms",
            m99.median <= 100,
            note=(
                f"with a recurring maintenance window (the KPI by issue 10's rules, from the"
                f" store): p99 {r99.text()} ms; the first figure under it was on /metrics"
                f" {first:.1f} s after the SIGHUP"
            ),
            extra={"metrics": metrics, "ruled": ruled, "ruled_first_s": first},
        ),
    ]


if __name__ == "__main__":
    import sys
    import tempfile

    from bench.run import table

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with tempfile.TemporaryDirectory(prefix="availmon-bench-") as tmp:
        figures = run(Ctx(runs=runs, workdir=Path(tmp)))
    print(table({f.key: f for f in figures}, {}))
