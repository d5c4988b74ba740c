"""SNMP probe: an interface's status, any OID against thresholds, and reboots.

Modes (``mode``, or inferred: ``interface`` set -> interface, ``oid`` set -> oid, else
uptime):

- ``interface``: ifAdminStatus and ifOperStatus of the interface whose ifName or ifDescr
  is ``interface``. Admin-down is a decision, not an outage: ok, with a note.
- ``oid``: the value (or with ``rate = true`` its per-second rate) at ``oid`` against
  ``warn_below/warn_above`` (degraded) and ``down_below/down_above`` (failed).
- ``uptime``: sysUpTime only.

Every mode reads sysUpTime in the same request and reports ``rebooted`` when it went
backwards since the previous poll.

Previous sample. ``rate`` and ``rebooted`` compare two polls, yet a probe keeps no state
(no module-level caches: STYLE 8). The caller owns it: ``probe(..., previous=result)``
takes the last :class:`ProbeResult` this check returned, whose ``details`` carry the raw
sample (``value``, ``sys_uptime_ticks``, ``if_index``). We chose the result over state
inside a poller object because the scheduler keeps each check's last result anyway, the
sample travels with the evidence (anyone can redo the arithmetic), and a probe without a
previous result (the first poll, ``availmon probe``) simply reports ``rate`` and
``rebooted`` as None: not measured. The rate's time base is the device's own sysUpTime,
read in the same PDU, so scheduling jitter on our side does not skew it.

:class:`SnmpPoller` reuses one engine across polls; it holds no sample, only pysnmp's own
engine state.

Secrets (community, v3 keys) come from ``*_file`` or ``*_env`` and never appear in results
or logs. SNMPv3 is authPriv only; AES needs the ``cryptography`` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pysnmp.error import PySnmpError
from pysnmp.hlapi.v3arch.asyncio import (
    USM_AUTH_HMAC96_SHA,
    USM_AUTH_HMAC128_SHA224,
    USM_AUTH_HMAC192_SHA256,
    USM_AUTH_HMAC256_SHA384,
    USM_AUTH_HMAC384_SHA512,
    USM_PRIV_CFB128_AES,
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    bulk_cmd,
    get_cmd,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1902 import (
    Counter32,
    Counter64,
    Gauge32,
    Integer32,
    IpAddress,
    OctetString,
    TimeTicks,
    Unsigned32,
)
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from availmon.errors import StartupError
from availmon.secrets import resolve_secret
from probes.base import (
    ProbeOptions,
    ProbeResult,
    fail,
    split_host_port,
    target_checker,
    timeout_text,
)

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"

#: RFC 2863 ifOperStatus / ifAdminStatus values, for readable reasons ("down(2)").
OPER_STATUS = {
    1: "up",
    2: "down",
    3: "testing",
    4: "unknown",
    5: "dormant",
    6: "notPresent",
    7: "lowerLayerDown",
}
ADMIN_STATUS = {1: "up", 2: "down", 3: "testing"}

AUTH_PROTOCOLS = {
    "SHA": USM_AUTH_HMAC96_SHA,
    "SHA-224": USM_AUTH_HMAC128_SHA224,
    "SHA-256": USM_AUTH_HMAC192_SHA256,
    "SHA-384": USM_AUTH_HMAC256_SHA384,
    "SHA-512": USM_AUTH_HMAC384_SHA512,
}
#: AES-128 (RFC 3826). AES-192/256 are left out: vendors disagree on their key extension.
PRIV_PROTOCOLS = {"AES": USM_PRIV_CFB128_AES}

AuthProtocol = Literal["SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PrivProtocol = Literal["AES"]
Mode = Literal["interface", "oid", "uptime"]

_OID = re.compile(r"^\.?[0-2](\.\d+)+$")
_TICKS_WRAP = 2**32
#: sysUpTime (TimeTicks, 1/100 s) wraps after ~497 days; a drop from within a day of the
#: top to within a day of zero is a wrap, not a reboot.
_WRAP_MARGIN = 100 * 86_400
_MAX_WALK_CALLS = 200  # x 25 rows per GETBULK: enough for a chassis, bounded for a bad agent


class Options(ProbeOptions):
    mode: Mode | None = None
    version: Literal["2c", "3"] = "2c"
    community_file: Path | None = None
    community_env: str | None = None
    user: str | None = None
    auth_protocol: AuthProtocol = "SHA"
    auth_key_file: Path | None = None
    auth_key_env: str | None = None
    priv_protocol: PrivProtocol = "AES"
    priv_key_file: Path | None = None
    priv_key_env: str | None = None
    #: Resends after the first request; the check's timeout is shared between all tries.
    retries: int = Field(default=1, ge=0, le=5)
    interface: str | None = None
    oid: str | None = None
    rate: bool = False
    warn_below: float | None = None
    warn_above: float | None = None
    down_below: float | None = None
    down_above: float | None = None

    @field_validator("version", "oid", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # From the command line "--version 3" or "--oid 1.3" arrive as TOML numbers.
        return str(value) if isinstance(value, int | float) else value

    @field_validator("oid")
    @classmethod
    def _oid_parses(cls, value: str | None) -> str | None:
        if value is not None and not _OID.match(value):
            raise ValueError("expected a numeric OID such as 1.3.6.1.2.1.1.3.0")
        return value.lstrip(".") if value else value

    @property
    def kind(self) -> Mode:
        if self.mode is not None:
            return self.mode
        if self.interface is not None:
            return "interface"
        return "oid" if self.oid is not None else "uptime"

    @model_validator(mode="after")
    def _consistent(self) -> Options:
        problems = self._mode_problems() + self._credential_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _mode_problems(self) -> list[str]:
        out = []
        if self.mode is None and self.interface is not None and self.oid is not None:
            out.append("set either interface or oid, not both")
        kind = self.kind
        if kind == "interface" and not self.interface:
            out.append("mode 'interface' needs interface")
        if kind == "oid" and not self.oid:
            out.append("mode 'oid' needs oid")
        if kind != "interface" and self.interface is not None and self.oid is None:
            out.append(f"interface does not apply to mode {kind!r}")
        thresholds = (self.warn_below, self.warn_above, self.down_below, self.down_above)
        if kind != "oid" and (self.rate or any(t is not None for t in thresholds)):
            out.append("rate and warn_/down_ thresholds apply only to mode 'oid'")
        if (
            self.warn_below is not None
            and self.down_below is not None
            and self.down_below > self.warn_below
        ):
            out.append("down_below must not be above warn_below")
        if (
            self.warn_above is not None
            and self.down_above is not None
            and self.down_above < self.warn_above
        ):
            out.append("down_above must not be below warn_above")
        return out

    def _credential_problems(self) -> list[str]:
        def one_of(key: str) -> str | None:
            given = [getattr(self, f"{key}_file"), getattr(self, f"{key}_env")]
            if sum(v is not None for v in given) != 1:
                return f"set exactly one of {key}_file and {key}_env"
            return None

        if self.version == "2c":
            v3_keys = ("user", "auth_key_file", "auth_key_env", "priv_key_file", "priv_key_env")
            stray = [k for k in v3_keys if getattr(self, k) is not None]
            out = [f"{', '.join(stray)} apply only to version 3"] if stray else []
            problem = one_of("community")
            return out + ([problem] if problem else [])
        out = []
        if self.community_file is not None or self.community_env is not None:
            out.append("community_file/community_env apply only to version 2c")
        if not self.user:
            out.append("version 3 needs user")
        out += [p for p in (one_of("auth_key"), one_of("priv_key")) if p]
        return out


DEFAULT_PORT = 161


def split_target(target: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; port 161 by default."""
    return split_host_port(target, DEFAULT_PORT)


