"""Agent -> broker -> collector, for real: a loopback HTTP target fails, then recovers, and
the store holds exactly one outage from the first failed probe to the first good one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.main import Agent
from availmon.clock import to_iso
from availmon.config import Check
from availmon.schema import State
from collector.main import Collector
from probes.base import ProbeResult
from tests.peers import amqtt_broker, estate, http_target, mosquitto, wait_until, web_check


def broker_for(kind: str, tmp: Path) -> AbstractAsyncContextManager[Any]:
    return mosquitto(tmp / "mosquitto") if kind == "mosquitto" else amqtt_broker()


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with broker_for(request.param, tmp_path) as b:
        yield b


async def test_outage_from_first_failed_to_first_good_probe(broker: Any, tmp_path: Path) -> None:
    async with http_target() as target:
        cfg = estate(
            tmp_path,
            broker.port,
            [web_check(target.url)],
        )
        probes: list[tuple[datetime, bool]] = []

        def record(_: Check, result: ProbeResult, at: datetime) -> None:
            probes.append((at, result.ok))

        collector = Collector(cfg)
        agent = Agent(cfg, "hq", on_result=record)
        stop = asyncio.Event()

        def state() -> State | None:
            live = collector.live.get(("hq", "web"))
            return live.state if live else None

        def outages_closed() -> bool:
            rows = collector.store.outages()
            return state() is State.UP and bool(rows) and all(r["end"] for r in rows)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(stop))
            await asyncio.wait_for(collector.connected.wait(), 30)  # 30 s: only a hang
            tg.create_task(agent.run(stop))
            await wait_until(collector.changed, lambda: state() is State.UP)
            target.healthy = False
            await wait_until(collector.changed, lambda: state() is State.DOWN)
            target.healthy = True
            await wait_until(collector.changed, outages_closed)
            stop.set()

    from collector.store import Store

    store = Store(cfg.collector.database)
    outages = store.outages()
    assert len(outages) == 1, outages
    outage = outages[0]
    first_fail = next(i for i, (_, ok) in enumerate(probes) if not ok)
    last_fail = max(i for i, (_, ok) in enumerate(probes) if not ok)
    first_good_after = next(i for i in range(last_fail + 1, len(probes)) if probes[i][1])
    assert outage["state"] == "down"
    assert outage["start"] == to_iso(probes[first_fail][0])
    assert outage["end"] == to_iso(probes[first_good_after][0])
    assert (outage["site"], outage["check_name"], outage["area"]) == ("hq", "web", "internet_web")
    # Every event reached the store: unknown->up, up->down, down->up.
    assert [(e["from_state"], e["to_state"]) for e in store.events()] == [
        ("unknown", "up"),
        ("up", "down"),
        ("down", "up"),
    ]
