"""The one place that maps a check's ``type`` to its probe. Adding a probe: one line here.

Every module named here is light (options, target rules, entry points): each imports its
protocol library (aiohttp, pysnmp, dnspython, icmplib) only when one of its checks runs, so
reading a config or printing help does not pay for them (issue 9).
"""

from __future__ import annotations

from typing import Any

from probes import dns, http, icmp, sip, smtp, snmp, tcp
from probes.base import ProbeSpec

REGISTRY: dict[str, ProbeSpec[Any]] = {
    "icmp": ProbeSpec("icmp", icmp.Options, icmp.probe, icmp.check_target, icmp.probe_many),
    "http": ProbeSpec("http", http.Options, http.probe, http.check_target, session=http.session),
    "tcp": ProbeSpec("tcp", tcp.Options, tcp.probe, tcp.check_target),
    "dns": ProbeSpec("dns", dns.Options, dns.probe, dns.check_target),
    "smtp": ProbeSpec("smtp", smtp.Options, smtp.probe, smtp.check_target),
    "sip": ProbeSpec("sip", sip.Options, sip.probe, sip.check_target),
    "snmp": ProbeSpec(
        "snmp",
        snmp.Options,
        snmp.probe,
        snmp.check_target,
        session=snmp.session,
        group_key=snmp.group_key,
    ),
}