check_target = target_checker(split_target)


class _Failed(Exception):
    """The device answered badly or not at all: a failed probe, not a bug."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


def _read_secret(path: Path | None, env: str | None, key: str) -> str:
    value = resolve_secret(path, env, key)
    assert value is not None  # Options guarantees one of the two
    return value


def require_privacy() -> None:
    """pysnmp does AES through ``cryptography``; without it v3 fails as mere timeouts."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise StartupError("SNMPv3 privacy needs the 'cryptography' package") from None


def _credentials(options: Options) -> CommunityData | UsmUserData:
    """Blocking (reads files): run it in a thread."""
    if options.version == "2c":
        community = _read_secret(options.community_file, options.community_env, "community")
        return CommunityData(community, mpModel=1)
    auth_key = _read_secret(options.auth_key_file, options.auth_key_env, "auth_key")
    priv_key = _read_secret(options.priv_key_file, options.priv_key_env, "priv_key")
    if len(auth_key) < 8 or len(priv_key) < 8:
        raise StartupError("SNMPv3 auth and priv keys must be at least 8 characters (RFC 3414)")
    require_privacy()
    return UsmUserData(
        options.user,
        auth_key,
        priv_key,
        authProtocol=AUTH_PROTOCOLS[options.auth_protocol],
        privProtocol=PRIV_PROTOCOLS[options.priv_protocol],
    )


