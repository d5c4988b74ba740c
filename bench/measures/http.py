"""Target 1: HTTP probes against nginx, 50 in flight, beside blackbox_exporter's http_2xx."""

from __future__ import annotations

from bench.common import Ctx, Figure, Spread, driver, proc_cpu
from bench.peers import blackbox, nginx

PROBES = 2000
IN_FLIGHT = 50


def run(ctx: Ctx) -> list[Figure]:
    rate, cpu_ms, peer_rate, peer_cpu_ms = [], [], [], []
    with nginx(ctx.workdir) as (_ng, port), blackbox(ctx.workdir) as (bb, bb_port):
        url = f"http://127.0.0.1:{port}/"
        for _ in range(ctx.runs):
            ours = driver("http_availmon", {"url": url, "total": PROBES, "concurrency": IN_FLIGHT})
            if ours["failed"]:
                raise RuntimeError(f"{ours['failed']} availmon probes failed")
            rate.append(ours["probes"] / ours["wall"])
            cpu_ms.append(ours["cpu"] / ours["probes"] * 1000)
            before = proc_cpu(bb.pid)
            theirs = driver(
                "blackbox_load",
                {
                    "port": bb_port,
                    "target": url,
                    "module": "http_2xx",
                    "total": PROBES,
                    "concurrency": IN_FLIGHT,
                },
            )
            used = proc_cpu(bb.pid) - before
            if theirs["failed"]:
                raise RuntimeError(f"{theirs['failed']} blackbox probes failed")
            peer_rate.append(theirs["probes"] / theirs["wall"])
            peer_cpu_ms.append(used / theirs["probes"] * 1000)
    rate_ratio = Spread.of([a / b for a, b in zip(rate, peer_rate, strict=True)])
    cpu_ratio = Spread.of([a / b for a, b in zip(cpu_ms, peer_cpu_ms, strict=True)])
    cpu = Spread.of(cpu_ms)
    return [
        Figure(
            "http.rate",
            Spread.of(rate),
            "probes/s",
            rate_ratio.median >= 1.0,
            peer="blackbox_exporter",
            peer_value=Spread.of(peer_rate),
            ratio=rate_ratio,
            note=f"{PROBES} probes per run, {IN_FLIGHT} in flight, new connection each",
        ),
        Figure(
            "http.cpu",
            cpu,
            "CPU-ms/probe",
            cpu.median <= 0.6,
            peer="blackbox_exporter",
            peer_value=Spread.of(peer_cpu_ms),
            ratio=cpu_ratio,
        ),
    ]
