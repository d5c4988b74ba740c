"""The web side under the security review's findings: event streams that could take every
connection, the board built on the event loop per request, an open redirect after
sign-in, and responses without security headers. Served by the collector's real app, on
127.0.0.1 and ::1 only; nothing here is timed (waits are on conditions, with a deadline
that only guards a hung test)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from availmon.clock import utcnow
from availmon.errors import ConfigError, StartupError
from availmon.schema import CheckStatus, State
from collector import auth, board
from collector.main import Collector
from collector.web import make_app, start_web
from tests.browser import chromium, needs_chromium
from tests.collector.board_helpers import Feed, board_estate, read_event
from tests.peers import wait_until

#: Only guards a hung test; nothing is timed.
DEADLINE = 30.0
TOKEN = "hardening-write-token"
READ_TOKEN = "hardening-read-token"


def secret(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return str(path)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **web_cfg: Any) -> AsyncIterator[tuple[Collector, web.AppRunner]]:
    """The collector's web server as ``start_web`` runs it, on 127.0.0.1."""
    collector = Collector(board_estate(tmp_path, web_cfg))
    runner: web.AppRunner | None = None
    try:
        runner = await start_web(collector)
        yield collector, runner
    finally:
        if runner is not None:
            await runner.cleanup()
        collector.close()


def port_of(runner: web.AppRunner, family: int = socket.AF_INET) -> int:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    return next(int(a[1]) for a in runner.addresses if a[0] == host)


@contextlib.asynccontextmanager
async def also_on_ipv6(runner: web.AppRunner) -> AsyncIterator[int]:
    """The same server listening on ::1 as well: a second client address on loopback."""
    site = web.TCPSite(runner, "::1", 0)
    await site.start()
    try:
        yield port_of(runner, socket.AF_INET6)
    finally:
        await site.stop()


