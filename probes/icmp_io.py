"""ICMP echo bursts through one socket per address family, from a packet template.

Why not icmplib's ``ICMPSocket.send`` for each echo (issue 9: a round of 1,000 targets cost
4.6x fping's CPU): it resolves the destination with ``getaddrinfo``, sets TTL and traffic
class, draws a random payload and checksums it in Python for every packet. Here the header
and payload are built once per burst; each echo only patches its sequence number and, on a
raw IPv4 socket, the checksum, derived from the template's sum (RFC 1624). Replies are read
by a reader callback that drains the socket until it would block, not one future per packet,
and a raw socket asks the kernel (ICMP_FILTER) for echo replies and errors only, so it never
reads back our own requests on loopback. icmplib still opens the socket (raw or datagram,
with its permission errors) and resolves names: what it does well.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import icmplib

from availmon.errors import StartupError
from probes.base import ProbeResult
from probes.icmp import Mode, Options, describe_mode, icmp_mode

#: A burst's echoes are told apart by sequence number, 16 bits wide.
MAX_ECHOES_PER_SOCKET = 65_536
RECEIVE_BUFFER = 4 * 1024 * 1024
#: Linux raw socket filters (linux/icmp.h, linux/icmpv6.h): a set bit drops that type.
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1
_V4_WANTED = (0, 3, 11)  # echo reply, destination unreachable, time exceeded
_V6_WANTED = (129, 1, 3)  # echo reply, destination unreachable, time exceeded
_PAYLOAD_TEXT = b"availmon-icmp-echo "

_UNREACHABLE_V4 = {0: "network unreachable", 1: "host unreachable", 13: "prohibited by filter"}
_UNREACHABLE_V6 = {0: "no route to host", 1: "prohibited by filter", 3: "address unreachable"}


@dataclass
class _Host:
    """One target's tally during a burst."""

    address: str
    sent: int = 0
    rtts: dict[int, float] = field(default_factory=dict)  # round -> seconds
    error: str | None = None
    #: Where its replies come from: the address without an IPv6 scope (fe80::1%eth0).
    source: str = field(init=False)

    def __post_init__(self) -> None:
        self.source = _canonical(self.address)


def _parse(data: bytes, v6: bool, raw: bool) -> tuple[int, int, int, int] | None:
    """(type, code, identifier, sequence) of an echo reply or of the echo an error quotes."""
    if not v6 and raw:
        data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets hand us the IP header too
    if len(data) < 8:
        return None
    kind, code = data[0], data[1]
    if kind == (129 if v6 else 0):
        ident, seq = struct.unpack_from("!HH", data, 4)
        return kind, code, ident, seq
    if kind in ((1, 3) if v6 else (3, 11)):
        inner = data[8:]
        offset = 40 if v6 else (inner[0] & 0x0F) * 4 if inner else 0
        quoted = inner[offset : offset + 8]
        if len(quoted) == 8 and quoted[0] == (128 if v6 else 8):
            ident, seq = struct.unpack_from("!HH", quoted, 4)
            return kind, code, ident, seq
    return None


def _error_text(kind: int, code: int, v6: bool) -> str:
    if (v6 and kind == 3) or (not v6 and kind == 11):
        return "TTL exceeded in transit"
    names = _UNREACHABLE_V6 if v6 else _UNREACHABLE_V4
    return names.get(code, f"destination unreachable (code {code})")


class EchoTemplate:
    """An echo request built once; ``packet(seq)`` costs a few integer operations.

    The checksum matters only on raw IPv4 sockets: for ICMPv6 and for datagram ICMP sockets
    the kernel fills it in (and, on datagram sockets, the identifier too).
    """

    def __init__(self, ident: int, payload_size: int, v6: bool) -> None:
        self.kind = 128 if v6 else 8
        self.ident = ident
        reps = payload_size // len(_PAYLOAD_TEXT) + 1
        self.payload = (_PAYLOAD_TEXT * reps)[:payload_size]
        body = struct.pack("!BBHHH", self.kind, 0, 0, ident, 0) + self.payload
        if len(body) % 2:
            body += b"\0"
        # One's-complement sum of the packet with sequence 0 and checksum 0 (RFC 1071).
        self._sum: int = sum(struct.unpack(f"!{len(body) // 2}H", body))

    def checksum(self, seq: int) -> int:
        """RFC 1071 checksum of the packet with this sequence number."""
        total = self._sum + seq
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    def packet(self, seq: int) -> bytes:
        header = struct.pack("!BBHHH", self.kind, 0, self.checksum(seq), self.ident, seq)
        return header + self.payload


def _filter_replies(sock: socket.socket, v6: bool) -> None:
    """Raw sockets see every ICMP packet; keep replies and errors (best effort)."""
    try:
        if v6:
            blocked = [0xFFFFFFFF] * 8
            for kind in _V6_WANTED:
                blocked[kind >> 5] &= ~(1 << (kind & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *blocked))
        else:
            mask = 0xFFFFFFFF
            for kind in _V4_WANTED:
                mask &= ~(1 << kind)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", mask))
    except OSError:
        pass  # not Linux: the identifier check below still drops what is not ours


