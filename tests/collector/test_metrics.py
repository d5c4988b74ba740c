"""The per-check and per-agent series the README lists, read from the collector's real
/metrics endpoint after it has handled real wire messages (statuses, heartbeats, events).

A value not measured is absent, not 0 (STYLE.md): ``availmon_check_up`` has no sample while a
check is unknown, and ``availmon_check_latency_seconds`` none until a latency is known."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from availmon.schema import CheckStatus, Event, Heartbeat, State, topic
from collector.main import Collector
from collector.web import make_app
from tests.e2e import procs
from tests.peers import estate, event_messages

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
CHECKS = [
    {"name": "web", "type": "http", "target": "http://127.0.0.1:1/", "area": "internet_web"},
    {"name": "mail", "type": "tcp", "target": "127.0.0.1:1", "area": "email"},
]
WEB = (("area", "internet_web"), ("check", "web"), ("site", "hq"))
MAIL = (("area", "email"), ("check", "mail"), ("site", "hq"))
AGENT = (("agent", "hq"), ("site", "hq"))


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    c = Collector(estate(tmp_path, 1, CHECKS))
    try:
        yield c
    finally:
        c.close()


async def scrape(aiohttp_client: Any, collector: Collector) -> Samples:
    client = await aiohttp_client(make_app(collector))
    resp = await client.get("/metrics")
    assert resp.status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def states(samples: Samples, check: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """``availmon_check_state`` for one check, as {state: value}."""
    out = {}
    for labels, value in series(samples, "availmon_check_state").items():
        d = dict(labels)
        if tuple(sorted((k, v) for k, v in d.items() if k != "state")) == check:
            out[d["state"]] = value
    return out


def heartbeat(at: datetime, web: State, mail: State) -> tuple[str, bytes]:
    hb = Heartbeat(
        site="hq",
        agent="hq",
        at=at,
        seq=7,
        spool_depth=4,
        spool_dropped=2,
        checks=[
            CheckStatus(check="web", area="internet_web", state=web, latency=0.012),
            CheckStatus(check="mail", area="email", state=mail),
        ],
    )
    return topic("hq", "hq", "heartbeat"), hb.to_json()


def status(text: str) -> tuple[str, bytes]:
    return topic("hq", "hq", "status"), text.encode()


def web_event(seq: int, at: datetime, frm: State, to: State) -> Event:
    return Event.model_validate(
        {
            "id": f"hq:{seq}",
            "seq": seq,
            "site": "hq",
            "agent": "hq",
            "check": "web",
            "area": "internet_web",
            "from": frm,
            "to": to,
            "at": at,
            "detected_at": at,
            "evidence": {"error": "HTTP 503", "latency": 0.5},
        }
    )


async def test_check_and_agent_series_follow_what_the_collector_hears(
    collector: Collector, aiohttp_client: Any
) -> None:
    now = datetime.now(UTC)
    before = await scrape(aiohttp_client, collector)
    for name in ("availmon_check_up", "availmon_check_state", "availmon_agent_online"):
        assert series(before, name) == {}, name  # nothing heard yet: nothing to say
    assert series(before, "availmon_store_busy_total") == {(): 0.0}

    await collector.handle_batch([status("online"), heartbeat(now, State.UP, State.UNKNOWN)])
    got = await scrape(aiohttp_client, collector)
    assert series(got, "availmon_check_up") == {WEB: 1.0}  # mail is unknown: absent, not 0
    assert states(got, WEB) == {"up": 1.0, "degraded": 0.0, "down": 0.0, "unknown": 0.0}
    assert states(got, MAIL) == {"up": 0.0, "degraded": 0.0, "down": 0.0, "unknown": 1.0}
    assert series(got, "availmon_check_latency_seconds") == {WEB: 0.012}
    assert series(got, "availmon_agent_online") == {AGENT: 1.0}
    assert series(got, "availmon_agent_spool_depth") == {AGENT: 4.0}
    assert series(got, "availmon_agent_spool_dropped_total") == {AGENT: 2.0}

    # web goes down: up is 0 (measured), its state says so, latency is the event's.
    await collector.handle_batch(
        event_messages("hq", "hq", [web_event(8, now, State.UP, State.DOWN)])
    )
    got = await scrape(aiohttp_client, collector)
    assert series(got, "availmon_check_up") == {WEB: 0.0}
    assert states(got, WEB) == {"up": 0.0, "degraded": 0.0, "down": 1.0, "unknown": 0.0}
    assert series(got, "availmon_check_latency_seconds") == {WEB: 0.5}

    # The agent's last will: it is offline, and every check of its is unknown at once.
    await collector.handle_batch([status("offline")])
    got = await scrape(aiohttp_client, collector)
    assert series(got, "availmon_agent_online") == {AGENT: 0.0}
    assert series(got, "availmon_check_up") == {}
    assert states(got, WEB)["unknown"] == 1.0
    assert series(got, "availmon_check_latency_seconds") == {}


def spool_heartbeat(
    at: datetime, unwritten: int | None, error: str | None = None
) -> tuple[str, bytes]:
    """A heartbeat saying what the spool holds in memory and why; ``unwritten`` None: an
    older agent's, without either field."""
    hb = Heartbeat(site="hq", agent="hq", at=at, seq=7, spool_depth=12, checks=[])
    if unwritten is None:
        payload = hb.model_dump_json(by_alias=True, exclude={"spool_unwritten", "spool_error"})
        return topic("hq", "hq", "heartbeat"), payload.encode()
    hb = hb.model_copy(update={"spool_unwritten": unwritten, "spool_error": error})
    return topic("hq", "hq", "heartbeat"), hb.to_json()


