"""The collector's web server under a hostile client (issue 15): a connection cap, header
and idle timeouts, size limits, and report periods that are a 400 rather than a long 500."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from collector import web as web_module
from collector.main import Collector
from collector.web import start_web
from tests.collector.test_web_hardening import status_code
from tests.peers import estate

#: Only guards a hung test; nothing is timed.
DEADLINE = 30.0


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, **web_cfg: object
) -> AsyncIterator[tuple[Collector, web.AppRunner, int]]:
    cfg = estate(tmp_path, 1, [], extra={"web": {"port": 0, **web_cfg}})
    collector = Collector(cfg)
    runner: web.AppRunner | None = None
    try:
        runner = await start_web(collector)
        yield collector, runner, runner.addresses[0][1]
    finally:
        if runner is not None:
            await runner.cleanup()
        collector.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), DEADLINE)


async def registered(runner: web.AppRunner, n: int) -> None:
    """Until the server holds ``n`` connections: it registers (and forgets) each one a few
    turns of the event loop after the client's side completes. Only loop turns, no clock."""
    assert runner.server is not None
    async with asyncio.timeout(DEADLINE):
        for _ in itertools.count():  # aiohttp offers no event to await
            if len(runner.server.connections) == n:
                return
            await asyncio.sleep(0)


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_connections_over_the_cap_are_refused_and_idle_ones_closed(
    tmp_path: Path,
) -> None:
    """1,100 idle connections once made /healthz time out and filled the log with "Too many
    open files": now the cap answers 503 at once, and the idle timeout frees the rest."""
    async with serving(tmp_path, max_connections=4, idle_timeout=0.5) as (collector, runner, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        await registered(runner, 4)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await closed_by_server(reader)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        refused_total = collector.metrics.registry.get_sample_value(
            "availmon_web_connections_refused_total"
        )
        assert refused_total == 1
        # The idle ones are closed by the server, having never sent a request.
        for r, w in idle:
            assert await closed_by_server(r) == b""
            w.close()
        await registered(runner, 0)
        status, _ = await get(port, "/api/v1/status")
        assert status == 200


async def test_a_request_head_sent_slowly_is_cut_off(tmp_path: Path) -> None:
    async with serving(tmp_path, idle_timeout=0.5) as (_, _runner, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await writer.drain()
        assert await closed_by_server(reader) == b""
        writer.close()


async def test_oversized_headers_and_bodies_are_refused(tmp_path: Path) -> None:
    async with (
        serving(tmp_path, max_body_bytes=1024) as (_, _runner, port),
        aiohttp.ClientSession() as s,
    ):
        url = f"http://127.0.0.1:{port}/api/v1/status"
        async with s.get(url, headers={"X-Big": "x" * 10_000}) as r:
            assert r.status in (400, 431)
        async with s.post(url, data=b"x" * 100_000) as r:
            assert r.status in (405, 413)


@pytest.mark.parametrize(
    "period",
    [
        "0001-01-02..9999-12-30",  # held the only reader thread for 83 s, then a 500
        "FY0001Q1",  # an OverflowError: a 500
        "1990-01-01..2100-12-31",
        "FY9999Q4",
    ],
)
async def test_absurd_report_periods_are_a_400(tmp_path: Path, period: str) -> None:
    async with serving(tmp_path) as (_, _runner, port):
        status, body = await get(port, f"/api/v1/report?period={period}")
        assert status == 400, body
        assert "1990-01-01 to 2100-12-31" in body or "longer than 10 years" in body


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Bearer {token}\x7f",  # a control character after it
        "Cookie: availmon_token={token}\x00",
        "Authorization: Bearer {token}" + "a" * 9000,  # over the header's size
    ],
)
async def test_a_request_that_cannot_be_parsed_never_echoes_the_token(
    tmp_path: Path,
    header: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiohttp's own 400 quoted the header it could not parse, and logged it with a
    traceback at ERROR: the write token in the response and in the log."""
    token = "wt-canary-7f3e9d"
    monkeypatch.setenv("AVM_TEST_WEB_TOKEN", token)
    caplog.set_level(logging.DEBUG)
    # Logged at most once a minute, per process: this test's own line is the first.
    monkeypatch.setattr(web_module._BAD_REQUESTS, "logged_at", None)
    async with serving(tmp_path, token_env="AVM_TEST_WEB_TOKEN") as (_, _runner, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        line = header.format(token=token)
        writer.write(f"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n{line}\r\n\r\n".encode())
        await writer.drain()
        answer = await closed_by_server(reader)
        writer.close()
    assert answer.split(b" ", 2)[1].startswith(b"4")
    assert token.encode() not in answer
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.exc_info[1] if r.exc_info else ''}"
        for r in caplog.records
    )
    assert token not in logged
    assert "bad request from 127.0.0.1 refused (4" in logged


async def test_a_token_or_a_name_that_is_not_utf8_is_refused_not_a_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes of a header that are not UTF-8 reached the token's comparison and the
    store as lone surrogates: 'unexpected UnicodeEncodeError', a 500, each time."""
    monkeypatch.setenv("AVM_TEST_WEB_TOKEN", "wt-write-0123456789")
    monkeypatch.setenv("AVM_TEST_READ_TOKEN", "wt-read-0123456789")
    async with serving(
        tmp_path, token_env="AVM_TEST_WEB_TOKEN", read_token_env="AVM_TEST_READ_TOKEN"
    ) as (_, _runner, port):
        read = (
            b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\r\n\r\n"
        )
        assert await status_code(port, read) == b"401"
        ack = (
            b"POST /api/v1/alerts/o:x/ack HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer wt-write-0123456789\r\n"
            b"X-Availmon-User: \x85\r\nContent-Length: 0\r\n\r\n"
        )
        assert await status_code(port, ack) == b"400"
