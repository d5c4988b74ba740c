"""The collector drains a backlog from its persistent session (as `availmon
broker` configures Mosquitto), and two collectors side by side end with identical outage tables.

The backlog here is a few thousand events, enough for several full batches from each of four
publishers: the test is about every event arriving once, not about speed. The 200,000-event
drain and its rates are ``make bench`` (bench/README.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.main import Agent
from bench.backlog import deadline_for, run
from collector.main import Collector
from collector.store import Store
from tests.peers import estate, http_target, mosquitto, wait_until, web_check

#: At least four collector batches (batch_size 1000): 1,000 events from each of four agents.
BACKLOG = 4_000
CONNECTED = 30.0  # only guards a hung test


async def test_collector_drains_a_backlog(tmp_path: Path) -> None:
    async with mosquitto(tmp_path / "mq", extra_conf="max_inflight_messages 1000") as broker:
        result = await run(tmp_path, broker.port, BACKLOG, agents=4, deadline=deadline_for(BACKLOG))
    store = Store(tmp_path / "collector.db")
    try:
        outages = store.outages()
        in_store = store.event_count()
    finally:
        store.close()
    print(
        f"tally: sent={result.sent} delivered={result.stored} "
        f"duplicates={result.duplicates} rejected={result.rejected}"
    )
    assert result.sent == BACKLOG
    assert in_store == BACKLOG
    assert result.stored == BACKLOG
    assert result.rejected == 0
    # Every event is a down or an up of one of 50 checks per agent: one closed outage a pair.
    assert len(outages) == BACKLOG // 2
    assert all(o["end"] is not None for o in outages)


def outage_table(path: Path) -> list[tuple[object, ...]]:
    store = Store(path)
    rows = [
        (o["id"], o["site"], o["check_name"], o["area"], o["state"], o["start"], o["end"])
        for o in store.outages()
    ]
    store.close()
    return sorted(rows, key=repr)


async def test_two_collectors_side_by_side_end_identical(tmp_path: Path) -> None:
    async with mosquitto(tmp_path / "mq") as broker, http_target() as target:
        check = web_check(target.url, failures_to_down=2, successes_to_up=1)
        cfg_a = estate(
            tmp_path / "a", broker.port, [check], extra={"collector": {"client_id": "collector-a"}}
        )
        cfg_b = estate(
            tmp_path / "b", broker.port, [check], extra={"collector": {"client_id": "collector-b"}}
        )
        a, b = Collector(cfg_a), Collector(cfg_b)
        agent = Agent(cfg_a, "hq")
        stop_a, stop_b, stop_agent = asyncio.Event(), asyncio.Event(), asyncio.Event()

        def closed(c: Collector, n: int) -> bool:
            rows = c.store.outages()
            return len(rows) == n and all(r["end"] for r in rows)

        def up(c: Collector) -> bool:
            live = c.live.get(("hq", "web"))
            return live is not None and live.state.value == "up"

        async with asyncio.TaskGroup() as tg:
            task_a = tg.create_task(a.run(stop_a))
            tg.create_task(b.run(stop_b))
            await asyncio.wait_for(a.connected.wait(), CONNECTED)
            await asyncio.wait_for(b.connected.wait(), CONNECTED)
            tg.create_task(agent.run(stop_agent))
            await wait_until(a.changed, lambda: up(a))
            target.healthy = False
            await wait_until(a.changed, lambda: bool(a.store.outages(open_only=True)))
            # Collector A goes away mid-outage; its persistent session keeps what it misses.
            stop_a.set()
            await task_a
            target.healthy = True
            await wait_until(b.changed, lambda: closed(b, 1))
            target.healthy = False
            await wait_until(b.changed, lambda: len(b.store.outages(open_only=True)) == 1)
            target.healthy = True
            await wait_until(b.changed, lambda: closed(b, 2))
            a = Collector(cfg_a)
            stop_a = asyncio.Event()
            tg.create_task(a.run(stop_a))
            await wait_until(a.changed, lambda: closed(a, 2))
            for stop in (stop_agent, stop_a, stop_b):
                stop.set()

    table_a = outage_table(cfg_a.collector.database)
    table_b = outage_table(cfg_b.collector.database)
    print(f"tally: outages a={len(table_a)} b={len(table_b)}")
    assert len(table_a) == 2
    assert table_a == table_b
