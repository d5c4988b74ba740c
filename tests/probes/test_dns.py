"""DNS probe against dnsmasq on a loopback port, answering only from its own records.

dnsmasq runs with --no-resolv and no servers, so nothing is ever forwarded off the machine.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from probe_peers import LOOPBACK, Peers, free_port
from pydantic import ValidationError

from probes import dns
from probes.registry import REGISTRY


def opts(**raw: Any) -> dns.Options:
    return REGISTRY["dns"].parse_options(raw)


def _answers_tcp(port: int) -> bool:
    try:
        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture
def server(peers: Peers) -> str:
    """dnsmasq on a free loopback port; returns its ``host:port``."""
    port = free_port(udp_too=True)
    peers.start(
        [
            "/usr/sbin/dnsmasq",
            "--no-daemon",
            f"--port={port}",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--log-facility=-",
            "--address=/example.test/198.18.0.10",
            "--address=/nx.test/",  # no address: NXDOMAIN for this domain
            "--mx-host=example.test,mail.example.test,10",
            "--txt-record=example.test,v=spf1 -all",
        ],
        ready=lambda: _answers_tcp(port),
    )
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("raw", "ok", "error", "answers"),
    [
        ({"query_name": "example.test"}, True, None, ["198.18.0.10"]),
        (
            {"query_name": "www.example.test", "expect": ["198.18.0.10"]},
            True,
            None,
            ["198.18.0.10"],
        ),
        (
            {"query_name": "example.test", "expect": ["198.18.0.11"]},
            False,
            "expected 198.18.0.11, got 198.18.0.10",
            ["198.18.0.10"],
        ),
        ({"query_name": "example.test", "protocol": "tcp"}, True, None, ["198.18.0.10"]),
        (
            {"query_name": "example.test", "record_type": "mx", "expect": ["mail.example.test"]},
            True,
            None,
            ["10 mail.example.test."],
        ),
        (
            {
                "query_name": "example.test",
                "record_type": "MX",
                "expect": ["20 MAIL.example.test."],
            },
            False,
            "expected 20 MAIL.example.test., got 10 mail.example.test.",
            ["10 mail.example.test."],
        ),
        (
            {"query_name": "example.test", "record_type": "TXT", "expect": ["v=spf1 -all"]},
            True,
            None,
            ["v=spf1 -all"],
        ),
        ({"query_name": "host.nx.test"}, False, "NXDOMAIN: host.nx.test does not exist", []),
        # Not one of its domains and nowhere to forward: dnsmasq refuses.
        ({"query_name": "elsewhere.invalid"}, False, "DNS REFUSED for elsewhere.invalid", []),
    ],
)
async def test_dns(
    server: str, raw: dict[str, Any], ok: bool, error: str | None, answers: list[str]
) -> None:
    result = await dns.probe(server, 5, opts(**raw))
    assert (result.ok, result.error) == (ok, error)
    assert result.details["answers"] == answers
    assert result.latency is not None


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
async def test_server_not_answering(protocol: str) -> None:
    # A bound UDP socket that never replies (UDP), or a free port (TCP is refused at once).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind((LOOPBACK, 0))
        port = mute.getsockname()[1]
        result = await dns.probe(
            f"127.0.0.1:{port}", 0.3, opts(query_name="example.test", protocol=protocol)
        )
    expected = "timeout after 0.3 s" if protocol == "udp" else "connection refused"
    assert (result.ok, result.error, result.latency) == (False, expected, None)


async def test_server_not_listening_udp_times_out() -> None:
    # Over UDP dnspython does not surface ICMP port-unreachable: the query times out.
    result = await dns.probe(f"127.0.0.1:{free_port(udp_too=True)}", 0.3, opts(query_name="x.test"))
    assert (result.ok, result.error) == (False, "timeout after 0.3 s")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "Field required"),
        ({"query_name": "example.test", "record_type": "BOGUS"}, "unknown record type 'BOGUS'"),
        ({"query_name": "example.test", "protocol": "doh"}, "Input should be 'udp' or 'tcp'"),
        ({"query_name": "a..b"}, "not a valid DNS name"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        opts(**raw)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("127.0.0.1", None),
        ("127.0.0.1:5353", None),
        ("ns1.example.test", None),
        ("::1", None),
        ("[::1]:5353", None),
        ("127.0.0.1:dns", "port 'dns' is not a number"),
        ("", "expected host or host:port, got ''"),
        (" ", "expected host or host:port, got ' '"),
        ("[]", "expected host or host:port, got '[]'"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert dns.check_target(target) == problem


def test_record_type_is_normalised() -> None:
    assert opts(query_name="example.test", record_type="aaaa").record_type == "AAAA"
