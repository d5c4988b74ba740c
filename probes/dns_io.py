"""The DNS probe's query (dnspython), apart from :mod:`probes.dns` so that reading a config
does not import it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from probes.base import ProbeResult, fail, peer_text, split_host_port, timeout_text
from probes.dns import DEFAULT_PORT, Options


async def _address(host: str, port: int) -> str:
    """The server's address: a literal as is, a name through the system resolver."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return str(infos[0][4][0])


def _texts(rrset: dns.rrset.RRset) -> list[str]:
    out = []
    for rdata in rrset:
        if rrset.rdtype == dns.rdatatype.TXT:
            out.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        else:
            out.append(rdata.to_text())
    return out


#: The most answer values an error message quotes (the rest are counted), and their length.
_SHOWN_VALUES = 5
_SHOWN_CHARS = 80


def _shown(values: list[str]) -> str:
    """Values from the answer, fit for an error message: a few, each cut short and safe."""
    out = ", ".join(peer_text(v, _SHOWN_CHARS) for v in values[:_SHOWN_VALUES])
    more = len(values) - _SHOWN_VALUES
    return f"{out} and {more} more" if more > 0 else out


def _answer(response: dns.message.Message) -> tuple[dns.rrset.RRset | None, bool]:
    """The answer for the name asked, following CNAMEs from it (dnspython's own chaining,
    which checks owner names): records for other names are no answer. Also whether the
    answer section held records of the type asked for some other name."""
    # dnspython took it as the response to our QUERY, so it parsed it as one.
    assert isinstance(response, dns.message.QueryMessage)
    found = response.resolve_chaining().answer
    question = response.question[0]
    elsewhere = found is None and any(r.rdtype == question.rdtype for r in response.answer)
    return found, elsewhere


def _normal(text: str, rdtype: str) -> str:
    """Compare addresses as addresses and names without case or the trailing dot."""
    if rdtype == "TXT":
        return text
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return " ".join(token.lower().rstrip(".") for token in text.split())


def _matches(expected: str, answer: str, rdtype: str) -> bool:
    want, got = _normal(expected, rdtype), _normal(answer, rdtype)
    return want == got or (rdtype != "TXT" and want == got.rsplit(" ", 1)[-1])


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    host, port = split_host_port(target, DEFAULT_PORT)
    rdtype = dns.rdatatype.from_text(options.record_type)
    query = dns.message.make_query(options.query_name, rdtype)
    if not options.recursion_desired:
        query.flags &= ~dns.flags.RD
    started = time.perf_counter()
    retried_tcp = False
    try:
        async with asyncio.timeout(timeout):
            where = await _address(host, port)
            if options.protocol == "tcp":
                response = await dns.asyncquery.tcp(query, where, timeout=timeout, port=port)
            else:
                response, retried_tcp = await dns.asyncquery.udp_with_fallback(
                    query, where, timeout=timeout, port=port
                )
    except (TimeoutError, dns.exception.Timeout):
        return fail(timeout_text(timeout))
    except socket.gaierror as exc:
        return fail(f"name lookup failed for {host}: {exc.strerror}")
    except ConnectionRefusedError:
        return fail("connection refused")
    except OSError as exc:
        return fail(exc.strerror or str(exc))
    except dns.exception.DNSException as exc:
        return fail(f"bad DNS response: {exc}")
    latency = time.perf_counter() - started

    rcode = response.rcode()
    try:
        found, elsewhere = _answer(response) if rcode == dns.rcode.NOERROR else (None, False)
    except dns.exception.DNSException as exc:
        return fail(f"bad DNS response: {exc}")
    answers = _texts(found) if found is not None else []
    details: dict[str, Any] = {"rcode": dns.rcode.to_text(rcode), "answers": answers}
    if retried_tcp:
        details["truncated_retried_tcp"] = True
    if rcode == dns.rcode.NXDOMAIN:
        error = f"NXDOMAIN: {options.query_name} does not exist"
        return ProbeResult(ok=False, latency=latency, error=error, details=details)
    if rcode != dns.rcode.NOERROR:
        error = f"DNS {dns.rcode.to_text(rcode)} for {options.query_name}"
        return ProbeResult(ok=False, latency=latency, error=error, details=details)
    if not answers:
        error = f"no {options.record_type} record for {options.query_name}"
        if elsewhere:
            error += " in the answer, only records for other names"
        return ProbeResult(ok=False, latency=latency, error=error, details=details)
    missing = [
        e for e in options.expect if not any(_matches(e, a, options.record_type) for a in answers)
    ]
    if missing:
        error = f"expected {', '.join(missing)}, got {_shown(answers)}"
        return ProbeResult(ok=False, latency=latency, error=error, details=details)
    return ProbeResult(ok=True, latency=latency, details=details)
