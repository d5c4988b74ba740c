"""SMTP probe: banner, EHLO, optional STARTTLS with certificate checks, QUIT. Never sends mail.

Written on asyncio streams rather than a client library: aiosmtplib is not a dependency, the
dialogue is five commands, and owning it lets the probe report exactly which step failed and
with what reply ("SMTP 554 at banner: ..."), and check the certificate with the same rules as
the HTTP probe (probes.base). ``StreamWriter.start_tls`` (Python 3.11) upgrades in place.
"""

from __future__ import annotations

from pydantic import model_validator

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


class Options(TLSOptions):
    #: Upgrade with STARTTLS after EHLO and check the certificate (RFC 3207).
    starttls: bool = False
    #: TLS from the first byte (SMTPS, port 465 by default; RFC 8314).
    implicit_tls: bool = False
    #: Our name in EHLO; by default the address literal of our end, e.g. "[192.0.2.1]".
    helo_name: str | None = None

    @model_validator(mode="after")
    def _one_tls_mode(self) -> Options:
        if self.starttls and self.implicit_tls:
            raise ValueError("starttls and implicit_tls exclude each other")
        return self


check_target = target_checker(lambda target: split_host_port(target, DEFAULT_PORT))


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    from probes import smtp_io  # asyncio and the dialogue only when a check runs (issue 9)

    return await smtp_io.probe(target, timeout, options)
