"""A linkDown trap from a configured device takes the matching snmp check down at once, and
linkUp brings it back; a deliberate shutdown (ifAdminStatus down) is not an outage. Real
traps from net-snmp's snmptrap to the agent's receiver on loopback.

What the receiver must not believe: SNMPv3 traps below authPriv, replayed or stale SNMPv3
traps, and datagrams that are not traps at all (counted, never a traceback). Those tests
use the barrier of tests/probes/test_traps.py: datagrams go one after another to one
socket and are handled in arrival order, so once a final good trap has reached on_trap,
everything sent before it has been counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest

from agent.main import Agent
from agent.traps import TrapEvent, TrapReceiver, TrapStats
from availmon.config import TrapConfig
from collector.main import Collector
from collector.store import Store
from tests.peers import amqtt_broker, estate, free_port, wait_until, write_secret

SNMPTRAP = shutil.which("snmptrap") or "/usr/bin/snmptrap"
LINK_DOWN, LINK_UP = "1.3.6.1.6.3.1.1.5.3", "1.3.6.1.6.3.1.1.5.4"

pytestmark = pytest.mark.skipif(
    not Path(SNMPTRAP).exists(), reason="needs net-snmp's snmptrap (Debian package snmp)"
)


async def snmptrap(
    tmp: Path,
    port: int,
    trap: str,
    admin: int = 1,
    auth: tuple[str, ...] = ("-v2c", "-c", "trap-secret"),
    index: int = 3,
) -> None:
    (tmp / "persist").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "SNMP_PERSISTENT_DIR": str(tmp / "persist"),
        "SNMPCONFPATH": str(tmp / "conf"),
        "MIBS": "",
        "MIBDIRS": str(tmp / "no-mibs"),
    }
    oper = 2 if trap == LINK_DOWN else 1
    varbinds = [
        f"1.3.6.1.2.1.2.2.1.1.{index}",
        "i",
        str(index),
        f"1.3.6.1.2.1.2.2.1.7.{index}",
        "i",
        str(admin),
        f"1.3.6.1.2.1.2.2.1.8.{index}",
        "i",
        str(oper),
        f"1.3.6.1.2.1.31.1.1.1.1.{index}",
        "s",
        "eth0",
    ]
    proc = await asyncio.create_subprocess_exec(
        SNMPTRAP,
        "-r0",
        *auth,
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


ENGINE_ID = "8000000001020304aa"
V3_KEYS = ("-a", "SHA", "-A", "sha-auth-key", "-x", "AES", "-X", "sha-priv-key")


def v3(level: str = "authPriv", boots_time: str | None = None) -> tuple[str, ...]:
    """snmptrap arguments for user trapsha at ``level``, with the keys that level uses;
    ``boots_time`` ("boots,time") sets the sender's snmpEngineBoots and snmpEngineTime."""
    keys = {"noAuthNoPriv": (), "authNoPriv": V3_KEYS[:4], "authPriv": V3_KEYS}[level]
    timing = ("-Z", boots_time) if boots_time else ()
    return ("-v3", "-u", "trapsha", "-l", level, *keys, "-e", f"0x{ENGINE_ID}", *timing)


def receiver_config(tmp: Path) -> TrapConfig:
    """127.0.0.1 with community trap-secret and SNMPv3 user trapsha (SHA/AES)."""
    write_secret(tmp / "community", "trap-secret\n")
    write_secret(tmp / "sha.auth", "sha-auth-key\n")
    write_secret(tmp / "sha.priv", "sha-priv-key\n")
    user = {
        "user": "trapsha",
        "engine_id": ENGINE_ID,
        "auth_key_file": tmp / "sha.auth",
        "priv_key_file": tmp / "sha.priv",
    }
    device = {"address": "127.0.0.1", "community_file": tmp / "community", "users": [user]}
    return TrapConfig.model_validate({"listen": "127.0.0.1", "port": 0, "devices": [device]})


class Received:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[TrapEvent] = asyncio.Queue()

    def __call__(self, event: TrapEvent) -> None:
        self.queue.put_nowait(event)

    async def indexes(self, last: int) -> list[int | None]:
        """The ifIndex of every trap accepted up to and including the one for ``last``."""
        out: list[int | None] = []
        async with asyncio.timeout(10):  # only a hang
            while not out or out[-1] != last:
                out.append((await self.queue.get()).if_index)
        return out


def send_datagram(port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, ("127.0.0.1", port))


