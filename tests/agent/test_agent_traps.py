"""A linkDown trap from a configured device takes the matching snmp check down at once, and
linkUp brings it back; a deliberate shutdown (ifAdminStatus down) is not an outage. Real
traps from net-snmp's snmptrap to the agent's receiver on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from agent.main import Agent
from collector.main import Collector
from collector.store import Store
from tests.peers import amqtt_broker, estate, free_port, wait_until, write_secret

SNMPTRAP = shutil.which("snmptrap") or "/usr/bin/snmptrap"
LINK_DOWN, LINK_UP = "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4"

pytestmark = pytest.mark.skipif(
    not Path(SNMPTRAP).exists(), reason="needs net-snmp's snmptrap (Debian package snmp)"
)


async def snmptrap(tmp: Path, port: int, trap: str, admin: int = 1) -> None:
    env = {
        **os.environ,
        "SNMP_PERSISTENT_DIR": str(tmp / "persist"),
        "SNMPCONFPATH": str(tmp / "conf"),
        "MIBS": "",
        "MIBDIRS": str(tmp / "no-mibs"),
    }
    oper = 2 if trap == LINK_DOWN else 1
    varbinds = [
        "1.3.6.1.2.1.2.2.1.1.3",
        "i",
        "3",
        "1.3.6.1.2.1.2.2.1.7.3",
        "i",
        str(admin),
        "1.3.6.1.2.1.2.2.1.8.3",
        "i",
        str(oper),
        "1.3.6.1.2.1.31.1.1.1.1.3",
        "s",
        "eth0",
    ]
    proc = await asyncio.create_subprocess_exec(
        SNMPTRAP,
        "-r0",
        "-v2c",
        "-c",
        "trap-secret",
        f"127.0.0.1:{port}",
        "",
        trap,
        *varbinds,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 30)  # 30 s: only a hang
    assert proc.returncode == 0, err.decode()


async def test_link_traps_drive_the_snmp_check(tmp_path: Path) -> None:
    write_secret(tmp_path / "community", "trap-secret\n")
    trap_port = free_port()
    # The check polls a port where nothing answers, once an hour: only traps move it here.
    check = {
        "name": "core-uplink",
        "type": "snmp",
        "target": f"127.0.0.1:{free_port()}",
        "area": "network_telephony",
        "interval": "1h",
        "timeout": 1,
        "community_file": str(tmp_path / "community"),
        "interface": "eth0",
    }
    traps = {
        "listen": "127.0.0.1",
        "port": trap_port,
        "devices": [{"address": "127.0.0.1", "community_file": str(tmp_path / "community")}],
    }
    async with amqtt_broker() as broker:
        site = {"partner": "CCC", "checks": [check], "traps": traps}
        cfg = estate(tmp_path, broker.port, [], extra={"sites": {"hq": site}})
        collector, agent = Collector(cfg), Agent(cfg, "hq")
        stop = asyncio.Event()

        def transitions() -> list[tuple[str, str]]:
            return [(e["from_state"], e["to_state"]) for e in collector.store.events()]

        def traps_metric(outcome: str) -> float | None:
            labels = {"site": "hq", "agent": "hq", "outcome": outcome}
            return collector.metrics.registry.get_sample_value("availmon_agent_traps_total", labels)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(stop))
            await asyncio.wait_for(collector.connected.wait(), 30)  # 30 s: only a hang
            tg.create_task(agent.run(stop))
            await wait_until(collector.changed, lambda: "hq" in collector.agents)
            await asyncio.wait_for(agent.traps_ready.wait(), 30)
            await snmptrap(tmp_path, trap_port, LINK_DOWN, admin=2)  # shut on purpose
            await snmptrap(tmp_path, trap_port, LINK_DOWN)
            await wait_until(collector.changed, lambda: transitions() == [("unknown", "down")])
            await snmptrap(tmp_path, trap_port, LINK_UP)
            await wait_until(collector.changed, lambda: len(transitions()) == 2)
            # The receiver's counters reach /metrics through the agent's heartbeat (every 1 s
            # here): await the one that carries all three traps.
            await wait_until(collector.changed, lambda: traps_metric("accepted") == 3)
            stop.set()
        events = Store(cfg.collector.database).events()
        assert [(e["from_state"], e["to_state"]) for e in events] == [
            ("unknown", "down"),
            ("down", "up"),
        ]
        assert events[0]["evidence"]["error"] == "linkDown trap from 127.0.0.1 (eth0)"
        assert agent.trap_receiver is not None
        assert agent.trap_receiver.stats.accepted == 3
        # Three traps accepted (the deliberate shutdown too: it is a valid trap, not an
        # outage), none refused.
        outcomes = {o: traps_metric(o) for o in dataclasses.asdict(agent.trap_receiver.stats)}
        assert outcomes == {**dict.fromkeys(outcomes, 0.0), "accepted": 3.0}
