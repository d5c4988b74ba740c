"""A collector draining a large backlog from its persistent session (the delivery target: 200,000).

Builds the backlog with real paho publishers (one per simulated agent) while the collector is
away, then starts the collector and times the drain. ``make bench`` runs it with N=200,000
(``.venv/bin/python -m bench.backlog 200000``); tests/e2e/test_backlog.py runs the same code
with a few thousand events, for correctness only.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from availmon.config import Estate, parse_config
from availmon.schema import Event, State
from bench.common import quiet_sites
from collector.main import Collector
from collector.metrics import REJECT_REASONS

CHECKS = 50


def backlog_estate(tmp: Path, port: int, agents: int) -> Estate:
    return parse_config(
        {
            "broker": {"host": "127.0.0.1", "port": port},
            "collector": {"database": str(tmp / "collector.db"), "batch_size": 1000},
            "web": {"port": 0},
            "sites": quiet_sites(agents, CHECKS),
            "partners": {"P": {"name": "P"}},
        },
        "backlog",
    )


def events(site: str, count: int) -> list[bytes]:
    """Down/up pairs over many checks (seq 1 and 2 are check c0's, 3 and 4 c1's, ...), one
    event per second of 2026, so every outage closes."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for seq in range(1, count + 1):
        at = base + timedelta(seconds=seq)
        down = seq % 2 == 1
        out.append(
            Event(
                id=f"{site}:{seq}",
                seq=seq,
                site=site,
                agent=site,
                check=f"c{(seq - 1) // 2 % CHECKS}",
                area="email",
                from_=State.UP if down else State.DOWN,
                to=State.DOWN if down else State.UP,
                at=at,
                detected_at=at,
            ).to_json()
        )
    return out


def publish_site(port: int, site: str, count: int) -> int:
    """One simulated agent, in its own process (spawned), so publishers don't share a GIL."""
    publish_all(port, site, events(site, count))
    return count


def publish_all(port: int, site: str, payloads: list[bytes]) -> None:
    """Publish at QoS 1 and return once the broker has acknowledged every message.

    paho keeps at most 65,535 QoS 1 messages in flight (one per message id), so the loop
    waits for acknowledgements in windows rather than queueing everything at once.
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{site}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        topic = f"availmon/v1/{site}/{site}/event"
        window = 10_000
        for start in range(0, len(payloads), window):
            infos = [client.publish(topic, p, qos=1) for p in payloads[start : start + window]]
            for info in infos:
                info.wait_for_publish(timeout=120)
                if not info.is_published():
                    raise RuntimeError(f"publish to {topic} not acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class Result:
    sent: int
    stored: int
    publish_seconds: float
    drain_seconds: float
    #: Redelivered events the collector ignored, and messages it rejected (its own counters).
    duplicates: int = 0
    rejected: int = 0


def deadline_for(total: int) -> float:
    """Seconds each phase (publish, drain) may take before the run is declared hung: ten
    times the rate measured on the 2-core development machine, plus start-up."""
    return 60.0 + total / 300


async def run(
    tmp: Path,
    port: int,
    total: int,
    agents: int = 4,
    progress: Callable[[int], Any] = lambda n: None,
    deadline: float | None = None,
) -> Result:
    """Every wait is bounded by ``deadline`` seconds (default ``deadline_for(total)``): a
    collector that stops draining fails the run with TimeoutError instead of hanging it."""
    limit = deadline if deadline is not None else deadline_for(total)
    cfg = backlog_estate(tmp, port, agents)
    # Subscribe once so the broker holds a persistent session for the collector, then go away.
    collector = Collector(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))
    try:
        await asyncio.wait_for(collector.connected.wait(), limit)
    finally:
        stop.set()
        await asyncio.wait_for(task, limit)

    per_agent = total // agents
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(agents, mp_context=multiprocessing.get_context("spawn")) as pool:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    loop.run_in_executor(pool, publish_site, port, f"s{i}", per_agent)
                    for i in range(agents)
                )
            ),
            limit,
        )
    published = time.monotonic() - started

    sent = per_agent * agents
    started = time.monotonic()
    collector = Collector(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(collector.run(stop))

    def counted(name: str, **labels: str) -> int:
        return int(collector.metrics.registry.get_sample_value(name, labels) or 0)

    def stored() -> int:
        return counted("availmon_events_ingested_total")

    try:
        async with collector.changed:
            await asyncio.wait_for(
                collector.changed.wait_for(lambda: progress(stored()) or stored() >= sent),
                limit,
            )
        drained = time.monotonic() - started
        # Read while the collector still runs (a scrape also reads its store).
        result = Result(
            sent,
            stored(),
            published,
            drained,
            duplicates=counted("availmon_events_duplicate_total"),
            rejected=sum(
                counted("availmon_events_rejected_total", reason=r) for r in REJECT_REASONS
            ),
        )
    except TimeoutError:
        raise TimeoutError(
            f"the collector stored {stored()} of {sent} events within {limit:.0f} s"
        ) from None
    finally:
        stop.set()
        await asyncio.wait_for(task, limit)
    return result


if __name__ == "__main__":  # pragma: no cover - manual benchmark
    import tempfile

    from tests.peers import mosquitto

    async def main() -> None:
        total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
        with tempfile.TemporaryDirectory() as d:
            async with mosquitto(Path(d) / "mq", extra_conf="max_inflight_messages 1000") as b:
                last = [0.0]

                def progress(n: int) -> None:
                    if time.monotonic() - last[0] > 5:
                        last[0] = time.monotonic()
                        print(f"  stored {n}", flush=True)

                r = await run(Path(d), b.port, total, progress=progress)
        print(
            f"sent {r.sent}, stored {r.stored}; published in {r.publish_seconds:.1f} s, "
            f"drained in {r.drain_seconds:.1f} s ({r.sent / r.drain_seconds:.0f}/s)"
        )

    asyncio.run(main())
