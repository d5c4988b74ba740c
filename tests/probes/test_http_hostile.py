"""The HTTP probe against hostile servers on 127.0.0.1: raw asyncio servers that send what
aiohttp's own server never would (a punycode charset, a broken status line, a redirect to
ftp:// with a password in it, an endless run of ``100 Continue``)."""

from __future__ import annotations

import asyncio
import contextlib
import encodings.punycode
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from probe_peers import LoopTurns
from test_patterns import CATASTROPHIC, EXPLODING

from probes import http, http_io
from probes.base import ProbeResult

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def opts(**raw: Any) -> http.Options:
    return http.Options.model_validate(raw)


def answer(reply: bytes) -> Handler:
    """A handler that reads the request head, sends ``reply`` and closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A server on 127.0.0.1 with ``handler`` for every connection; yields its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


def reply_200(body: bytes, content_type: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


async def probe_ticking(url: str, options: http.Options) -> tuple[ProbeResult, int]:
    """The probe's result and how often another task of the loop ran meanwhile."""
    async with LoopTurns() as turns:
        result = await http.probe(url, 5, options)
    return result, turns.count


@pytest.fixture
def punycode_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of every text the punycode codec decodes (it still decodes them)."""
    calls: list[int] = []
    real = encodings.punycode.punycode_decode

    def counting(text: Any, errors: str) -> str:
        calls.append(len(text))
        return real(text, errors)

    monkeypatch.setattr(encodings.punycode, "punycode_decode", counting)
    return calls


#: Valid-looking punycode: basic characters, "-", then digits. Python's decoder is quadratic
#: and synchronous: this 150 kB took ~4 s, and 1 MB ~22 s, of a stalled event loop.
PUNYCODE_BODY = b"a" * 10 + b"-" + b"b" * 150_000
PUNYCODE_REPLY = reply_200(PUNYCODE_BODY, b"text/plain; charset=punycode")


async def test_punycode_body_without_a_body_check_is_not_decoded(
    punycode_decodes: list[int],
) -> None:
    async with serving(answer(PUNYCODE_REPLY)) as url:
        result, ticks = await probe_ticking(url, opts())
    assert (result.ok, result.error, result.details) == (True, None, {"status": 200})
    assert punycode_decodes == []  # no body check, no text: nothing to decode
    assert ticks > 0  # the loop went on serving other tasks during the probe


@pytest.mark.parametrize(("check", "decoded"), [({}, 0), ({"body_contains": "hello"}, 1)])
async def test_body_is_decoded_only_for_a_body_check(
    monkeypatch: pytest.MonkeyPatch, check: dict[str, str], decoded: int
) -> None:
    calls: list[str | None] = []
    real = http_io._decode_body

    def counting(raw_body: bytes, charset: str | None) -> str:
        calls.append(charset)
        return real(raw_body, charset)

    monkeypatch.setattr(http_io, "_decode_body", counting)
    async with serving(answer(reply_200(b"hello", b"text/plain; charset=utf-8"))) as url:
        result = await http.probe(url, 5, opts(**check))
    assert (result.ok, result.error) == (True, None)
    assert calls == ["utf-8"] * decoded


@pytest.mark.parametrize(
    ("check", "ok", "error"),
    [
        # Read as UTF-8: the body's own characters, not what punycode would make of them.
        ({"body_contains": "aaaaaaaaaa-bbbb"}, True, None),
        ({"body_regex": r"^a+-b+$"}, True, None),
        ({"body_contains": "\u00e9"}, False, "body does not contain '\u00e9'"),
    ],
)
async def test_punycode_charset_with_a_body_check_is_read_as_utf8(
    punycode_decodes: list[int], check: dict[str, str], ok: bool, error: str | None
) -> None:
    async with serving(answer(PUNYCODE_REPLY)) as url:
        result, ticks = await probe_ticking(url, opts(**check))
    assert (result.ok, result.error, result.details["status"]) == (ok, error, 200)
    assert punycode_decodes == []
    assert ticks > 0


@pytest.mark.parametrize("charset", [b"idna", b"undefined", b"punycode", b"IDNA"])
@pytest.mark.parametrize(
    ("check", "ok", "error"),
    [
        ({}, True, None),
        ({"body_contains": "ok"}, True, None),
        ({"body_contains": "\ufffd"}, True, None),  # the bad byte, replaced as UTF-8 does
        ({"body_contains": "down"}, False, "body does not contain 'down'"),
    ],
)
async def test_charset_that_cannot_decode_is_a_result_not_a_crash(
    charset: bytes, check: dict[str, str], ok: bool, error: str | None
) -> None:
    # idna and undefined raise even with errors="replace"; punycode raises on non-ASCII.
    reply = reply_200(b"\xffok", b"text/plain; charset=" + charset)
    async with serving(answer(reply)) as url:
        result = await http.probe(url, 5, opts(**check))
    assert (result.ok, result.error, result.details["status"]) == (ok, error, 200)


@pytest.mark.parametrize(
    ("charset", "body"),
    [
        (b"unicode_escape", b"status: \\u006f\\u006b"),
        (b"raw-unicode-escape", b"status: \\u006f\\u006b"),
        (b"utf-7", b"status: +AG8Aaw-"),
        (b"utf7", b"status: +AG8Aaw-"),  # an alias: refused by the codec's own name
    ],
)
async def test_escape_codecs_are_read_as_utf8(charset: bytes, body: bytes) -> None:
    # Each body is "status: ok" in its charset: read literally, it does not say "ok".
    reply = reply_200(body, b"text/plain; charset=" + charset)
    async with serving(answer(reply)) as url:
        result = await http.probe(url, 5, opts(body_contains="ok"))
    assert (result.ok, result.error) == (False, "body does not contain 'ok'")


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("utf-8", "caf\u00e9 \u65e5\u672c"),
        ("ISO-8859-1", "caf\u00e9"),
        ("windows-1252", "caf\u00e9 \u20ac"),
        ("utf-16", "caf\u00e9 \u65e5\u672c"),
        ("shift_jis", "\u65e5\u672c"),
        ("koi8-r", "\u043f\u0440\u0438\u0432\u0435\u0442"),
        ("x-no-such-charset", "caf\u00e9"),  # unknown: read as UTF-8
    ],
)
async def test_ordinary_charsets_are_still_decoded(charset: str, text: str) -> None:
    # A guard, not a fix: the allow rule keeps the charsets pages are written in.
    codec = "utf-8" if charset.startswith("x-") else charset
    reply = reply_200(text.encode(codec), f"text/html; charset={charset}".encode())
    async with serving(answer(reply)) as url:
        result = await http.probe(url, 5, opts(body_contains=text))
    assert (result.ok, result.error) == (True, None)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            b"HTTP/1.1 2x0 " + b"\x01" * 8000 + b"\r\n\r\n",
            "malformed response from server: bad status line",
        ),
        (
            b"\x1b[31m" + b"G" * 3000 + b"\x07\r\n\r\n",
            "malformed response from server: bad status line",
        ),
        (
            b"HTTP/1.1 200 " + b"a" * 20_000 + b"\r\n\r\n",
            "malformed response from server: status line or header too long",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Long: " + b"\x1b" + b"a" * 20_000 + b"\r\n\r\n",
            "malformed response from server: status line or header too long",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc\x1b[2J",
            "connection closed before the end of the body (Content-Length)",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 10\r\n\r\n"
            b"\x1b[31mnot-gz",
            "malformed response from server: cannot decode the body's Content-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-A: \x1b[1m" + b"v" * 1000,
            "server disconnected before a complete response",
        ),
        (b"", "server disconnected before a complete response"),
    ],
)
async def test_malformed_answer_gets_a_short_error_of_our_own(reply: bytes, error: str) -> None:
    # str() of aiohttp's error quoted the peer: 8000 bytes of status line made 40 kB.
    async with serving(answer(reply)) as url:
        result = await http.probe(url, 5, opts())
    assert (result.ok, result.error) == (False, error)


@pytest.mark.parametrize(
    ("location", "error"),
    [
        (
            b"ftp://user:s3cret@127.0.0.1/\x1b[2J\x1b]0;pwned\x07",
            "redirect to a non-HTTP URL: ftp://127.0.0.1/\\x1b[2J\\x1b]0;pwned\\x07",
        ),
        (
            b"ftp://127.0.0.1/x?token=s3cret&page=1",
            "redirect to a non-HTTP URL: ftp://127.0.0.1/x?token=***&page=1",
        ),
        (
            b"ftp://user:s3cret@127.0.0.1/" + b"p" * 1000,
            "redirect to a non-HTTP URL: ftp://127.0.0.1/" + "p" * 63 + "\u2026",
        ),
        (b"http://user:s3cret@[zz/", "redirect to an invalid URL: http://[zz/"),
    ],
)
async def test_redirect_to_unusable_url_shows_it_without_credentials(
    location: bytes, error: str
) -> None:
    reply = b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"
    async with serving(answer(reply)) as url:
        result = await http.probe(url, 5, opts())
    assert (result.ok, result.error) == (False, error)
    assert "s3cret" not in (result.error or "")


async def test_endless_100_continue_ends_at_the_timeout() -> None:
    # A guard (aiohttp skips interim answers itself, at full CPU): the probe must still end
    # at its timeout with a clean error, not hang or raise.
    stop = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            while not stop.is_set():
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async with serving(flood) as url:
        try:
            result = await http.probe(url, 0.3, opts())
        finally:
            stop.set()
    assert (result.ok, result.error) == (False, "timeout after 0.3 s")


async def test_a_body_regex_that_backtracks_without_end_is_a_result_at_the_timeout() -> None:
    reply = reply_200(EXPLODING.encode(), b"text/plain; charset=utf-8")
    async with serving(answer(reply)) as url:
        result = await http.probe(url, 0.5, opts(body_regex=CATASTROPHIC))
    assert (result.ok, result.error) == (
        False,
        f"pattern {CATASTROPHIC!r} still searching the body when the probe's time ran out"
        " (it backtracks too much: simplify it)",
    )
    assert result.details["status"] == 200


async def test_a_redirects_location_is_kept_short_in_the_details() -> None:
    """The peer chooses the Location (up to aiohttp's 8 kB header): the result keeps a URL's
    worth of it, and the final URL after redirects likewise."""
    long_path = "/" + "p" * 6000
    redirect = (
        b"HTTP/1.1 302 Found\r\nLocation: " + long_path.encode() + b"\r\nContent-Length: 0\r\n\r\n"
    )
    async with serving(answer(redirect)) as url:
        result = await http.probe(url, 5, opts(follow_redirects=False, expect_status=302))
    assert result.ok, result.error
    location = result.details["location"]
    assert (len(location), location[-1]) == (http_io.URL_MAX_CHARS, "…")
    assert location == long_path[: http_io.URL_MAX_CHARS - 1] + "…"  # as the peer sent it

    async def redirect_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith(b"GET / "):
            writer.write(redirect)
        else:
            writer.write(reply_200(b"ok", b"text/plain"))
        await writer.drain()
        writer.close()

    async with serving(redirect_once) as url:
        result = await http.probe(url, 5, opts())
    assert result.ok, result.error
    assert result.details["redirects"] == 1
    assert (len(result.details["url"]), result.details["url"][-1]) == (http_io.URL_MAX_CHARS, "…")
