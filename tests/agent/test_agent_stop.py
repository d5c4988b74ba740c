"""An agent stopped cleanly says ``stopped`` (retained), so its site is not counted as
unreachable: a clean MQTT disconnect sends no last will, and without this its retained status
would stay ``online`` for ever. Real agent, collector and Mosquitto on loopback."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import aiomqtt

from agent.main import Agent
from availmon.clock import utcnow
from availmon.schema import State, topic
from collector.main import Collector
from tests.peers import estate, http_target, mosquitto, wait_until, web_check

DEADLINE = 30.0  # only guards a hung test


async def retained(port: int, where: str) -> bytes:
    """The retained message on ``where``, as a new subscriber receives it."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-reader") as client:
        await client.subscribe(where, qos=1)
        async with asyncio.timeout(DEADLINE):
            async for message in client.messages:
                assert message.retain
                return bytes(message.payload)  # type: ignore[arg-type]
    raise AssertionError("no retained message")


async def test_a_clean_stop_publishes_stopped(tmp_path: Path) -> None:
    async with mosquitto(tmp_path / "mq") as broker, http_target() as target:
        # Two sites, so that one going away is not "every agent at once".
        sites = {s: {"partner": "CCC", "checks": [web_check(target.url)]} for s in ("hq", "b")}
        cfg = estate(tmp_path, broker.port, [], extra={"sites": sites})
        collector = Collector(cfg)
        hq, b = Agent(cfg, "hq"), Agent(cfg, "b")
        stop_all, stop_hq = asyncio.Event(), asyncio.Event()

        def status(agent: str) -> str | None:
            a = collector.agents.get(agent)
            return a.status if a else None

        def up(site: str) -> bool:
            live = collector.live.get((site, "web"))
            return live is not None and live.state is State.UP

        async with asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(stop_all))
            await asyncio.wait_for(collector.connected.wait(), DEADLINE)
            hq_task = tg.create_task(hq.run(stop_hq))
            tg.create_task(b.run(stop_all))
            await wait_until(collector.changed, lambda: up("hq") and up("b"))
            assert await retained(broker.port, topic("hq", "hq", "status")) == b"online"

            stop_hq.set()
            await asyncio.wait_for(hq_task, DEADLINE)
            await wait_until(collector.changed, lambda: status("hq") == "stopped")
            assert await retained(broker.port, topic("hq", "hq", "status")) == b"stopped"
            # Its checks say nothing now, but its site is not unreachable: no outage, even
            # long past offline_grace.
            assert collector.live[("hq", "web")].state is State.UNKNOWN
            await collector.check_liveness(now=utcnow() + timedelta(hours=1))
            assert collector.store.outages(open_only=True) == []
            assert status("b") == "online"
            stop_all.set()
