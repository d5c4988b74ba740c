"""The trap receiver against net-snmp's snmptrap on loopback; match_check as a table.

Synchronisation: traps are sent one after another, each by a snmptrap that has exited, to
one socket, and the receiver handles datagrams in arrival order. So once a final good
"barrier" trap has reached on_trap, every trap sent before it has been handled (accepted,
dropped or ignored) and the counters can be read.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from snmp_peer import SNMPTRAP, net_snmp_env

from agent.traps import (
    TrapConfig,
    TrapEvent,
    TrapReceiver,
    match_check,
    parse_link_trap,
)
from availmon.errors import StartupError
from probes import snmp
from tests.peers import write_secret

LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
LINK_UP = "1.3.6.1.6.3.1.1.5.4"
COLD_START = "1.3.6.1.6.3.1.1.5.1"
ENGINE_ID = "8000000001020304aa"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def link_varbinds(index: int, name: str | None = "eth0", oper: int = 2) -> list[str]:
    out = [f"1.3.6.1.2.1.2.2.1.1.{index}", "i", str(index)]
    out += [
        f"1.3.6.1.2.1.2.2.1.7.{index}",
        "i",
        "1",
        f"1.3.6.1.2.1.2.2.1.8.{index}",
        "i",
        str(oper),
    ]
    if name is not None:
        out += [f"1.3.6.1.2.1.31.1.1.1.1.{index}", "s", name]
    return out


class Sender:
    """Runs snmptrap (as a subprocess, off the event loop) against the receiver."""

    def __init__(self, directory: Path, port: int) -> None:
        if not Path(SNMPTRAP).exists():
            pytest.skip("needs net-snmp's snmptrap (Debian package snmp)")
        self.env = net_snmp_env(directory)
        self.target = f"127.0.0.1:{port}"

    async def send(self, auth: list[str], trap_oid: str, varbinds: list[str]) -> None:
        argv = [SNMPTRAP, "-r0", *auth, self.target, "", trap_oid, *varbinds]
        proc = await asyncio.create_subprocess_exec(
            *argv, env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        _out, err = await asyncio.wait_for(proc.communicate(), 30)  # 30 s: only a hang
        assert proc.returncode == 0, err.decode()

    async def v2c(
        self, community: str, trap_oid: str = LINK_DOWN, index: int = 3, **kw: Any
    ) -> None:
        await self.send(
            ["-v2c", "-c", community, *kw.pop("extra", [])], trap_oid, link_varbinds(index, **kw)
        )

    async def v3(self, user: str, proto: str, auth_key: str, priv_key: str, index: int = 3) -> None:
        auth = ["-v3", "-u", user, "-l", "authPriv", "-a", proto, "-A", auth_key]
        auth += ["-x", "AES", "-X", priv_key, "-e", f"0x{ENGINE_ID}"]
        await self.send(auth, LINK_DOWN, link_varbinds(index))


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir()
    for name, value in {
        "community-a": "trap-community-a",
        "community-b": "trap-community-b",
        "sha.auth": "sha-auth-key",
        "sha.priv": "sha-priv-key",
        "sha256.auth": "sha256-auth-key",
        "sha256.priv": "sha256-priv-key",
    }.items():
        write_secret(d / name, value + "\n")
    return d


def config(secrets: Path, **extra: Any) -> TrapConfig:
    users = [
        {
            "user": "trapsha",
            "engine_id": ENGINE_ID,
            "auth_protocol": "SHA",
            "auth_key_file": secrets / "sha.auth",
            "priv_key_file": secrets / "sha.priv",
        },
        {
            "user": "trapsha256",
            "engine_id": ENGINE_ID,
            "auth_protocol": "SHA-256",
            "auth_key_file": secrets / "sha256.auth",
            "priv_key_file": secrets / "sha256.priv",
        },
    ]
    devices: list[dict[str, Any]] = [
        {"address": "127.0.0.1", "community_file": secrets / "community-a", "users": users},
        {"address": "127.0.0.3", "community_file": secrets / "community-b"},
    ]
    return TrapConfig.model_validate(
        {"listen": "127.0.0.1", "port": 0, "devices": devices, **extra}
    )


class Received:
    def __init__(self) -> None:
        self.events: list[TrapEvent] = []
        self.queue: asyncio.Queue[TrapEvent] = asyncio.Queue()

    def __call__(self, event: TrapEvent) -> None:
        self.events.append(event)
        self.queue.put_nowait(event)

    async def next(self) -> TrapEvent:
        async with asyncio.timeout(5):
            return await self.queue.get()


@pytest.fixture
async def running(
    tmp_path: Path, secrets: Path
) -> AsyncIterator[tuple[TrapReceiver, Received, Sender]]:
    received = Received()
    async with TrapReceiver(config(secrets), received, clock=lambda: NOW) as receiver:
        yield receiver, received, Sender(tmp_path, receiver.port)


Running = tuple[TrapReceiver, Received, Sender]


async def test_v2c_link_down(running: Running) -> None:
    receiver, received, sender = running
    await sender.v2c("trap-community-a", index=3, name="eth0")
    event = await received.next()
    assert event == TrapEvent(
        source="127.0.0.1",
        host="127.0.0.1",
        kind="linkDown",
        if_index=3,
        if_name="eth0",
        if_descr=None,
        admin_status=1,
        oper_status=2,
        received_at=NOW,
    )
    assert receiver.stats.accepted == 1


async def test_v2c_link_up(running: Running) -> None:
    _receiver, received, sender = running
    await sender.v2c("trap-community-a", LINK_UP, index=5, name="ge-0/0/5", oper=1)
    event = await received.next()
    assert (event.kind, event.if_index, event.if_name, event.oper_status) == (
        "linkUp",
        5,
        "ge-0/0/5",
        1,
    )


async def test_v1_generic_link_down_is_translated(running: Running) -> None:
    _receiver, received, sender = running
    # SNMPv1 Trap-PDU: enterprise, agent-addr, generic-trap 2 (linkDown), specific 0, uptime.
    argv = ["-v1", "-c", "trap-community-a"]
    proc = await asyncio.create_subprocess_exec(
        SNMPTRAP, "-r0", *argv, sender.target, "1.3.6.1.4.1.8072.3.2.10", "127.0.0.1", "2", "0",
        "", *link_varbinds(4, name=None), env=sender.env,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 30) == 0  # 30 s: only a hang
    event = await received.next()
    assert (event.kind, event.if_index, event.if_name) == ("linkDown", 4, None)


async def test_bad_community_is_dropped_and_counted(running: Running) -> None:
    receiver, received, sender = running
    await sender.v2c("not-the-community", index=7)
    await sender.v2c("trap-community-a", index=3)  # barrier
    assert (await received.next()).if_index == 3
    assert [e.if_index for e in received.events] == [3]
    assert (receiver.stats.dropped_bad_auth, receiver.stats.accepted) == (1, 1)


async def test_another_devices_community_is_bad_auth(running: Running) -> None:
    receiver, received, sender = running
    await sender.v2c("trap-community-b", index=7)  # 127.0.0.3's community, sent from .1
    await sender.v2c("trap-community-a", index=3)
    assert (await received.next()).if_index == 3
    assert receiver.stats.dropped_bad_auth == 1


async def test_unknown_source_is_dropped_and_counted(running: Running) -> None:
    receiver, received, sender = running
    await sender.v2c("trap-community-a", index=7, extra=["--clientaddr=127.0.0.2"])
    await sender.v2c("not-the-community", index=8, extra=["--clientaddr=127.0.0.2"])
    await sender.v2c("trap-community-a", index=3)
    assert (await received.next()).if_index == 3
    assert [e.if_index for e in received.events] == [3]
    assert receiver.stats.dropped_unknown_source == 2
    assert receiver.stats.dropped_bad_auth == 0


async def test_second_device_by_its_own_address(running: Running) -> None:
    _receiver, received, sender = running
    await sender.v2c("trap-community-b", index=9, extra=["--clientaddr=127.0.0.3"])
    event = await received.next()
    assert (event.source, event.if_index) == ("127.0.0.3", 9)


@pytest.mark.parametrize(
    ("user", "proto", "auth_key", "priv_key"),
    [
        ("trapsha", "SHA", "sha-auth-key", "sha-priv-key"),
        ("trapsha256", "SHA-256", "sha256-auth-key", "sha256-priv-key"),
    ],
)
async def test_v3_auth_priv(
    running: Running, user: str, proto: str, auth_key: str, priv_key: str
) -> None:
    receiver, received, sender = running
    await sender.v3(user, proto, auth_key, priv_key, index=6)
    event = await received.next()
    assert (event.kind, event.if_index, event.if_name) == ("linkDown", 6, "eth0")
    assert receiver.stats.accepted == 1


@pytest.mark.parametrize(
    ("user", "auth_key", "priv_key"),
    [
        ("trapsha", "wrong-auth-key", "sha-priv-key"),
        ("trapsha", "sha-auth-key", "wrong-priv-key"),
        ("nobody", "sha-auth-key", "sha-priv-key"),
    ],
)
async def test_v3_bad_credentials_are_dropped(
    running: Running, user: str, auth_key: str, priv_key: str
) -> None:
    receiver, received, sender = running
    await sender.v3(user, "SHA", auth_key, priv_key, index=7)
    await sender.v2c("trap-community-a", index=3)
    assert (await received.next()).if_index == 3
    assert (receiver.stats.dropped_bad_auth, receiver.stats.accepted) == (1, 1)


async def test_other_traps_are_ignored(running: Running) -> None:
    receiver, received, sender = running
    await sender.send(["-v2c", "-c", "trap-community-a"], COLD_START, [])
    await sender.v2c("trap-community-a", index=3)
    assert (await received.next()).if_index == 3
    assert (receiver.stats.ignored, receiver.stats.accepted) == (1, 1)


async def test_a_failing_callback_does_not_stop_the_receiver(tmp_path: Path, secrets: Path) -> None:
    received = Received()

    def on_trap(event: TrapEvent) -> None:
        received(event)
        if event.if_index == 1:
            raise RuntimeError("consumer bug")

    async with TrapReceiver(config(secrets), on_trap) as receiver:
        sender = Sender(tmp_path, receiver.port)
        await sender.v2c("trap-community-a", index=1)
        await sender.v2c("trap-community-a", index=2)
        assert (await received.next()).if_index == 1
        assert (await received.next()).if_index == 2
    assert received.events[0].received_at.tzinfo is UTC


async def test_exit_releases_the_port_and_leaves_no_task(secrets: Path) -> None:
    before = asyncio.all_tasks()
    async with TrapReceiver(config(secrets), lambda e: None) as receiver:
        port = receiver.port
        clash = config(secrets, port=port)
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with TrapReceiver(clash, lambda e: None):
                pass
    assert asyncio.all_tasks() == before
    async with TrapReceiver(config(secrets, port=port), lambda e: None) as again:
        assert again.port == port


async def test_missing_secret_cannot_start(secrets: Path) -> None:
    (secrets / "community-b").unlink()
    with pytest.raises(StartupError, match=r"traps.devices\[1\].community_file: cannot read"):
        async with TrapReceiver(config(secrets), lambda e: None):
            pass


async def test_v3_users_without_cryptography_cannot_start(
    monkeypatch: pytest.MonkeyPatch, secrets: Path
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import now fails
    with pytest.raises(StartupError, match="needs the 'cryptography' package"):
        async with TrapReceiver(config(secrets), lambda e: None):
            pass


@pytest.mark.parametrize(
    ("devices", "message"),
    [
        ([{"address": "10.0.0.1"}], "needs community_file, community_env or users"),
        ([{"address": "switch1", "community_env": "C"}], "must be an IP address"),
        (
            [{"address": "10.0.0.1", "community_env": "C"}] * 2,
            "each device address may appear only once",
        ),
        (
            [{"address": "10.0.0.1", "users": [{"user": "u", "engine_id": "zz"}]}],
            "String should match pattern",
        ),
        (
            [
                {
                    "address": "10.0.0.1",
                    "users": [{"user": "u", "engine_id": ENGINE_ID, "auth_key_env": "A"}],
                }
            ],
            "set exactly one of priv_key_file and priv_key_env",
        ),
    ],
)
def test_bad_trap_config(devices: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrapConfig.model_validate({"devices": devices})


def test_parse_link_trap_takes_the_index_from_a_column() -> None:
    # No ifIndex varbind: the instance of ifDescr says which interface.
    from pysnmp.proto.rfc1902 import ObjectName, OctetString

    varbinds = [
        (ObjectName("1.3.6.1.6.3.1.1.4.1.0"), ObjectName(LINK_UP)),
        (ObjectName("1.3.6.1.2.1.2.2.1.2.12"), OctetString("GigabitEthernet0/12")),
    ]
    event = parse_link_trap("10.0.0.1", "sw1", varbinds, NOW)
    assert event is not None
    assert (event.kind, event.if_index, event.if_descr, event.if_name) == (
        "linkUp",
        12,
        "GigabitEthernet0/12",
        None,
    )


def _trap(source: str = "10.0.0.1", host: str = "10.0.0.1", **kw: Any) -> TrapEvent:
    fields: dict[str, Any] = {
        "kind": "linkDown",
        "if_index": 3,
        "if_name": "eth0",
        "if_descr": "Intel eth0",
        "admin_status": 1,
        "oper_status": 2,
        "received_at": NOW,
        **kw,
    }
    return TrapEvent(source=source, host=host, **fields)


CHECKS: list[tuple[str, str, Any]] = [
    ("sw1-uptime", "10.0.0.1", {"community_env": "C"}),
    ("sw1-eth1", "10.0.0.1:161", {"community_env": "C", "interface": "eth1"}),
    ("sw1-eth0", "10.0.0.1:161", {"community_env": "C", "interface": "eth0"}),
    ("sw2-eth0", "10.0.0.2", snmp.Options(community_env="C", interface="eth0")),
    ("core-uplink", "core.example", {"community_env": "C", "interface": "Gi0/1"}),
    ("v6-eth0", "[2001:db8::1]:161", {"community_env": "C", "interface": "eth0"}),
]


@pytest.mark.parametrize(
    ("trap", "expected"),
    [
        (_trap(), "sw1-eth0"),
        (_trap(if_name=None, if_descr="eth1"), "sw1-eth1"),  # matched by ifDescr
        (_trap(source="10.0.0.2", host="10.0.0.2"), "sw2-eth0"),  # Options, not a dict
        (_trap(if_name="eth9", if_descr=None), None),  # no check for that interface
        (_trap(if_name=None, if_descr=None), None),  # trap did not say which interface
        (_trap(source="10.0.0.9", host="10.0.0.9"), None),  # no check for that device
        (_trap(source="10.9.9.9", host="core.example", if_name="Gi0/1"), "core-uplink"),
        (_trap(source="2001:db8::1", host="2001:db8::1"), "v6-eth0"),
        (_trap(source="2001:0db8:0::1", host="x"), "v6-eth0"),  # same address, other spelling
    ],
)
def test_match_check(trap: TrapEvent, expected: str | None) -> None:
    assert match_check(trap, CHECKS) == expected


def test_match_check_ignores_unparsable_targets() -> None:
    checks: list[tuple[str, str, Any]] = [("bad", "10.0.0.1:x", {"interface": "eth0"})]
    assert match_check(_trap(), checks) is None
