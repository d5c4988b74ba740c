"""SNMP trap receiver: linkDown/linkUp from known devices, as :class:`TrapEvent` callbacks.

A trap is a hint, not a verdict: the agent uses one to poll the matching snmp check now
(:func:`match_check`) instead of waiting for its interval; the poll decides the state.

    async with TrapReceiver(config, on_trap=print) as receiver:
        ...  # traps arrive while the block runs; receiver.stats counts them

Only configured devices are heard: a trap from another address is dropped and counted
(``dropped_unknown_source``), and so is one whose community or SNMPv3 credentials are not
that device's (``dropped_bad_auth``), including a valid credential of another device, and
an SNMPv3 trap below authPriv, whatever its user. An authentic SNMPv3 trap older than the
device's latest by more than the RFC 3414 time window (a replay) is ``dropped_replay``.
A datagram none of these outcomes describes (not SNMP, cut short, a bad version, not a
notification) is ``dropped_malformed``, logged at most once a minute, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from availmon.clock import utcnow
from availmon.config import TrapConfig
from availmon.errors import StartupError
from availmon.logs import Sparse
from availmon.secrets import resolve_secret
from probes import snmp

if TYPE_CHECKING:  # pysnmp loads when a receiver starts, not with the agent (issue 9: memory)
    from pysnmp.entity import engine as snmp_engine
    from pysnmp.entity.rfc3413 import ntfrcv

log = logging.getLogger(__name__)

SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
#: SNMPv2-MIB snmpTraps (RFC 3418); SNMPv1 generic traps 2/3 arrive translated to these.
TRAP_KINDS: dict[str, Literal["linkDown", "linkUp"]] = {
    "1.3.6.1.6.3.1.1.5.3": "linkDown",
    "1.3.6.1.6.3.1.1.5.4": "linkUp",
}
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
IF_DESCR = "1.3.6.1.2.1.2.2.1.2"
IF_ADMIN = "1.3.6.1.2.1.2.2.1.7"
IF_OPER = "1.3.6.1.2.1.2.2.1.8"
IF_NAME = "1.3.6.1.2.1.31.1.1.1.1"

_SM_FAILURES = (
    "rfc2576.prepareDataElements:sm-failure",  # v1/v2c: unknown community
    "rfc3412.prepareDataElements:sm-failure",  # v3: unknown user, wrong digest, decryption
)
#: Where pysnmp's USM has read an SNMPv3 message's msgAuthoritativeEngineID/Boots/Time.
_USM_PARAMETERS = "rfc3414.processIncomingMsg"
_AUTH_PRIV = 3  # securityLevel: 1 noAuthNoPriv, 2 authNoPriv, 3 authPriv
_SECURITY_LEVELS = {1: "noAuthNoPriv", 2: "authNoPriv", 3: "authPriv"}
#: RFC 3414 §2.2.3: an authentic message up to 150 s from the sender's clock is timely
#: (pysnmp itself refuses snmpEngineBoots at its maximum, 2147483647).
TIME_WINDOW = 150
#: What is known of a device's engine clock is forgotten after this long without an
#: authentic trap from it (seconds), and an engine time this low with boots unchanged is a
#: restart it did not count: within FORGET_AFTER of its last trap, a device that restarted
#: is at most that far into its new clock.
FORGET_AFTER = 600
RESTARTED_WITHIN = FORGET_AFTER
#: Malformed datagrams are counted each, but logged at most once this often (seconds).
MALFORMED_LOG_INTERVAL = 60.0


@dataclass(frozen=True)
class TrapEvent:
    """One accepted linkDown/linkUp. Fields the device did not send are None."""

    source: str  # the device's address, as configured
    host: str  # the host its checks use as target (TrapDevice.host, else the address)
    kind: Literal["linkDown", "linkUp"]
    if_index: int | None
    if_name: str | None
    if_descr: str | None
    #: Sent by most devices with linkDown: down(2) means someone shut the port on purpose.
    admin_status: int | None
    oper_status: int | None
    received_at: datetime  # aware UTC


@dataclass
class TrapStats:
    """Counters for /metrics; plain ints that only go up."""

    accepted: int = 0
    dropped_unknown_source: int = 0
    #: Wrong community or SNMPv3 credentials, or an SNMPv3 trap below authPriv.
    dropped_bad_auth: int = 0
    #: Authentic SNMPv3 traps outside the RFC 3414 time window: replays, or stale.
    dropped_replay: int = 0
    #: Datagrams that are not a trap pysnmp could parse and hand on (garbage, truncated,
    #: bad version, a PDU other than a notification).
    dropped_malformed: int = 0
    #: Authenticated traps other than linkDown/linkUp (coldStart, vendor traps ...).
    ignored: int = 0


def _ip(text: str) -> str:
    """Canonical text of an address (IPv4-mapped IPv6 as plain IPv4)."""
    addr = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


def _text(value: Any) -> str | None:
    from probes import snmp_io

    plain = snmp_io.plain_value(value) if value is not None else None
    return plain if isinstance(plain, str) else None


def _int(value: Any) -> int | None:
    from probes import snmp_io

    plain = snmp_io.plain_value(value) if value is not None else None
    return plain if isinstance(plain, int) else None


def parse_link_trap(
    source: str, host: str, varbinds: Iterable[tuple[Any, Any]], received_at: datetime
) -> TrapEvent | None:
    """The TrapEvent in a notification's varbinds, or None when it is not linkDown/linkUp."""
    values = {str(name): value for name, value in varbinds}
    trap_oid = values.get(SNMP_TRAP_OID)
    kind = TRAP_KINDS.get(str(trap_oid)) if trap_oid is not None else None
    if kind is None:
        return None

    def column(prefix: str) -> tuple[int | None, Any]:
        for oid, value in values.items():
            if oid.startswith(prefix + ".") and oid.count(".") == prefix.count(".") + 1:
                return int(oid.rsplit(".", 1)[1]), value
        return None, None

    index, index_value = column(IF_INDEX)
    found = {p: column(p) for p in (IF_NAME, IF_DESCR, IF_ADMIN, IF_OPER)}
    if_index = _int(index_value) if index_value is not None else None
    if if_index is None:  # no ifIndex varbind: take the instance of any ifTable column
        if_index = next((i for i, _ in found.values() if i is not None), index)
    return TrapEvent(
        source=source,
        host=host,
        kind=kind,
        if_index=if_index,
        if_name=_text(found[IF_NAME][1]),
        if_descr=_text(found[IF_DESCR][1]),
        admin_status=_int(found[IF_ADMIN][1]),
        oper_status=_int(found[IF_OPER][1]),
        received_at=received_at,
    )


