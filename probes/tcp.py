"""TCP probe: is something listening, how long the handshake takes, and (optionally) does it
say the right thing: ``send`` a line, ``expect`` a regex on the banner or reply.

The reply is read up to ``max_read_bytes`` and within the probe's timeout, so a peer that talks
forever or never stops holding the connection cannot hold the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Annotated

from pydantic import Field, field_validator

from probes.base import (
    ProbeOptions,
    ProbeResult,
    compile_regex,
    fail,
    split_host_port,
    target_checker,
    timeout_text,
)


class Options(ProbeOptions):
    #: Text to send once connected (TOML escapes such as "\r\n" work), e.g. "PING\r\n".
    send: str | None = None
    #: A regex searched in what the peer sends back (banner or reply), e.g. "^SSH-2\\.0-".
    expect: re.Pattern[str] | None = None
    max_read_bytes: Annotated[int, Field(ge=1, le=1_048_576)] = 4096

    _compile_expect = field_validator("expect", mode="before")(compile_regex)


check_target = target_checker(split_host_port)


def _shown(data: bytes | bytearray) -> str:
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= 80 else text[:77] + "..."


async def _read_until(
    reader: asyncio.StreamReader, pattern: re.Pattern[str], limit: int, data: bytearray
) -> bool:
    """Read into ``data`` until ``pattern`` matches, the peer closes, or ``limit`` bytes came.

    ``data`` is the caller's, so that what arrived before a timeout can still be shown.
    """
    while len(data) < limit:
        chunk = await reader.read(limit - len(data))
        if not chunk:
            break
        data += chunk
        if pattern.search(data.decode("utf-8", errors="replace")):
            return True
    return False


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target)
    started = time.perf_counter()
    latency: float | None = None
    received = bytearray()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            latency = time.perf_counter() - started
            try:
                if options.send is not None:
                    writer.write(options.send.encode())
                    await writer.drain()
                matched = True
                if options.expect is not None:
                    matched = await _read_until(
                        reader, options.expect, options.max_read_bytes, received
                    )
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        if latency is not None and options.expect is not None:
            return ProbeResult(
                ok=False,
                latency=latency,
                error=f"{timeout_text(timeout)} waiting for {options.expect.pattern!r}",
                details={"received": _shown(received)},
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
            error=f"reply does not match {options.expect.pattern!r}: {_shown(received)!r}",
            details={"received": _shown(received)},
        )
    details = {"received": _shown(received)} if options.expect is not None else {}
    return ProbeResult(ok=True, latency=latency, details=details)
