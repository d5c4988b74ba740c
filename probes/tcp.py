"""TCP connect probe: is something listening, and how long does the handshake take."""

from __future__ import annotations

import asyncio
import time

from probes.base import ProbeOptions, ProbeResult, fail, timeout_text


class Options(ProbeOptions):
    pass


def split_host_port(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; raises ValueError with a readable message."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {target!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port


def check_target(target: str) -> str | None:
    try:
        split_host_port(target)
    except ValueError as exc:
        return str(exc)
    return None


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return fail(timeout_text(timeout))
    except ConnectionRefusedError:
        return fail("connection refused")
    except OSError as exc:
        return fail(exc.strerror or str(exc))
    latency = time.perf_counter() - started
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return ProbeResult(ok=True, latency=latency)
