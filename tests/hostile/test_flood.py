"""10,000 mixed hostile messages through a real Mosquitto into a running collector
(issue 15): it stays up, every reject is counted by reason, every valid event among them is
stored, and the database passes ``PRAGMA integrity_check``."""

from __future__ import annotations

import asyncio
import json
import math
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt

from availmon.broker import packet_limit
from availmon.config import Estate
from availmon.schema import topic
from collector.main import Collector
from collector.metrics import REJECT_REASONS
from tests.peers import estate, mosquitto, wait_until, web_check

TOTAL = 10_000
VALID = 1_000  # down/up pairs of the one configured check: 500 outages, all closed
#: Only guards a hung test; nothing is timed.
DEADLINE = 300.0


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    #: The collector's verdict: a reject reason, or "ingested", "duplicate", "heartbeat".
    expect: str


def event_message(data: dict[str, Any] | bytes, expect: str, site: str = "hq",
                  agent: str = "hq") -> Message:  # fmt: skip
    """The one place events are put on the wire: one event per message on ``.../event``
    today. When events travel in batches, this is the only function to change."""
    payload = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Message(topic(site, agent, "event"), payload, expect)


def other_message(kind: str, payload: bytes, expect: str) -> Message:
    return Message(topic("hq", "hq", kind), payload, expect)  # type: ignore[arg-type]


def event(seq: int, at: datetime, **over: Any) -> dict[str, Any]:
    down = seq % 2 == 1
    data: dict[str, Any] = {
        "schema": 1,
        "id": f"hq:{seq}",
        "seq": seq,
        "site": "hq",
        "agent": "hq",
        "check": "web",
        "area": "internet_web",
        "from": "up" if down else "down",
        "to": "down" if down else "up",
        "at": at.isoformat(),
        "detected_at": at.isoformat(),
        "evidence": {"error": "HTTP 503" if down else None, "latency": 0.12, "probes": 3},
    }
    data.update(over)
    return data


def invalid_variants(seq: int, at: datetime) -> list[dict[str, Any]]:
    """Events that fail the schema (or the id rule), each in its own way."""
    e = event(seq, at)
    return [
        {**e, "evidence": {"latency": math.nan}},
        {**e, "evidence": {"latency": math.inf}},
        {**e, "evidence": {"latency": -math.inf}},
        {**e, "evidence": {"latency": -1.5}},
        {**e, "evidence": {"loss": 250.0}},
        {**e, "evidence": {"error": "<script>" * 100}},
        {**e, "seq": 2**64, "id": f"hq:{2**64}"},
        {**e, "to": "exploded"},
        {**e, "schema": 2},
        {**e, "surprise": "<img src=x onerror=alert(1)>"},
        {k: v for k, v in e.items() if k != "check"},
        {**e, "at": "2026-01-05T09:00:00"},  # no offset
        {**e, "detected_at": "0001-01-01T00:00:00+14:00"},
        {**e, "id": "hq:1"},  # not agent:seq
        {**e, "check": "\x1b[2Jweb"},
        {**e, "area": "</td><script>"},
        {**e, "site": ["hq"]},
        {**e, "seq": "1e999"},
    ]


