"""What every probe shares: its result, its options model and its registry entry.

A probe module exposes ``Options`` (a frozen pydantic model of its check options) and
``async def probe(target, timeout, options) -> ProbeResult``. It never raises for a failed
target; it raises :class:`availmon.errors.StartupError` only when it cannot run at all.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class ProbeOptions(BaseModel):
    """Base of every probe's options: frozen, and unknown keys are config errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome. A value that was not measured is ``None``, never 0."""

    ok: bool
    latency: float | None = None  # seconds
    error: str | None = None  # short human reason when not ok (or why it is slow)
    loss: float | None = None  # percent, for probes that send bursts
    degraded: bool = False  # the probe itself judged the answer poor (e.g. cert expiring)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "latency": self.latency,
            "error": self.error,
            "loss": self.loss,
            "degraded": self.degraded,
            "details": self.details,
        }


OptionsT = TypeVar("OptionsT", bound=ProbeOptions)


@dataclass(frozen=True)
class Poll:
    """One check's share of a grouped poll: its target, options and last result."""

    target: str
    options: Any
    previous: ProbeResult | None = None


class ProbeSession(Protocol):
    """What a probe type keeps for the agent's lifetime, shared by all its checks (an HTTP
    client with its TLS contexts, an SNMP engine). ``previous`` is the check's last result
    (rates, reboots)."""

    async def probe(
        self, target: str, timeout: float, options: Any, *, previous: ProbeResult | None = None
    ) -> ProbeResult: ...

    async def probe_group(self, polls: Sequence[Poll], timeout: float) -> list[ProbeResult]:
        """Polls whose ``group_key`` is equal, at once (SNMP: one GET per device)."""
        ...


ProbeFn = Callable[[str, float, Any], Awaitable[ProbeResult]]
BatchFn = Callable[[Sequence[str], float, Any], Awaitable[list[ProbeResult]]]
SessionFactory = Callable[[], AbstractAsyncContextManager[ProbeSession]]


@dataclass(frozen=True)
class ProbeSpec(Generic[OptionsT]):
    """A registry entry: how to validate a check of this type and how to run it."""

    name: str
    options: type[OptionsT]
    probe: ProbeFn
    #: Returns an error message when the target string cannot be right for this type.
    check_target: Callable[[str], str | None] | None = None
    #: Probes many targets sharing one interval and options at once (ICMP through one socket).
    probe_many: BatchFn | None = None
    #: What is worth building once per agent rather than once per probe (TLS contexts and an
    #: HTTP client, an SNMP engine): the scheduler owns one session per probe type, shared by
    #: every check of that type, for the agent's lifetime (issue 9).
    session: SessionFactory | None = None
    #: Checks with equal keys (and the same interval and timeout) are polled together through
    #: ``session.probe_group``: SNMP checks of one device share one GET.
    group_key: Callable[[str, Any], Hashable] | None = None

    def parse_options(self, raw: dict[str, Any]) -> OptionsT:
        return self.options.model_validate(raw)


def target_checker(parse: Callable[[str], object]) -> Callable[[str], str | None]:
    """A registry ``check_target`` from a target parser that raises ValueError."""

    def check(target: str) -> str | None:
        try:
            parse(target)
        except ValueError as exc:
            return str(exc)
        return None

    return check


#: The longest error a probe reports (an event's evidence holds at most 500 characters).
ERROR_MAX_CHARS = 500
#: C0 and C1 controls, DEL, and the bidirectional overrides and isolates: a peer's text
#: that goes into logs, events, the board and alerts must not steer a terminal or reorder
#: what a reader sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def peer_text(text: str, limit: int = 200) -> str:
    """Text a peer sent (a banner, a reason phrase, a value), fit for an error message:
    unsafe characters shown as escapes (``\\x1b``), at most ``limit`` characters."""
    shown = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def fail(error: str, **details: Any) -> ProbeResult:
    """A failed probe. The error is made safe and bounded here too, whatever went into
    it (``peer_text``): a probe that quotes its peer should still cut the quote short."""
    return ProbeResult(ok=False, error=peer_text(error, ERROR_MAX_CHARS), details=details)


def timeout_text(timeout: float) -> str:
    return f"timeout after {timeout:g} s"


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; with a default port also ``host``, ``[v6]`` or an
    unbracketed IPv6 address (``::1``, ``fe80::1%eth0``).

    An IPv6 address with a port is bracketed (``::1`` is never host ``::`` port 1), brackets
    hold an IPv6 address and nothing else, and a port is ASCII digits (``int()`` would take
    ``+80``, ``1_080`` or ``٨٠``). Raises ValueError with a readable message.
    """
    expected = "host or host:port" if default_port is not None else "host:port"
    got = f"expected {expected}, got {target!r}"
    example = f"[::1]:{default_port or 80}"
    if any(c.isspace() or not c.isprintable() for c in target):
        raise ValueError(got)
    if target.startswith("["):
        inside, closed, rest = target[1:].partition("]")
        if not closed or "[" in inside or "[" in rest or "]" in rest:
            raise ValueError(f"{got}: unbalanced brackets")
        if not inside:  # "[]", "[]:80": no host at all
            raise ValueError(got)
        if not _is_ipv6(inside):
            raise ValueError(f"{got}: a bracketed host must be an IPv6 address, as in {example}")
        if not rest and default_port is not None:
            return inside, default_port
        if not rest.startswith(":"):  # "[::1]" without a default port, "[::1]80"
            raise ValueError(got)
        host, port_text = inside, rest[1:]
    elif "[" in target or "]" in target:
        raise ValueError(f"{got}: unbalanced brackets")
    elif target.count(":") > 1:  # only an IPv6 address has more than one colon
        if default_port is not None and _is_ipv6(target):
            return target, default_port  # unbracketed: the address, never address:port
        raise ValueError(f"{got}: an IPv6 address with a port goes in brackets, as in {example}")
    else:
        host, colon, port_text = target.partition(":")
        if not host:
            raise ValueError(got)
        if not colon:
            if default_port is None:
                raise ValueError(got)
            return host, default_port
    if not (port_text.isascii() and port_text.isdigit()):  # int() takes "+80", "1_0", "٨٠"
        raise ValueError(f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port


def _is_ipv6(text: str) -> bool:
    """An IPv6 address, perhaps with a scope (``fe80::1%eth0``)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class TLSOptions(ProbeOptions):
    """Options shared by probes that check a TLS certificate."""

    #: Degraded when the certificate expires within this many days.
    cert_expiry_warn_days: Annotated[float, Field(ge=0)] = 14
    #: Trust this CA bundle (PEM) instead of the system's, e.g. a private CA.
    ca_file: Path | None = None
    #: Skip chain, host-name and date checks (the certificate is then not measured).
    insecure_skip_verify: bool = False
