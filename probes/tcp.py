"""TCP probe: is something listening, how long the handshake takes, and (optionally) does it
say the right thing: ``send`` a line, ``expect`` a regex on the banner or reply.

The reply is read up to ``max_read_bytes`` and within the probe's timeout, so a peer that talks
forever or never stops holding the connection cannot hold the probe.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from probes.base import (
    ProbeOptions,
    ProbeResult,
    split_host_port,
    target_checker,
)
from probes.patterns import Pattern


class Options(ProbeOptions):
    #: Text to send once connected (TOML escapes such as "\r\n" work), e.g. "PING\r\n".
    send: str | None = None
    #: A regex searched in what the peer sends back (banner or reply), e.g. "^SSH-2\\.0-".
    expect: Pattern | None = None
    max_read_bytes: Annotated[int, Field(ge=1, le=1_048_576)] = 4096


check_target = target_checker(split_host_port)


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    from probes import tcp_io  # asyncio and the dialogue only when a check runs (issue 9)

    return await tcp_io.probe(target, timeout, options)
