"""SNMP requests (pysnmp), apart from :mod:`probes.snmp` so that reading a config does not
import pysnmp. See that module for the modes and the previous-sample rule.

One :class:`SnmpPoller` (one engine) serves every snmp check of an agent. The checks of one
device are polled together (:meth:`SnmpPoller.probe_group`): sysUpTime and every OID they
need go in one GET; ifIndex is looked up by walking ifName/ifDescr only on the first poll or
when the index a check remembered no longer names its interface. A device that says tooBig
gets the GET in halves.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import operator
import os
import runpy
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any, Self, TypeAlias

from availmon.errors import StartupError
from availmon.imports import without
from availmon.secrets import resolve_secret
from probes.base import Poll, ProbeResult, fail, peer_text, timeout_text
from probes.snmp import (
    ADMIN_STATUS,
    IF_ADMIN,
    IF_DESCR,
    IF_NAME,
    IF_OPER,
    OPER_STATUS,
    SYS_UPTIME,
    Options,
    counter_rate,
    rebooted,
    split_target,
)

# pysnmp without pyca/cryptography unless something loaded it already: see availmon.imports
# and require_privacy. Import pysnmp through this module (agent.traps does) so that holds.
with without("cryptography"):
    from pysnmp.entity.rfc3413 import cmdgen
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
    )
    from pysnmp.hlapi.v3arch.asyncio.lcd import CommandGeneratorLcdConfigurator
    from pysnmp.proto import errind
    from pysnmp.proto.rfc1902 import (
        Counter32,
        Counter64,
        Gauge32,
        Integer32,
        IpAddress,
        Null,
        ObjectName,
        OctetString,
        TimeTicks,
        Unsigned32,
    )
    from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject
    from pysnmp.smi import builder as mib_builder


def _mib_code(path: str) -> CodeType:
    """A MIB module's code from Python's own bytecode cache (``__pycache__``), compiled
    (and cached where the directory is writable) only when that is missing or stale."""
    code = SourceFileLoader("pysnmp_mib", path).get_code("pysnmp_mib")
    assert code is not None  # None only for a loader without source or bytecode
    return code


_pysnmp_read = mib_builder.DirMibSource.read


def _read_mib(source: Any, name: str) -> tuple[CodeType, str]:
    """``DirMibSource.read``: pysnmp's own compiles a MIB's source whenever no ``.pyc`` lies
    beside it (it never looks in ``__pycache__``)."""
    path = os.path.join(source._srcName, name + ".py")
    if os.path.isfile(path):
        return _mib_code(path), ".py"
    return _pysnmp_read(source, name)  # type: ignore[no-any-return]


class _RunMib:
    """pysnmp's builder, unless Python runs with ``-O``, executes each MIB module through
    ``runpy.run_path``, which compiles its source again (pysnmp's ``-O`` path executes the
    code it read, into the same globals). This does that, with the cached bytecode."""

    @staticmethod
    def run_path(
        path_name: str, init_globals: dict[str, Any] | None = None, run_name: str | None = None
    ) -> dict[str, Any]:
        if not str(path_name).endswith(".py") or init_globals is None or run_name is not None:
            return runpy.run_path(path_name, init_globals, run_name)
        exec(_mib_code(str(path_name)), init_globals)  # pysnmp's own MIB code
        return init_globals


def _mibs_from_bytecode() -> None:
    """Every engine loads pysnmp's MIB modules, and pysnmp compiles each from source twice
    (issue 9: about 1.2 MB of an agent's RSS, and CPU at every engine's start): load them
    from Python's bytecode cache instead. The MIBs run as before, code and globals alike."""
    setattr(mib_builder, "runpy", _RunMib)  # noqa: B010  # set only when not under -O
    setattr(mib_builder.DirMibSource, "read", _read_mib)  # noqa: B010


_mibs_from_bytecode()


_MAX_WALK_CALLS = 200  # x 25 rows per GETBULK: enough for a chassis, bounded for a bad agent
#: Rows asked for per GETBULK (max-repetitions), and the most taken from one answer: an agent
#: that sends more than asked does not get them read.
_WALK_ROWS = 25
#: The most rows one walk keeps, whatever the agent sends.
_MAX_WALK_ROWS = _MAX_WALK_CALLS * _WALK_ROWS
#: SNMP errorStatus tooBig (RFC 3416): the answer would not fit in one message.
_TOO_BIG = 1