def _option(options: Any, key: str) -> Any:
    if isinstance(options, Mapping):
        return options.get(key)
    return getattr(options, key, None)


def match_check(trap: TrapEvent, checks: Iterable[tuple[str, str, Any]]) -> str | None:
    """The snmp check a trap is about: same device host, ``interface`` = the trap's ifName
    or ifDescr. ``checks`` are (name, target, options) with options a dict or an Options.
    Hosts are compared as written (no DNS from the event loop); set TrapDevice.host when
    the checks name the device differently from the address its traps come from."""
    names = {n for n in (trap.if_name, trap.if_descr) if n}
    if not names:
        return None
    hosts = {trap.host, trap.source}
    for name, target, options in checks:
        interface = _option(options, "interface")
        if interface is None or interface not in names:
            continue
        try:
            host, _port = snmp.split_target(target)
        except ValueError:
            continue
        if host in hosts or _same_ip(host, trap.source):
            return name
    return None


def _same_ip(host: str, source: str) -> bool:
    try:
        return _ip(host) == _ip(source)
    except ValueError:
        return False


@dataclass(frozen=True)
class _EngineTime:
    """RFC 3414 §3.2.7b: what we know of a sender engine's clock, from its authentic traps."""

    boots: int  # snmpEngineBoots of its latest message
    time: int  # and snmpEngineTime (also latestReceivedEngineTime)
    at: float  # our monotonic clock when that message arrived


@dataclass(frozen=True)
class _Credential:
    """A security name registered in the engine, and which device may use it."""

    security_name: str
    device: str  # canonical address