class Stream:
    """One raw HTTP connection asking for the board's event stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", *, rcvbuf: int | None = None) -> Stream:
        """Ask for the stream and read the response head. ``rcvbuf``: a small receive
        buffer, and a reader that stops taking data after a kilobyte or two (a client that
        does not read)."""
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        s = cls(reader, writer)
        writer.write(
            b"GET /board/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        lines = head.decode("latin-1").split("\r\n")
        s.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                s.headers[name.strip().lower()] = value.strip()
        return s

    def close(self) -> None:
        self.writer.close()


async def healthy(collector: Collector) -> None:
    """/healthz answers 200 while the collector is connected (no broker in these tests)."""
    collector.connected.set()


# -- 1. event streams: caps, lifetime, a client that stops reading ---------------------------


async def test_streams_at_their_cap_leave_healthz_metrics_and_the_api_reachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """256 streams from one client once took every connection: /healthz answered the
    busy 503 and /metrics was unreachable. Now streams stop at ``web.max_streams``; the
    rest are refused at once (503, Retry-After), counted and logged once, and every
    other route still answers."""
    caplog.set_level(logging.INFO, logger="collector.board")
    monkeypatch.setattr(board._STREAMS_REFUSED, "logged_at", None)
    async with serving(tmp_path, max_connections=8, max_streams=4, max_streams_per_client=4) as (
        collector,
        runner,
    ):
        await healthy(collector)
        port = port_of(runner)
        streams = [await Stream.open(port) for _ in range(8)]  # as many as max_connections
        try:
            assert [s.status for s in streams] == [200] * 4 + [503] * 4
            for refused in streams[4:]:
                assert refused.headers["retry-after"] == str(board.STREAM_RETRY_AFTER)
            assert runner.app is not None
            assert runner.app[board.STREAMS].open == 4
            async with aiohttp.ClientSession() as s:
                for path in ("/healthz", "/metrics", "/api/v1/status", "/api/v1/checks", "/"):
                    async with s.get(f"http://127.0.0.1:{port}{path}") as r:
                        assert r.status == 200, (path, await r.text())
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    assert (await r.json())["mqtt_connected"] is True  # the handler's answer
            refused_total = collector.metrics.registry.get_sample_value(
                "availmon_web_connections_refused_total"
            )
            assert refused_total == 4
            lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert len(lines) == 1, lines  # sparse: one line, not one per stream
            assert "all 4 board streams are open" in lines[0]
        finally:
            for s in streams:
                s.close()


async def test_one_client_gets_only_its_share_of_the_streams(tmp_path: Path) -> None:
    async with serving(tmp_path, max_streams=4, max_streams_per_client=2) as (collector, runner):
        await healthy(collector)
        port = port_of(runner)
        mine = [await Stream.open(port) for _ in range(3)]
        async with also_on_ipv6(runner) as port6:
            other = await Stream.open(port6, "::1")
            try:
                assert [s.status for s in mine] == [200, 200, 429]
                assert mine[2].headers["retry-after"] == str(board.STREAM_RETRY_AFTER)
                assert other.status == 200  # another address is not held back
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(f"http://127.0.0.1:{port}/healthz") as r,
                ):
                    assert r.status == 200
            finally:
                other.close()
                for s in mine:
                    s.close()


async def test_a_stream_ends_after_its_lifetime_and_the_browser_misses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any
) -> None:
    """A stream was held for as long as the client liked. Now the server ends it after
    ``STREAM_LIFETIME`` with a ``bye`` (and a retry), cleanly; a browser reconnecting with
    the last id it saw gets what changed meanwhile, and nothing when nothing did."""
    monkeypatch.setattr(board, "STREAM_LIFETIME", 0.5)
    collector = Collector(board_estate(tmp_path))
    try:
        app = make_app(collector)
        client = await aiohttp_client(app)
        gate = app[board.STREAMS]
        # Built before the stream opens, so that its first event is the board whatever the
        # machine's speed (a first build slower than the short lifetime left none).
        await app[board.FEED].current()
        assert app[board.FEED].payload
        async with client.get("/board/events") as resp:
            first: dict[str, str] = {}
            async with asyncio.timeout(DEADLINE):  # ticks keep coming: a deadline overall
                while (ev := await read_event(resp.content))["event"] != "bye":
                    assert ev["event"] in ("tick", "board")
                    if ev["event"] == "board":
                        first = ev
            assert first, "no board before the bye"
            assert ev["retry"] == str(board.RECONNECT_MS)
            rest = await asyncio.wait_for(resp.content.read(), DEADLINE)
            assert rest == b""  # the response ended (its last chunk), not cut off
        await wait_until(gate.changed, lambda: gate.open == 0, DEADLINE)
        # The reconnections live long enough to see what they are sent, however long the
        # feed's next build waits for its share of the CPU.
        monkeypatch.setattr(board, "STREAM_LIFETIME", 600.0)
        # Nothing changed: the reconnection is sent no board.
        async with client.get("/board/events", headers={"Last-Event-ID": first["id"]}) as resp:
            assert (await read_event(resp.content))["event"] == "tick"
        # Something changed while it was away: the reconnection gets the board at once.
        await Feed(collector).heartbeat(
            "dc",
            utcnow(),
            CheckStatus(check="webmail", area="email", state=State.DOWN, error="HTTP 503"),
        )
        async with client.get("/board/events", headers={"Last-Event-ID": first["id"]}) as resp:
            while (ev := await read_event(resp.content))["event"] != "board":
                assert ev["event"] == "tick"  # the feed had no listener: it builds now
            assert ev["id"] != first["id"]
            grid = json.loads(ev["data"])["sections"]["grid"]
            assert 'data-check="dc/webmail" data-state="down"' in grid
    finally:
        collector.close()


async def test_a_client_that_stops_reading_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that never read parked its stream's handler in ``send`` for good: now an
    event not taken within ``SEND_TIMEOUT`` drops the connection and frees its stream, and
    neither that nor a client leaving is an error in the log."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(board._STREAMS_DROPPED, "logged_at", None)
    monkeypatch.setattr(board, "SEND_TIMEOUT", 0.5)
    async with serving(tmp_path, max_streams=2, max_streams_per_client=1) as (_, runner):
        port = port_of(runner)
        assert runner.app is not None
        feed, gate = runner.app[board.FEED], runner.app[board.STREAMS]
        stuck = await Stream.open(port, rcvbuf=4096)
        try:
            assert stuck.status == 200
            assert gate.open == 1
            # An event far larger than the socket buffers: it cannot all go out unread.
            feed.payload = json.dumps({"now": "", "title": "", "sections": {"x": "x" * 8_000_000}})
            feed.version += 1
            async with feed.updated:
                feed.updated.notify_all()
            await wait_until(gate.changed, lambda: gate.open == 0, DEADLINE)
        finally:
            stuck.close()
        again = await Stream.open(port)  # its share is free again
        try:
            assert again.status == 200
        finally:
            again.close()
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1, dropped
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- 2. the page from the feed's builds ---------------------------------------------------------


async def down_webmail(collector: Collector) -> str:
    feed = Feed(collector)
    now = utcnow()
    await feed.heartbeat(
        "dc",
        now,
        CheckStatus(check="council-website", area="internet_web", state=State.UP, latency=0.05),
        CheckStatus(check="webmail", area="email", state=State.DOWN, error="HTTP 503"),
    )
    return await feed.event(
        "dc",
        "webmail",
        "email",
        State.UP,
        State.DOWN,
        now - dt.timedelta(minutes=5),
        error="HTTP 503",
    )


async def test_the_page_is_not_built_on_the_event_loop_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any
) -> None:
    """``GET /`` built the whole board on the event loop for every request (872 KB for a
    thousand checks: four clients held /healthz up for a quarter of a second). Now it is
    the feed's build, made on the scrape thread and shared: ten requests while nothing
    changes build nothing more, and a change is on the next page."""
    on_loop: list[bool] = []
    render = board.render_sections

    def counted(*args: Any) -> dict[str, str]:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return render(*args)

    monkeypatch.setattr(board, "render_sections", counted)
    collector = Collector(board_estate(tmp_path))
    try:
        app = make_app(collector)
        client = await aiohttp_client(app)
        pages = await asyncio.gather(*(client.get("/") for _ in range(10)))
        for page in pages:
            assert page.status == 200
            assert "No checks reporting yet" in await page.text()
        pages = [await client.get("/?wall") for _ in range(5)]
        assert all(p.status == 200 for p in pages)
        assert 1 <= len(on_loop) <= 2  # the feed's first build (and one if that was stale)
        oid = await down_webmail(collector)
        html = await (await client.get("/")).text()
        assert f'data-outage="{oid}"' in html  # never older than the request
        assert "1 service down at 1 site" in html
        built = app[board.FEED].built
        assert built is not None
        assert f'data-event-id="{built.event_id}"' in html
        assert built.sections["grid"] in html
        assert not any(on_loop), "a board was built on the event loop"
    finally:
        collector.close()


async def test_the_page_shows_what_a_build_per_request_showed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any
) -> None:
    """The same board, byte for byte, as rendering it for the request (the old way) at the
    same moment: for the board and the wall view, writes enabled or not."""
    frozen = utcnow()
    monkeypatch.setattr(board, "utcnow", lambda: frozen)
    collector = Collector(board_estate(tmp_path, {"token_file": secret(tmp_path, "token", TOKEN)}))
    try:
        client = await aiohttp_client(make_app(collector))
        await down_webmail(collector)
        for query, wall in (("", False), ("?wall", True)):
            html = await (await client.get(f"/{query}")).text()
            env = board.environment()
            snap = board.board_snapshot(collector, frozen, await collector.kpi_view_async(frozen))
            sections = board.render_sections(env, snap, collector.estate)
            tz = board.ZoneInfo(collector.estate.accounting.timezone)
            feed_id = html.split('data-event-id="', 1)[1].split('"', 1)[0]
            expected = env.get_template("board.html").render(
                when=lambda text, tz=tz: board.when(text, frozen, tz),
                sections=sections,
                title=board.page_title(snap),
                event_id=feed_id,
                **snap,
                tz=tz,
                wall=wall,
                writes_enabled=True,
            )
            assert html == expected
    finally:
        collector.close()


# -- 3. sign-in: where it sends the browser, and what it keeps ---------------------------------


def read_guarded(tmp_path: Path) -> Collector:
    return Collector(
        board_estate(
            tmp_path,
            {
                "token_file": secret(tmp_path, "token", TOKEN),
                "read_token_file": secret(tmp_path, "read-token", READ_TOKEN),
            },
        )
    )


@pytest.mark.parametrize(
    ("target", "sent"),
    [
        ("/\t/evil.example", "/"),  # next=/%09/evil.example: yarl dropped the tab
        ("/\n/evil", "/"),  # next=/%0a/evil
        ("/\r/evil", "/"),
        ("/\\evil", "/"),  # browsers read a backslash as a slash
        ("//evil", "/"),
        ("https://evil", "/"),
        ("\t//evil", "/"),
        ("javascript:alert(1)", "/"),
        ("/\x00/x", "/"),
        ("evil", "/"),
        ("/board/outages/x?y=1", "/board/outages/x?y=1"),
        ("/board/outages/o:dc:1", "/board/outages/o:dc:1"),
        ("/?wall", "/?wall"),
    ],
)
async def test_sign_in_sends_the_browser_only_to_a_path_here(
    tmp_path: Path, aiohttp_client: Any, target: str, sent: str
) -> None:
    collector = read_guarded(tmp_path)
    try:
        client = await aiohttp_client(make_app(collector))
        url = URL(f"/board/login?next={quote(target, safe='')}", encoded=True)
        resp = await client.post(url, data={"token": READ_TOKEN}, allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == sent
        # The form carries on only a target that is safe.
        form = await (await client.get(url)).text()
        assert f'action="/board/login?next={quote(sent)}"' in form
    finally:
        collector.close()


async def test_sign_in_takes_the_read_token_only_and_keeps_it_http_only(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """The sign-in cookie goes with every request and stays in the browser: it holds the
    read token, never the write token (which a write never takes from a cookie)."""
    collector = read_guarded(tmp_path)
    try:
        client = await aiohttp_client(make_app(collector))
        refused = await client.post(
            "/board/login?next=/", data={"token": TOKEN}, allow_redirects=False
        )
        assert refused.status == 401
        assert "Set-Cookie" not in refused.headers
        assert "That is the write token" in await refused.text()
        wrong = await client.post(
            "/board/login?next=/", data={"token": "nope"}, allow_redirects=False
        )
        assert wrong.status == 401
        assert "That token is not right" in await wrong.text()
        ok = await client.post(
            "/board/login?next=/", data={"token": READ_TOKEN}, allow_redirects=False
        )
        assert ok.status == 303
        cookie = ok.headers["Set-Cookie"]
        assert cookie.startswith(f"availmon_token={READ_TOKEN};")
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        # The write token as a bearer header still reads (README: "Writes and tokens").
        reads = await client.get("/api/v1/checks", headers={"Authorization": f"Bearer {TOKEN}"})
        assert reads.status == 200
    finally:
        collector.close()


async def sign_in_cookie(base: str) -> str:
    """The Set-Cookie of a sign-in with the read token at ``base`` (http or https)."""
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base}/board/login?next=/",
            data={"token": READ_TOKEN},
            allow_redirects=False,
            ssl=False,  # a throwaway certificate: nothing to verify it against
        ) as r,
    ):
        assert r.status == 303
        return r.headers["Set-Cookie"]


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server context for 127.0.0.1 with a throwaway self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def test_the_sign_in_cookie_is_secure_over_tls(tmp_path: Path) -> None:
    """The collector serves plain HTTP; the app behind a TLS listener (a future ``web.tls``,
    or a test's) marks the cookie Secure, so it never goes back over plain HTTP."""
    collector = read_guarded(tmp_path)
    runner = web.AppRunner(make_app(collector))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self_signed(tmp_path))
        await site.start()
        assert "Secure" in await sign_in_cookie(f"https://127.0.0.1:{port_of(runner)}")
    finally:
        await runner.cleanup()
        collector.close()


