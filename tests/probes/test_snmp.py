"""The SNMP probe against a real net-snmp snmpd on loopback (and in a namespace for links)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from snmp_peer import (
    COMMUNITY,
    COUNTER_OID,
    GAUGE_OID,
    SNMPD,
    TEXT_OID,
    V3_USERS,
    Snmpd,
    free_udp_port,
    in_netns,
    netns,
    running_snmpd,
)

from availmon.config import parse_config
from availmon.errors import ConfigError, StartupError
from probes import snmp
from probes.base import Poll, ProbeResult
from tests.peers import netns_unavailable, write_secret

needs_snmpd = pytest.mark.skipif(
    not Path(SNMPD).exists(), reason="needs net-snmp's snmpd (Debian package snmpd)"
)

AVAILMON = Path(sys.executable).parent / "availmon"


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("snmp-secrets")
    write_secret(d / "community", COMMUNITY + "\n")
    write_secret(d / "wrong-community", "not-the-community\n")
    for user, _proto, auth_key, priv_key in V3_USERS:
        write_secret(d / f"{user}.auth", auth_key + "\n")
        write_secret(d / f"{user}.priv", priv_key + "\n")
    write_secret(d / "wrong.auth", "definitely-wrong\n")
    return d


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    if not Path(SNMPD).exists():
        pytest.skip("needs net-snmp's snmpd (Debian package snmpd)")
    with running_snmpd(tmp_path_factory.mktemp("snmpd")) as p:
        yield p


def v2c(secrets_dir: Path, **options: Any) -> snmp.Options:
    return snmp.Options(community_file=secrets_dir / "community", **options)


def v3(secrets_dir: Path, user: str, proto: str, **options: Any) -> snmp.Options:
    return snmp.Options(
        version="3",
        user=user,
        auth_protocol=proto,
        auth_key_file=secrets_dir / f"{user}.auth",
        priv_key_file=secrets_dir / f"{user}.priv",
        **options,
    )


async def test_v2c_uptime(peer: Snmpd, secrets_dir: Path) -> None:
    result = await snmp.probe(peer.target, 2.0, v2c(secrets_dir))
    assert result.ok, result.error
    assert result.latency is not None
    assert isinstance(result.details["sys_uptime_ticks"], int)
    assert result.details["rebooted"] is None  # no previous poll: not measured


@pytest.mark.parametrize(("user", "proto"), [(u, p) for u, p, *_ in V3_USERS])
async def test_v3_auth_priv(peer: Snmpd, secrets_dir: Path, user: str, proto: str) -> None:
    result = await snmp.probe(peer.target, 2.0, v3(secrets_dir, user, proto))
    assert result.ok, result.error


async def test_v3_wrong_auth_key_is_a_failed_probe(peer: Snmpd, secrets_dir: Path) -> None:
    options = v3(secrets_dir, "avmsha", "SHA").model_copy(
        update={"auth_key_file": secrets_dir / "wrong.auth"}
    )
    result = await snmp.probe(peer.target, 2.0, options)
    assert not result.ok
    assert result.error == "SNMPv3 authentication failed (wrong digest)"


async def test_wrong_community_times_out(peer: Snmpd, secrets_dir: Path) -> None:
    # net-snmp drops a request with an unknown community without answering.
    options = snmp.Options(community_file=secrets_dir / "wrong-community", retries=0)
    result = await snmp.probe(peer.target, 0.5, options)
    assert (result.ok, result.error) == (False, "timeout after 0.5 s")


async def test_nothing_listening_times_out(secrets_dir: Path) -> None:
    target = f"127.0.0.1:{free_udp_port()}"
    result = await snmp.probe(target, 0.5, v2c(secrets_dir, retries=0))
    assert (result.ok, result.error, result.latency) == (False, "timeout after 0.5 s", None)


# The pass script serves 42 at GAUGE_OID.
@pytest.mark.parametrize(
    ("thresholds", "ok", "degraded", "error"),
    [
        ({}, True, False, None),
        ({"warn_above": 42}, True, False, None),  # thresholds are strict
        ({"warn_above": 40}, True, True, f"{GAUGE_OID} = 42 above 40"),
        ({"down_above": 41}, False, False, f"{GAUGE_OID} = 42 above 41"),
        ({"warn_below": 50}, True, True, f"{GAUGE_OID} = 42 below 50"),
        ({"down_below": 50, "warn_below": 60}, False, False, f"{GAUGE_OID} = 42 below 50"),
        ({"warn_above": 10, "down_above": 100}, True, True, f"{GAUGE_OID} = 42 above 10"),
    ],
)
async def test_oid_thresholds(
    peer: Snmpd,
    secrets_dir: Path,
    thresholds: dict[str, float],
    ok: bool,
    degraded: bool,
    error: str | None,
) -> None:
    result = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, oid=GAUGE_OID, **thresholds))
    assert (result.ok, result.degraded, result.error) == (ok, degraded, error)
    assert result.details["value"] == 42


async def test_oid_missing_is_a_failure(peer: Snmpd, secrets_dir: Path) -> None:
    result = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, oid="1.3.6.1.2.1.1.99.0"))
    assert (result.ok, result.error) == (False, "1.3.6.1.2.1.1.99.0: noSuchObject")


async def test_text_value_against_threshold_is_a_failure(peer: Snmpd, secrets_dir: Path) -> None:
    result = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, oid=TEXT_OID, down_above=1))
    assert not result.ok
    assert result.error == f"{TEXT_OID}: not a number ('not a number')"


async def test_counter_rate_between_polls(peer: Snmpd, secrets_dir: Path) -> None:
    options = v2c(secrets_dir, oid=COUNTER_OID, rate=True, down_above=0)
    peer.set_value("counter", 1000)
    first = await snmp.probe(peer.target, 2.0, options)
    assert first.ok, first.error
    assert first.details["rate"] is None  # one sample is no rate
    # Pretend the first poll was 1 s earlier on the device's clock, so the interval is never
    # zero however fast the two polls run; the rate must use the device's clock.
    earlier = ProbeResult(
        ok=True,
        details={**first.details, "sys_uptime_ticks": first.details["sys_uptime_ticks"] - 100},
    )
    peer.set_value("counter", 1600)
    second = await snmp.probe(peer.target, 2.0, options, previous=earlier)
    seconds = (second.details["sys_uptime_ticks"] - earlier.details["sys_uptime_ticks"]) / 100
    assert second.details["rate"] == pytest.approx(600 / seconds)
    assert not second.ok
    assert second.error is not None
    assert second.error.startswith(f"{COUNTER_OID} rate ")
    assert second.error.endswith("/s above 0/s")


@pytest.mark.parametrize(
    ("previous", "now", "wrap", "expected"),
    [
        (None, (10, 100), 2**32, None),
        ((10, 100), (70, 200), 2**32, 60.0),
        ((2**32 - 10, 100), (20, 200), 2**32, 30.0),  # Counter32 wrapped once
        ((2**64 - 1, 100), (0, 200), 2**64, 1.0),  # Counter64 wrapped once
        ((70, 100), (10, 200), None, -60.0),  # a gauge may go down
        ((10, 100), (70, 100), 2**32, None),  # no time passed
        ((10, 5000), (70, 100), 2**32, None),  # agent restarted: counters restarted too
    ],
)
def test_counter_rate(
    previous: tuple[int, int] | None, now: tuple[int, int], wrap: int | None, expected: float | None
) -> None:
    assert snmp.counter_rate(previous, now, wrap) == expected


@pytest.mark.parametrize(
    ("before", "now", "expected"),
    [
        (None, 100, None),
        (100, 100, False),
        (100, 200, False),
        (200, 100, True),
        (2**32 - 50, 30, False),  # TimeTicks wrapped after ~497 days
        (2**31, 30, True),
    ],
)
def test_rebooted(before: int | None, now: int, expected: bool | None) -> None:
    assert snmp.rebooted(before, now) is expected


@needs_snmpd
async def test_uptime_going_back_reports_a_reboot(tmp_path: Path, secrets_dir: Path) -> None:
    with running_snmpd(tmp_path, fake_uptime=True) as device:
        device.set_value("uptime", 500_000)
        first = await snmp.probe(device.target, 2.0, v2c(secrets_dir))
        device.set_value("uptime", 300)
        second = await snmp.probe(device.target, 2.0, v2c(secrets_dir), previous=first)
        device.set_value("uptime", 400)
        third = await snmp.probe(device.target, 2.0, v2c(secrets_dir), previous=second)
    assert first.details == {"sys_uptime_ticks": 500_000, "rebooted": None}
    assert second.ok  # it answered: a reboot is news, not an outage by itself
    assert second.details == {"sys_uptime_ticks": 300, "rebooted": True}
    assert third.details == {"sys_uptime_ticks": 400, "rebooted": False}


async def test_interface_up(peer: Snmpd, secrets_dir: Path) -> None:
    first = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, interface="lo"))
    assert first.ok, first.error
    assert first.details["oper_status"] == "up(1)"
    assert first.details["admin_status"] == "up(1)"
    # The second poll may reuse the ifIndex it found; the answer must not change.
    second = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, interface="lo"), previous=first)
    assert (second.ok, second.details["if_index"]) == (True, first.details["if_index"])


async def test_interface_not_found(peer: Snmpd, secrets_dir: Path) -> None:
    result = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, interface="nope0"))
    assert (result.ok, result.error) == (False, "interface 'nope0' not found in ifName or ifDescr")


async def test_poller_reuses_its_engine_across_polls(peer: Snmpd, secrets_dir: Path) -> None:
    before = asyncio.all_tasks()
    options = v3(secrets_dir, "avmsha256", "SHA-256", oid=COUNTER_OID, rate=True)
    async with snmp.session() as poller:
        first = await poller.probe(peer.target, 2.0, options)
        peer.set_value("counter", 5000)
        second = await poller.probe(peer.target, 2.0, options, previous=first)
        uptime = await poller.probe(peer.target, 2.0, v2c(secrets_dir))
    assert (first.ok, second.ok, uptime.ok) == (True, True, True)
    assert second.details["value"] == 5000
    assert second.details["rate"] is not None
    assert asyncio.all_tasks() == before  # socket closed, timer task awaited
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await poller.probe(peer.target, 2.0, v2c(secrets_dir))


async def test_many_probes_at_once(peer: Snmpd, secrets_dir: Path) -> None:
    # Engines are built in threads; they must not trip over each other.
    results = await asyncio.gather(
        *(snmp.probe(peer.target, 5.0, v2c(secrets_dir, oid=GAUGE_OID)) for _ in range(12))
    )
    assert [r.details.get("value") for r in results] == [42] * 12


async def test_missing_secret_file_cannot_start(tmp_path: Path) -> None:
    options = snmp.Options(community_file=tmp_path / "absent")
    with pytest.raises(StartupError, match="community_file: cannot read"):
        await snmp.probe("127.0.0.1:1", 1.0, options)


async def test_unset_secret_env_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AVM_TEST_NO_SUCH_VAR", raising=False)
    options = snmp.Options(community_env="AVM_TEST_NO_SUCH_VAR")
    with pytest.raises(StartupError, match="AVM_TEST_NO_SUCH_VAR is not set"):
        await snmp.probe("127.0.0.1:1", 1.0, options)


async def test_v3_without_cryptography_cannot_start(
    monkeypatch: pytest.MonkeyPatch, secrets_dir: Path
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import now fails
    with pytest.raises(StartupError, match="needs the 'cryptography' package"):
        await snmp.probe("127.0.0.1:1", 1.0, v3(secrets_dir, "avmsha", "SHA"))


V2C_THEN_V3 = """
import asyncio, json, sys
from pathlib import Path
from probes import snmp
secrets, target = Path(sys.argv[1]), sys.argv[2]
out = {}
async def main():
    v2c = snmp.Options(community_file=secrets / "community")
    out["v2c"] = (await snmp.probe(target, 2.0, v2c)).ok
    out["crypto_after_v2c"] = "cryptography" in sys.modules
    v3 = snmp.Options(version="3", user="avmsha", auth_protocol="SHA",
                      auth_key_file=secrets / "avmsha.auth", priv_key_file=secrets / "avmsha.priv")
    result = await snmp.probe(target, 2.0, v3)
    out["v3"], out["v3_error"] = result.ok, result.error
    out["crypto_after_v3"] = "cryptography" in sys.modules
