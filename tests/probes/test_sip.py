"""SIP probe against SIPp as a UAS on loopback, over UDP and TCP, with scenarios written here."""

from __future__ import annotations

from typing import Any

import pytest
from probe_peers import LOOPBACK, Peers, free_port, listening
from pydantic import ValidationError

from probes import sip
from probes.registry import REGISTRY

SIPP = "/usr/bin/sipp"


def opts(**raw: Any) -> sip.Options:
    return REGISTRY["sip"].parse_options(raw)


def scenario(*statuses: str) -> str:
    """A SIPp UAS scenario: receive OPTIONS, then send these responses in order (maybe none)."""
    sends = "".join(
        f"""
  <send>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Server: sipp-test
      Content-Length: 0

    ]]>
  </send>"""
        for status in statuses
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="availmon test: OPTIONS answered with {", ".join(statuses) or "silence"}">
  <recv request="OPTIONS" crlf="true"/>{sends}
</scenario>
"""


def start_sipp(peers: Peers, transport: str, *statuses: str) -> str:
    """SIPp answering OPTIONS on a free loopback port; returns ``host:port``."""
    port = free_port(udp_too=True)
    xml = peers.workdir / f"uas-{port}.xml"
    xml.write_text(scenario(*statuses))
    flag = {"udp": "u1", "tcp": "t1"}[transport]
    argv = [SIPP, "-sf", str(xml), "-i", LOOPBACK, "-p", str(port), "-t", flag, "-nostdin"]
    peers.start(argv, ready=lambda: listening(port, transport))
    return f"{LOOPBACK}:{port}"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("statuses", "raw", "ok", "error", "code"),
    [
        (["200 OK"], {}, True, None, 200),
        (["404 Not Found"], {}, False, "SIP 404 Not Found", 404),
        (["404 Not Found"], {"accept_codes": [200, 401, 403, 404]}, True, None, 404),
        (["100 Trying", "200 OK"], {}, True, None, 200),
        (["100 Trying", "503 Service Unavailable"], {}, False, "SIP 503 Service Unavailable", 503),
    ],
)
async def test_sip(
    peers: Peers,
    transport: str,
    statuses: list[str],
    raw: dict[str, Any],
    ok: bool,
    error: str | None,
    code: int,
) -> None:
    target = start_sipp(peers, transport, *statuses)
    result = await sip.probe(target, 5, opts(transport=transport, **raw))
    assert (result.ok, result.error) == (ok, error)
    assert result.details["code"] == code
    assert result.details["server"] == "sipp-test"
    assert result.latency is not None


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_provisional_only_times_out(peers: Peers, transport: str) -> None:
    target = start_sipp(peers, transport, "100 Trying")
    result = await sip.probe(target, 0.3, opts(transport=transport))
    assert (result.ok, result.error) == (False, "timeout after 0.3 s (last: SIP 100 Trying)")


async def test_udp_silence_times_out(peers: Peers) -> None:
    target = start_sipp(peers, "udp")
    result = await sip.probe(target, 0.3, opts())
    assert (result.ok, result.error, result.latency) == (False, "timeout after 0.3 s", None)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_nothing_listening_is_refused(transport: str) -> None:
    # Over UDP the refusal is loopback's ICMP port-unreachable, delivered to our socket.
    target = f"{LOOPBACK}:{free_port(udp_too=True)}"
    result = await sip.probe(target, 5, opts(transport=transport))
    assert (result.ok, result.error) == (False, "connection refused")


def test_request_is_well_formed() -> None:
    request = sip.build_options("198.18.0.5", 5060, ("198.18.0.1", 40000), "udp", "availmon")
    head, _, body = request.data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "OPTIONS sip:198.18.0.5:5060 SIP/2.0"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Via"] == f"SIP/2.0/UDP 198.18.0.1:40000;branch={request.branch};rport"
    assert request.branch.startswith("z9hG4bK")  # RFC 3261 magic cookie
    assert len(request.branch) == 7 + 16
    assert headers["From"].startswith("<sip:availmon@198.18.0.1>;tag=")
    assert headers["To"] == "<sip:198.18.0.5:5060>"
    assert headers["Call-ID"] == request.call_id
    assert headers["CSeq"] == "1 OPTIONS"
    assert headers["Max-Forwards"] == "70"
    assert headers["Content-Length"] == "0"
    assert body == b""
    again = sip.build_options("198.18.0.5", 5060, ("198.18.0.1", 40000), "udp", "availmon")
    assert (again.branch, again.call_id) != (request.branch, request.call_id)


def test_ipv6_request_uses_brackets() -> None:
    request = sip.build_options("::1", 5060, ("::1", 40000), "tcp", "availmon")
    assert request.data.startswith(b"OPTIONS sip:[::1]:5060 SIP/2.0\r\n")
    assert b"Via: SIP/2.0/TCP [::1]:40000;branch=" in request.data


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        (b"SIP/2.0 200 OK\r\ni: abc\r\nl: 0\r\n\r\n", (200, "OK", "abc")),
        (
            b"SIP/2.0 503 Service Unavailable\r\nCall-ID: x\r\n\r\n",
            (503, "Service Unavailable", "x"),
        ),
        (b"OPTIONS sip:a SIP/2.0\r\n\r\n", None),
        (b"garbage", None),
    ],
)
def test_parse_response(data: bytes, parsed: tuple[int, str, str] | None) -> None:
    response = sip.parse_response(data)
    got = (
        None if response is None else (response.code, response.reason, response.headers["call-id"])
    )
    assert got == parsed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"transport": "tls"}, "Input should be 'udp' or 'tcp'"),
        ({"accept_codes": [100]}, "greater than or equal to 200"),
        ({"from_user": "a b"}, "String should match pattern"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        opts(**raw)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("sip.example.test", None),
        ("127.0.0.1:5080", None),
        ("pbx:sip", "port 'sip' is not a number"),
        ("", "expected host or host:port, got ''"),
        (" ", "expected host or host:port, got ' '"),
        ("[]", "expected host or host:port, got '[]'"),
    ],
)
def test_check_target(target: str, problem: str | None) -> None:
    assert sip.check_target(target) == problem
