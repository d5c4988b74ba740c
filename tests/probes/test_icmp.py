"""ICMP probe: loopback in this namespace, and a network namespace made by the test for what
must not answer (no route out of it, so nothing leaves the machine)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from probes import icmp, icmp_io
from probes.registry import REGISTRY
from tests.peers import netns_unavailable

AVAILMON = str(Path(sys.executable).parent / "availmon")


def opts(**raw: Any) -> icmp.Options:
    return REGISTRY["icmp"].parse_options(raw)


needs_icmp = pytest.mark.skipif(
    icmp.icmp_mode() is icmp.Mode.NONE, reason=icmp.describe_mode(icmp.Mode.NONE)
)


@needs_icmp
async def test_loopback_is_up_with_statistics() -> None:
    result = await icmp.probe("127.0.0.1", 2, opts(count=4, echo_interval=0.01))
    assert (result.ok, result.error, result.loss) == (True, None, 0.0)
    d = result.details
    assert (d["address"], d["sent"], d["received"]) == ("127.0.0.1", 4, 4)
    assert 0 < d["min_rtt_ms"] <= d["avg_rtt_ms"] <= d["max_rtt_ms"]
    assert d["jitter_ms"] >= 0
    assert result.latency == pytest.approx(d["avg_rtt_ms"] / 1000, abs=1e-5)


@needs_icmp
async def test_one_echo_has_no_jitter() -> None:
    result = await icmp.probe("127.0.0.1", 2, opts(count=1))
    assert result.ok
    assert result.details["jitter_ms"] is None  # not measured, not 0


@needs_icmp
async def test_batch_keeps_order_and_names() -> None:
    # 300 loopback addresses (all of 127/8 answers on Linux), IPv6 and a name in one batch.
    targets = [f"127.0.{i // 200}.{i % 200 + 1}" for i in range(300)] + ["::1", "localhost"]
    results = await icmp.probe_many(targets, 2, opts(count=2, echo_interval=0.01))
    assert len(results) == len(targets)
    assert all(r.ok and r.loss == 0.0 for r in results), [r for r in results if not r.ok][:3]
    assert [r.details["address"] for r in results[:300]] == targets[:300]
    assert results[300].details["address"] == "::1"
    assert results[301].details["address"] in ("127.0.0.1", "::1")


@needs_icmp
async def test_concurrent_bursts_count_only_their_own_replies() -> None:
    # Three bursts at once to the same addresses: on raw sockets each sees every reply on
    # the host, and keeps only those with its identifier and a sequence number it sent.
    targets = [f"127.0.5.{i}" for i in range(1, 51)]
    runs = await asyncio.gather(
        *(icmp.probe_many(targets, 2, opts(count=c, echo_interval=0.01)) for c in (1, 2, 3))
    )
    for count, results in zip((1, 2, 3), runs, strict=True):
        assert [(r.ok, r.loss) for r in results] == [(True, 0.0)] * len(targets)
        assert {(r.details["sent"], r.details["received"]) for r in results} == {(count, count)}


def _rfc1071(packet: bytes) -> int:
    """The Internet checksum the slow way (RFC 1071), to check the template's arithmetic."""
    if len(packet) % 2:
        packet += b"\0"
    total = sum(struct.unpack(f"!{len(packet) // 2}H", packet))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@pytest.mark.parametrize("size", [8, 56, 57, 1400])
@pytest.mark.parametrize("seq", [0, 1, 255, 0x7FFF, 0xFFFE, 0xFFFF])
def test_template_packets_carry_a_valid_checksum(size: int, seq: int) -> None:
    template = icmp_io.EchoTemplate(ident=0xBEEF, payload_size=size, v6=False)
    packet = template.packet(seq)
    assert len(packet) == 8 + size
    assert _rfc1071(packet) == 0  # a packet with its checksum in place sums to zero
    assert struct.unpack("!BBHHH", packet[:8])[3:] == (0xBEEF, seq)


