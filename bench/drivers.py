"""Load generators, each run in a process of its own: ``python -m bench.drivers NAME JSON``.

A driver that measures availmon reads its own CPU (``time.process_time``) around the work
only, so interpreter start-up and imports are not counted; a driver that loads a peer
(blackbox_exporter) is only the client: the runner reads the peer's CPU from /proc.
Every loop is bounded in count and in time, and talks to loopback only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

Driver = Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]


async def _workers(
    total: int, concurrency: int, one: Callable[[], Awaitable[bool]], limit: float
) -> tuple[int, int]:
    """Run ``one`` ``total`` times with ``concurrency`` in flight: (done, failed)."""
    done = failed = 0
    end = time.monotonic() + limit
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal done, failed
        while True:
            async with lock:
                if done >= total or time.monotonic() > end:
                    return
                done += 1
            if not await one():
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, failed


async def http_availmon(a: dict[str, Any]) -> dict[str, Any]:
    """availmon's HTTP client probing nginx with ``concurrency`` probes in flight."""
    from probes import http

    options = http.Options()
    async with http.session() as client:
        await client.probe(a["url"], 5, options)  # warm: the TLS context is built once

        async def one() -> bool:
            return (await client.probe(a["url"], 5, options)).ok

        cpu0, wall0 = time.process_time(), time.perf_counter()
        done, failed = await _workers(a["total"], a["concurrency"], one, a.get("limit", 120))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"probes": done, "failed": failed, "wall": wall, "cpu": cpu}


async def blackbox_load(a: dict[str, Any]) -> dict[str, Any]:
    """Prometheus' part: ask blackbox_exporter for ``total`` probes, ``concurrency`` at once."""
    import aiohttp

    url = f"http://127.0.0.1:{a['port']}/probe"
    params = {"target": a["target"], "module": a["module"]}
    async with aiohttp.ClientSession() as session:

        async def one() -> bool:
            async with session.get(url, params=params) as response:
                body = await response.text()
            return "probe_success 1" in body

        await one()
        wall0 = time.perf_counter()
        done, failed = await _workers(a["total"], a["concurrency"], one, a.get("limit", 120))
        wall = time.perf_counter() - wall0
    return {"probes": done, "failed": failed, "wall": wall}


async def icmp_availmon(a: dict[str, Any]) -> dict[str, Any]:
    """CPU of each round of ``probe_many`` over ``targets`` (one echo each), after a warm-up."""
    from probes import icmp

    options = icmp.Options(count=1)
    targets = a["targets"]
    await icmp.probe_many(targets, 2, options)
    rounds = []
    for _ in range(a["rounds"]):
        cpu0 = time.process_time()
        results = await icmp.probe_many(targets, 2, options)
        rounds.append(time.process_time() - cpu0)
        if not all(r.ok for r in results):
            bad = [r for r in results if not r.ok][:3]
            raise SystemExit(f"ICMP round lost replies: {bad}")
    return {"rounds": rounds}


def _snmp_checks(a: dict[str, Any]) -> list[tuple[str, Any]]:
    from probes import snmp

    secret = a["community_file"]
    out = []
    for address in a["addresses"]:
        for i in range(a["interfaces"]):
            options = snmp.Options(community_file=secret, interface=f"bench{i}", retries=0)
            out.append((f"{address}:{a['port']}", options))
    return out


async def snmp_availmon(a: dict[str, Any]) -> dict[str, Any]:
    """availmon's poller: 50 devices x 20 interface checks, one grouped poll per device."""
    from probes import snmp
    from probes.base import Poll

    checks = _snmp_checks(a)
    by_device: dict[str, list[Poll]] = {}
    for target, options in checks:
        by_device.setdefault(target, []).append(Poll(target, options))
    async with snmp.session() as poller:

        async def one_round() -> list[list[Any]]:
            groups = list(by_device.values())
            return await asyncio.gather(*(poller.probe_group(g, 5) for g in groups))

        first = await one_round()  # discovery walk; later polls carry the ifIndex
        for device, results in zip(list(by_device), first, strict=True):
            by_device[device] = [
                Poll(p.target, p.options, r)
                for p, r in zip(by_device[device], results, strict=True)
            ]
        rounds = []
        for _ in range(a["rounds"]):
            cpu0 = time.process_time()
            results = await one_round()
            rounds.append(time.process_time() - cpu0)
            flat = [r for group in results for r in group]
            if not all(r.ok for r in flat):
                raise SystemExit(f"SNMP poll failed: {[r for r in flat if not r.ok][:3]}")
            for device, group in zip(list(by_device), results, strict=True):
                by_device[device] = [
                    Poll(p.target, p.options, r)
                    for p, r in zip(by_device[device], group, strict=True)
                ]
    return {"rounds": rounds, "checks": len(checks)}