AUTH_PROTOCOLS = {
    "SHA": USM_AUTH_HMAC96_SHA,
    "SHA-224": USM_AUTH_HMAC128_SHA224,
    "SHA-256": USM_AUTH_HMAC192_SHA256,
    "SHA-384": USM_AUTH_HMAC256_SHA384,
    "SHA-512": USM_AUTH_HMAC384_SHA512,
}
#: AES-128 (RFC 3826). AES-192/256 are left out: vendors disagree on their key extension.
PRIV_PROTOCOLS = {"AES": USM_PRIV_CFB128_AES}


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


#: pysnmp's privacy modules. Each imports ``cryptography`` at its own import and, when that
#: fails, sets ``PysnmpCryptoError`` and refuses to encrypt: loaded here without it (above),
#: they are run again with it by :func:`require_privacy`.
_PRIVACY_MODULES = (
    "pysnmp.proto.secmod.rfc3826.priv.aes",
    "pysnmp.proto.secmod.rfc3414.priv.des",
    "pysnmp.proto.secmod.eso.priv.des3",
)
_privacy_lock = threading.Lock()


def require_privacy() -> None:
    """Before the first v3 user is configured: pysnmp does AES through ``cryptography``.

    Without it v3 fails as mere timeouts, so its absence is a start-up error. pysnmp was
    imported without it (an agent with v2c checks only never loads its ~8.5 MB): its privacy
    modules are executed again, in place, so the classes pysnmp already holds see the cipher.
    """
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise StartupError("SNMPv3 privacy needs the 'cryptography' package") from None
    with _privacy_lock:  # called from threads (credentials are read off the event loop)
        for name in _PRIVACY_MODULES:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "PysnmpCryptoError", False):
                importlib.reload(module)


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


def _oid_tuple(oid: str) -> tuple[int, ...]:
    """A numeric OID as pysnmp compares it ("1.3.06" and "1.3.6" are one OID)."""
    return tuple(int(part) for part in oid.split("."))


@dataclass
class _EngineParts:
    """pysnmp's request machinery for one engine: the target configurator and the command
    generator (which keeps the pending requests), owned by the poller with its engine."""

    lcd: CommandGeneratorLcdConfigurator = field(default_factory=CommandGeneratorLcdConfigurator)
    get: cmdgen.GetCommandGenerator = field(default_factory=cmdgen.GetCommandGenerator)


