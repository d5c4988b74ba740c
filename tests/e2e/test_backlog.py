"""The collector drains a 200,000-message backlog from its persistent session (DESIGN.md,
"Delivery guarantees"), and two collectors side by side end with identical outage tables."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.main import Agent
from bench.backlog import run
from collector.main import Collector
from collector.store import Store
from tests.peers import estate, http_target, mosquitto, wait_until, web_check

BACKLOG = 200_000


async def test_collector_drains_a_200k_backlog(tmp_path: Path) -> None:
    async with mosquitto(tmp_path / "mq", extra_conf="max_inflight_messages 1000") as broker:
        result = await run(tmp_path, broker.port, BACKLOG, agents=4)
    store = Store(tmp_path / "collector.db")
    outages = store.outages()
    print(
        f"tally: sent={result.sent} delivered={result.stored} "
        f"duplicates={store.event_count() - result.stored} rejected={{}} "
        f"publish={result.publish_seconds:.0f}s drain={result.drain_seconds:.0f}s"
    )
    assert result.sent == BACKLOG
    assert store.event_count() == BACKLOG
    assert result.stored == BACKLOG
    # Every event is a down or an up of one of 50 checks per agent: 100,000 closed outages.
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
            await a.connected.wait()
            await b.connected.wait()
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
