"""Issue 8's ingest target: events/s into the store with confirmation after commit, beside a
bare aiomqtt -> json -> sqlite pipeline draining the same backlog in the same run.

Each run is ``python -m bench.ingest`` in a process of its own (its garbage collector set as
``availmon collector`` sets it, its CPU its own): one lean publisher queues 50 agents' batch
messages at a Mosquitto, then the bare pipeline and the collector each drain them.
"""

from __future__ import annotations

import json
import subprocess

from bench.common import PYTHON, ROOT, Ctx, Figure, Spread

EVENTS = 200_000
TARGET = 20_000  # events/s (the end-to-end delivery issue, part 4)


def run(ctx: Ctx) -> list[Figure]:
    rate, peer_rate, cpu, peer_cpu = [], [], [], []
    for _ in range(ctx.runs):
        done = subprocess.run(
            [PYTHON, "-m", "bench.ingest", str(EVENTS)],
            capture_output=True,
            text=True,
            timeout=1800,
            cwd=ROOT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.ingest failed: {done.stderr.strip()[-2000:]}")
        result = json.loads(done.stdout)
        if result["stored"] != result["events"]:
            raise RuntimeError(f"{result['stored']} of {result['events']} events stored")
        ctx.say(f"ingest: {json.dumps(result)}")
        rate.append(result["collector_events_per_second"])
        peer_rate.append(result["bare_events_per_second"])
        cpu.append(result["collector_cpu_us_per_event"])
        peer_cpu.append(result["bare_cpu_us_per_event"])
    value = Spread.of(rate)
    return [
        Figure(
            "ingest.rate",
            value,
            "events/s",
            value.median >= TARGET,
            peer="bare aiomqtt->json->sqlite",
            peer_value=Spread.of(peer_rate),
            ratio=Spread.of([a / b for a, b in zip(rate, peer_rate, strict=True)]),
            note=(
                f"{EVENTS:,} events a run, every one stored; CPU µs/event: collector "
                f"{Spread.of(cpu).text()}, bare {Spread.of(peer_cpu).text()}"
            ),
            extra={"cpu_us_per_event": cpu, "bare_cpu_us_per_event": peer_cpu},
        )
    ]