@dataclass
class _Session:
    """One engine, one target, one set of credentials: what every request needs."""

    engine: SnmpEngine
    auth: CommunityData | UsmUserData
    transport: UdpTransportTarget | Udp6TransportTarget
    timeout: float
    engine_parts: _EngineParts

    async def get(self, *oids: str) -> list[tuple[str, Any]]:
        """One GET for all ``oids`` (in halves if the device says the answer is too big)."""
        indication, status, index, varbinds = await self._send_get(oids)
        if not indication and status and int(status) == _TOO_BIG and len(oids) > 1:
            half = len(oids) // 2
            return [*await self.get(*oids[:half]), *await self.get(*oids[half:])]
        self._raise_for(indication, status, index)
        asked = [_oid_tuple(oid) for oid in oids]
        if [tuple(name) for name, _value in varbinds] != asked:
            # Missing, extra, reordered or other OIDs: nothing in it can be matched to a check.
            raise _Failed("the device answered other OIDs than asked")
        # Keyed by the OIDs as asked (each answered varbind names the same OID).
        return [(oid, value) for oid, (_name, value) in zip(oids, varbinds, strict=True)]

    async def _send_get(self, oids: Sequence[str]) -> tuple[Any, Any, Any, Sequence[Any]]:
        """pysnmp's command generator with numeric OIDs as they are.

        hlapi's ``get_cmd`` resolves every OID through the MIB view first, even with
        ``lookupMib=False`` (that only skips the reply's); for numeric OIDs that is most of a
        poll's CPU (issue 9), so the request goes one layer down, as ``get_cmd`` itself does.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Any, Any, Any, Sequence[Any]]] = loop.create_future()

        def done(
            _engine: Any, _handle: Any, indication: Any, status: Any, index: Any,
            varbinds: Any, _ctx: Any,
        ) -> None:  # fmt: skip
            if not future.done():
                future.set_result((indication, status, index, varbinds))

        try:
            target, _params = self.engine_parts.lcd.configure(
                self.engine, self.auth, self.transport, b""
            )
            self.engine_parts.get.send_varbinds(
                self.engine,
                target,
                None,
                b"",
                [(ObjectName(oid), Null("")) for oid in oids],
                done,
            )
        except PySnmpError as exc:
            raise _Failed(str(exc)) from exc
        return await future

    async def walk(self, base: str) -> list[tuple[tuple[int, ...], Any]]:
        """Every (OID, value) under ``base`` via GETBULK, bounded in requests and rows.

        The agent is not trusted to walk: the walk ends where an OID leaves ``base`` or does
        not come after the one before it (an agent that answers the same rows again would
        otherwise be asked until the timeout), and only the rows asked for are read from
        each answer.
        """
        rows: list[tuple[tuple[int, ...], Any]] = []
        prefix = _oid_tuple(base)
        current = base
        last = prefix
        for _ in range(_MAX_WALK_CALLS):
            try:
                indication, status, index, varbinds = await bulk_cmd(
                    self.engine,
                    self.auth,
                    self.transport,
                    ContextData(),
                    0,
                    _WALK_ROWS,
                    ObjectType(ObjectIdentity(current)),
                    lookupMib=False,
                )
            except PySnmpError as exc:
                raise _Failed(str(exc)) from exc
            self._raise_for(indication, status, index)
            if not varbinds:
                return rows
            for name, value in varbinds[:_WALK_ROWS]:
                oid = tuple(name)
                inside = len(oid) > len(prefix) and oid[: len(prefix)] == prefix
                if not inside or oid <= last or _absent(value) is not None:
                    return rows
                rows.append((oid, value))
                if len(rows) >= _MAX_WALK_ROWS:
                    return rows
                last = oid
            current = ".".join(map(str, last))
        return rows

    def _raise_for(self, indication: Any, status: Any, index: Any) -> None:
        if indication:
            raise _Failed(_error_text(indication, self.timeout))
        if status:
            raise _Failed(f"SNMP error {status.prettyPrint()} at varbind {int(index)}")


def _uptime_details(ticks_value: Any, previous: ProbeResult | None) -> dict[str, Any]:
    ticks = plain_value(ticks_value)
    if not isinstance(ticks, int):
        shown = _absent(ticks_value) or peer_text(repr(ticks), 80)
        raise _Failed(f"sysUpTime unreadable ({shown})")
    before = previous.details.get("sys_uptime_ticks") if previous is not None else None
    return {
        "sys_uptime_ticks": ticks,
        "rebooted": rebooted(before if isinstance(before, int) else None, ticks),
    }


def _status_text(table: dict[int, str], value: int | None) -> str:
    return f"{table.get(value, 'unknown') if value is not None else 'missing'}({value})"


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


def _previous_sample(previous: ProbeResult | None, oid: str) -> tuple[int, int] | None:
    if previous is None or previous.details.get("oid") != oid:
        return None
    value, ticks = previous.details.get("value"), previous.details.get("sys_uptime_ticks")
    if isinstance(value, int) and isinstance(ticks, int):
        return value, ticks
    return None


@dataclass
class _Need:
    """What one check of a grouped poll asks the device for."""

    poll: Poll
    options: Options
    if_index: int | None = None
    #: The remembered ifIndex must still carry the interface's name (read in the same GET).
    verify: bool = False
    #: The column (IF_NAME or IF_DESCR) that carries the name, when known.
    column: str | None = None

    def verify_oids(self) -> list[str]:
        columns = [self.column] if self.column else [IF_NAME, IF_DESCR]
        return [f"{c}.{self.if_index}" for c in columns]

    def oids(self) -> list[str]:
        kind = self.options.kind
        if kind == "oid":
            assert self.options.oid is not None
            return [self.options.oid]
        if kind == "interface" and self.if_index is not None:
            i = self.if_index
            verify = self.verify_oids() if self.verify else []
            return [*verify, f"{IF_ADMIN}.{i}", f"{IF_OPER}.{i}"]
        return []


_COLUMN_NAMES = {IF_NAME: "ifName", IF_DESCR: "ifDescr"}
_COLUMNS = {v: k for k, v in _COLUMN_NAMES.items()}


def _hint(poll: Poll, name: str) -> tuple[int | None, str | None]:
    """The ifIndex (and the column naming it) this check found last time, if it was for the
    same interface name."""
    previous = poll.previous
    if previous is None or previous.details.get("interface") != name:
        return None, None
    hint = previous.details.get("if_index")
    column = _COLUMNS.get(str(previous.details.get("if_column")))
    return (hint, column) if isinstance(hint, int) else (None, None)


async def _interface_indexes(session: _Session, names: set[str]) -> dict[str, tuple[int, str]]:
    """ifIndex and column of each name: ifName first, then ifDescr (walked only if needed)."""
    found: dict[str, tuple[int, str]] = {}
    for column in (IF_NAME, IF_DESCR):
        if not names - found.keys():
            break
        depth = len(_oid_tuple(column)) + 1
        for oid, value in await session.walk(column):
            text = plain_value(value)
            # A row is column.ifIndex, ifIndex 1 to 2**31 - 1 (RFC 2863 InterfaceIndex).
            if len(oid) != depth or not 0 < oid[-1] < 2**31:
                continue
            if isinstance(text, str) and text in names and text not in found:
                found[text] = oid[-1], column
    return found


def _interface_result(need: _Need, values: dict[str, Any]) -> ProbeResult:
    name = need.options.interface
    index = need.if_index
    assert name is not None
    assert index is not None
    admin = plain_value(values[f"{IF_ADMIN}.{index}"])
    oper = plain_value(values[f"{IF_OPER}.{index}"])
    admin_n = admin if isinstance(admin, int) else None
    oper_n = oper if isinstance(oper, int) else None
    details: dict[str, Any] = {
        "interface": name,
        "if_index": index,
        # Where the name was found: later polls confirm the ifIndex with that one OID.
        "if_column": _COLUMN_NAMES.get(need.column or ""),
        "admin_status": _status_text(ADMIN_STATUS, admin_n),
        "oper_status": _status_text(OPER_STATUS, oper_n),
        **_uptime_details(values[SYS_UPTIME], need.poll.previous),
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


def _oid_result(need: _Need, values: dict[str, Any]) -> ProbeResult:
    options, previous = need.options, need.poll.previous
    oid = options.oid
    assert oid is not None  # Options guarantees it in this mode
    value = values[oid]
    missing = _absent(value)
    if missing is not None:
        return fail(f"{oid}: {missing}", oid=oid)
    details: dict[str, Any] = {"oid": oid, "value": plain_value(value)}
    details.update(_uptime_details(values[SYS_UPTIME], previous))
    thresholds = (options.warn_below, options.warn_above, options.down_below, options.down_above)
    number = _number(value)
    if number is None and (options.rate or any(t is not None for t in thresholds)):
        shown = peer_text(repr(details["value"]), 80)
        return ProbeResult(ok=False, error=f"{oid}: not a number ({shown})", details=details)
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


def _result(need: _Need, values: dict[str, Any]) -> ProbeResult | _Failed:
    """The check's verdict, or why the answer could not be judged (no latency then)."""
    try:
        kind = need.options.kind
        if kind == "interface":
            return _interface_result(need, values)
        if kind == "oid":
            return _oid_result(need, values)
        return ProbeResult(ok=True, details=_uptime_details(values[SYS_UPTIME], need.poll.previous))
    except _Failed as exc:
        return exc


