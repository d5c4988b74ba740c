"""What every probe shares: its result, its options model and its registry entry.

A probe module exposes ``Options`` (a frozen pydantic model of its check options) and
``async def probe(target, timeout, options) -> ProbeResult``. It never raises for a failed
target; it raises :class:`availmon.errors.StartupError` only when it cannot run at all.
"""

from __future__ import annotations

import contextvars
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


def compile_regex(value: Any) -> Any:
    """Compile a regex at config load so that a bad one is a config error, not a probe error."""
    if isinstance(value, str):
        try:
            return re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def fail(error: str, **details: Any) -> ProbeResult:
    return ProbeResult(ok=False, error=error, details=details)


def timeout_text(timeout: float) -> str:
    return f"timeout after {timeout:g} s"


def split_host_port(target: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, or (with a default port) ``host``, ``v6`` or ``[v6]``.

    Raises ValueError with a readable message.
    """
    if default_port is not None:
        if not target.strip("[]") or any(c.isspace() for c in target):
            raise ValueError(f"expected host or host:port, got {target!r}")
        if target.startswith("[") and target.endswith("]"):
            return target[1:-1], default_port
        if target.count(":") != 1 and not target.startswith("["):
            return target, default_port  # a bare name, IPv4 or unbracketed IPv6 address
    host, sep, port_text = target.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {target!r}")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    return host, port


# --- TLS certificates, shared by every probe that speaks TLS (http, smtp) ------------------

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: verify the chain and the host name but leave the dates
#: to ``cert_verdict``, so that the message can say "expired 3 days ago" rather than OpenSSL's
#: bare "certificate has expired".
_X509_V_FLAG_NO_CHECK_TIME = 0x200000
#: OpenSSL verify codes for a certificate outside its dates.
CERT_DATE_ERRORS = (9, 10)  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


#: The TLS objects made by the current probe's connections (see :func:`recording_tls`).
_MADE: contextvars.ContextVar[list[ssl.SSLObject] | None] = contextvars.ContextVar(
    "availmon_tls_made", default=None
)


class RecordingContext(ssl.SSLContext):
    """A client context that lets each probe see the TLS objects its own connections made.

    aiohttp releases a connection as soon as a short body has arrived, before the caller can
    ask it for the peer certificate; recording ``wrap_bio`` (which asyncio calls for every TLS
    connection, in the connecting task's context) lets the probe read the certificate of the
    connection that answered. One context is shared by every probe with the same trust
    settings, so the record is kept per probe (a context variable set by
    :func:`recording_tls`), never on the context.
    """

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        super().__init__()

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        made = _MADE.get()
        if made is not None:
            made.append(obj)
        return obj


@contextmanager
def recording_tls() -> Iterator[list[ssl.SSLObject]]:
    """Collect the TLS objects that connections opened inside the block make."""
    made: list[ssl.SSLObject] = []
    token = _MADE.set(made)
    try:
        yield made
    finally:
        _MADE.reset(token)


def last_peer(made: list[ssl.SSLObject], host: str | None = None) -> ssl.SSLObject | None:
    """The last TLS connection made (to ``host`` when given)."""
    for obj in reversed(made):
        if host is None or obj.server_hostname == host:
            return obj
    return None


def tls_context(
    ca_file: Path | None = None, insecure: bool = False, *, check_time: bool = True
) -> RecordingContext:
    """A client context: the system CAs, or only ``ca_file`` (a private CA) when given.

    With ``check_time=False`` an expired certificate still completes the handshake so that
    ``cert_verdict`` can say how long ago it expired; use that only where nothing secret is
    sent over the connection, or only to read the certificate.
    Blocking (it reads CA files, ~46 ms of CPU for the system's): build it once per agent,
    through ``asyncio.to_thread`` from a coroutine.
    """
    ctx = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        ctx.load_default_certs()
    if not check_time:
        ctx.verify_flags |= _X509_V_FLAG_NO_CHECK_TIME
    return ctx


def _span(seconds: float) -> str:
    """``3 days``, ``1 day``, ``5 hours``, ``12 minutes``: rounded to the nearest unit."""

    def plural(n: int, unit: str) -> str:
        return f"{n} {unit}" if n == 1 else f"{n} {unit}s"

    if seconds >= 86400 - 1800:
        return plural(round(seconds / 86400), "day")
    if seconds >= 3600 - 30:
        return plural(round(seconds / 3600), "hour")
    return plural(max(1, round(seconds / 60)), "minute")


@dataclass(frozen=True)
class CertVerdict:
    """What a peer certificate's dates mean for the check."""

    days_left: float | None  # None when not measured (verification off)
    not_after: str | None
    error: str | None = None  # expired or not yet valid: the target is down
    warning: str | None = None  # expires within the warning window: degraded

    def details(self) -> dict[str, Any]:
        days = None if self.days_left is None else round(self.days_left, 2)
        return {"cert_days_left": days, "cert_not_after": self.not_after}


def cert_verdict(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, warn_days: float) -> CertVerdict:
    """Judge the peer certificate of a verified connection by its dates."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    if not cert or "notAfter" not in cert:
        return CertVerdict(days_left=None, not_after=None)  # CERT_NONE: nothing was checked
    now = time.time()
    not_after = ssl.cert_time_to_seconds(str(cert["notAfter"]))
    not_before = ssl.cert_time_to_seconds(str(cert["notBefore"]))
    days_left = (not_after - now) / 86400
    stamp = datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if now > not_after:
        return CertVerdict(
            days_left, stamp, error=f"certificate expired {_span(now - not_after)} ago"
        )
    if now < not_before:
        start = datetime.fromtimestamp(not_before, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return CertVerdict(days_left, stamp, error=f"certificate not valid before {start}")
    if days_left < warn_days:
        return CertVerdict(
            days_left, stamp, warning=f"certificate expires in {_span(not_after - now)}"
        )
    return CertVerdict(days_left, stamp)


def tls_error_text(exc: BaseException) -> str:
    """A short reason for a failed TLS handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    return str(exc) or type(exc).__name__


class TLSOptions(ProbeOptions):
    """Options shared by probes that check a TLS certificate."""

    #: Degraded when the certificate expires within this many days.
    cert_expiry_warn_days: Annotated[float, Field(ge=0)] = 14
    #: Trust this CA bundle (PEM) instead of the system's, e.g. a private CA.
    ca_file: Path | None = None
    #: Skip chain, host-name and date checks (the certificate is then not measured).
    insecure_skip_verify: bool = False