def _error_text(indication: Any, timeout: float) -> str:
    if isinstance(indication, errind.RequestTimedOut):
        return timeout_text(timeout)
    if isinstance(indication, errind.WrongDigest):
        return "SNMPv3 authentication failed (wrong digest)"
    if isinstance(indication, errind.UnknownUserName):
        return "SNMPv3 unknown user"
    return str(indication)


def _absent(value: Any) -> str | None:
    """The SNMPv2 exception a varbind carries instead of a value, if any."""
    if isinstance(value, NoSuchObject):
        return "noSuchObject"
    if isinstance(value, NoSuchInstance):
        return "noSuchInstance"
    if isinstance(value, EndOfMibView):
        return "endOfMibView"
    return None


def plain_value(value: Any) -> int | str | None:
    """A varbind value as JSON: integers as int, text as str, exceptions as None."""
    if _absent(value) is not None:
        return None
    if isinstance(value, Integer32 | Counter32 | Counter64 | Gauge32 | TimeTicks | Unsigned32):
        return int(value)
    if isinstance(value, OctetString) and not isinstance(value, IpAddress):
        return bytes(value).decode("utf-8", "replace")
    return value.prettyPrint() if hasattr(value, "prettyPrint") else str(value)


def _number(value: Any) -> float | None:
    """A numeric reading; text such as UCD's laLoad "0.15" counts, other text does not."""
    plain = plain_value(value)
    if isinstance(plain, int):
        return float(plain)
    if isinstance(plain, str):
        try:
            return float(plain)
        except ValueError:
            return None
    return None


def rebooted(previous_ticks: int | None, ticks: int) -> bool | None:
    """sysUpTime went backwards (and did not merely wrap): the agent restarted."""
    if previous_ticks is None:
        return None
    if ticks >= previous_ticks:
        return False
    wrapped = previous_ticks > _TICKS_WRAP - _WRAP_MARGIN and ticks < _WRAP_MARGIN
    return not wrapped


def counter_rate(
    previous: tuple[int, int] | None, now: tuple[int, int], wrap: int | None
) -> float | None:
    """Per-second rate between two (value, sysUpTime ticks) samples, or None.

    ``wrap`` is 2**32 or 2**64 for counters (a smaller value means it wrapped once) and
    None for gauges (a smaller value is a negative rate). None when there is no previous
    sample, no time passed, or the agent restarted (its counters restarted too).
    """
    if previous is None:
        return None
    (v0, t0), (v1, t1) = previous, now
    if rebooted(t0, t1) is not False or t1 == t0:
        return None
    dt = ((t1 - t0) % _TICKS_WRAP) / 100.0
    delta = v1 - v0
    if delta < 0 and wrap is not None:
        delta += wrap
    return delta / dt


@dataclass
class _Session:
    """One engine, one target, one set of credentials: what every request needs."""

    engine: SnmpEngine
    auth: CommunityData | UsmUserData
    transport: UdpTransportTarget | Udp6TransportTarget
    timeout: float

    async def get(self, *oids: str) -> list[tuple[str, Any]]:
        try:
            indication, status, index, varbinds = await get_cmd(
                self.engine,
                self.auth,
                self.transport,
                ContextData(),
                *(ObjectType(ObjectIdentity(oid)) for oid in oids),
                lookupMib=False,
            )
        except PySnmpError as exc:
            raise _Failed(str(exc)) from exc
        self._raise_for(indication, status, index)
        return [(str(name), value) for name, value in varbinds]

    async def walk(self, base: str) -> list[tuple[str, Any]]:
        """Every (OID, value) under ``base`` via GETBULK, bounded in requests."""
        rows: list[tuple[str, Any]] = []
        prefix = base + "."
        current = base
        for _ in range(_MAX_WALK_CALLS):
            try:
                indication, status, index, varbinds = await bulk_cmd(
                    self.engine,
                    self.auth,
                    self.transport,
                    ContextData(),
                    0,
                    25,
                    ObjectType(ObjectIdentity(current)),
                    lookupMib=False,
                )
            except PySnmpError as exc:
                raise _Failed(str(exc)) from exc
            self._raise_for(indication, status, index)
            if not varbinds:
                return rows
            for name, value in varbinds:
                oid = str(name)
                if not oid.startswith(prefix) or _absent(value) is not None:
                    return rows
                rows.append((oid, value))
                current = oid
        return rows

    def _raise_for(self, indication: Any, status: Any, index: Any) -> None:
        if indication:
            raise _Failed(_error_text(indication, self.timeout))
        if status:
            raise _Failed(f"SNMP error {status.prettyPrint()} at varbind {int(index)}")