async def _poll(session: _Session, polls: Sequence[Poll]) -> list[ProbeResult | _Failed]:
    """Every poll of one device: one GET, plus a walk only where an ifIndex is not known."""
    needs = [_Need(p, p.options) for p in polls]
    results: dict[int, ProbeResult | _Failed] = {}
    unknown: list[_Need] = []
    for need in needs:
        name = need.options.interface
        if need.options.kind == "interface" and name is not None:
            need.if_index, need.column = _hint(need.poll, name)
            need.verify = need.if_index is not None
            if need.if_index is None:
                unknown.append(need)
    for attempt in range(2):
        if unknown:
            wanted = {n.options.interface for n in unknown if n.options.interface is not None}
            indexes = await _interface_indexes(session, wanted)
            for need in unknown:
                name = need.options.interface
                assert name is not None
                need.if_index, need.column = indexes.get(name, (None, None))
                need.verify = False
                if need.if_index is None:
                    results[id(need)] = _Failed(
                        f"interface {name!r} not found in ifName or ifDescr", interface=name
                    )
        todo = [n for n in needs if id(n) not in results]
        oids = list(dict.fromkeys([SYS_UPTIME, *(o for n in todo for o in n.oids())]))
        values = dict(await session.get(*oids))
        unknown = []
        for need in todo:
            if need.verify:
                named = [
                    oid.rsplit(".", 1)[0]
                    for oid in need.verify_oids()
                    if plain_value(values[oid]) == need.options.interface
                ]
                if named:
                    need.column = named[0]
                elif attempt == 0:
                    unknown.append(need)  # the device renumbered its interfaces: look again
                    continue
            results[id(need)] = _result(need, values)
        if not unknown:
            break
    return [results[id(n)] for n in needs]