asyncio.run(main())
print(json.dumps(out))
"""


@needs_snmpd
def test_v2c_never_loads_cryptography_and_v3_gets_it_when_needed(
    peer: Snmpd, secrets_dir: Path
) -> None:
    # pysnmp imports cryptography (~8.5 MB) for v3 privacy; a v2c-only agent goes without it
    # (availmon.imports), and a later v3 check still encrypts (snmp_io.require_privacy).
    done = subprocess.run(
        [sys.executable, "-c", V2C_THEN_V3, str(secrets_dir), peer.target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == {
        "v2c": True,
        "crypto_after_v2c": False,
        "v3": True,
        "v3_error": None,
        "crypto_after_v3": True,
    }


def _estate(check: dict[str, Any]) -> dict[str, Any]:
    base = {"name": "c", "type": "snmp", "target": "192.0.2.1", "area": "network_telephony"}
    return {"sites": {"s1": {"partner": "p", "checks": [{**base, **check}]}}}


def test_flat_toml_keys_reach_the_options() -> None:
    estate = parse_config(
        _estate({"community_env": "SNMP_COMMUNITY", "interface": "eth0", "retries": 2})
    )
    options = estate.sites["s1"].checks[0].parsed_options()
    assert isinstance(options, snmp.Options)
    assert (options.kind, options.interface, options.retries) == ("interface", "eth0", 2)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "set exactly one of community_file and community_env"),
        ({"community_env": "C", "oid": "1.3.x"}, "expected a numeric OID"),
        ({"community_env": "C", "interface": "eth0", "oid": "1.3.6"}, "not both"),
        ({"community_env": "C", "down_above": 1}, "apply only to mode 'oid'"),
        ({"community_env": "C", "mode": "interface"}, "mode 'interface' needs interface"),
        (
            {"community_env": "C", "oid": "1.3.6", "warn_above": 10, "down_above": 5},
            "down_above must not be below warn_above",
        ),
        ({"community_env": "C", "user": "u"}, "user apply only to version 3"),
        ({"version": "3", "user": "u", "auth_key_env": "A"}, "one of priv_key_file"),
        ({"version": "3", "auth_key_env": "A", "priv_key_env": "P"}, "version 3 needs user"),
        ({"community_env": "C", "colour": "red"}, "unknown key"),
    ],
)
def test_bad_options_are_config_errors(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_estate(keys))
    assert message in str(info.value)
    assert "sites.s1.checks.c" in str(info.value)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("10.0.0.1", None),
        ("10.0.0.1:1161", None),
        ("switch.example", None),
        ("[::1]:161", None),
        ("::1", None),
        ("10.0.0.1:x", "port 'x' is not a number"),
        ("10.0.0.1:70000", "port 70000 is out of range 1-65535"),
        ("", "expected host or host:port, got ''"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert snmp.check_target(target) == problem


def _cli(ns: str | None, target: str, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [str(AVAILMON), "probe", "snmp", target, "--timeout", "2", *args]
    done = subprocess.run(in_netns(ns, argv), capture_output=True, text=True, check=False)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_cli_oid_mode(peer: Snmpd, secrets_dir: Path) -> None:
    code, out = _cli(
        None,
        peer.target,
        "--community-file",
        str(secrets_dir / "community"),
        "--oid",
        GAUGE_OID,
        "--down-above",
        "40",
    )
    assert (code, out["ok"], out["error"]) == (1, False, f"{GAUGE_OID} = 42 above 40")


def _link(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, "link", *args], check=True)


@pytest.mark.netns
@needs_snmpd
def test_link_states_in_a_namespace(tmp_path: Path, secrets_dir: Path) -> None:
    """Up, then oper-down (peer down, still admin-up), then admin-down, seen from inside."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    community = ("--community-file", str(secrets_dir / "community"))
    with netns() as ns:
        _link(ns, "add", "avm0", "type", "veth", "peer", "name", "avm1")
        _link(ns, "set", "avm0", "up")
        _link(ns, "set", "avm1", "up")
        device = Snmpd(tmp_path, 1161, ns=ns)
        device.write_config()
        try:
            # net-snmp caches ifTable for a few seconds; a fresh agent per state reads the
            # kernel's state now instead of after the cache expires.
            device.start()
            up = _cli(ns, device.target, *community, "--interface", "avm0")
            _link(ns, "set", "avm1", "down")
            device.restart()
            oper_down = _cli(ns, device.target, *community, "--interface", "avm0")
            _link(ns, "set", "avm0", "down")
            device.restart()
            admin_down = _cli(ns, device.target, *community, "--interface", "avm0")
        finally:
            device.stop()
    assert up[0] == 0
    assert (up[1]["details"]["admin_status"], up[1]["details"]["oper_status"]) == (
        "up(1)",
        "up(1)",
    )
    assert (oper_down[0], oper_down[1]["error"]) == (1, "ifOperStatus down(2)")
    assert oper_down[1]["details"]["admin_status"] == "up(1)"
    assert admin_down[0] == 0
    assert admin_down[1]["details"]["admin_status"] == "down(2)"
    assert admin_down[1]["details"]["note"] == "administratively down: not counted as an outage"