def _uptime_details(ticks_value: Any, previous: ProbeResult | None) -> dict[str, Any]:
    ticks = plain_value(ticks_value)
    if not isinstance(ticks, int):
        raise _Failed(f"sysUpTime unreadable ({_absent(ticks_value) or ticks!r})")
    before = previous.details.get("sys_uptime_ticks") if previous is not None else None
    return {
        "sys_uptime_ticks": ticks,
        "rebooted": rebooted(before if isinstance(before, int) else None, ticks),
    }


async def _uptime(session: _Session, options: Options, previous: ProbeResult | None) -> ProbeResult:
    [(_, ticks)] = await session.get(SYS_UPTIME)
    return ProbeResult(ok=True, details=_uptime_details(ticks, previous))


async def _find_interface(session: _Session, name: str, previous: ProbeResult | None) -> int:
    """ifIndex of the interface called ``name`` (ifName first, then ifDescr)."""
    hint = previous.details.get("if_index") if previous is not None else None
    if isinstance(hint, int) and previous is not None and previous.details.get("interface") == name:
        # Cheap path: ifIndex is stable between polls on almost every device; confirm it.
        rows = await session.get(f"{IF_NAME}.{hint}", f"{IF_DESCR}.{hint}")
        if any(plain_value(v) == name for _, v in rows):
            return hint
    for column in (IF_NAME, IF_DESCR):
        for oid, value in await session.walk(column):
            if plain_value(value) == name:
                return int(oid.rsplit(".", 1)[1])
    raise _Failed(f"interface {name!r} not found in ifName or ifDescr", interface=name)


def _status_text(table: dict[int, str], value: int | None) -> str:
    return f"{table.get(value, 'unknown') if value is not None else 'missing'}({value})"


async def _interface(
    session: _Session, options: Options, previous: ProbeResult | None
) -> ProbeResult:
    name = options.interface
    assert name is not None  # Options guarantees it in this mode
    index = await _find_interface(session, name, previous)
    rows = await session.get(SYS_UPTIME, f"{IF_ADMIN}.{index}", f"{IF_OPER}.{index}")
    (_, ticks), (_, admin_value), (_, oper_value) = rows
    admin, oper = plain_value(admin_value), plain_value(oper_value)
    admin_n = admin if isinstance(admin, int) else None
    oper_n = oper if isinstance(oper, int) else None
    details: dict[str, Any] = {
        "interface": name,
        "if_index": index,
        "admin_status": _status_text(ADMIN_STATUS, admin_n),
        "oper_status": _status_text(OPER_STATUS, oper_n),
        **_uptime_details(ticks, previous),
    }
    if admin_n == 2:
        # Someone shut it on purpose: a change, not an outage (RFC 2863 ifAdminStatus).
        details["note"] = "administratively down: not counted as an outage"
        return ProbeResult(ok=True, details=details)
    if oper_n in (1, 5):  # up, or dormant: ready and waiting for traffic (RFC 2863 §3.1.12)
        return ProbeResult(ok=True, details=details)
    return ProbeResult(
        ok=False, error=f"ifOperStatus {_status_text(OPER_STATUS, oper_n)}", details=details
    )


def _judge(options: Options, label: str, unit: str, x: float) -> tuple[bool, bool, str | None]:
    """(ok, degraded, reason) of a reading against the check's thresholds."""
    rules = (
        (options.down_below, operator.lt, "below", False),
        (options.down_above, operator.gt, "above", False),
        (options.warn_below, operator.lt, "below", True),
        (options.warn_above, operator.gt, "above", True),
    )
    for threshold, crossed, word, only_degraded in rules:
        if threshold is not None and crossed(x, threshold):
            reason = f"{label} {x:g}{unit} {word} {threshold:g}{unit}"
            return only_degraded, only_degraded, reason
    return True, False, None


