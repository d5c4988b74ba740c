"""SMTP probe against hostile scripted peers on loopback (one asyncio server per test): blank
EHLO lines, reply codes that are digits to ``str.isdigit`` but not ASCII, long text with
control characters, and a STARTTLS handshake that never completes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from probe_peers import shown, tcp_peer

from probes import smtp
from probes.registry import REGISTRY


def opts(**raw: Any) -> smtp.Options:
    return REGISTRY["smtp"].parse_options(raw)


@asynccontextmanager
async def scripted(*replies: bytes) -> AsyncIterator[str]:
    """A peer that sends ``replies[0]`` at once and each next one after a command line from
    the probe, then waits for the probe to hang up. Yields its ``host:port``."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for i, reply in enumerate(replies):
                if i:
                    await reader.readline()
                writer.write(reply)
                await writer.drain()
            await reader.read()  # until the probe leaves
        except OSError:
            pass
        finally:
            writer.close()

    async with tcp_peer(talk) as address:
        yield address


async def test_blank_ehlo_lines_are_skipped() -> None:
    """ "250- " and "250-\\t" have no keyword: ``e.split()[0]`` raised IndexError."""
    ehlo = b"250-mx.test\r\n250- \r\n250-\t\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    async with scripted(b"220 mx.test\r\n", ehlo, b"221 bye\r\n") as target:
        result = await smtp.probe(target, 5, opts())
    assert (result.ok, result.error) == (True, None)
    assert result.details["extensions"] == ["SIZE", "8BITMIME"]


async def test_blank_ehlo_line_before_starttls() -> None:
    """The STARTTLS offer is found past a blank line (the check raised IndexError)."""
    ehlo = b"250-mx.test\r\n250-\t\r\n250- \r\n250 STARTTLS\r\n"
    refusal = b"454 4.7.0 TLS not available\r\n"
    async with scripted(b"220 mx.test\r\n", ehlo, refusal) as target:
        result = await smtp.probe(target, 5, opts(starttls=True, insecure_skip_verify=True))
    assert (result.ok, result.error) == (False, "SMTP 454 to STARTTLS: 4.7.0 TLS not available")


@pytest.mark.parametrize(
    ("replies", "error"),
    [
        # isdigit() is True, int() raises ValueError: the probe raised.
        (["²²² hi\r\n"], 'malformed reply at banner: "²²² hi"'),
        # int() reads 220, 250 and 221: the probe said ok for a peer that is not SMTP.
        (
            ["٢٢٠ hi\r\n", "٢٥٠ ok\r\n", "٢٢١ bye\r\n"],
            'malformed reply at banner: "٢٢٠ hi"',
        ),
        (["２２０ hi\r\n", "250 ok\r\n", "221 bye\r\n"], 'malformed reply at banner: "２２０ hi"'),
        # In a later line of a reply: int() raised again.
        (["220 hi\r\n", "250-mx\r\n²⁵⁰ SIZE\r\n"], 'malformed reply at EHLO: "²⁵⁰ SIZE"'),
    ],
)
async def test_reply_code_must_be_three_ascii_digits(replies: list[str], error: str) -> None:
    async with scripted(*(reply.encode() for reply in replies)) as target:
        result = await smtp.probe(target, 5, opts())
    assert (result.ok, result.error) == (False, error)


async def test_malformed_reply_is_quoted_short() -> None:
    async with scripted(b"\x1b[2J" + b"x" * 60_000 + b"\r\n") as target:
        result = await smtp.probe(target, 5, opts())
    quote = shown(r"\x1b[2J", "x", 120)
    assert (result.ok, result.error) == (False, f'malformed reply at banner: "{quote}"')


async def test_banner_is_quoted_short_in_error_and_details() -> None:
    banner = b"554 \x1b[2J\x1b[31mgo away\x07" + b"A" * 60_000 + b"\r\n"
    async with scripted(banner) as target:
        result = await smtp.probe(target, 5, opts())
    quote = shown(r"\x1b[2J\x1b[31mgo away\x07", "A", 120)
    assert (result.ok, result.error) == (False, f"SMTP 554 at banner: {quote}")
    assert result.details == {"banner": quote}


async def test_ehlo_refusal_is_quoted_short() -> None:
    refusal = b"550 \x1b]0;pwned\x07" + b"B" * 60_000 + b"\r\n"
    async with scripted(b"220 mx.test\r\n", refusal) as target:
        result = await smtp.probe(target, 5, opts())
    quote = shown(r"\x1b]0;pwned\x07", "B", 120)
    assert (result.ok, result.error) == (False, f"SMTP 550 to EHLO: {quote}")
    assert result.details == {"banner": "mx.test"}


async def test_extensions_are_few_and_short() -> None:
    """98 keywords of 2 kB with control characters: the details list 32, each cut to 32
    characters and escaped."""
    lines = [b"250-mx.test\r\n"]
    lines += [b"250-k%d\x1b[31m" % i + b"e" * 2000 + b"\r\n" for i in range(98)]
    lines.append(b"250 LAST\r\n")
    async with scripted(b"220 mx.test\r\n", b"".join(lines), b"221 bye\r\n") as target:
        result = await smtp.probe(target, 5, opts())
    assert (result.ok, result.error) == (True, None)
    extensions = result.details["extensions"]
    assert extensions == [shown(rf"K{i}\x1b[31M", "E", 32) for i in range(32)]


async def test_stalled_starttls_handshake_is_a_timeout() -> None:
    """The peer says "220 go ahead" to STARTTLS, reads the ClientHello and never answers,
    holding the connection open until the test ends: a timeout, with the banner seen."""
    hello = asyncio.Event()
    release = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 mx.test\r\n")
            await reader.readline()
            writer.write(b"250-mx.test\r\n250 STARTTLS\r\n")
            await reader.readline()
            writer.write(b"220 go ahead\r\n")
            await writer.drain()
            if await reader.read(1):  # the ClientHello's first byte
                hello.set()
            await release.wait()
        except OSError:
            pass
        finally:
            writer.close()

    # The close keeps to the probe's deadline (it waited up to a second past it): a matter
    # of time, so not asserted here; what is asserted is the result the stall gives.
    async with tcp_peer(stall) as target:
        try:
            result = await smtp.probe(target, 0.5, opts(starttls=True, insecure_skip_verify=True))
            assert hello.is_set()  # the probe was in the handshake when it timed out
        finally:
            release.set()
    assert (result.ok, result.error) == (False, "timeout after 0.5 s")
    assert result.details == {"banner": "mx.test"}