# --- one engine per agent, one request per device (issue 9) --------------------------------

SNMP_IN_PKTS = "1.3.6.1.2.1.11.1.0"  # SNMPv2-MIB snmpInPkts: messages the agent received


def in_packets(peer: Snmpd) -> int:
    """snmpInPkts read with net-snmp's snmpget (which counts its own request too)."""
    done = peer.get(SNMP_IN_PKTS)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.rsplit(":", 1)[1])


async def test_checks_of_one_device_share_one_get(peer: Snmpd, secrets_dir: Path) -> None:
    polls = [
        Poll(peer.target, v2c(secrets_dir)),
        Poll(peer.target, v2c(secrets_dir, oid=GAUGE_OID)),
        Poll(peer.target, v2c(secrets_dir, interface="lo")),
        Poll(peer.target, v2c(secrets_dir, oid=COUNTER_OID, rate=True)),
        Poll(peer.target, v2c(secrets_dir, interface="lo", mode="interface")),
    ]
    async with snmp.session() as poller:
        first = await poller.probe_group(polls, 2.0)  # finds lo's ifIndex by walking ifName
        assert [r.ok for r in first] == [True] * 5, [r.error for r in first]
        polls = [Poll(p.target, p.options, r) for p, r in zip(polls, first, strict=True)]
        before = await asyncio.to_thread(in_packets, peer)
        second = await poller.probe_group(polls, 2.0)
        after = await asyncio.to_thread(in_packets, peer)
    assert after - before == 2  # our one GET for five checks, and snmpget's own request
    assert [r.ok for r in second] == [True] * 5, [r.error for r in second]
    assert second[1].details["value"] == 42
    assert second[2].details["oper_status"] == "up(1)"
    assert second[2].details["if_column"] == "ifName"
    assert second[3].details["rate"] is not None  # its previous sample came along
    assert second[0].details["rebooted"] is False
    assert len({r.latency for r in second}) == 1  # one round trip answered them all


async def test_a_stale_if_index_is_looked_up_again(peer: Snmpd, secrets_dir: Path) -> None:
    # The device renumbered its interfaces since the last poll: the remembered index no
    # longer names "lo", so the probe walks ifName again instead of reporting another port.
    stale = ProbeResult(
        ok=True, details={"interface": "lo", "if_index": 9999, "if_column": "ifName"}
    )
    result = await snmp.probe(peer.target, 2.0, v2c(secrets_dir, interface="lo"), previous=stale)
    assert (result.ok, result.error) == (True, None)
    assert result.details["if_index"] != 9999
    assert result.details["oper_status"] == "up(1)"


def test_group_key_is_device_and_credentials(secrets_dir: Path) -> None:
    a = snmp.group_key("127.0.0.1:161", v2c(secrets_dir, interface="eth0"))
    b = snmp.group_key("127.0.0.1:161", v2c(secrets_dir, oid=GAUGE_OID, warn_above=3))
    other_device = snmp.group_key("127.0.0.2:161", v2c(secrets_dir))
    other_login = snmp.group_key(
        "127.0.0.1:161", snmp.Options(community_file=secrets_dir / "wrong-community")
    )
    assert a == b
    assert len({a, other_device, other_login}) == 3