@pytest.mark.parametrize(
    ("packet", "parsed"),
    [
        # echo reply (type 0) from a raw IPv4 socket, with a 20-byte IP header in front
        (bytes([0x45]) + bytes(19) + struct.pack("!BBHHH", 0, 0, 0, 0xBEEF, 7), (0, 0, 0xBEEF, 7)),
        # another process's echo reply: parsed, so the matcher can see the identifier differs
        (bytes([0x45]) + bytes(19) + struct.pack("!BBHHH", 0, 0, 0, 0x1234, 7), (0, 0, 0x1234, 7)),
        # host unreachable quoting our echo request (type 8) behind its IP header
        (
            bytes([0x45]) + bytes(19) + struct.pack("!BBHI", 3, 1, 0, 0)
            + bytes([0x45]) + bytes(19) + struct.pack("!BBHHH", 8, 0, 0, 0xBEEF, 9),
            (3, 1, 0xBEEF, 9),
        ),
        # our own echo request seen by a raw socket: not a reply
        (bytes([0x45]) + bytes(19) + struct.pack("!BBHHH", 8, 0, 0, 0xBEEF, 7), None),
    ],
)  # fmt: skip
def test_replies_are_parsed_to_identifier_and_sequence(
    packet: bytes, parsed: tuple[int, int, int, int] | None
) -> None:
    assert icmp_io._parse(packet, v6=False, raw=True) == parsed