async def test_v3_traps_below_auth_priv_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pysnmp enforces a user's security level only where it is the authoritative engine,
    which for a trap is the sender: a linkDown with no digest and no encryption, naming a
    configured user, must not take a check down."""
    caplog.set_level(logging.WARNING, logger="agent.traps")
    received = Received()
    async with TrapReceiver(receiver_config(tmp_path), received) as receiver:
        port = receiver.port
        await snmptrap(tmp_path, port, LINK_DOWN, auth=v3("noAuthNoPriv"), index=1)
        await snmptrap(tmp_path, port, LINK_DOWN, auth=v3("authNoPriv"), index=2)
        await snmptrap(tmp_path, port, LINK_DOWN, auth=v3("authPriv"), index=3)
        assert await received.indexes(last=3) == [3]
        stats = receiver.stats
    assert (stats.dropped_bad_auth, stats.accepted) == (2, 1)
    assert "as user 'trapsha' is noAuthNoPriv, not authPriv" in caplog.text
    assert "as user 'trapsha' is authNoPriv, not authPriv" in caplog.text
    assert "sha-auth-key" not in caplog.text


async def test_a_device_restarted_without_counting_its_boots_is_still_heard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Many devices do not keep snmpEngineBoots: after a reboot their clock is back near
    zero with the same boots. Taken for replays, their linkDown/linkUp after the reboot,
    the traps that matter most, were dropped until the clock caught up (a day, here); an
    old time that is not near zero is still a replay."""
    received = Received()
    async with TrapReceiver(receiver_config(tmp_path), received) as receiver:
        port = receiver.port

        async def send(boots_time: str, index: int) -> None:
            await snmptrap(tmp_path, port, LINK_DOWN, auth=v3(boots_time=boots_time), index=index)

        await send("1,86400", 1)  # up a day
        await send("1,30", 2)  # rebooted, boots not counted: heard
        await send("1,40", 3)
        await send("1,86000", 4)  # a day-old capture replayed: not its clock now
        await send("1,50", 5)
        assert await received.indexes(last=5) == [1, 2, 3, 5]
        stats = receiver.stats
    assert (stats.accepted, stats.dropped_replay) == (4, 1)
    assert "taken as a restart it did not count" in caplog.text


async def test_replayed_and_stale_v3_traps_are_dropped(tmp_path: Path) -> None:
    """RFC 3414 §3.2.7b: a receiver keeps each sender's latest snmpEngineBoots/Time and
    refuses fewer boots, or the same boots more than 150 s behind (pysnmp saves every
    message's values before its own check, so that check always passes)."""
    received = Received()
    async with TrapReceiver(receiver_config(tmp_path), received) as receiver:
        port = receiver.port
        # A capture of one authentic trap, as someone on the path would keep it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tap:
            tap.bind(("127.0.0.1", 0))
            tap.setblocking(False)
            tap_port = tap.getsockname()[1]
            await snmptrap(tmp_path, tap_port, LINK_DOWN, auth=v3(boots_time="5,1000"), index=1)
            async with asyncio.timeout(10):  # only a hang
                captured = await asyncio.get_running_loop().sock_recv(tap, 65535)

        async def send(boots_time: str, index: int) -> None:
            await snmptrap(tmp_path, port, LINK_DOWN, auth=v3(boots_time=boots_time), index=index)

        send_datagram(port, captured)  # the first time it is news: accepted
        await send("5,1140", 2)  # the device's clock moves on (each step within 150 s)
        await send("5,1280", 3)
        send_datagram(port, captured)  # 280 s behind the latest: a replay
        await send("4,5000", 4)  # an earlier boot
        await send("5,1200", 5)  # late, but within the 150 s window: accepted
        await send("2147483647,1", 6)  # boots at their maximum: never
        await send("5,5000", 7)  # an hour ahead of its clock: a capture from a later run
        await send("6,10", 8)  # rebooted: accepted
        assert await received.indexes(last=8) == [1, 2, 3, 5, 8]
        stats = receiver.stats
    assert (stats.dropped_replay, stats.accepted, stats.dropped_bad_auth) == (4, 5, 0)


async def test_malformed_datagrams_are_counted_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """b"\x60\x00" made pysnmp raise TypeError in its transport callback (asyncio logged a
    27-line ERROR each time); the rest pysnmp dropped counting them only in its own MIB."""
    caplog.set_level(logging.WARNING)
    garbage = [
        b"\x60\x00",  # pysnmp: TypeError
        b"\xbf\x00",  # likewise
        b"",
        b"\x30",  # cut short
        b"\x30\x84\xff\xff\xff\xff",  # a length far past the datagram
        b"\x30\x03\x02\x01\x07",  # SNMP version 8
        b"\x30\x05\x02\x01\x01\x04\x00",  # v2c, no PDU
        # A v2c GetRequest with the device's community: well formed, but not a trap.
        b"\x30\x1d\x02\x01\x01\x04\x0btrap-secret"
        b"\xa0\x0b\x02\x01\x01\x02\x01\x00\x02\x01\x00\x30\x00",
    ]
    received = Received()
    async with TrapReceiver(receiver_config(tmp_path), received) as receiver:
        for data in garbage:
            send_datagram(receiver.port, data)
        await snmptrap(tmp_path, receiver.port, LINK_DOWN, index=3)
        assert await received.indexes(last=3) == [3]
        stats = dataclasses.replace(receiver.stats)
    assert stats == TrapStats(accepted=1, dropped_malformed=len(garbage))
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # Rate-limited: the first one at once, the rest in one line when the receiver stops.
    lines = [r.getMessage() for r in caplog.records if "malformed datagram" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("trap receiver: 1 malformed datagram(s) dropped")
    assert lines[1].startswith(f"trap receiver: {len(garbage) - 1} malformed datagram(s)")
