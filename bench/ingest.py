"""Ingest throughput with end-to-end confirmation (issue 8), beside a bare pipeline.

Pre-built ``.../events`` batch messages of 50 agents (100 events each) are queued at a real
Mosquitto for a persistent session by one lean publisher process (paho, QoS 1), then drained
by

- the collector: per-event validation, SQLite commit with outage derivation, a confirmation
  to each agent after every commit, PUBACK after that; and
- a bare aiomqtt -> json -> sqlite pipeline: one INSERT per event, one commit per batch of
  messages, no validation, no outages, no confirmations (the floor a team would write).

Both drain the same backlog on the same machine in one run; the figure is events stored per
second, and the ratio between the two. The publisher's own cost is outside both figures (the
backlog is queued before the drain starts).

``python -m bench.ingest [EVENTS]`` (default 200,000); ``run(events) -> dict`` for
``bench/run.py``. A 1,000,000-event backlog: ``python -m bench.ingest 1000000``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from availmon.config import Estate, parse_config
from availmon.schema import Event, State
from bench.common import quiet_sites
from collector.main import Collector, tune_gc
from collector.metrics import REJECT_REASONS

AGENTS = 50
PER_MESSAGE = 100
CHECKS = 20


def estate(tmp: Path, port: int) -> Estate:
    return parse_config(
        {
            "broker": {"host": "127.0.0.1", "port": port},
            "collector": {
                "database": str(tmp / "collector.db"),
                "batch_size": 50,
                "max_payload_bytes": 262_144,
            },
            "web": {"port": 0},
            "sites": quiet_sites(AGENTS, CHECKS),
            "partners": {"P": {"name": "P"}},
        },
        "bench",
    )


def messages(site: str, count: int) -> list[bytes]:
    """``count`` events of one agent as batch messages: down/up pairs over CHECKS checks."""
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for start in range(1, count + 1, PER_MESSAGE):
        events = []
        for seq in range(start, min(start + PER_MESSAGE, count + 1)):
            at = base + timedelta(seconds=seq)
            down = seq % 2 == 1
            events.append(
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
        out.append(b'{"schema":1,"first_seq":1,"events":[' + b",".join(events) + b"]}")
    return out


def publish(port: int, per_agent: int) -> int:
    """One lean process queues every agent's batches (QoS 1, PUBACK awaited in windows)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = 0
    try:
        for i in range(AGENTS):
            site = f"s{i}"
            infos = [
                client.publish(f"availmon/v1/{site}/{site}/events", m, qos=1)
                for m in messages(site, per_agent)
            ]
            for info in infos:
                info.wait_for_publish(timeout=300)
                if not info.is_published():
                    raise RuntimeError("publish not acknowledged")
            sent += per_agent
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


async def queue_backlog(port: int, per_agent: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        sent = await loop.run_in_executor(pool, publish, port, per_agent)
    return sent, time.monotonic() - started


async def subscribe_once(port: int, client_id: str, topic: str) -> None:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=client_id, clean_session=False
    ) as client:
        await client.subscribe(topic, qos=1)


async def drain_collector(cfg: Estate, total: int) -> float:
    collector = Collector(cfg)
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(collector.run(stop))

    def accounted() -> int:
        """Events stored or rejected: a rejection ends the wait too, and shows in the result
        (an estate that refuses the bench's events must not hang the run for an hour)."""
        registry = collector.metrics.registry
        rejected = sum(
            registry.get_sample_value("availmon_events_rejected_total", {"reason": r}) or 0
            for r in REJECT_REASONS
        )
        return int((registry.get_sample_value("availmon_events_ingested_total") or 0) + rejected)

    async with collector.changed:
        await asyncio.wait_for(collector.changed.wait_for(lambda: accounted() >= total), 3600)
    took = time.monotonic() - started
    stop.set()
    await task
    return took


async def drain_bare(port: int, db: Path, total: int) -> float:
    """aiomqtt -> json -> sqlite, as lean as it gets (auto-ack after the handler)."""
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, payload TEXT)")
    stored = 0
    started = time.monotonic()
    async with aiomqtt.Client("127.0.0.1", port, identifier="bare", clean_session=False) as client:
        await client.subscribe("availmon/v1/+/+/events", qos=1)
        msgs = client.messages
        async for first in msgs:
            batch = [first]
            while len(batch) < 50 and len(msgs) > 0:
                batch.append(await anext(msgs))
            rows = []
            for m in batch:
                assert isinstance(m.payload, bytes)
                rows += [(e["id"], json.dumps(e)) for e in json.loads(m.payload)["events"]]
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO events VALUES (?, ?)", rows)
            conn.execute("COMMIT")
            stored += len(rows)
            if stored >= total:
                break
    conn.close()
    return time.monotonic() - started


async def measure(tmp: Path, port: int, events: int) -> dict[str, Any]:
    per_agent = events // AGENTS
    cfg = estate(tmp, port)
    # Persistent sessions for both consumers, so the broker queues the backlog for each.
    await subscribe_once(port, cfg.collector.client_id, "availmon/v1/+/+/events")
    await subscribe_once(port, "bare", "availmon/v1/+/+/events")
    sent, publish_s = await queue_backlog(port, per_agent)
    # Both drains run with the garbage collector set as ``availmon collector`` sets it.
    tune_gc()
    cpu = cpu_seconds()
    bare_s = await drain_bare(port, tmp / "bare.db", sent)
    bare_cpu = cpu_seconds() - cpu
    cpu = cpu_seconds()
    collector_s = await drain_collector(cfg, sent)
    collector_cpu = cpu_seconds() - cpu
    conn = sqlite3.connect(str(cfg.collector.database))
    stored = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    conn.close()
    return {
        "events": sent,
        "agents": AGENTS,
        "events_per_message": PER_MESSAGE,
        "stored": stored,
        "publish_seconds": round(publish_s, 1),
        "collector_seconds": round(collector_s, 1),
        "collector_events_per_second": round(sent / collector_s),
        "bare_seconds": round(bare_s, 1),
        "bare_events_per_second": round(sent / bare_s),
        "ratio_to_bare": round(bare_s / collector_s, 2),
        # CPU of this process (both threads of the collector) per event: what the drain
        # costs whatever else the machine is doing; the rates move with the load.
        "collector_cpu_us_per_event": round(collector_cpu / sent * 1e6, 1),
        "bare_cpu_us_per_event": round(bare_cpu / sent * 1e6, 1),
    }


def cpu_seconds() -> float:
    """User and system CPU of this process so far (the publisher is another process)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(events: int = 200_000) -> dict[str, Any]:
    """The figures of one run (for bench/run.py)."""
    from tests.peers import mosquitto

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as d:
            conf = "max_inflight_messages 1000\nautosave_interval 3600"
            async with mosquitto(Path(d) / "mq", extra_conf=conf) as broker:
                return await measure(Path(d), broker.port, events)

    return asyncio.run(main())


if __name__ == "__main__":  # pragma: no cover - manual benchmark
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
    print(json.dumps(result, indent=2))