async def _oid(session: _Session, options: Options, previous: ProbeResult | None) -> ProbeResult:
    oid = options.oid
    assert oid is not None  # Options guarantees it in this mode
    [(_, ticks), (_, value)] = await session.get(SYS_UPTIME, oid)
    missing = _absent(value)
    if missing is not None:
        return fail(f"{oid}: {missing}", oid=oid)
    details: dict[str, Any] = {"oid": oid, "value": plain_value(value)}
    details.update(_uptime_details(ticks, previous))
    thresholds = (options.warn_below, options.warn_above, options.down_below, options.down_above)
    number = _number(value)
    if number is None and (options.rate or any(t is not None for t in thresholds)):
        return ProbeResult(
            ok=False, error=f"{oid}: not a number ({details['value']!r})", details=details
        )
    reading, label, unit = number, f"{oid} =", ""
    if options.rate:
        wrap = (
            2**64
            if isinstance(value, Counter64)
            else 2**32
            if isinstance(value, Counter32)
            else None
        )
        reading = counter_rate(
            _previous_sample(previous, oid), (int(number or 0), details["sys_uptime_ticks"]), wrap
        )
        details["rate"] = reading
        label, unit = f"{oid} rate", "/s"
    if reading is None:
        return ProbeResult(ok=True, details=details)  # first poll of a rate: nothing to judge
    ok, degraded, reason = _judge(options, label, unit, reading)
    return ProbeResult(ok=ok, degraded=degraded, error=reason, details=details)


def _previous_sample(previous: ProbeResult | None, oid: str) -> tuple[int, int] | None:
    if previous is None or previous.details.get("oid") != oid:
        return None
    value, ticks = previous.details.get("value"), previous.details.get("sys_uptime_ticks")
    if isinstance(value, int) and isinstance(ticks, int):
        return value, ticks
    return None


_ModeFn = Callable[[_Session, Options, ProbeResult | None], Awaitable[ProbeResult]]
_MODES: dict[str, _ModeFn] = {"uptime": _uptime, "interface": _interface, "oid": _oid}


async def _transport(
    host: str, port: int, timeout: float, retries: int
) -> UdpTransportTarget | Udp6TransportTarget:
    kind = Udp6TransportTarget if ":" in host else UdpTransportTarget
    per_try = timeout / (retries + 1)
    try:
        return await kind.create((host, port), timeout=per_try, retries=retries)
    except PySnmpError as exc:
        raise _Failed(f"cannot resolve {host}: {exc}") from exc


async def _close(engine: SnmpEngine) -> None:
    """Close the engine's sockets and await its timer task, so nothing is left running."""
    dispatcher = engine.transport_dispatcher
    if dispatcher is None:
        return
    ticker = getattr(dispatcher, "loopingcall", None)
    engine.close_dispatcher()
    if isinstance(ticker, asyncio.Future):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([ticker])


class SnmpPoller:
    """Keeps one SNMP engine across polls, because building one costs 0.1-0.2 s of CPU.

    ``probe()`` builds and discards an engine per call, which is right for
    ``availmon probe`` and fine for a few checks. A scheduler with many snmp checks should
    own one poller per check (one target, one set of credentials)::

        async with SnmpPoller() as poller:
            result = await poller.probe(target, timeout, options, previous=result)

    The engine keeps what SNMPv3 discovered (engine ID, boots, time), so later polls of a
    v3 device also skip the discovery round trip. Leaving the block closes its socket and
    awaits its timer task.
    """

    def __init__(self) -> None:
        self._engine: SnmpEngine | None = None

    async def __aenter__(self) -> Self:
        # Pure CPU (it loads pysnmp's MIB modules), so off the event loop.
        self._engine = await asyncio.to_thread(SnmpEngine)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await _close(engine)

    async def probe(
        self,
        target: str,
        timeout: float,
        options: Options,
        *,
        previous: ProbeResult | None = None,
    ) -> ProbeResult:
        """One poll. ``previous`` is this check's last result (see the module docstring)."""
        if self._engine is None:
            raise RuntimeError("SnmpPoller.probe outside 'async with'")
        host, port = split_target(target)
        auth = await asyncio.to_thread(_credentials, options)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                transport = await _transport(host, port, timeout, options.retries)
                session = _Session(self._engine, auth, transport, timeout)
                result = await _MODES[options.kind](session, options, previous)
        except TimeoutError:
            return fail(timeout_text(timeout))
        except _Failed as exc:
            return fail(exc.reason, **exc.details)
        return replace(result, latency=time.perf_counter() - started)


async def probe(
    target: str, timeout: float, options: Options, *, previous: ProbeResult | None = None
) -> ProbeResult:
    """One poll with an engine of its own (see :class:`SnmpPoller` for many polls)."""
    split_target(target)  # a bad target is the caller's bug: raise before any work
    async with SnmpPoller() as poller:
        return await poller.probe(target, timeout, options, previous=previous)
