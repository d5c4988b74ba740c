"""ICMP echo: loss and round-trip times over a short burst, many targets through one socket."""

from __future__ import annotations

import os
from collections.abc import Sequence

import icmplib

from availmon.errors import StartupError
from probes.base import ProbeOptions, ProbeResult


class Options(ProbeOptions):
    count: int = 3
    interval: float = 0.2  # seconds between echoes to one host


def check_target(target: str) -> str | None:
    if not target or " " in target:
        return f"expected a host name or address, got {target!r}"
    return None


def privileged_mode() -> bool:
    """Raw sockets as root or with CAP_NET_RAW; otherwise datagram ICMP (ping_group_range)."""
    if os.geteuid() == 0:
        return True
    try:
        icmplib.ping("127.0.0.1", count=1, timeout=1, privileged=True)
    except icmplib.SocketPermissionError:
        return False
    return True


def _result(host: icmplib.Host) -> ProbeResult:
    details = {
        "sent": host.packets_sent,
        "received": host.packets_received,
        "min_rtt_ms": host.min_rtt if host.is_alive else None,
        "max_rtt_ms": host.max_rtt if host.is_alive else None,
        "jitter_ms": host.jitter if host.is_alive else None,
    }
    loss = host.packet_loss * 100.0
    if not host.is_alive:
        return ProbeResult(ok=False, error="no echo reply", loss=loss, details=details)
    return ProbeResult(ok=True, latency=host.avg_rtt / 1000.0, loss=loss, details=details)


async def probe_many(
    targets: Sequence[str], timeout: float, options: Options, *, privileged: bool | None = None
) -> list[ProbeResult]:
    if privileged is None:
        privileged = privileged_mode()
    try:
        hosts = await icmplib.async_multiping(
            list(targets),
            count=options.count,
            interval=options.interval,
            timeout=timeout,
            privileged=privileged,
        )
    except icmplib.SocketPermissionError as exc:
        raise StartupError(
            "ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering this group"
        ) from exc
    except icmplib.NameLookupError as exc:
        return [ProbeResult(ok=False, error=f"name lookup failed: {exc}") for _ in targets]
    return [_result(h) for h in hosts]


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    return (await probe_many([target], timeout, options))[0]