@pytest.mark.parametrize(("setting", "secure"), [(True, True), (False, False)])
async def test_web_secure_cookie_decides_over_what_came(
    tmp_path: Path, setting: bool, secure: bool
) -> None:
    """Behind a proxy that terminates TLS the collector sees plain HTTP: ``secure_cookie =
    true`` marks the cookie Secure all the same (and ``false`` never does, even over TLS)."""
    collector = Collector(
        board_estate(
            tmp_path,
            {
                "read_token_file": secret(tmp_path, "read-token", READ_TOKEN),
                "secure_cookie": setting,
            },
        )
    )
    runner = web.AppRunner(make_app(collector))
    await runner.setup()
    try:
        # The opposite of what it is set to: the setting wins over how the request came.
        tls = None if setting else self_signed(tmp_path)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        scheme = "http" if tls is None else "https"
        cookie = await sign_in_cookie(f"{scheme}://127.0.0.1:{port_of(runner)}")
        assert ("Secure" in cookie) is secure
    finally:
        await runner.cleanup()
        collector.close()


# -- wrong tokens: ten a minute per address, then 429 before any comparison --------------------


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refused_for_tokens(collector: Collector) -> float | None:
    return collector.metrics.registry.get_sample_value(
        "availmon_web_requests_refused_total", {"reason": "tokens"}
    )