def build(cfg: Estate, now: datetime) -> list[Message]:
    rng = random.Random(15)
    base = now - timedelta(hours=3)
    valid = [event(seq, base + timedelta(seconds=seq)) for seq in range(1, VALID + 1)]
    hostile: list[Message] = []
    seq = 100_000  # ids the valid stream never uses

    def next_seq() -> int:
        nonlocal seq
        seq += 1
        return seq

    def add(n: int, make: Any) -> None:
        hostile.extend(make(i) for i in range(n))

    # Not JSON at all (the "#..." tail makes sure of it): nesting too deep to parse, binary.
    junk = [b"", b"{", b"\x00\xff\xfe", b"[" * 20_000 + b"]" * 20_000, b"NaN", b'{"a":']
    add(1_000, lambda i: event_message(junk[i % len(junk)] + f"#{i}".encode(), "malformed"))
    add(200, lambda i: other_message("status", f"sideways-{i}".encode(), "malformed"))
    add(
        3_200,
        lambda i: event_message(invalid_variants(next_seq(), base)[i % 18], "invalid"),
    )
    # Just over the collector's limit, under the broker's: the collector counts these.
    over = cfg.collector.max_payload_bytes + 100
    add(20, lambda i: event_message(b"{" + b" " * over + b"}", "oversized"))
    add(500, lambda i: event_message(event(next_seq(), base), "unknown_site", "nowhere",
                                     "nowhere"))  # fmt: skip
    add(500, lambda i: event_message(event(next_seq(), base), "agent_mismatch", "hq", "impostor"))
    add(500, lambda i: event_message(event(next_seq(), base, site="elsewhere"), "site_mismatch"))
    add(1_000, lambda i: event_message(event(next_seq(), base, check=f"ghost-{i}"),
                                       "unknown_check"))  # fmt: skip
    add(500, lambda i: event_message(event(next_seq(), base, area=f"made_up_{i}"),
                                     "unknown_area"))  # fmt: skip
    add(500, lambda i: event_message(event(next_seq(), base, area="email"), "area_mismatch"))
    add(500, lambda i: event_message(event(next_seq(), now + timedelta(days=1 + i)), "future"))

    def heartbeat(i: int) -> Message:
        checks = [{"check": "web", "area": "internet_web", "state": "up", "latency": 0.1}]
        checks += [{"check": f"junk-{i}-{j}", "area": "email", "state": "down"} for j in range(5)]
        hb = {"schema": 1, "site": "hq", "agent": "hq", "at": now.isoformat(), "seq": VALID,
              "spool_depth": 0, "checks": checks}  # fmt: skip
        return other_message("heartbeat", json.dumps(hb).encode(), "heartbeat")

    add(380, heartbeat)
    # The valid stream keeps its order; hostile messages go anywhere around it.
    messages = [event_message(e, "ingested") for e in valid]
    for m in hostile:
        messages.insert(rng.randrange(len(messages) + 1), m)
    # Replays and reused ids come after the originals they repeat.
    for e in rng.sample(valid, 100):
        messages.append(event_message(e, "duplicate"))
    for e in rng.sample(valid, 100):
        messages.append(event_message({**e, "at": base.isoformat()}, "seq_conflict"))
    assert len(messages) == TOTAL
    return messages


async def publish_all(port: int, messages: list[Message]) -> None:
    """Every message, in order, QoS 1, from one client (MQTT keeps one client's order)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="hostile-publisher") as client:
        for m in messages:
            await client.publish(m.topic, m.payload, qos=1)


async def test_ten_thousand_hostile_messages(tmp_path: Path) -> None:
    cfg = estate(tmp_path, 1883, [web_check("http://127.0.0.1:9/")])
    # The broker as `availmon broker` renders it: packets over the limit are cut off there.
    conf = f"max_packet_size {packet_limit(cfg)}\n"
    async with mosquitto(tmp_path / "mq", conf) as broker:
        cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
        collector = Collector(cfg)
        now = datetime.now(UTC)
        messages = build(cfg, now)
        expected = Counter(m.expect for m in messages)
        stop = asyncio.Event()

        def sample(name: str, **labels: str) -> float:
            return collector.metrics.registry.get_sample_value(name, labels or None) or 0.0

        async with asyncio.timeout(DEADLINE), asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(stop))
            await collector.connected.wait()
            await collector.web_ready.wait()
            await publish_all(broker.port, messages)
            await wait_until(
                collector.changed,
                lambda: sample("availmon_mqtt_messages_total") >= TOTAL,
                DEADLINE,
            )
            # Still up: connected, and the web server answers.
            assert collector.connected.is_set()
            url = f"http://127.0.0.1:{collector.web_port}/healthz"
            async with aiohttp.ClientSession() as s, s.get(url) as r:
                assert r.status == 200
            stop.set()

        rejected = {
            reason: int(sample("availmon_events_rejected_total", reason=reason))
            for reason in REJECT_REASONS
        }
        print("expected:", dict(sorted(expected.items())))
        print("rejected:", {k: v for k, v in rejected.items() if v})
        assert rejected == {r: expected.get(r, 0) for r in REJECT_REASONS}
        assert sample("availmon_events_ingested_total") == expected["ingested"] == VALID
        assert sample("availmon_events_duplicate_total") == expected["duplicate"]
        assert sample("availmon_heartbeats_total") == expected["heartbeat"]
        assert sample("availmon_heartbeat_checks_ignored_total") == 5 * expected["heartbeat"]

    db = sqlite3.connect(cfg.collector.database)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == VALID
        assert db.execute("SELECT DISTINCT check_name, area FROM events").fetchall() == [
            ("web", "internet_web")
        ]
        outages = db.execute("SELECT count(*), count(end) FROM outages").fetchone()
        assert outages == (VALID // 2, VALID // 2)  # every outage closed
        assert db.execute("SELECT check_name FROM check_status").fetchall() == [("web",)]
        assert db.execute("SELECT count(*) FROM conflicts").fetchone()[0] == 100
    finally:
        db.close()