Transport: TypeAlias = UdpTransportTarget | Udp6TransportTarget
_TransportKey: TypeAlias = tuple[str, int, float, int]


async def _transport(host: str, port: int, timeout: float, retries: int) -> Transport:
    kind = Udp6TransportTarget if ":" in host else UdpTransportTarget
    per_try = timeout / (retries + 1)
    try:
        return await kind.create((host, port), timeout=per_try, retries=retries)
    except PySnmpError as exc:
        raise _Failed(f"cannot resolve {host}: {exc}") from exc


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


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
    """One SNMP engine for many polls, because building one costs 0.1-0.2 s of CPU.

    The agent owns one for all its snmp checks (issue 9: an engine per check made 1,000
    checks take minutes of CPU to start)::

        async with SnmpPoller() as poller:
            results = await poller.probe_group(polls, timeout)

    The engine keeps what SNMPv3 discovered (engine ID, boots, time), so later polls of a
    v3 device also skip the discovery round trip. Leaving the block closes its socket and
    awaits its timer task.
    """

    def __init__(self) -> None:
        self._engine: SnmpEngine | None = None
        self._parts = _EngineParts()
        #: Transports to devices given by address: pysnmp's ``create`` resolves even those
        #: through a thread on every call. Names are resolved again at every poll.
        self._transports: dict[_TransportKey, Transport] = {}

    async def _transport(self, host: str, port: int, timeout: float, retries: int) -> Transport:
        key = (host, port, timeout, retries)
        found = self._transports.get(key)
        if found is None:
            found = await _transport(host, port, timeout, retries)
            if _is_address(host):
                self._transports[key] = found
        return found

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
        """One check's poll. ``previous`` is its last result (see :mod:`probes.snmp`)."""
        [result] = await self.probe_group([Poll(target, options, previous)], timeout)
        return result

    async def probe_group(self, polls: Sequence[Poll], timeout: float) -> list[ProbeResult]:
        """Polls of one device with the same credentials (``snmp.group_key``): one GET."""
        if self._engine is None:
            raise RuntimeError("SnmpPoller.probe outside 'async with'")
        first = polls[0]
        host, port = split_target(first.target)
        options: Options = first.options
        auth = await asyncio.to_thread(_credentials, options)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                transport = await self._transport(host, port, timeout, options.retries)
                session = _Session(self._engine, auth, transport, timeout, self._parts)
                results = await _poll(session, polls)
        except TimeoutError:
            return [fail(timeout_text(timeout)) for _ in polls]
        except _Failed as exc:
            return [fail(exc.reason, **exc.details) for _ in polls]
        latency = time.perf_counter() - started
        return [
            fail(r.reason, **r.details) if isinstance(r, _Failed) else replace(r, latency=latency)
            for r in results
        ]


async def probe(
    target: str, timeout: float, options: Options, *, previous: ProbeResult | None = None
) -> ProbeResult:
    """One poll with an engine of its own (see :class:`SnmpPoller` for many polls)."""
    split_target(target)  # a bad target is the caller's bug: raise before any work
    async with SnmpPoller() as poller:
        return await poller.probe(target, timeout, options, previous=previous)