async def sign_in(client: Any, token: str) -> Any:
    return await client.post("/board/login?next=/", data={"token": token}, allow_redirects=False)


async def test_the_eleventh_wrong_sign_in_is_refused_even_with_the_right_token(
    tmp_path: Path, aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Sign-in could be tried without limit. Now the eleventh try within a minute from one
    address is a 429 with Retry-After, the token not even compared (the right one is
    refused too, so the answer tells nothing), until the first try is a minute old."""
    caplog.set_level(logging.INFO, logger="collector.auth")
    clock = Clock()
    collector = read_guarded(tmp_path)
    try:
        client = await aiohttp_client(make_app(collector, clock=clock))
        for i in range(10):
            assert (await sign_in(client, f"wrong-guess-number-{i}")).status == 401
            clock.now += 1
        for token in (READ_TOKEN, "wrong-guess-number-10", READ_TOKEN):
            refused = await sign_in(client, token)
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "50"  # the first try is 10 s old
            assert "Set-Cookie" not in refused.headers
            assert "Too many wrong tokens" in await refused.text()
        # The address's bearer reads are held back too, the right token with them.
        read = await client.get("/api/v1/checks", headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert read.status == 429
        assert read.headers["Retry-After"] == "50"
        assert (await client.get("/healthz")).status == 503  # no token: answered as ever
        assert refused_for_tokens(collector) == 4
        lines = [r.getMessage() for r in caplog.records if "refused (429)" in r.getMessage()]
        assert len(lines) == 1, lines  # at most once a minute per address
        assert "token attempts from 127.0.0.1" in lines[0]
        assert READ_TOKEN not in caplog.text
        clock.now += 50  # the first wrong try is a minute old: one more may be made
        ok = await sign_in(client, READ_TOKEN)
        assert ok.status == 303
        assert ok.headers["Set-Cookie"].startswith(f"availmon_token={READ_TOKEN};")
    finally:
        collector.close()


async def test_a_right_token_before_the_limit_works_and_clears_nothing(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    clock = Clock()
    collector = read_guarded(tmp_path)
    try:
        client = await aiohttp_client(make_app(collector, clock=clock))
        for i in range(9):
            assert (await sign_in(client, f"wrong-guess-number-{i}")).status == 401
        assert (await sign_in(client, READ_TOKEN)).status == 303
        # Reads with the cookie just set, and with the write token, are no wrong tries.
        assert (await client.get("/api/v1/checks")).status == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/v1/checks", headers=bearer)).status == 200
        assert (await sign_in(client, "wrong-guess-number-9")).status == 401  # the tenth
        assert (await sign_in(client, READ_TOKEN)).status == 429
        assert refused_for_tokens(collector) == 1
    finally:
        collector.close()


async def test_wrong_write_and_read_tokens_count_towards_the_same_limit(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """A write's wrong token, a read's wrong bearer and a wrong sign-in are all guesses; a
    write or read with no token at all is none."""
    clock = Clock()
    collector = read_guarded(tmp_path)
    try:
        client = await aiohttp_client(make_app(collector, clock=clock))
        ack = "/api/v1/alerts/o:dc:1/ack"
        who = {"X-Availmon-User": "bob"}
        for _ in range(5):  # no token: not a guess
            assert (await client.post(ack, json={}, headers=who)).status == 401
            assert (await client.get("/api/v1/checks")).status == 401
        # The read token passes the read guard, and is the wrong one for a write.
        writer = who | {"Authorization": f"Bearer {READ_TOKEN}"}
        for _ in range(4):
            assert (await client.post(ack, json={}, headers=writer)).status == 401
        for _ in range(3):
            wrong = {"Authorization": "Bearer not-the-read-token-at-all"}
            assert (await client.get("/api/v1/checks", headers=wrong)).status == 401
        for _ in range(3):
            assert (await sign_in(client, TOKEN)).status == 401  # the write token: not here
        with_token = writer | {"Authorization": f"Bearer {TOKEN}"}
        refused = await client.post(ack, json={}, headers=with_token)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        assert "too many wrong tokens" in (await refused.json())["error"]
        clock.now += 60
        assert (await client.post(ack, json={}, headers=with_token)).status == 404  # no alert
    finally:
        collector.close()


async def test_wrong_write_tokens_are_limited_with_reads_open(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """With no read token nothing else stands before a write's token: the API's and the
    form's (the token typed into an outage's page) count and are held back alike."""
    clock = Clock()
    collector = Collector(board_estate(tmp_path, {"token_file": secret(tmp_path, "token", TOKEN)}))
    try:
        client = await aiohttp_client(make_app(collector, clock=clock))
        oid = await down_webmail(collector)
        api = f"/api/v1/outages/{oid}/annotations"
        form = f"/board/outages/{oid}/annotate"
        wrong = {"X-Availmon-User": "bob", "Authorization": "Bearer not-the-write-token-at-all"}
        for _ in range(5):
            assert (await client.post(api, json={"note": "x"}, headers=wrong)).status == 401
            guess = {"note": "x", "by": "bob", "token": "not-the-write-token-at-all"}
            assert (await client.post(form, data=guess, allow_redirects=False)).status == 401
        right = wrong | {"Authorization": f"Bearer {TOKEN}"}
        refused = await client.post(api, json={"note": "x"}, headers=right)
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "60"
        typed = {"note": "x", "by": "bob", "token": TOKEN}
        assert (await client.post(form, data=typed, allow_redirects=False)).status == 429
        assert refused_for_tokens(collector) == 2
        clock.now += 60
        assert (await client.post(api, json={"note": "x"}, headers=right)).status == 200
    finally:
        collector.close()


async def test_a_wrong_cookie_is_dropped(tmp_path: Path, aiohttp_client: Any) -> None:
    """A cookie from before the read token was rotated: dropped by the first refusal, or each
    of the page's requests would count as a wrong token and lock the browser's address out."""
    collector = read_guarded(tmp_path)
    try:
        client = await aiohttp_client(make_app(collector))
        client.session.cookie_jar.update_cookies({"availmon_token": "a-token-rotated-since"})
        refused = await client.get("/api/v1/checks")
        assert refused.status == 401
        assert refused.cookies["availmon_token"].value == ""
        assert refused.cookies["availmon_token"]["max-age"] == "0"
    finally:
        collector.close()


async def test_cookies_of_a_rotated_read_token_are_not_guesses(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """A reload rotates the read token; every board left open behind one address (a wall of
    screens, a proxy) comes back with the old cookie. Those are dropped, not counted: the
    address can still sign in. A cookie that was never a token still counts."""
    collector = read_guarded(tmp_path)
    try:
        app = make_app(collector)
        client = await aiohttp_client(app)
        tokens = app[auth.TOKENS]
        fresh = "the-rotated-read-token"
        tokens.update(auth.Tokens(tokens.write, fresh))
        for _ in range(15):
            client.session.cookie_jar.update_cookies({"availmon_token": READ_TOKEN})
            assert (await client.get("/api/v1/checks")).status == 401
        ok = await client.get("/api/v1/checks", headers={"Authorization": f"Bearer {fresh}"})
        assert ok.status == 200
        for _ in range(10):
            client.session.cookie_jar.update_cookies({"availmon_token": "never-a-token-here"})
            assert (await client.get("/api/v1/checks")).status == 401
        late = await client.get("/api/v1/checks", headers={"Authorization": f"Bearer {fresh}"})
        assert late.status == 429
    finally:
        collector.close()


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    """A host given a /64 can send each try from another address of it."""
    keys = {auth.client_key(f"2001:db8:1:2::{n:x}") for n in range(1, 50)}
    assert keys == {"2001:db8:1:2::/64"}
    assert auth.client_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert auth.client_key("192.0.2.7") == "192.0.2.7"
    assert auth.client_key("::ffff:192.0.2.7") == "::ffff:192.0.2.7"  # IPv4, mapped
    assert auth.client_key("unknown") == "unknown"


def test_wrong_tokens_are_counted_per_address_within_bounds() -> None:
    clock = Clock()
    attempts = auth.Attempts(limit=3, window=60.0, max_clients=3, clock=clock)
    for _ in range(3):
        attempts.failed("192.0.2.1")
    assert attempts.wait("192.0.2.1") == 60
    assert attempts.wait("192.0.2.2") is None  # another address is not held back
    attempts.failed("192.0.2.2")
    attempts.failed("192.0.2.3")
    attempts.failed("192.0.2.4")  # a fourth address: the longest quiet one is forgotten
    assert attempts.wait("192.0.2.1") is None
    assert len(attempts._failed) == 3
    clock.now += 59.5
    for _ in range(2):
        attempts.failed("192.0.2.2")
    assert attempts.wait("192.0.2.2") == 1  # never 0: a Retry-After the client can use
    clock.now += 0.5
    assert attempts.wait("192.0.2.2") is None


@pytest.mark.parametrize(
    ("key", "how"),
    [("web.token", "file"), ("web.token", "env"), ("web.read_token", "file")],
)
def test_a_short_token_is_a_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, how: str
) -> None:
    short = "fifteen-chars-x"
    name = key.removeprefix("web.")
    if how == "file":
        cfg = {f"{name}_file": secret(tmp_path, "token", short)}
    else:
        monkeypatch.setenv("AVM_TEST_SHORT_TOKEN", short)
        cfg = {f"{name}_env": "AVM_TEST_SHORT_TOKEN"}
    with pytest.raises(StartupError) as caught:
        auth.Tokens.from_config(web_config(tmp_path, **cfg))
    text = str(caught.value)
    assert f"{key}_file/{key}_env" in text
    assert "shorter than 16 characters" in text
    assert short not in text
    # Sixteen are enough.
    sixteen = {f"{name}_file": secret(tmp_path, "token16", short + "y")}
    auth.Tokens.from_config(web_config(tmp_path, **sixteen))
    # Blanks around it are not part of it (a bearer header is trimmed too), wherever it is.
    monkeypatch.setenv("AVM_TEST_PADDED_TOKEN", f" {short}\n")
    with pytest.raises(StartupError, match="shorter than 16"):
        auth.Tokens.from_config(web_config(tmp_path, **{f"{name}_env": "AVM_TEST_PADDED_TOKEN"}))


async def test_a_collector_with_a_short_token_does_not_start(tmp_path: Path) -> None:
    collector = Collector(
        board_estate(tmp_path, {"token_file": secret(tmp_path, "token", "short-token")})
    )
    try:
        with pytest.raises(StartupError, match=r"web\.token_file/web\.token_env: the token is"):
            await start_web(collector)
    finally:
        collector.close()


# -- 4. security headers, and pages with nothing inline ----------------------------------------


def assert_hardened(headers: Any, what: str) -> None:
    csp = headers.get("Content-Security-Policy", "")
    directives = {d.strip() for d in csp.split(";")}
    assert "default-src 'self'" in directives, (what, csp)
    assert "frame-ancestors 'none'" in directives, (what, csp)
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "same-origin", what
    server = headers.get("Server", "")
    assert server == "availmon", (what, server)  # no aiohttp or Python version


async def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    async with serving(tmp_path, token_file=secret(tmp_path, "token", TOKEN)) as (c, runner):
        port = port_of(runner)
        base = f"http://127.0.0.1:{port}"
        oid = await down_webmail(c)
        async with aiohttp.ClientSession() as s:
            for path in (
                "/",
                "/?wall",
                f"/board/outages/{oid}",
                "/board/checks/dc/webmail",
                "/board/maintenance",
                "/board/login",
                "/api/v1/status",
                "/api/v1/checks",
                "/api/v1/openapi.json",
                "/metrics",
                "/healthz",
                "/static/board.js",
                "/static/board.css",
                "/nowhere",  # 404
                "/board/checks/nowhere/nothing",  # a handler's 404
            ):
                async with s.get(base + path) as r:
                    assert_hardened(r.headers, path)
            async with s.post(f"{base}/api/v1/outages/{oid}/annotations", json={}) as r:
                assert r.status == 401
                assert_hardened(r.headers, "refused write")
            async with s.delete(f"{base}/board/login") as r:
                assert r.status == 405
                assert_hardened(r.headers, "405")
            async with s.get(f"{base}/board/events") as r:
                assert r.status == 200
                assert_hardened(r.headers, "event stream")
        # A request that cannot be parsed is answered without the server's version too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), DEADLINE)
        writer.close()
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        assert head.split(" ", 2)[1] == "400"
        assert "aiohttp" not in head
        assert "Server: availmon\r\n" in head
        assert "Content-Security-Policy: default-src 'self'" in head


class Inline(HTMLParser):
    """What a ``default-src 'self'`` policy refuses in a page: inline scripts and styles,
    style and event-handler attributes, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "style":
            self.found.append("<style>")
        if tag == "script":
            if not names.get("src"):
                self.found.append("<script> without src")
            self._in = "script"
        for name, value in attrs:
            if name == "style":
                self.found.append(f"<{tag} style={value!r}>")
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=...>")
            if name in ("href", "src", "action") and (value or "").lower().startswith(
                "javascript:"
            ):
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.found.append("inline script text")


