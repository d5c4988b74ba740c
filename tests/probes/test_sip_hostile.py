"""SIP probe against hostile scripted peers on loopback (asyncio servers in the test): status
codes that are digits to ``str.isdigit`` but not three ASCII digits, a bad Content-Length,
long text with control characters, and a flood of matching provisional responses."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from probe_peers import LOOPBACK, shown, tcp_peer

from probes import sip
from probes.registry import REGISTRY

#: Given the probe's request, the messages the peer sends back, in order.
Script = Callable[[bytes], list[bytes]]


def opts(**raw: Any) -> sip.Options:
    return REGISTRY["sip"].parse_options(raw)


def echo(request: bytes) -> bytes:
    """Via, From, To, Call-ID and CSeq copied from the request, as a UAS would."""
    lines = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    names = (b"via", b"from", b"to", b"call-id", b"cseq")
    return b"".join(line + b"\r\n" for line in lines if line.split(b":")[0].lower() in names)


def ok(request: bytes) -> bytes:
    return b"SIP/2.0 200 OK\r\n" + echo(request) + b"Content-Length: 0\r\n\r\n"


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, script: Script, once: bool) -> None:
        self.script = script
        self.once = once
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.once and self.answered:
            return  # a retransmission
        self.answered = True
        for message in self.script(data):
            self.transport.sendto(message, addr)


@asynccontextmanager
async def peer(transport: str, script: Script, *, once: bool = False) -> AsyncIterator[str]:
    """A peer that answers the probe's OPTIONS with ``script`` (over TCP, then waits for the
    probe to hang up; over UDP, answers every retransmission too unless ``once``)."""
    if transport == "udp":
        loop = asyncio.get_running_loop()
        endpoint, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(script, once), local_addr=(LOOPBACK, 0)
        )
        try:
            yield f"{LOOPBACK}:{endpoint.get_extra_info('sockname')[1]}"
        finally:
            endpoint.close()
        return

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            for message in script(request):
                writer.write(message)
                await writer.drain()
            await reader.read()  # until the probe leaves
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async with tcp_peer(answer) as address:
        yield address


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    "stray",
    [
        # Not ours, but isdigit() is True: int() raised and the probe failed with its text.
        lambda request: "SIP/2.0 ²⁰⁰ noise\r\n\r\n".encode(),
        # 5000 digits: "Exceeds the limit (4300 digits) for integer string conversion".
        lambda request: b"SIP/2.0 " + b"9" * 5000 + b" x\r\n\r\n",
        # Ours, and int() reads 503: the probe failed with "SIP 503 Busy".
        lambda request: "SIP/2.0 ٥٠٣ Busy\r\n".encode() + echo(request) + b"\r\n",
        # Ours, four digits: a final "SIP 2000 OK" not in accept_codes.
        lambda request: b"SIP/2.0 2000 OK\r\n" + echo(request) + b"\r\n",
    ],
    ids=["superscript", "5000-digits", "arabic-indic", "four-digits"],
)
async def test_malformed_status_code_is_ignored(
    transport: str, stray: Callable[[bytes], bytes]
) -> None:
    """A status code must be exactly three ASCII digits; a message without one is not a
    response to us and is passed over, and the real 200 OK that follows counts."""
    async with peer(transport, lambda request: [stray(request), ok(request)]) as target:
        result = await sip.probe(target, 5, opts(transport=transport))
    assert (result.ok, result.error) == (True, None)
    assert result.details == {"code": 200, "reason": "OK"}


@pytest.mark.parametrize(
    ("length", "quoted"),
    [
        (b"-5", "-5"),  # readexactly(): "size can not be less than zero"
        (b"abc", "abc"),  # int(): "invalid literal for int() with base 10"
        (b"+5", "+5"),  # int() reads 5: five bytes of the next response were eaten
        ("٥".encode(), "٥"),  # int() reads 5 as well
        (b"9" * 5000, "9" * 39 + "…"),  # int(): "Exceeds the limit (4300 digits)"
        (b"\x1b[31m5", r"\x1b[31m5"),
    ],
)
async def test_bad_content_length_is_a_malformed_response(length: bytes, quoted: str) -> None:
    def script(request: bytes) -> list[bytes]:
        trying = b"SIP/2.0 100 Trying\r\n" + echo(request) + b"Content-Length: " + length
        return [trying + b"\r\n\r\n", ok(request)]

    async with peer("tcp", script) as target:
        result = await sip.probe(target, 5, opts(transport="tcp"))
    error = f'malformed response: Content-Length "{quoted}"'
    assert (result.ok, result.error) == (False, error)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_reason_and_server_are_quoted_short(transport: str) -> None:
    """A 60 kB reason phrase and a 3 kB Server header, with control characters, were quoted
    whole into the error and the details."""

    def script(request: bytes) -> list[bytes]:
        status = b"SIP/2.0 503 Serv\x1b[2J\x1b]0;pwn\x07ice " + b"U" * 60_000
        server = b"Server: \x1b[31mevil\x07" + b"S" * 3000
        return [status + b"\r\n" + echo(request) + server + b"\r\nContent-Length: 0\r\n\r\n"]

    async with peer(transport, script) as target:
        result = await sip.probe(target, 5, opts(transport=transport))
    reason = shown(r"Serv\x1b[2J\x1b]0;pwn\x07ice ", "U", 120)
    assert (result.ok, result.error) == (False, f"SIP 503 {reason}")
    assert result.details == {
        "code": 503,
        "reason": reason,
        "server": shown(r"\x1b[31mevil\x07", "S", 120),
    }


async def test_provisional_reason_is_quoted_short_in_the_timeout() -> None:
    def script(request: bytes) -> list[bytes]:
        status = b"SIP/2.0 183 Ring\x1b[31m\x07 " + b"R" * 60_000
        return [status + b"\r\n" + echo(request) + b"Content-Length: 0\r\n\r\n"]

    async with peer("tcp", script) as target:
        result = await sip.probe(target, 0.3, opts(transport="tcp"))
    reason = shown(r"Ring\x1b[31m\x07 ", "R", 120)
    assert (result.ok, result.error) == (False, f"timeout after 0.3 s (last: SIP 183 {reason})")
    assert result.details == {"provisional": 1}


def trying_then_ok(count: int, pad: int) -> Script:
    """``count`` matching "100 Trying" with a ``pad``-byte header each, then 200 OK."""

    def script(request: bytes) -> list[bytes]:
        padding = b"X-Pad: " + b"p" * pad + b"\r\n" if pad else b""
        trying = b"SIP/2.0 100 Trying\r\n" + echo(request) + padding + b"Content-Length: 0\r\n\r\n"
        return [trying] * count + [ok(request)]

    return script


async def test_provisional_flood_keeps_only_the_last() -> None:
    """300 matching "100 Trying" of 20 kB each (6 MB) before the 200 OK: the probe kept every
    one (the audit's endless flood grew it past 1 GB). It now counts them and keeps the last:
    what it holds at once stays far below what was sent."""
    async with peer("tcp", trying_then_ok(300, 20_000)) as target:
        tracemalloc.start()
        try:
            result = await sip.probe(target, 30, opts(transport="tcp"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert (result.ok, result.error) == (True, None)
    assert peak < 2_000_000, f"peak {peak} bytes traced while 6 MB were sent"
    assert result.details == {"code": 200, "reason": "OK", "provisional": 300}


async def test_provisional_responses_over_udp_are_counted() -> None:
    """The UDP path keeps a count and the last one too (a modest burst the socket buffer
    holds; answered once, so a retransmission does not add to the count)."""
    async with peer("udp", trying_then_ok(20, 0), once=True) as target:
        result = await sip.probe(target, 30, opts())
    assert (result.ok, result.error) == (True, None)
    assert result.details == {"code": 200, "reason": "OK", "provisional": 20}
