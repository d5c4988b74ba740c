"""DNS probe: ask one server (the target, ``host[:port]``) one question and check the answer.

The query goes straight to the target with ``dns.asyncquery`` rather than through a resolver,
so that /etc/resolv.conf, search domains and caches never stand in for the server we are
judging. Over UDP a truncated answer is retried over TCP, as a resolver would.

dnspython is imported when a dns check is validated or run, not when this module is (issue 9:
start-up); the query itself is in :mod:`probes.dns_io`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from probes.base import ProbeOptions, ProbeResult, split_host_port, target_checker

DEFAULT_PORT = 53


class Options(ProbeOptions):
    #: The name to look up, e.g. "www.example.org" (not ``name``: that is the check's name).
    query_name: str
    #: A, AAAA, MX, CNAME, TXT, NS, SOA, SRV, PTR ...
    record_type: str = "A"
    #: Each of these must be in the answer (addresses, names; for MX/SRV the host alone will do).
    expect: tuple[str, ...] = ()
    protocol: Literal["udp", "tcp"] = "udp"
    #: Ask for recursion (a resolver); set false to question an authoritative server.
    recursion_desired: bool = True

    @field_validator("query_name")
    @classmethod
    def _name(cls, value: str) -> str:
        import dns.exception
        import dns.name

        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            raise ValueError(f"not a valid DNS name: {exc}") from None
        return value

    @field_validator("record_type")
    @classmethod
    def _record_type(cls, value: str) -> str:
        import dns.exception
        import dns.rdatatype

        try:
            return dns.rdatatype.to_text(dns.rdatatype.from_text(value.upper()))
        except dns.exception.DNSException:
            raise ValueError(f"unknown record type {value!r}") from None


check_target = target_checker(lambda target: split_host_port(target, DEFAULT_PORT))


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    from probes import dns_io

    return await dns_io.probe(target, timeout, options)
