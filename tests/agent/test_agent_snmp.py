"""An SNMP device that reboots while answering reaches the collector as an event of its own,
``from == to``: the fact is recorded and no outage is made of it (README; docs/protocol.md,
"Messages"). A real snmpd whose sysUpTime the test turns back, a real agent and collector."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.main import Agent
from availmon.schema import State
from collector.main import Collector
from tests.peers import amqtt_broker, estate, wait_until
from tests.probes.snmp_peer import COMMUNITY, SNMPD, running_snmpd

DEADLINE = 30.0  # only guards a hung test

pytestmark = pytest.mark.skipif(
    not Path(SNMPD).exists(), reason="needs net-snmp's snmpd (Debian package snmpd)"
)


async def test_a_reboot_is_an_event_that_changes_no_outage(tmp_path: Path) -> None:
    (tmp_path / "community").write_text(COMMUNITY + "\n")
    (tmp_path / "community").chmod(0o600)
    with running_snmpd(tmp_path / "snmpd", fake_uptime=True) as device:
        device.set_value("uptime", 500_000)
        check = {
            "name": "core-switch",
            "type": "snmp",
            "target": device.target,
            "area": "network_telephony",
            "interval": 0.2,
            "timeout": 0.2,
            "community_file": str(tmp_path / "community"),
        }
        async with amqtt_broker() as broker:
            cfg = estate(tmp_path, broker.port, [check])
            collector, agent = Collector(cfg), Agent(cfg, "hq")
            stop = asyncio.Event()

            def events() -> list[dict[str, Any]]:
                return collector.store.events()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(collector.run(stop))
                await asyncio.wait_for(collector.connected.wait(), DEADLINE)
                tg.create_task(agent.run(stop))
                await wait_until(collector.changed, lambda: len(events()) == 1)  # unknown->up
                device.set_value("uptime", 300)  # the device restarted
                await wait_until(collector.changed, lambda: len(events()) == 2)
                live = collector.live[("hq", "core-switch")]
                stored, outages = events(), collector.store.outages()
                stop.set()

    first, reboot = stored
    assert (first["from_state"], first["to_state"]) == ("unknown", "up")
    assert (reboot["from_state"], reboot["to_state"]) == ("up", "up")
    assert reboot["evidence"]["cause"] == "device rebooted (sysUpTime went backwards)"
    assert reboot["at"] > first["at"]
    assert live.state is State.UP
    assert outages == []