async def test_an_agents_spool_that_cannot_be_written_shows_until_it_can(
    collector: Collector, aiohttp_client: Any
) -> None:
    """The heartbeat's spool_unwritten and spool_error, per agent: 0 and 1 while it is
    written, the count and 0 while it cannot be; absent for an older agent, which says
    nothing of either (not "writable")."""
    now = datetime.now(UTC)
    await collector.handle_batch([status("online"), spool_heartbeat(now, None)])
    got = await scrape(aiohttp_client, collector)
    assert series(got, "availmon_agent_spool_depth") == {AGENT: 12.0}
    assert series(got, "availmon_agent_spool_unwritten") == {}
    assert series(got, "availmon_agent_spool_writable") == {}

    full = "database or disk is full (SQLITE_FULL)"
    for unwritten, error, writable in [(0, None, 1.0), (12, full, 0.0), (0, None, 1.0)]:
        await collector.handle_batch([spool_heartbeat(now, unwritten, error)])
        got = await scrape(aiohttp_client, collector)
        assert series(got, "availmon_agent_spool_unwritten") == {AGENT: float(unwritten)}
        assert series(got, "availmon_agent_spool_writable") == {AGENT: writable}
        client = await aiohttp_client(make_app(collector))
        [agent] = (await (await client.get("/api/v1/status")).json())["agents"]
        assert (agent["spool_unwritten"], agent["spool_error"]) == (unwritten, error)
    # The agent's status changing keeps what its last heartbeat said.
    await collector.handle_batch([spool_heartbeat(now, 12, full), status("offline")])
    got = await scrape(aiohttp_client, collector)
    assert series(got, "availmon_agent_spool_writable") == {AGENT: 0.0}


async def test_store_busy_counts_writes_refused_by_a_lock(
    collector: Collector, aiohttp_client: Any
) -> None:
    """Another connection holds the write lock; the writer's busy_timeout is cut to 0 so that
    its first attempt is refused at once and retried (the 30 s default would wait it out)."""
    collector.store.conn.execute("PRAGMA busy_timeout=0")
    locker = sqlite3.connect(collector.estate.collector.database, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        ev = web_event(1, datetime.now(UTC), State.UNKNOWN, State.UP)
        work = asyncio.create_task(collector.handle_batch(event_messages("hq", "hq", [ev])))

        def busy() -> float:
            return collector.metrics.registry.get_sample_value("availmon_store_busy_total") or 0

        # The counter has no event to await: poll it, bounded.
        await procs.poll_until(lambda: work.done() or busy() >= 1, what="a refused write")
        assert not work.done()  # still waiting for the lock, nothing lost
    finally:
        locker.execute("COMMIT")
        locker.close()
    await asyncio.wait_for(work, procs.DEADLINE)
    got = await scrape(aiohttp_client, collector)
    assert series(got, "availmon_store_busy_total")[()] >= 1
    assert [e["id"] for e in collector.store.events()] == ["hq:1"]