async def snmp_raw(a: dict[str, Any]) -> dict[str, Any]:
    """The peer: bare pysnmp, one engine, one GET per device with the same status OIDs."""
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        get_cmd,
    )

    from probes.snmp import IF_ADMIN, IF_OPER, SYS_UPTIME

    engine = SnmpEngine()
    community = Path(a["community_file"]).read_text().strip()  # noqa: ASYNC240
    auth = CommunityData(community, mpModel=1)
    oids = [SYS_UPTIME]
    for index in a["if_indexes"]:
        oids += [f"{IF_ADMIN}.{index}", f"{IF_OPER}.{index}"]

    async def poll(address: str) -> bool:
        transport = await UdpTransportTarget.create((address, a["port"]), timeout=5, retries=0)
        err, status, _index, varbinds = await get_cmd(
            engine,
            auth,
            transport,
            ContextData(),
            *(ObjectType(ObjectIdentity(o)) for o in oids),
            lookupMib=False,
        )
        return not err and not status and len(varbinds) == len(oids)

    await asyncio.gather(*(poll(d) for d in a["addresses"]))
    rounds = []
    for _ in range(a["rounds"]):
        cpu0 = time.process_time()
        ok = await asyncio.gather(*(poll(d) for d in a["addresses"]))
        rounds.append(time.process_time() - cpu0)
        if not all(ok):
            raise SystemExit("raw pysnmp poll failed")
    engine.close_dispatcher()
    return {"rounds": rounds}


async def snmp_start(a: dict[str, Any]) -> dict[str, Any]:
    """An agent's start with ``n`` snmp checks: config parsed, scheduler built, engine ready."""
    from agent.scheduler import Scheduler
    from availmon.config import parse_config
    from probes.registry import REGISTRY

    checks = [
        {
            "name": f"snmp{i}",
            "type": "snmp",
            "target": f"127.0.{1 + i // 20}.1:1161",
            "area": "network_telephony",
            "interval": 60,
            "community_file": a["community_file"],
            "interface": f"bench{i % 20}",
        }
        for i in range(a["n"])
    ]
    estate = parse_config({"sites": {"s": {"partner": "p", "checks": checks}}}, "bench")

    async def sink(*_: Any) -> None:
        return None

    scheduler = Scheduler(estate.sites["s"].checks, sink)
    groups = scheduler.groups()
    factory = REGISTRY["snmp"].session
    assert factory is not None
    async with factory():
        pass  # the engine is built (in a thread) on entry: that is the start-up cost
    return {"groups": len(groups)}


async def rest_blackbox(a: dict[str, Any]) -> dict[str, Any]:
    """Ask blackbox_exporter for what the agent at rest does, at the same rates, for a while."""
    import aiohttp

    url = f"http://127.0.0.1:{a['port']}/probe"
    end = time.monotonic() + a["duration"]
    sent = 0

    async def schedule(
        session: aiohttp.ClientSession, target: str, module: str, every: float, offset: float
    ) -> None:
        nonlocal sent
        await asyncio.sleep(offset)
        while time.monotonic() < end:
            started = time.monotonic()
            async with session.get(url, params={"target": target, "module": module}) as r:
                await r.read()
            sent += 1
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))

    async with aiohttp.ClientSession() as session:
        jobs = []
        jobs_list = json.loads(Path(a["jobs_file"]).read_text())  # noqa: ASYNC240
        for i, (target, module, every) in enumerate(jobs_list):
            offset = (i * 7919 % 1000) / 1000 * every
            jobs.append(schedule(session, target, module, every, offset))
        tasks = [asyncio.ensure_future(j) for j in jobs]
        try:
            await asyncio.wait(tasks, timeout=a["duration"] + 10)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"probes": sent}


DRIVERS: dict[str, Driver] = {
    "http_availmon": http_availmon,
    "blackbox_load": blackbox_load,
    "icmp_availmon": icmp_availmon,
    "snmp_availmon": snmp_availmon,
    "snmp_raw": snmp_raw,
    "snmp_start": snmp_start,
    "rest_blackbox": rest_blackbox,
}


def main() -> None:
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(asyncio.run(DRIVERS[name](args))))


if __name__ == "__main__":
    main()