@pytest.mark.parametrize("mode", list(icmp.Mode))
def test_describe_mode_says_how(mode: icmp.Mode) -> None:
    text = icmp.describe_mode(mode)
    assert text.startswith("ICMP ")
    assert {"raw": "CAP_NET_RAW", "datagram": "ping_group_range", "none": "unavailable"}[
        mode.value
    ] in text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"count": 0}, "greater than or equal to 1"),
        ({"echo_interval": 0}, "greater than or equal to 0.01"),
        ({"size": 64}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        opts(**raw)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("192.0.2.1", None),
        ("router.example.test", None),
        ("", "expected a host name or address, got ''"),
        ("a b", "expected a host name or address, got 'a b'"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert icmp.check_target(target) == problem


# --- inside a network namespace ----------------------------------------------------------


class Netns:
    """A throw-away network namespace with only its loopback up and no route out."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *argv: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *prefix, *argv],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def sysctl(self, setting: str) -> None:
        done = self.run("sysctl", "-w", setting)
        assert done.returncode == 0, done.stderr

    def python(self, script: str, prefix: tuple[str, ...] = ()) -> Any:
        """Run a Python snippet inside the namespace (lighter than the whole CLI): its JSON."""
        done = self.run(sys.executable, "-c", script, prefix=prefix)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def probe(self, *args: str, prefix: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
        """``availmon probe icmp ...`` inside the namespace, as a user would run it."""
        done = self.run(AVAILMON, "probe", "icmp", *args, prefix=prefix)
        assert done.returncode in (0, 1), done.stderr
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def netns() -> Iterator[Netns]:
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)
    name = f"avm-icmp-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        ns = Netns(name)
        assert ns.run("ip", "link", "set", "lo", "up").returncode == 0
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


@pytest.mark.netns
@pytest.mark.parametrize(
    ("ignore_all", "exit_code", "ok", "loss", "error"),
    [
        ("1", 1, False, 100.0, "no echo reply"),  # the namespace drops every echo request
        ("0", 0, True, 0.0, None),  # the same command when it does not: the contrast
    ],
)
def test_echo_ignored_inside_namespace(
    netns: Netns, ignore_all: str, exit_code: int, ok: bool, loss: float, error: str | None
) -> None:
    netns.sysctl(f"net.ipv4.icmp_echo_ignore_all={ignore_all}")
    code, out = netns.probe(
        "127.0.0.1", "--timeout", "0.5", "--count", "2", "--echo-interval", "0.01"
    )
    assert (code, out["ok"], out["loss"], out["error"]) == (exit_code, ok, loss, error)
    assert out["details"]["sent"] == 2


PROBE_MANY = (
    "import asyncio, json; from probes import icmp; "
    "rs = asyncio.run(icmp.probe_many({targets!r}, {timeout}, icmp.Options(count=1))); "
    "print(json.dumps([r.as_dict() for r in rs]))"
)


@pytest.mark.netns
def test_no_route_is_network_unreachable(netns: Netns) -> None:
    # 198.18.0.0/15 (benchmarking) has no route in a namespace with only loopback: the send
    # fails in the kernel and no packet is put on any wire.
    (out,) = netns.python(PROBE_MANY.format(targets=["198.18.0.1"], timeout=0.3))
    assert (out["ok"], out["error"], out["loss"]) == (False, "network is unreachable", 100.0)


@pytest.mark.netns
def test_bad_name_fails_only_itself(netns: Netns) -> None:
    # Inside the namespace the resolver's server is unreachable, so the lookup fails at once
    # and nothing leaves the machine.
    targets = ["127.0.0.1", "no-such-host.invalid", "127.0.0.2"]
    results = netns.python(PROBE_MANY.format(targets=targets, timeout=1))
    assert [r["ok"] for r in results] == [True, False, True]
    assert results[1]["error"] == "name lookup failed: no-such-host.invalid"


@pytest.mark.netns
@pytest.mark.parametrize(
    ("group_range", "mode", "outcome"),
    [
        ("0 0", "datagram", True),
        ("1 0", "none", "ICMP unavailable"),  # "1 0", the default, lets no group in
    ],
)
def test_without_cap_net_raw_uses_datagram_sockets(
    netns: Netns, group_range: str, mode: str, outcome: bool | str
) -> None:
    # Root without CAP_NET_RAW (as in a locked-down container): raw sockets are refused, so
    # the datagram mode is used where ping_group_range covers our group (0) and not otherwise.
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    netns.sysctl(f"net.ipv4.ping_group_range={group_range}")
    script = (
        "import asyncio, json; from probes import icmp; from availmon.errors import StartupError\n"
        "mode = icmp.icmp_mode().value\n"
        "try:\n"
        "    r = asyncio.run(icmp.probe('127.0.0.1', 1, icmp.Options(count=1))).ok\n"
        "except StartupError as exc:\n"
        "    r = str(exc)\n"
        "print(json.dumps([mode, r]))"
    )
    got_mode, got = netns.python(script, prefix=("setpriv", "--bounding-set=-net_raw"))
    assert got_mode == mode
    assert got == outcome if isinstance(outcome, bool) else outcome in got


AGENT_CONFIG = """\
[broker]
host = "127.0.0.1"
port = {port}

[agent]
state_dir = "{state}"

[partners.CCC]
name = "Cambridge City Council"

[sites.hq]
partner = "CCC"

[[sites.hq.checks]]
name = "wan-link"
type = "icmp"
target = "127.0.0.1"
area = "network_telephony"
"""


@pytest.mark.netns
@pytest.mark.parametrize(
    ("group_range", "outcome"),
    [
        ("1 0", "refused"),  # no raw sockets and no datagram ICMP: the agent must not start
        ("0 0", "ICMP through unprivileged datagram sockets"),  # the contrast: it starts
    ],
)
def test_agent_refuses_to_start_without_icmp(
    netns: Netns, tmp_path: Path, group_range: str, outcome: str
) -> None:
    """README: the agent logs which ICMP mode it uses at start, and refuses to start with
    neither. Root without CAP_NET_RAW, in a namespace whose ping_group_range is set here."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed")
    netns.sysctl(f"net.ipv4.ping_group_range={group_range}")
    config = tmp_path / "estate.toml"
    # Inside the namespace nothing listens on the broker port: the agent only gets as far as
    # connecting, which is all the contrast needs.
    config.write_text(AGENT_CONFIG.format(port=1883, state=tmp_path / "agent"))
    argv = [
        "ip", "netns", "exec", netns.name, "setpriv", "--bounding-set=-net_raw",
        AVAILMON, "agent", "--config", str(config), "--site", "hq",
    ]  # fmt: skip
    if outcome == "refused":
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 3, done.stderr  # the machine's fault: a runtime failure
        assert done.stderr.strip().splitlines()[-1] == (
            "availmon: " + icmp.describe_mode(icmp.Mode.NONE)
        )
        return
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The deadline: a silent agent is killed, which ends the read loop below.
    deadline = threading.Timer(30, proc.kill)
    deadline.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if outcome in line:
                break
        assert any(outcome in line for line in seen), "".join(seen)
        assert proc.poll() is None, "".join(seen)  # started, and still running
    finally:
        deadline.cancel()
        proc.terminate()
        proc.wait(30)
