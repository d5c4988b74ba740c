"""Liveness end to end: agents killed with kill -9 (their last will reaches the collector
through a real Mosquitto), the provisional "site unreachable" outage, its replacement when
the agent returns, and no invented outages when every agent drops at once.

The grace period is evaluated at a chosen time (``check_liveness(now=...)``) rather than
slept through, so nothing here waits on the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from availmon.clock import utcnow
from availmon.schema import State
from collector.main import Collector
from tests.e2e import procs
from tests.peers import HttpTarget, estate_data, http_target, mosquitto, wait_until

LATER = timedelta(hours=1)  # well past collector.offline_grace
DEADLINE = procs.DEADLINE  # only guards a hung test


@dataclass
class Rig:
    collector: Collector
    agents: dict[str, procs.Proc]
    target: HttpTarget

    def status(self, agent: str) -> str | None:
        a = self.collector.agents.get(agent)
        return a.status if a else None

    def provisional(self) -> list[dict[str, object]]:
        return [o for o in self.collector.store.outages() if o["source"] == "provisional"]

    async def until(self, predicate: object) -> None:
        await wait_until(self.collector.changed, predicate)  # type: ignore[arg-type]


def sites(target: HttpTarget) -> dict[str, object]:
    check = {
        "name": "web",
        "type": "http",
        "target": target.url,
        "area": "internet_web",
        "interval": 0.5,
        "timeout": 0.4,
    }
    return {s: {"partner": "CCC", "checks": [check]} for s in ("a", "b")}


@pytest.fixture
async def running_rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with mosquitto(tmp_path / "mq") as broker, http_target() as target:
        data = estate_data(tmp_path, broker.port, [], extra={"sites": sites(target)})
        config = procs.write_config(tmp_path / "estate.toml", data)
        collector = Collector(config)
        agents = {
            s: procs.agent(tmp_path / "estate.toml", s, tmp_path / f"{s}.log") for s in ("a", "b")
        }
        stop = asyncio.Event()
        task = asyncio.create_task(collector.run(stop))
        try:
            await asyncio.wait_for(collector.connected.wait(), DEADLINE)
            async with procs.running(*agents.values()):
                r = Rig(collector, agents, target)
                await r.until(lambda: r.status("a") == r.status("b") == "online")
                yield r
        finally:
            stop.set()
            await asyncio.wait_for(task, DEADLINE)


async def test_a_site_that_drops_gets_a_provisional_outage_until_it_returns(
    running_rig: Rig,
) -> None:
    r = running_rig
    await r.until(
        lambda: (
            all((c.state is State.UP) for c in r.collector.live.values())
            and len(r.collector.live) == 2
        )
    )
    await r.agents["a"].kill9()
    await r.until(lambda: r.status("a") == "offline")  # its last will, from the broker
    # Unknown at once, before offline_grace: an agent we cannot hear tells us nothing.
    assert r.collector.live[("a", "web")].state is State.UNKNOWN
    assert r.collector.live[("b", "web")].state is State.UP
    # ... while the site's provisional outage waits for offline_grace.
    await r.collector.check_liveness()
    assert r.provisional() == []

    await r.collector.check_liveness(now=utcnow() + LATER)
    opened = r.provisional()
    [outage] = opened
    assert (outage["site"], outage["area"], outage["state"], outage["end"]) == (
        "a",
        "network_telephony",
        "down",
        None,
    )
    assert "site unreachable" in str(outage["cause"])

    r.agents["a"].start()  # back; its spool is empty, so its own record (nothing) stands
    await r.until(lambda: r.status("a") == "online" and not r.provisional())
    left = r.provisional()
    invented = [o for o in opened if o["site"] != "a"]
    print(
        f"tally: provisional opened={len(opened)} replaced={len(opened) - len(left)} "
        f"invented={len(invented)}"
    )


async def test_every_agent_dropping_at_once_invents_no_outage(running_rig: Rig) -> None:
    r = running_rig
    for proc in r.agents.values():
        await proc.kill9()
    await r.until(lambda: r.status("a") == r.status("b") == "offline")
    await r.collector.check_liveness(now=utcnow() + LATER)
    all_offline = r.provisional()
    assert all_offline == []
    # One comes back: the other is now a site of its own that cannot be reached.
    r.agents["a"].start()
    await r.until(lambda: r.status("a") == "online")
    await r.collector.check_liveness(now=utcnow() + LATER)
    one_back = r.provisional()
    print(
        f"tally: all offline -> provisional {len(all_offline)}; one back -> provisional "
        f"{len(one_back)} (sites {sorted(str(o['site']) for o in one_back)})"
    )
    [outage] = one_back
    assert outage["site"] == "b"
