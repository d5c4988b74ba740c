"""SIP probe: an OPTIONS request (RFC 3261 11) over UDP or TCP, judged by its final response.

OPTIONS is the SIP "ping": it touches no call state, and any final answer, even 401, 403 or
404 (``accept_codes``), proves a SIP stack is listening and parsing. Provisional 1xx responses
are waited past. Over UDP the request is retransmitted on RFC 3261's timer E schedule (T1 =
0.5 s doubling to T2 = 4 s), so one lost datagram does not fail the probe.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator

from probes.base import (
    ProbeOptions,
    ProbeResult,
    split_host_port,
    target_checker,
)

DEFAULT_PORT = 5060
T1 = 0.5  # RFC 3261 17.1.2.2: first retransmission interval over UDP
T2 = 4.0  # RFC 3261: the retransmission interval's ceiling for non-INVITE requests
MAX_MESSAGE = 65_535
FinalCode = Annotated[int, Field(ge=200, le=699)]
#: RFC 3261 7.3.3 compact header names.
_COMPACT = {"i": "call-id", "v": "via", "l": "content-length", "f": "from", "t": "to"}


class Options(ProbeOptions):
    transport: Literal["udp", "tcp"] = "udp"
    #: Final response codes that count as up; e.g. [200, 401, 403, 404] for a registrar
    #: that will not answer OPTIONS from strangers with 200.
    accept_codes: tuple[FinalCode, ...] = (200,)
    #: User part of our From URI.
    from_user: Annotated[str, Field(pattern=r"^[A-Za-z0-9._~+-]+$")] = "availmon"

    @field_validator("accept_codes")
    @classmethod
    def _some_code(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:  # every answer would count as down
            raise ValueError("expected at least one final response code, e.g. [200]")
        return value


check_target = target_checker(lambda target: split_host_port(target, DEFAULT_PORT))


@dataclass(frozen=True)
class Request:
    data: bytes
    call_id: str
    branch: str


@dataclass(frozen=True)
class Response:
    code: int
    reason: str
    headers: dict[str, str]  # lower-case full names; the first value of each


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_options(
    host: str, port: int, local: tuple[str, int], transport: str, user: str
) -> Request:
    """An OPTIONS request with every header RFC 3261 8.1.1 requires, plus Content-Length."""
    branch = "z9hG4bK" + secrets.token_hex(8)  # the magic cookie of RFC 3261 8.1.1.7
    tag = secrets.token_hex(6)
    local_host = local[0]
    bare = f"[{local_host}]" if ":" in local_host else local_host
    call_id = f"{secrets.token_hex(12)}@{local_host}"
    me = _hostport(local_host, local[1])
    target = _hostport(host, port)
    lines = [
        f"OPTIONS sip:{target} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {me};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{bare}>;tag={tag}",
        f"To: <sip:{target}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:{user}@{me};transport={transport}>",
        "Accept: application/sdp",
        "User-Agent: availmon",
        "Content-Length: 0",
    ]
    return Request(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"), call_id, branch)


def _is_status_code(text: str) -> bool:
    """RFC 3261 25.1 Status-Code: exactly three ASCII digits. ``isdigit`` alone takes "²⁰⁰"
    (int() then raises), "٢٠٠" (int() reads 200) and 5000 digits (int() refuses them)."""
    return len(text) == 3 and text.isascii() and text.isdigit()


def parse_response(data: bytes) -> Response | None:
    """A SIP response's status and headers; None for anything else (requests, noise, a
    status code that is not three ASCII digits)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", errors="replace")
    lines = head.split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[0] != "SIP/2.0" or not _is_status_code(status[1]):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), value.strip())
    reason = status[2] if len(status) > 2 else ""
    return Response(int(status[1]), reason, headers)


async def probe(target: str, timeout: float, options: Options) -> ProbeResult:
    from probes import sip_io  # asyncio and the dialogue only when a check runs (issue 9)

    return await sip_io.probe(target, timeout, options)
