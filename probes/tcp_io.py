"""The TCP probe's connection, apart from :mod:`probes.tcp` so that reading a config
loads none of it (issue 9: start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from probes import patterns
from probes.base import (
    ProbeResult,
    fail,
    split_host_port,
    timeout_text,
)
from probes.tcp import (
    Options,
)


def _shown(data: bytes | bytearray) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= 80 else text[:77] + "..."


class _Reading:
    """What arrived, and whether the pattern was being searched: kept by the caller, so
    that a timeout can show what came and say whose time it was."""

    __slots__ = ("data", "searching")

    def __init__(self) -> None:
        self.data = bytearray()
        self.searching = False


async def _read_until(
    reader: asyncio.StreamReader, pattern: str, limit: int, into: _Reading, deadline: float
) -> bool:
    """Read until ``pattern`` matches, the peer closes, or ``limit`` bytes came."""
    loop = asyncio.get_running_loop()
    data = into.data
    while len(data) < limit:
        chunk = await reader.read(limit - len(data))
        if not chunk:
            break
        data += chunk
        into.searching = True
        text = data.decode("utf-8", errors="replace")
        if await patterns.search(pattern, text, deadline - loop.time()):
            return True
        into.searching = False
    return False


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target)
    started = time.perf_counter()
    latency: float | None = None
    reading = _Reading()
    received = reading.data
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(host, port)
            latency = time.perf_counter() - started
            try:
                if options.send is not None:
                    writer.write(options.send.encode())
                    await writer.drain()
                matched = True
                if options.expect is not None:
                    matched = await _read_until(
                        reader, options.expect, options.max_read_bytes, reading, deadline
                    )
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (TimeoutError, patterns.PatternTimeout):
        if latency is not None and options.expect is not None:
            if reading.searching:
                error = patterns.too_slow(options.expect, "the reply")
            else:
                error = f"{timeout_text(timeout)} waiting for {options.expect!r}"
            return ProbeResult(
                ok=False, latency=latency, error=error, details={"received": _shown(received)}
            )
        return fail(timeout_text(timeout))
    except ConnectionRefusedError:
        return fail("connection refused")
    except OSError as exc:
        if latency is None:
            return fail(exc.strerror or str(exc))
        return ProbeResult(ok=False, latency=latency, error=exc.strerror or str(exc))
    if not matched and options.expect is not None:
        return ProbeResult(
            ok=False,
            latency=latency,
            error=f"reply does not match {options.expect!r}: {_shown(received)!r}",
            details={"received": _shown(received)},
        )
    details = {"received": _shown(received)} if options.expect is not None else {}
    return ProbeResult(ok=True, latency=latency, details=details)
