"""How the scheduler groups checks and shares sessions (issue 9), against real peers."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.scheduler import Scheduler
from agent.state import Transition
from availmon.config import Check, parse_config
from probes.base import ProbeResult


def site_checks(checks: list[dict[str, Any]]) -> list[Check]:
    for i, check in enumerate(checks):
        check.setdefault("name", f"c{i}")
        check.setdefault("area", "servers")
    estate = parse_config({"sites": {"s": {"partner": "p", "checks": checks}}}, "test")
    return estate.sites["s"].checks


async def no_transitions(check: Check, transition: Transition, at: datetime) -> None:
    return None


def test_groups_icmp_batches_snmp_devices_and_lone_checks() -> None:
    snmp = {"type": "snmp", "community_env": "AVM_TEST_COMMUNITY", "interval": 60}
    checks = site_checks(
        [
            {"type": "icmp", "target": "127.0.0.1"},
            {"type": "icmp", "target": "127.0.0.2"},
            {"type": "icmp", "target": "127.0.0.3", "interval": 10},  # another schedule
            {**snmp, "target": "127.0.0.1:1161", "interface": "eth0"},
            {**snmp, "target": "127.0.0.1:1161", "oid": "1.3.6.1.2.1.1.3.0"},
            {**snmp, "target": "127.0.0.2:1161"},  # another device
            {"type": "http", "target": "http://127.0.0.1:1/"},
            {"type": "http", "target": "http://127.0.0.1:1/"},
        ]
    )
    scheduler = Scheduler(checks, no_transitions)
    groups = sorted(sorted(s.check.name for s in g) for g in scheduler.groups())
    assert groups == [["c0", "c1"], ["c2"], ["c3", "c4"], ["c5"], ["c6"], ["c7"]]


async def test_http_checks_share_one_client_and_still_connect_each_time() -> None:
    connections: list[tuple[str, int]] = []

    async def hello(request: web.Request) -> web.Response:
        assert request.transport is not None
        connections.append(request.transport.get_extra_info("peername"))  # client's port
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    seen: list[tuple[str, ProbeResult]] = []
    done = asyncio.Event()
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/"
        checks = site_checks(
            [{"type": "http", "target": url, "interval": 0.2, "timeout": 0.2} for _ in range(3)]
        )

        def on_result(check: Check, result: ProbeResult, at: datetime) -> None:
            seen.append((check.name, result))
            if len(seen) >= 9:
                done.set()

        scheduler = Scheduler(checks, no_transitions, on_result=on_result)
        task = asyncio.create_task(scheduler.run())
        try:
            async with asyncio.timeout(20):
                await done.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert all(result.ok for _, result in seen), [r.error for _, r in seen if not r.ok]
    assert {name for name, _ in seen} == {"c0", "c1", "c2"}
    assert len(set(connections)) == len(connections)  # a new connection for every probe
