"""The SIP probe's transactions, apart from :mod:`probes.sip` so that reading a config
loads none of it (issue 9: start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from probes.base import (
    ProbeResult,
    fail,
    split_host_port,
    timeout_text,
)
from probes.sip import (
    DEFAULT_PORT,
    MAX_MESSAGE,
    T1,
    T2,
    Options,
    Request,
    Response,
    build_options,
    parse_response,
)


def _ours(response: Response, request: Request) -> bool:
    """Is this the answer to our request (RFC 3261 17.1.3: top Via branch and CSeq method)?"""
    return (
        response.headers.get("call-id") == request.call_id
        and response.headers.get("cseq", "").split()[-1:] == ["OPTIONS"]
        and f"branch={request.branch}" in response.headers.get("via", "")
    )


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.inbox.put_nowait(exc)


async def _over_udp(host: str, port: int, options: Options, seen: list[Response]) -> Response:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(host, port))
    try:
        local = transport.get_extra_info("sockname")
        request = build_options(host, port, local[:2], "udp", options.from_user)
        interval = T1
        transport.sendto(request.data)
        next_send = loop.time() + interval
        while True:
            try:
                async with asyncio.timeout_at(next_send):
                    item = await protocol.inbox.get()
            except TimeoutError:
                transport.sendto(request.data)  # timer E: retransmit
                interval = min(interval * 2, T2)
                next_send = loop.time() + interval
                continue
            if isinstance(item, OSError):
                raise item
            response = parse_response(item)
            if response is None or not _ours(response, request):
                continue
            if response.code >= 200:
                return response
            seen.append(response)
            interval = T2  # RFC 3261 17.1.2.2: after a provisional, retransmit at T2
    finally:
        transport.close()


async def _over_tcp(host: str, port: int, options: Options, seen: list[Response]) -> Response:
    reader, writer = await asyncio.open_connection(host, port, limit=MAX_MESSAGE)
    try:
        local = writer.get_extra_info("sockname")
        request = build_options(host, port, local[:2], "tcp", options.from_user)
        writer.write(request.data)
        await writer.drain()
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("connection closed before a final response") from None
            except asyncio.LimitOverrunError:
                raise ValueError("response headers too long") from None
            if not head.strip():
                continue  # a keep-alive CRLF (RFC 5626 4.4.1)
            response = parse_response(head)
            length = int(response.headers.get("content-length", "0") or 0) if response else 0
            if length:
                await reader.readexactly(min(length, MAX_MESSAGE))
            if response is None or not _ours(response, request):
                continue
            if response.code >= 200:
                return response
            seen.append(response)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target, DEFAULT_PORT)
    provisional: list[Response] = []
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            if options.transport == "udp":
                response = await _over_udp(host, port, options, provisional)
            else:
                response = await _over_tcp(host, port, options, provisional)
    except TimeoutError:
        error = timeout_text(timeout)
        if provisional:
            last = provisional[-1]
            error += f" (last: SIP {last.code} {last.reason})"
        return fail(error)
    except ConnectionRefusedError:
        return fail("connection refused")
    except (OSError, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return fail(text)
    latency = time.perf_counter() - started
    details: dict[str, Any] = {"code": response.code, "reason": response.reason}
    agent = response.headers.get("server") or response.headers.get("user-agent")
    if agent:
        details["server"] = agent
    if response.code not in options.accept_codes:
        error = f"SIP {response.code} {response.reason}".rstrip()
        return ProbeResult(ok=False, latency=latency, error=error, details=details)
    return ProbeResult(ok=True, latency=latency, details=details)
