"""The SIP probe's transactions, apart from :mod:`probes.sip` so that reading a config
loads none of it (issue 9: start-up)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from probes.base import (
    ProbeResult,
    fail,
    peer_text,
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

#: How much of a peer's text (a reason phrase, a Server header) an error or a detail quotes.
QUOTE_CHARS = 120
#: Datagrams waiting to be read beyond this many are dropped, as a full socket buffer would:
#: a flood must not queue without bound between the socket and the probe.
INBOX_MAX = 64


@dataclass
class _Provisional:
    """The provisional (1xx) responses to our request: how many, and the last one only (a
    peer that streams "100 Trying" must not grow the probe's memory)."""

    count: int = 0
    last: Response | None = None

    def add(self, response: Response) -> None:
        self.count += 1
        self.last = response


def _content_length(response: Response | None) -> int:
    """The body's length, from Content-Length: ASCII digits only (int() takes "-5", "+5"
    and "٥" and refuses 5000 digits), else a malformed response."""
    if response is None:
        return 0
    value = response.headers.get("content-length", "")
    if not value:
        return 0
    digits = value.lstrip("0") or "0"
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise ValueError(f'malformed response: Content-Length "{peer_text(value, 40)}"')
    return int(digits)


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
        if self.inbox.qsize() < INBOX_MAX:
            self.inbox.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.inbox.put_nowait(exc)


async def _over_udp(host: str, port: int, options: Options, seen: _Provisional) -> Response:
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
            seen.add(response)
            interval = T2  # RFC 3261 17.1.2.2: after a provisional, retransmit at T2
    finally:
        transport.close()


async def _over_tcp(host: str, port: int, options: Options, seen: _Provisional) -> Response:
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
            length = _content_length(response)
            if length:
                await reader.readexactly(min(length, MAX_MESSAGE))
            if response is None or not _ours(response, request):
                continue
            if response.code >= 200:
                return response
            seen.add(response)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target, DEFAULT_PORT)
    provisional = _Provisional()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            if options.transport == "udp":
                response = await _over_udp(host, port, options, provisional)
            else:
                response = await _over_tcp(host, port, options, provisional)
    except TimeoutError:
        error = timeout_text(timeout)
        if provisional.last is not None:
            last = provisional.last
            shown = f"SIP {last.code} {peer_text(last.reason, QUOTE_CHARS)}".rstrip()
            return fail(f"{error} (last: {shown})", provisional=provisional.count)
        return fail(error)
    except ConnectionRefusedError:
        return fail("connection refused")
    except (OSError, ValueError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return fail(text)
    latency = time.perf_counter() - started
    reason = peer_text(response.reason, QUOTE_CHARS)
    details: dict[str, Any] = {"code": response.code, "reason": reason}
    agent = response.headers.get("server") or response.headers.get("user-agent")
    if agent:
        details["server"] = peer_text(agent, QUOTE_CHARS)
    if provisional.count:
        details["provisional"] = provisional.count
    if response.code not in options.accept_codes:
        error = f"SIP {response.code} {reason}".rstrip()
        return ProbeResult(ok=False, latency=latency, error=error, details=details)
    return ProbeResult(ok=True, latency=latency, details=details)
