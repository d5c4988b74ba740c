"""ICMP echo: loss, min/avg/max round-trip time and jitter over a short burst.

Many targets go through one socket per address family (``probe_many``): every echo of a burst
is sent from it and every reply read back from it, matched by identifier, sequence number and
source address. So 1,000 targets every 10 s cost two sockets and a few thousand small packets,
not 1,000 sockets (icmplib's ``async_multiping`` opens one per host and runs at most 50 at
once). The packets come from a template (see :mod:`probes.icmp_io`).

Three ways to be allowed to ping, tried in this order (``icmp_mode``):
raw sockets (root, or CAP_NET_RAW), then Linux datagram ICMP sockets, which any process whose
group is in ``net.ipv4.ping_group_range`` may open; the kernel then owns the echo identifier.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from probes.base import ProbeOptions, ProbeResult


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
    if (":" in target or "/" in target) and not _is_ipv6(target):
        return (
            "expected a host name or address (no scheme, port or path; IPv6 without"
            f" brackets), got {target!r}"
        )
    return None


def _is_ipv6(target: str) -> bool:
    """An IPv6 address, unbracketed, perhaps with a scope (``fe80::1%eth0``)."""
    try:
        return isinstance(ipaddress.ip_address(target), ipaddress.IPv6Address)
    except ValueError:
        return False


async def probe_many(
    targets: Sequence[str], timeout: float, options: Options, *, privileged: bool | None = None
) -> list[ProbeResult]:
    """Ping every target; one result per target, in order. A bad name fails only itself."""
    from probes import icmp_io  # the socket code (and icmplib) only when a ping runs

    return await icmp_io.probe_many(targets, timeout, options, privileged=privileged)


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    return (await probe_many([target], timeout, options))[0]
