"""ICMP echo: loss, min/avg/max round-trip time and jitter over a short burst.

Many targets go through one socket per address family (``probe_many``): every echo of a burst
is sent from it and every reply read back from it, matched by sequence number and source
address. So 1,000 targets every 10 s cost two sockets and a few thousand small packets, not
1,000 sockets (icmplib's ``async_multiping`` opens one per host and runs at most 50 at once).

Three ways to be allowed to ping, tried in this order (``icmp_mode``):
raw sockets (root, or CAP_NET_RAW), then Linux datagram ICMP sockets, which any process whose
group is in ``net.ipv4.ping_group_range`` may open; the kernel then owns the echo identifier.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import itertools
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import icmplib
from pydantic import Field

from availmon.errors import StartupError
from probes.base import ProbeOptions, ProbeResult

#: A burst's echoes are told apart by sequence number, 16 bits wide.
MAX_ECHOES_PER_SOCKET = 65_536
RECEIVE_BUFFER = 4 * 1024 * 1024


class Options(ProbeOptions):
    #: Echo requests per target per probe.
    count: Annotated[int, Field(ge=1, le=100)] = 3
    #: Seconds between rounds of echoes (not ``interval``: that is the check's schedule);
    #: the whole burst and its replies fit in the check's timeout.
    echo_interval: Annotated[float, Field(ge=0.01, le=10)] = 0.2
    payload_size: Annotated[int, Field(ge=8, le=1400)] = 56


class Mode(enum.StrEnum):
    RAW = "raw"
    DATAGRAM = "datagram"
    NONE = "none"


def icmp_mode() -> Mode:
    """Which ICMP socket this process may open. Opening one sends nothing."""
    for kind, mode in ((socket.SOCK_RAW, Mode.RAW), (socket.SOCK_DGRAM, Mode.DATAGRAM)):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
        except OSError:
            continue
        return mode
    return Mode.NONE


def describe_mode(mode: Mode) -> str:
    """One line for the agent's start-up log."""
    return {
        Mode.RAW: "ICMP through raw sockets (root or CAP_NET_RAW)",
        Mode.DATAGRAM: "ICMP through unprivileged datagram sockets (net.ipv4.ping_group_range)",
        Mode.NONE: "ICMP unavailable: needs root, CAP_NET_RAW, "
        "or net.ipv4.ping_group_range covering this process's group",
    }[mode]


def privileged_mode() -> bool:
    """True with raw sockets; False with datagram sockets (or none)."""
    return icmp_mode() is Mode.RAW


def check_target(target: str) -> str | None:
    if not target or any(c.isspace() for c in target):
        return f"expected a host name or address, got {target!r}"
    return None


@dataclass
class _Host:
    """One target's tally during a burst."""

    address: str
    sent: int = 0
    rtts: dict[int, float] = field(default_factory=dict)  # round -> seconds
    error: str | None = None


_UNREACHABLE_V4 = {0: "network unreachable", 1: "host unreachable", 13: "prohibited by filter"}
_UNREACHABLE_V6 = {0: "no route to host", 1: "prohibited by filter", 3: "address unreachable"}


def _parse(data: bytes, v6: bool, raw: bool) -> tuple[int, int, int, int] | None:
    """(type, code, identifier, sequence) of an echo reply or of the echo an error quotes."""
    if not v6 and raw:
        data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets hand us the IP header too
    if len(data) < 8:
        return None
    kind, code = data[0], data[1]
    if kind in ((129,) if v6 else (0,)):
        ident, seq = struct.unpack("!HH", data[4:8])
        return kind, code, ident, seq
    if kind in ((1, 3) if v6 else (3, 11)):
        inner = data[8:]
        offset = 40 if v6 else (inner[0] & 0x0F) * 4 if inner else 0
        quoted = inner[offset : offset + 8]
        if len(quoted) == 8 and quoted[0] == (128 if v6 else 8):
            ident, seq = struct.unpack("!HH", quoted[4:8])
            return kind, code, ident, seq
    return None


def _error_text(kind: int, code: int, v6: bool) -> str:
    if (v6 and kind == 3) or (not v6 and kind == 11):
        return "TTL exceeded in transit"
    names = _UNREACHABLE_V6 if v6 else _UNREACHABLE_V4
    return names.get(code, f"destination unreachable (code {code})")


def _send_error(exc: icmplib.ICMPLibError) -> str:
    """icmplib wraps the OSError in a message with the errno; keep the readable part."""
    cause = exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(exc) or type(exc).__name__