class TrapReceiver:
    """Listens for traps while entered; calls ``on_trap`` for each accepted link trap.

    ``on_trap`` runs on the event loop inside the datagram handler: keep it quick (put the
    event on a queue, set a flag). Its exceptions are logged, never stop the receiver.
    """

    def __init__(
        self,
        config: TrapConfig,
        on_trap: Callable[[TrapEvent], None],
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.on_trap = on_trap
        self.clock = clock
        self.stats = TrapStats()
        self._devices = {_ip(d.address): d for d in config.devices}
        self._allowed: dict[str, set[str]] = {}  # security name -> device addresses
        self._engine: snmp_engine.SnmpEngine | None = None
        self._receiver: ntfrcv.NotificationReceiver | None = None
        self._socket: socket.socket | None = None
        #: RFC 3414 timeliness per device and sender snmpEngineID (cloned devices share an
        #: engine ID, not a clock); only authentic traps of configured users add to it.
        self._timeline: dict[tuple[str, bytes], _EngineTime] = {}
        #: (engine ID, boots, time) of the SNMPv3 datagram being handled, from pysnmp's USM.
        self._usm: tuple[bytes, int, int] | None = None
        self._malformed_log = Sparse(MALFORMED_LOG_INTERVAL)
        self._malformed_latest = ("", "")  # (source, reason) of the latest one

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with ``port = 0``)."""
        if self._socket is None:
            raise RuntimeError("TrapReceiver is not running")
        return int(self._socket.getsockname()[1])

    async def __aenter__(self) -> Self:
        # probes.snmp_io first (I001 kept out): it loads pysnmp without cryptography.
        from probes import snmp_io  # noqa: F401, I001
        from pysnmp.carrier.asyncio.dgram import udp, udp6
        from pysnmp.entity import config as snmp_config
        from pysnmp.entity import engine as snmp_engine

        credentials = await asyncio.to_thread(self._read_credentials)
        engine = snmp_engine.SnmpEngine()
        try:
            self._setup(engine, credentials)
            transport_cls = udp6.Udp6AsyncioTransport if ":" in self.config.listen else None
            transport = (transport_cls or udp.UdpAsyncioTransport)().open_server_mode(
                sock=self._bind()
            )
            domain = udp6.DOMAIN_NAME if transport_cls else udp.DOMAIN_NAME
            snmp_config.add_transport(engine, domain, transport)
            # Every datagram through _on_datagram: pysnmp raises on some garbage, and
            # asyncio would log each as an ERROR with a traceback.
            dispatcher = engine.transport_dispatcher
            dispatcher.unregister_recv_callback()
            dispatcher.register_recv_callback(functools.partial(self._on_datagram, engine))
            # Attach the endpoint now, so a closed loop or bad socket fails here, not later.
            endpoint = getattr(transport, "_lport", None)
            if isinstance(endpoint, asyncio.Future):
                await endpoint
        except BaseException:
            await self._close(engine)
            raise
        self._engine = engine
        log.info(
            "trap receiver on %s:%d for %d devices",
            self.config.listen,
            self.port,
            len(self._devices),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await self._close(engine)
        if count := self._malformed_log.rest():
            self._log_malformed(count)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.config.listen else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.config.listen, self.config.port))
        except OSError as exc:
            sock.close()
            raise StartupError(
                f"traps: cannot listen on {self.config.listen}:{self.config.port}: {exc.strerror}"
            ) from exc
        sock.setblocking(False)
        self._socket = sock
        return sock

    def _read_credentials(self) -> list[tuple[_Credential, Any]]:
        """Every device's secrets (blocking file reads: runs in a thread)."""
        from probes import snmp_io

        out: list[tuple[_Credential, Any]] = []
        if any(d.users for d in self.config.devices):
            snmp_io.require_privacy()
        for i, device in enumerate(self.config.devices):
            where = f"traps.devices[{i}]"
            address = _ip(device.address)
            community = resolve_secret(
                device.community_file, device.community_env, f"{where}.community"
            )
            if community is not None:
                out.append((_Credential(f"community:{i}", address), community))
            for j, user in enumerate(device.users):
                key = f"{where}.users[{j}]"
                auth = resolve_secret(user.auth_key_file, user.auth_key_env, f"{key}.auth_key")
                priv = resolve_secret(user.priv_key_file, user.priv_key_env, f"{key}.priv_key")
                # pysnmp indexes its USM table by security name but looks users up by user
                # name, so the two must be equal; devices sharing a user name share it here.
                out.append((_Credential(user.user, address), (user, auth, priv)))
        return out

    def _setup(
        self, engine: snmp_engine.SnmpEngine, credentials: list[tuple[_Credential, Any]]
    ) -> None:
        from pysnmp.entity import config as snmp_config
        from pysnmp.entity.rfc3413 import ntfrcv
        from pysnmp.proto.api import v2c

        from probes import snmp_io

        for cred, secret in credentials:
            self._allowed.setdefault(cred.security_name, set()).add(cred.device)
            if isinstance(secret, str):
                snmp_config.add_v1_system(
                    engine, cred.security_name, secret, securityName=cred.security_name
                )
                continue
            user, auth, priv = secret
            snmp_config.add_v3_user(
                engine,
                user.user,
                snmp_io.AUTH_PROTOCOLS[user.auth_protocol],
                auth,
                snmp_io.PRIV_PROTOCOLS[user.priv_protocol],
                priv,
                securityEngineId=v2c.OctetString(hexValue=user.engine_id.removeprefix("0x")),
                securityName=cred.security_name,
            )
        engine.observer.register_observer(self._on_sm_failure, *_SM_FAILURES)
        engine.observer.register_observer(self._on_usm_parameters, _USM_PARAMETERS)
        self._receiver = ntfrcv.NotificationReceiver(engine, self._on_notification)

    async def _close(self, engine: snmp_engine.SnmpEngine) -> None:
        """Stop listening and await pysnmp's timer task, so no task outlives us."""
        if self._receiver is not None:
            self._receiver.close(engine)
            self._receiver = None
        engine.observer.unregister_observer(self._on_sm_failure)
        engine.observer.unregister_observer(self._on_usm_parameters)
        dispatcher = engine.transport_dispatcher
        ticker = getattr(dispatcher, "loopingcall", None) if dispatcher else None
        if dispatcher is not None:
            engine.close_dispatcher()
        if self._socket is not None:
            self._socket.close()  # already closed with the transport, unless setup failed
            self._socket = None
        if isinstance(ticker, asyncio.Future):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([ticker])

    # pysnmp callbacks: they run synchronously inside the datagram handler.

    def _on_datagram(
        self, engine: Any, dispatcher: Any, domain: Any, address: Any, message: bytes
    ) -> None:
        """One datagram through pysnmp. It ends in exactly one TrapStats outcome: when none
        of the callbacks below counted it, pysnmp dropped it (counting it, at most, in its
        own snmpInASNParseErrs, snmpInBadVersions ... MIB scalars) or raised: malformed."""
        before = self._outcomes()
        self._usm = None
        reason = "not an SNMP notification"
        try:
            engine.message_dispatcher.receive_message(engine, domain, address, message)
        except Exception as exc:  # pysnmp raises on some garbage (b"\x60\x00" ...)
            reason = f"{type(exc).__name__} while decoding it"
        finally:
            self._usm = None
        if self._outcomes() == before:
            self._malformed(_source_text(address), reason)

    def _outcomes(self) -> int:
        return sum(vars(self.stats).values())

    def _malformed(self, source: str, reason: str) -> None:
        self.stats.dropped_malformed += 1
        self._malformed_latest = (source, reason)
        if count := self._malformed_log.due():
            self._log_malformed(count)

    def _log_malformed(self, count: int) -> None:
        source, reason = self._malformed_latest
        log.warning(
            "trap receiver: %d malformed datagram(s) dropped (at most one such line a"
            " minute), the latest from %s: %s",
            count,
            source,
            reason,
        )

    def _on_usm_parameters(
        self, engine: Any, execpoint: str, variables: dict[str, Any], ctx: Any
    ) -> None:
        """An SNMPv3 message's sender engine ID, boots and time (not authenticated yet)."""
        try:
            self._usm = (
                bytes(variables["securityEngineId"]),
                int(variables["snmpEngineBoots"]),
                int(variables["snmpEngineTime"]),
            )
        except Exception:  # a value missing from the message: the time check refuses it
            self._usm = None

    def _on_sm_failure(
        self, engine: Any, execpoint: str, variables: dict[str, Any], ctx: Any
    ) -> None:
        """A message whose community/user/digest did not check out."""
        source = _source_text(variables.get("transportAddress"))
        if source not in self._devices:
            self.stats.dropped_unknown_source += 1
            log.warning("trap dropped: %s is not a configured device", source)
            return
        status = variables.get("statusInformation") or {}
        reason = status.get("errorIndication") if hasattr(status, "get") else None
        from pysnmp.proto import errind

        if isinstance(reason, errind.NotInTimeWindow):  # e.g. snmpEngineBoots 2147483647
            self.stats.dropped_replay += 1
            log.warning("trap dropped: SNMPv3 trap from %s outside the time window", source)
            return
        self.stats.dropped_bad_auth += 1
        log.warning("trap dropped: bad credentials from %s (%s)", source, reason or "unknown")

    def _on_notification(
        self,
        engine: Any,
        state_reference: Any,
        context_engine_id: Any,
        context_name: Any,
        varbinds: Any,
        ctx: Any,
    ) -> None:
        request = engine.observer.get_execution_context("rfc3412.receiveMessage:request")
        source = _source_text(request.get("transportAddress"))
        security_name = str(request.get("securityName"))
        usm, self._usm = self._usm, None
        device = self._devices.get(source)
        if device is None:
            self.stats.dropped_unknown_source += 1
            log.warning("trap dropped: %s is not a configured device", source)
            return
        v3 = request.get("securityModel") == 3
        level = request.get("securityLevel")
        # pysnmp enforces a user's security level only as the authoritative engine, and a
        # trap's sender is the authoritative one: without this, a trap naming a configured
        # user with no digest and no encryption (noAuthNoPriv) would be believed.
        if v3 and level != _AUTH_PRIV:
            self.stats.dropped_bad_auth += 1
            log.warning(
                "trap dropped: SNMPv3 trap from %s as user %r is %s, not authPriv",
                source,
                security_name,
                _SECURITY_LEVELS.get(level, level),
            )
            return
        if source not in self._allowed.get(security_name, ()):
            self.stats.dropped_bad_auth += 1
            log.warning("trap dropped: %s used another device's credentials", source)
            return
        if v3 and not self._timely(usm, source):
            self.stats.dropped_replay += 1
            return
        event = parse_link_trap(
            _ip(device.address), device.host or device.address, varbinds, self.clock()
        )
        if event is None:
            self.stats.ignored += 1
            log.debug("trap from %s ignored: not linkDown/linkUp", source)
            return
        self.stats.accepted += 1
        try:
            self.on_trap(event)
        except Exception:
            log.exception("on_trap failed for %s from %s", event.kind, source)

    def _timely(self, usm: tuple[bytes, int, int] | None, source: str) -> bool:
        """RFC 3414 §3.2.7b, as the non-authoritative receiver of an authentic message
        (pysnmp saves every message's boots and time before it checks them, so its own check
        always passes). Per device and engine, the latest (boots, time) and our clock then:
        with the same boots, a time more than TIME_WINDOW behind where that clock now is, or
        ahead of it, is a replay; fewer boots too. Two allowances, since many devices do not
        keep snmpEngineBoots: a time back near zero (RESTARTED_WITHIN) is a restart they did
        not count, and what is known of a device is forgotten after FORGET_AFTER without an
        authentic trap from it (as pysnmp forgets an engine's time)."""
        if usm is None:
            log.warning("trap dropped: no snmpEngineBoots/Time for the SNMPv3 trap from %s", source)
            return False
        engine_id, boots, sent = usm
        key = (source, engine_id)
        now = time.monotonic()
        known = self._timeline.get(key)
        if known is not None and now - known.at > FORGET_AFTER:
            known = None
        if known is None or boots > known.boots:
            self._timeline[key] = _EngineTime(boots, sent, now)
            return True
        expected = known.time + (now - known.at)
        if boots == known.boots and abs(sent - expected) <= TIME_WINDOW:
            if sent > known.time:
                self._timeline[key] = _EngineTime(boots, sent, now)
            return True
        if boots == known.boots and sent < expected and sent <= RESTARTED_WITHIN:
            log.warning(
                "SNMPv3 traps from %s: snmpEngineTime went back from about %d to %d with"
                " snmpEngineBoots still %d: taken as a restart it did not count",
                source,
                expected,
                sent,
                boots,
            )
            self._timeline[key] = _EngineTime(boots, sent, now)
            return True
        log.warning(
            "trap dropped: SNMPv3 trap from %s is outside the time window (a replay?):"
            " snmpEngineBoots %d, snmpEngineTime %d; expected %d, about %d",
            source,
            boots,
            sent,
            known.boots,
            expected,
        )
        return False


def _source_text(address: Any) -> str:
    try:
        return _ip(str(address[0]))
    except (TypeError, IndexError, ValueError):
        return str(address)
