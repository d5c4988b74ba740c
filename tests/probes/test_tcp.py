"""TCP probe against asyncio servers on loopback: connect, banner, send/expect, silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from probe_peers import free_port
from pydantic import ValidationError
from test_patterns import CATASTROPHIC, EXPLODING

from probes import tcp
from probes.registry import REGISTRY

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def opts(**raw: Any) -> tcp.Options:
    return REGISTRY["tcp"].parse_options(raw)


async def banner_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like an SSH or SMTP server: a banner first, then one reply per line received."""
    writer.write(b"SSH-2.0-availmon_test\r\n")
    await writer.drain()
    line = await reader.readline()
    if line:
        writer.write(b"PONG " + line)
        await writer.drain()
    writer.close()


async def banner_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"554 go away\r\n")
    await writer.drain()
    writer.close()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and says nothing until the client leaves (never within the test)."""
    await reader.read()
    writer.close()


async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends 10 kB without the expected text, then keeps the connection open."""
    writer.write(b"x" * 10_000)
    await writer.drain()
    await reader.read()
    writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("handler", "raw", "ok", "error", "received"),
    [
        (banner_then_echo, {}, True, None, None),
        (banner_then_echo, {"expect": r"^SSH-2\.0-"}, True, None, "SSH-2.0-availmon_test\r\n"),
        (
            banner_then_echo,
            {"send": "PING\r\n", "expect": r"PONG PING"},
            True,
            None,
            "SSH-2.0-availmon_test\r\nPONG PING\r\n",
        ),
        (
            banner_then_close,
            {"expect": "^220 "},
            False,
            "reply does not match '^220 ': '554 go away\\r\\n'",
            "554 go away\r\n",
        ),
        (silent, {}, True, None, None),
        (silent, {"send": "HELLO\r\n"}, True, None, None),
        (
            chatter,
            {"expect": "READY", "max_read_bytes": 100},
            False,
            "reply does not match 'READY': '" + "x" * 77 + "...'",
            "x" * 77 + "...",
        ),
    ],
)
async def test_tcp(
    serve: Callable[[Handler], Awaitable[str]],
    handler: Handler,
    raw: dict[str, Any],
    ok: bool,
    error: str | None,
    received: str | None,
) -> None:
    result = await tcp.probe(await serve(handler), 5, opts(**raw))
    assert (result.ok, result.error) == (ok, error)
    assert result.latency is not None  # the connect time, measured in every case here
    assert result.details.get("received") == received


async def test_silent_peer_times_out_waiting_for_expect(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    result = await tcp.probe(await serve(silent), 0.3, opts(expect="^220"))
    assert (result.ok, result.error) == (False, "timeout after 0.3 s waiting for '^220'")
    assert result.latency is not None  # it did connect


async def test_connection_refused() -> None:
    result = await tcp.probe(f"127.0.0.1:{free_port()}", 5, opts())
    assert (result.ok, result.error, result.latency) == (False, "connection refused", None)


def test_bad_expect_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="invalid regular expression"):
        opts(expect="[unclosed")


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("127.0.0.1:22", None),
        ("[::1]:22", None),
        ("127.0.0.1", "expected host:port, got '127.0.0.1'"),
        ("host:http", "port 'http' is not a number"),
        ("host:70000", "port 70000 is out of range 1-65535"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert tcp.check_target(target) == problem


async def test_a_pattern_that_backtracks_without_end_is_a_result_at_the_timeout(
    serve: Callable[[Handler], Awaitable[str]],
) -> None:
    async def exploding(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(EXPLODING.encode())
        await writer.drain()
        await reader.read()
        writer.close()

    result = await tcp.probe(await serve(exploding), 0.5, opts(expect=CATASTROPHIC))
    assert result.ok is False
    assert result.error == (
        f"pattern {CATASTROPHIC!r} still searching the reply when the probe's time ran out"
        " (it backtracks too much: simplify it)"
    )
    assert result.details["received"] == EXPLODING