async def _burst(
    hosts: list[_Host], v6: bool, timeout: float, options: Options, privileged: bool
) -> None:
    """Ping every host ``count`` times through one socket; fills in each ``_Host``."""
    sock_type = icmplib.ICMPv6Socket if v6 else icmplib.ICMPv4Socket
    try:
        sock = sock_type(privileged=privileged)
    except icmplib.SocketPermissionError as exc:
        raise StartupError(describe_mode(Mode.NONE)) from exc
    loop = asyncio.get_running_loop()
    ident = secrets.randbelow(0x10000)  # raw mode: ours; datagram mode: the kernel's
    pending: dict[int, tuple[_Host, int, float]] = {}  # sequence -> host, round, sent at
    started = loop.time()
    deadline = started + timeout
    expected = len(hosts) * options.count
    answered = 0
    all_answered = asyncio.Event()

    async def send() -> None:
        seq = 0
        for rnd in range(options.count):
            if rnd:
                wait = started + rnd * options.echo_interval - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # pacing the burst, as ping -i does
            if loop.time() >= deadline:
                return
            for host in hosts:
                request = icmplib.ICMPRequest(
                    host.address, id=ident, sequence=seq, payload_size=options.payload_size
                )
                pending[seq] = (host, rnd, time.perf_counter())
                seq += 1
                try:
                    sock.send(request)
                except icmplib.ICMPLibError as exc:
                    host.error = host.error or _send_error(exc)
                host.sent += 1
                if seq % 64 == 0:
                    await asyncio.sleep(0)  # let the receiver drain replies between sends

    async def receive() -> None:
        nonlocal answered
        while True:
            try:
                data, source = await loop.sock_recvfrom(sock.sock, 2048)
            except OSError:
                return  # the socket failed: what has not answered counts as lost
            received_at = time.perf_counter()
            parsed = _parse(data, v6, privileged)
            if parsed is None:
                continue
            kind, code, reply_ident, seq = parsed
            if privileged and reply_ident != ident:
                continue  # another process's echo: raw sockets see every ICMP packet
            entry = pending.get(seq)
            if entry is None:
                continue
            host, rnd, sent_at = entry
            if ipaddress.ip_address(str(source[0]).split("%")[0]) != ipaddress.ip_address(
                host.address
            ):
                continue
            if kind in (0, 129):
                if rnd not in host.rtts:  # duplicates count once
                    host.rtts[rnd] = received_at - sent_at
                    answered += 1
                    if answered == expected:
                        all_answered.set()
            else:
                host.error = _error_text(kind, code, v6)

    with sock:
        sock.blocking = False
        # Room for a burst's replies (a raw socket on loopback also sees our own requests);
        # the kernel caps this at net.core.rmem_max.
        sock.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        # Owned here: all three are cancelled and awaited before the socket closes.
        sender = asyncio.ensure_future(send())
        receiver = asyncio.ensure_future(receive())
        waiter = asyncio.ensure_future(all_answered.wait())
        try:
            await asyncio.wait(
                {waiter, receiver},
                timeout=max(0.0, deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (sender, receiver, waiter):
                task.cancel()
            await asyncio.gather(sender, receiver, waiter, return_exceptions=True)


def _result(host: _Host) -> ProbeResult:
    rtts = [host.rtts[r] * 1000.0 for r in sorted(host.rtts)]
    received = len(rtts)
    loss = 100.0 * (host.sent - received) / host.sent if host.sent else 100.0
    jitter = (
        sum(abs(b - a) for a, b in itertools.pairwise(rtts)) / (received - 1)
        if received > 1
        else None
    )
    details = {
        "address": host.address,
        "sent": host.sent,
        "received": received,
        "min_rtt_ms": round(min(rtts), 3) if rtts else None,
        "avg_rtt_ms": round(sum(rtts) / received, 3) if rtts else None,
        "max_rtt_ms": round(max(rtts), 3) if rtts else None,
        "jitter_ms": round(jitter, 3) if jitter is not None else None,
    }
    if not received:
        error = host.error or "no echo reply"
        return ProbeResult(ok=False, error=error, loss=loss, details=details)
    latency = sum(rtts) / received / 1000.0
    return ProbeResult(ok=True, latency=latency, loss=loss, details=details)


async def _address(target: str) -> str | ProbeResult:
    try:
        return str(ipaddress.ip_address(target))
    except ValueError:
        pass
    try:
        addresses = await icmplib.async_resolve(target)
    except icmplib.NameLookupError:
        return ProbeResult(ok=False, error=f"name lookup failed: {target}")
    return str(addresses[0])


async def probe_many(
    targets: Sequence[str], timeout: float, options: Options, *, privileged: bool | None = None
) -> list[ProbeResult]:
    """Ping every target; one result per target, in order. A bad name fails only itself."""
    if privileged is None:
        mode = icmp_mode()
        if mode is Mode.NONE:
            raise StartupError(describe_mode(mode))
        privileged = mode is Mode.RAW
    resolved = await asyncio.gather(*(_address(t) for t in targets))
    hosts: dict[int, _Host] = {i: _Host(a) for i, a in enumerate(resolved) if isinstance(a, str)}
    per_socket = max(1, MAX_ECHOES_PER_SOCKET // options.count)
    bursts = []
    for v6 in (False, True):
        family = [h for h in hosts.values() if (":" in h.address) == v6]
        for start in range(0, len(family), per_socket):
            chunk = family[start : start + per_socket]
            bursts.append(_burst(chunk, v6, timeout, options, privileged))
    await asyncio.gather(*bursts)
    return [r if isinstance(r, ProbeResult) else _result(hosts[i]) for i, r in enumerate(resolved)]


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    return (await probe_many([target], timeout, options))[0]