def _open(v6: bool, privileged: bool) -> socket.socket:
    """A non-blocking ICMP socket (raw, or datagram without privileges), opened by icmplib."""
    kind = icmplib.ICMPv6Socket if v6 else icmplib.ICMPv4Socket
    try:
        wrapper = kind(privileged=privileged)
    except icmplib.SocketPermissionError as exc:
        raise StartupError(describe_mode(Mode.NONE)) from exc
    # Take the socket over: icmplib's wrapper would close it when collected.
    sock = socket.socket(fileno=wrapper.sock.detach())
    sock.setblocking(False)
    # Room for a burst's replies; the kernel caps this at net.core.rmem_max.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    if privileged:
        _filter_replies(sock, v6)
    else:
        sock.bind(("::" if v6 else "0.0.0.0", 0))  # the kernel's identifier is our port
    return sock


def _canonical(address: str) -> str:
    return address.split("%", 1)[0]


async def _burst(
    hosts: list[_Host], v6: bool, timeout: float, options: Options, privileged: bool
) -> None:
    """Ping every host ``count`` times through one socket; fills in each ``_Host``."""
    sock = _open(v6, privileged)
    loop = asyncio.get_running_loop()
    ident = secrets.randbelow(0x10000) if privileged else int(sock.getsockname()[1])
    template = EchoTemplate(ident, options.payload_size, v6)
    pending: list[tuple[_Host, int, float] | None] = []  # sequence -> host, round, sent at
    started = loop.time()
    deadline = started + timeout
    expected = len(hosts) * options.count
    answered = 0
    done = loop.create_future()
    reply_kind = 129 if v6 else 0

    def on_readable() -> None:
        nonlocal answered
        while True:
            try:
                data, source = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                if not done.done():
                    done.set_result(None)  # the socket failed: what is unanswered is lost
                return
            received_at = time.perf_counter()
            parsed = _parse(data, v6, privileged)
            if parsed is None:
                continue
            kind, code, reply_ident, seq = parsed
            if reply_ident != ident or seq >= len(pending):
                continue  # another process's echo: raw sockets see every ICMP packet
            entry = pending[seq]
            if entry is None:
                continue
            host, rnd, sent_at = entry
            if kind == reply_kind:
                if _canonical(source[0]) != host.source:
                    continue
                if rnd not in host.rtts:  # duplicates count once
                    host.rtts[rnd] = received_at - sent_at
                    answered += 1
                    if answered == expected and not done.done():
                        done.set_result(None)
            else:
                host.error = _error_text(kind, code, v6)

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
                pending.append((host, rnd, time.perf_counter()))
                packet = template.packet(seq)
                seq += 1
                host.sent += 1
                try:
                    sock.sendto(packet, (host.address, 0))
                except BlockingIOError:
                    await loop.sock_sendto(sock, packet, (host.address, 0))
                except OSError as exc:
                    host.error = host.error or (exc.strerror or str(exc)).lower()
                if seq % 256 == 0:
                    await asyncio.sleep(0)  # let the reader drain replies between sends

    loop.add_reader(sock.fileno(), on_readable)
    # Owned here: cancelled and awaited before the socket closes.
    sender = asyncio.ensure_future(send())
    try:
        await asyncio.wait({done}, timeout=max(0.0, deadline - loop.time()))
    finally:
        loop.remove_reader(sock.fileno())
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()


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


def _literal(target: str) -> str | None:
    """The canonical text of an address literal, or None for a name to look up."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:  # inet_pton/ntop in C: ipaddress costs more than the ping itself here
            return socket.inet_ntop(family, socket.inet_pton(family, target))
        except OSError:
            continue
    try:
        return str(ipaddress.ip_address(target))  # e.g. fe80::1%eth0, with its scope
    except ValueError:
        return None


async def _lookup(target: str) -> str | ProbeResult:
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
    resolved: list[str | ProbeResult | None] = [_literal(t) for t in targets]
    names = [i for i, r in enumerate(resolved) if r is None]
    if names:  # addresses need no task each; only names are looked up (concurrently)
        looked_up = await asyncio.gather(*(_lookup(targets[i]) for i in names))
        for i, found in zip(names, looked_up, strict=True):
            resolved[i] = found
    hosts = {i: _Host(a) for i, a in enumerate(resolved) if isinstance(a, str)}
    per_socket = max(1, MAX_ECHOES_PER_SOCKET // options.count)
    bursts = []
    for v6 in (False, True):
        family = [h for h in hosts.values() if (":" in h.address) == v6]
        for start in range(0, len(family), per_socket):
            chunk = family[start : start + per_socket]
            bursts.append(_burst(chunk, v6, timeout, options, privileged))
    await asyncio.gather(*bursts)
    out: list[ProbeResult] = []
    for i, r in enumerate(resolved):
        out.append(r if isinstance(r, ProbeResult) else _result(hosts[i]))
    return out
