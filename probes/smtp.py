"""SMTP probe: banner, EHLO, optional STARTTLS with certificate checks, QUIT. Never sends mail.

Written on asyncio streams rather than a client library: aiosmtplib is not a dependency, the
dialogue is five commands, and owning it lets the probe report exactly which step failed and
with what reply ("SMTP 554 at banner: ..."), and check the certificate with the same rules as
the HTTP probe (probes.base). ``StreamWriter.start_tls`` (Python 3.11) upgrades in place.
"""

from __future__ import annotations

import ipaddress
import re

from pydantic import field_validator, model_validator

from probes.base import (
    ProbeResult,
    TLSOptions,
    split_host_port,
    target_checker,
)

DEFAULT_PORT = 25
SMTPS_PORT = 465
#: A reply longer than this many lines is not a mail server talking (RFC 5321 has no limit,
#: but EHLO replies run to a dozen or so).
MAX_REPLY_LINES = 100
#: RFC 5321 4.1.2 Domain: labels of letters, digits and hyphens (not first or last), joined by
#: dots; 63 octets a label (RFC 1035), 255 in all (RFC 5321 4.5.3.1.2).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,255}}$){_LABEL}(?:\.{_LABEL})*")
#: What may appear in an EHLO name at all: anything else is named in the error.
_EHLO_CHARS = re.compile(r"[A-Za-z0-9.\-\[\]:]")


class Options(TLSOptions):
    #: Upgrade with STARTTLS after EHLO and check the certificate (RFC 3207).
    starttls: bool = False
    #: TLS from the first byte (SMTPS, port 465 by default; RFC 8314).
    implicit_tls: bool = False
    #: Our name in EHLO: a host name or an address literal ("[192.0.2.1]", "[IPv6:::1]");
    #: by default the address literal of our end.
    helo_name: str | None = None

    @field_validator("helo_name")
    @classmethod
    def _helo_name(cls, value: str | None) -> str | None:
        if value is None or _DOMAIN.fullmatch(value) or _address_literal(value):
            return value
        message = (
            "expected a host name (letters, digits and hyphens, in labels joined by dots)"
            " or an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]"
        )
        # A CR or LF would end the EHLO line and send the rest as a command of its own.
        bad = next((c for c in value if not _EHLO_CHARS.fullmatch(c)), None)
        raise ValueError(message if bad is None else f"{message} (found {bad!r})")

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Options:
        if self.starttls and self.implicit_tls:
            raise ValueError("starttls and implicit_tls exclude each other")
        return self


def _address_literal(value: str) -> bool:
    """RFC 5321 4.1.3: ``[IPv4]`` or ``[IPv6:address]`` (no scope: it means nothing to the
    server)."""
    if not (value.startswith("[") and value.endswith("]")):
        return False
    inside = value[1:-1]
    if inside[:5].lower() == "ipv6:":
        address = inside[5:]
        return "%" not in address and _parses(ipaddress.IPv6Address, address)
    return _parses(ipaddress.IPv4Address, inside)


def _parses(kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address], text: str) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


check_target = target_checker(lambda target: split_host_port(target, DEFAULT_PORT))


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    from probes import smtp_io  # asyncio and the dialogue only when a check runs (issue 9)

    return await smtp_io.probe(target, timeout, options)
