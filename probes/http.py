"""HTTP probe: status code and time to the full response."""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit

import aiohttp

from probes.base import ProbeOptions, ProbeResult, fail, timeout_text


class Options(ProbeOptions):
    method: str = "GET"
    #: Accepted status codes; empty means any 2xx.
    expect_status: tuple[int, ...] = ()
    follow_redirects: bool = True


def check_target(target: str) -> str | None:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL, got {target!r}"
    return None


def _status_ok(status: int, options: Options) -> bool:
    if options.expect_status:
        return status in options.expect_status
    return 200 <= status < 300


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    started = time.perf_counter()
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.request(
                options.method, target, allow_redirects=options.follow_redirects
            ) as response,
        ):
            await response.read()
            status = response.status
    except TimeoutError:
        return fail(timeout_text(timeout))
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return fail("connection refused")
        errno = exc.os_error.errno if exc.os_error else None
        return fail(os.strerror(errno).lower() if errno else str(exc))
    except aiohttp.ClientError as exc:
        return fail(str(exc) or type(exc).__name__)
    except asyncio.CancelledError:
        raise
    latency = time.perf_counter() - started
    if not _status_ok(status, options):
        return ProbeResult(
            ok=False, latency=latency, error=f"HTTP {status}", details={"status": status}
        )
    return ProbeResult(ok=True, latency=latency, details={"status": status})
