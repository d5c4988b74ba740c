"""The web answers only to its own names (``web.allowed_hosts``): a DNS-rebinding page, whose
name was made to resolve to the collector, could read an open board from a staff member's
browser. Served by the collector's real app on 127.0.0.1; the Host header is the client's
to choose, so every name below is only a header, never looked up or connected to."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from availmon.alertconfig import AlertsConfig
from availmon.config import Estate
from collector.main import Collector
from collector.web import default_hosts, host_name, is_ip
from tests.collector.board_helpers import board_estate
from tests.collector.test_web_hardening import port_of, serving, status_code


async def status_for(port: int, host: str, path: str = "/api/v1/status") -> tuple[int, str]:
    """What the collector answers a request naming ``host`` in its Host header."""
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as r,
    ):
        return r.status, await r.text()


def refused(collector: Collector) -> float | None:
    return collector.metrics.registry.get_sample_value(
        "availmon_web_requests_refused_total", {"reason": "host"}
    )


async def test_a_rebinding_request_is_misdirected_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collector.web")
    async with serving(tmp_path) as (collector, runner):
        collector.connected.set()
        port = port_of(runner)
        for path in ("/", "/api/v1/status", "/metrics", "/healthz"):
            status, body = await status_for(port, f"evil.example:{port}", path)
            assert status == 421, (path, body)
            assert "web.allowed_hosts" in body
            assert "'evil.example:" in body  # the host it got
        assert (await status_for(port, "other.example"))[0] == 421
        assert refused(collector) == 5
        lines = [r.getMessage() for r in caplog.records if "refused (421)" in r.getMessage()]
        assert len(lines) == 2, lines  # once a minute per host, not once per request
        assert "'evil.example:" in lines[0]
        assert "'other.example'" in lines[1]
        assert (await status_for(port, f"127.0.0.1:{port}"))[0] == 200  # the same server


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.0.0.1:9810", "10.20.30.40", "[::1]", "[::1]:9810", "[2001:db8::7]:80"],
)
async def test_ip_addresses_are_always_answered(tmp_path: Path, host: str) -> None:
    """A rebinding page has a name: an IP address in the Host header is never one."""
    async with serving(tmp_path, allowed_hosts=["board.council.example"]) as (c, runner):
        assert (await status_for(port_of(runner), host))[0] == 200
        assert refused(c) == 0


async def test_a_request_without_a_host_header_is_answered(tmp_path: Path) -> None:
    """HTTP/1.0 tools send none."""
    async with serving(tmp_path) as (_, runner):
        answer = await status_code(port_of(runner), b"GET /api/v1/status HTTP/1.0\r\n\r\n")
        assert answer == b"200"


async def test_a_request_line_naming_another_host_is_misdirected(tmp_path: Path) -> None:
    """``GET http://name/...`` names the host that wins over the Host header (and aiohttp
    builds the request's URL from it): a name not ours there is refused as in the header."""
    async with serving(tmp_path, allowed_hosts=["board.council.example"]) as (c, runner):
        port = port_of(runner)
        head = b"GET http://%s/api/v1/status HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
        good, evil = b"board.council.example", b"evil.example"
        assert await status_code(port, head % (evil, good)) == b"421"
        assert await status_code(port, head % (good, evil)) == b"421"
        assert await status_code(port, head % (good, good)) == b"200"
        assert refused(c) == 2


async def test_by_default_it_answers_to_localhost_and_the_machines_names(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (c, runner):
        port = port_of(runner)
        for host in ("localhost", f"localhost:{port}", "LocalHost.", socket.gethostname()):
            assert (await status_for(port, host))[0] == 200, host
        assert (await status_for(port, "board.council.example"))[0] == 421
        # ... and to the board's name in alerts.board_url (a reload follows the estate).
        c.estate = c.estate.model_copy(
            update={"alerts": AlertsConfig(board_url="https://Board.Council.example/")}
        )
        assert (await status_for(port, "board.council.example:443"))[0] == 200


def test_the_default_names_take_the_board_url_and_a_listen_name(tmp_path: Path) -> None:
    estate: Estate = board_estate(tmp_path, {"listen": "availmon.internal"}).model_copy(
        update={"alerts": AlertsConfig(board_url="http://[::1]:9810/")}
    )
    machine = frozenset({"localhost", "vm1"})
    assert default_hosts(estate, machine) == {"localhost", "vm1", "availmon.internal", "::1"}
    assert default_hosts(board_estate(tmp_path), machine) == machine  # listen 127.0.0.1


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Board.Example:9810", "board.example"),
        ("board.example.", "board.example"),
        ("[::1]:9810", "::1"),
        ("[fe80::1]", "fe80::1"),
        ("::1", "::1"),
        ("127.0.0.1:80", "127.0.0.1"),
        # After the brackets only a port: anything else is no address, and no name of ours.
        ("[::1]evil.example", "[::1]evil.example"),
        ("[::1]:evil.example", "[::1]:evil.example"),
    ],
)
def test_the_name_in_a_host_header(header: str, name: str) -> None:
    assert host_name(header) == name


def test_an_address_with_a_zone_is_no_address_of_ours() -> None:
    """``fe80::1%eth0`` names an interface of the client's; ``ipaddress`` takes any text
    after the ``%``, so ``[fe80::1%25evil.example]`` would pass as an address."""
    assert not is_ip(host_name("[fe80::1%25evil.example]"))
    assert not is_ip("fe80::1%eth0")
    assert is_ip(host_name("[fe80::1]:9810"))


async def test_configured_names_only_and_a_reload_takes_new_ones(tmp_path: Path) -> None:
    allowed = ["board.council.example", "*.intranet.example", ".hq.example"]
    async with serving(tmp_path, allowed_hosts=allowed) as (c, runner):
        port = port_of(runner)
        answered = {
            "board.council.example": 200,
            "BOARD.council.example:9810": 200,
            "a.intranet.example": 200,
            "b.a.intranet.example": 200,
            "intranet.example": 200,
            "hq.example": 200,
            "x.hq.example": 200,
            "evilhq.example": 421,
            "council.example": 421,
            "localhost": 421,  # a list is all the names there are
            socket.gethostname(): 421,
        }
        got = {host: (await status_for(port, host))[0] for host in answered}
        assert got == answered
        # A reload replaces the estate in force: the next request is judged by the new list.
        c.estate = board_estate(tmp_path, {"allowed_hosts": ["status.example"]})
        assert (await status_for(port, "status.example"))[0] == 200
        assert (await status_for(port, "board.council.example"))[0] == 421


async def test_headers_of_a_refusal_are_hardened(tmp_path: Path) -> None:
    async with (
        serving(tmp_path) as (_, runner),
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{port_of(runner)}/", headers={"Host": "evil.example"}) as r,
    ):
        assert r.status == 421
        headers: Any = r.headers
        assert headers["Server"] == "availmon"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
