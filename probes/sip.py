"""SIP probe: an OPTIONS request (RFC 3261 11) over UDP or TCP, judged by its final response.

OPTIONS is the SIP "ping": it touches no call state, and any final answer, even 401, 403 or
404 (``accept_codes``), proves a SIP stack is listening and parsing. Provisional 1xx responses
are waited past. Over UDP the request is retransmitted on RFC 3261's timer E schedule (T1 =
0.5 s doubling to T2 = 4 s), so one lost datagram does not fail the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field

from probes.base import (
    ProbeOptions,
    ProbeResult,
    fail,
    split_host_port,
    target_checker,
    timeout_text,
)

DEFAULT_PORT = 5060
T1 = 0.5  # RFC 3261 17.1.2.2: first retransmission interval over UDP
T2 = 4.0  # RFC 3261: the retransmission interval's ceiling for non-INVITE requests
MAX_MESSAGE = 65_535
FinalCode = Annotated[int, Field(ge=200, le=699)]
#: RFC 3261 7.3.3 compact header names.
_COMPACT = {"i": "call-id", "v": "via", "l": "content-length", "f": "from", "t": "to"}


class Options(ProbeOptions):
    transport: Literal["udp", "tcp"] = "udp"
    #: Final response codes that count as up; e.g. [200, 401, 403, 404] for a registrar
    #: that will not answer OPTIONS from strangers with 200.
    accept_codes: tuple[FinalCode, ...] = (200,)
    #: User part of our From URI.
    from_user: Annotated[str, Field(pattern=r"^[A-Za-z0-9._~+-]+$")] = "availmon"


check_target = target_checker(lambda target: split_host_port(target, DEFAULT_PORT))


@dataclass(frozen=True)
class _Request:
    data: bytes
    call_id: str
    branch: str


@dataclass(frozen=True)
class _Response:
    code: int
    reason: str
    headers: dict[str, str]  # lower-case full names; the first value of each


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_options(
    host: str, port: int, local: tuple[str, int], transport: str, user: str
) -> _Request:
    """An OPTIONS request with every header RFC 3261 8.1.1 requires, plus Content-Length."""
    branch = "z9hG4bK" + secrets.token_hex(8)  # the magic cookie of RFC 3261 8.1.1.7
    tag = secrets.token_hex(6)
    local_host = local[0]
    bare = f"[{local_host}]" if ":" in local_host else local_host
    call_id = f"{secrets.token_hex(12)}@{local_host}"
    me = _hostport(local_host, local[1])
    target = _hostport(host, port)
    lines = [
        f"OPTIONS sip:{target} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {me};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{bare}>;tag={tag}",
        f"To: <sip:{target}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:{user}@{me};transport={transport}>",
        "Accept: application/sdp",
        "User-Agent: availmon",
        "Content-Length: 0",
    ]
    return _Request(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), call_id, branch)


def parse_response(data: bytes) -> _Response | None:
    """A SIP response's status and headers; None for anything else (requests, noise)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[0] != "SIP/2.0" or not status[1].isdigit():
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), value.strip())
    reason = status[2] if len(status) > 2 else ""
    return _Response(int(status[1]), reason, headers)


def _ours(response: _Response, request: _Request) -> bool:
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


async def _over_udp(host: str, port: int, options: Options, seen: list[_Response]) -> _Response:
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


async def _over_tcp(host: str, port: int, options: Options, seen: list[_Response]) -> _Response:
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
    provisional: list[_Response] = []
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