def inline_in(html: str) -> list[str]:
    parser = Inline()
    parser.feed(html)
    return parser.found


async def test_pages_have_nothing_inline_that_the_policy_refuses(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """The grid's column count, the history bars' uptime and the icons' ink were style
    attributes, which the policy refuses (the grid then fell into one column): now classes,
    a data attribute board.js reads, and grids that need no count."""
    collector = Collector(board_estate(tmp_path, {"token_file": secret(tmp_path, "token", TOKEN)}))
    try:
        client = await aiohttp_client(make_app(collector))
        oid = await down_webmail(collector)
        await Feed(collector).event(
            "dc", "webmail", "email", State.DOWN, State.UP, utcnow() - dt.timedelta(minutes=1)
        )
        for path in (
            "/",
            "/?wall",
            "/board/checks/dc/webmail",
            f"/board/outages/{oid}",
            "/board/maintenance",
            "/board/login",
        ):
            html = await (await client.get(path)).text()
            assert inline_in(html) == [], path
        check = await (await client.get("/board/checks/dc/webmail")).text()
        assert 'data-uptime="' in check  # the bars' share, for board.js
        async with client.get("/board/events") as resp:
            ev = await read_event(resp.content)
            for name, section in json.loads(ev["data"])["sections"].items():
                assert inline_in(section) == [], name
    finally:
        collector.close()


# -- the web settings ---------------------------------------------------------------------------


def web_config(tmp_path: Path, **web_cfg: Any) -> Any:
    return board_estate(tmp_path, web_cfg).web


def test_stream_caps_default_to_a_quarter_of_the_connections_and_are_checked(
    tmp_path: Path,
) -> None:
    cfg = web_config(tmp_path)
    assert (cfg.max_connections, cfg.streams(), cfg.streams_per_client()) == (256, 64, 8)
    small = web_config(tmp_path, max_connections=12)
    assert (small.streams(), small.streams_per_client()) == (3, 3)
    assert web_config(tmp_path, max_connections=100, max_streams=50).streams() == 50
    for bad, words in (
        ({"max_connections": 100, "max_streams": 51}, "at most half of web.max_connections"),
        ({"max_streams": 0}, "greater than or equal to 1"),
        ({"max_streams_per_client": 0}, "greater than or equal to 1"),
    ):
        with pytest.raises(ConfigError) as caught:
            board_estate(tmp_path, bad)
        text = str(caught.value)
        assert words in text, text
        assert f"web.{next(k for k in bad if k != 'max_connections')}" in text, text


# -- the board in a browser, under its policy ----------------------------------------------------

#: Records every policy violation and every connection state the page shows.
WATCH = """
window.violations = [];
document.addEventListener('securitypolicyviolation',
  e => window.violations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
window.connStates = [];
new MutationObserver(() => {
  const el = document.getElementById('conn');
  if (el) window.connStates.push(el.getAttribute('data-conn'));
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-conn']});
"""


@needs_chromium
async def test_the_board_works_under_its_policy_and_its_stream_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In Chromium with the policy on: nothing refused, the grid in columns, the history
    bars drawn, live updates; a stream ended for its lifetime resumes without a word of
    "Reconnecting"; a page whose stream was refused (the cap) opens one by itself later."""
    from playwright.async_api import expect

    monkeypatch.setattr(board, "STREAM_LIFETIME", 1.0)
    async with (
        serving(tmp_path, max_streams=1, max_streams_per_client=1) as (c, runner),
        chromium() as b,
    ):
        assert runner.app is not None
        gate = runner.app[board.STREAMS]
        base = f"http://127.0.0.1:{port_of(runner)}"
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        await page.add_init_script(WATCH)
        await page.goto(base + "/")
        await expect(page.locator("#conn")).to_have_attribute("data-conn", "live")
        cells = page.locator(".g-row[data-site='dc'] > *")
        tops = {(await cells.nth(i).bounding_box() or {}).get("y") for i in range(5)}
        assert len(tops) == 1, "the grid's row is not in columns"
        oid = await down_webmail(c)
        tile = page.locator(".tile[data-check='dc/webmail']")
        await expect(tile).to_have_attribute("data-state", "down", timeout=15_000)
        # Streams end every second here: the page reconnects, quietly, and still follows.
        for _ in range(2):
            async with gate.changed:
                await asyncio.wait_for(gate.changed.wait(), DEADLINE)
        await Feed(c).event("dc", "webmail", "email", State.DOWN, State.UP, utcnow())
        await expect(tile).to_have_attribute("data-state", "up", timeout=15_000)
        states = await page.evaluate("window.connStates")
        assert set(states) == {"live"}, states  # never "reconnecting", never "stale"
        assert await page.evaluate("window.violations") == []
        await page.close()
        await wait_until(gate.changed, lambda: gate.open == 0, DEADLINE)

        # The only stream is taken (by a client of our own): a new page is refused it...
        monkeypatch.setattr(board, "STREAM_LIFETIME", 600.0)
        holder = await Stream.open(port_of(runner))
        assert holder.status == 200
        other = await b.new_page(viewport={"width": 1280, "height": 900})
        await other.add_init_script(WATCH)
        async with other.expect_response(lambda r: "/board/events" in r.url) as refused:
            await other.goto(base + "/")
        assert (await refused.value).status in (429, 503)
        # ...and, once it is free, opens one by itself and follows the board.
        holder.writer.transport.abort()
        await Feed(c).event("dc", "webmail", "email", State.UP, State.DOWN, utcnow())
        await expect(other.locator("#conn")).to_have_attribute("data-conn", "live", timeout=25_000)
        await expect(other.locator(".tile[data-check='dc/webmail']")).to_have_attribute(
            "data-state", "down", timeout=15_000
        )
        # A check's history: the bars drawn, up ones green, the down share darker.
        await other.goto(f"{base}/board/checks/dc/webmail")
        bars = other.locator(".bars-w[data-window='24h'] .bar-down")
        await expect(bars).not_to_have_count(0)
        overlay = await bars.last.evaluate("b => getComputedStyle(b, '::after').height")
        assert overlay not in ("0px", "auto"), overlay
        await other.goto(f"{base}/board/outages/{oid}")
        await other.goto(f"{base}/board/maintenance")
        assert await other.evaluate("window.violations") == []


async def status_code(port: int, request: bytes) -> bytes:
    """The status code the collector on ``port`` answers ``request`` (raw bytes) with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readline(), DEADLINE)
    writer.close()
    return head.split(b" ", 2)[1]
