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

One engine per agent, one request per device (issue 9): the scheduler owns one
:class:`probes.snmp_io.SnmpPoller` for all snmp checks, and polls the checks of one device
(same target and credentials, interval and timeout) together: every OID they need, and
sysUpTime once, go in one GET. It holds no sample, only pysnmp's own engine state.

This module is the options, target rule and arithmetic, importable without pysnmp so that
reading a config does not load it; the requests are in :mod:`probes.snmp_io`.

Secrets (community, v3 keys) come from ``*_file`` or ``*_env`` and never appear in results
or logs. SNMPv3 is authPriv only; AES needs the ``cryptography`` package.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from probes.base import (
    ProbeOptions,
    ProbeResult,
    ProbeSession,
    split_host_port,
    target_checker,
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

AuthProtocol = Literal["SHA", "SHA-224", "SHA-256", "SHA-384", "SHA-512"]
PrivProtocol = Literal["AES"]
Mode = Literal["interface", "oid", "uptime"]

_OID = re.compile(r"\.?[0-2](\.[0-9]+)+")
#: RFC 2578 §7.1.3: at most 128 sub-identifiers, each at most 2**32 - 1.
_MAX_SUB_IDS = 128
_MAX_SUB_ID = 2**32 - 1
_TICKS_WRAP = 2**32
#: sysUpTime (TimeTicks, 1/100 s) wraps after ~497 days; a drop from within a day of the
#: top to within a day of zero is a wrap, not a reboot.
_WRAP_MARGIN = 100 * 86_400


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
    # Finite: nan compares false with everything (never crossed), and inf is never crossed.
    warn_below: float | None = Field(default=None, allow_inf_nan=False)
    warn_above: float | None = Field(default=None, allow_inf_nan=False)
    down_below: float | None = Field(default=None, allow_inf_nan=False)
    down_above: float | None = Field(default=None, allow_inf_nan=False)

    @field_validator("version", "oid", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # From the command line "--version 3" or "--oid 1.3" arrive as TOML numbers.
        return str(value) if isinstance(value, int | float) else value

    @field_validator("oid")
    @classmethod
    def _oid_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.lstrip(".").split(".")
        if (
            not _OID.fullmatch(value)
            or len(parts) > _MAX_SUB_IDS
            or any(len(p.lstrip("0")) > 10 or int(p) > _MAX_SUB_ID for p in parts)
        ):
            raise ValueError("expected a numeric OID such as 1.3.6.1.2.1.1.3.0")
        # As pysnmp writes it (answers are matched by OID): "1.3.06" is "1.3.6".
        return ".".join(str(int(p)) for p in parts)

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
        crossed = self._always_crossed()
        if crossed:
            out.append(crossed)
        return out

    def _always_crossed(self) -> str | None:
        """A ``*_below`` above a ``*_above``: every value crosses one of them, so the check
        is never up. Equal is allowed: "exactly 2" is ``warn_below = warn_above = 2``."""
        pairs = (
            ("warn_below", "warn_above", "degraded"),
            ("down_below", "down_above", "down"),
            ("warn_below", "down_above", "degraded or down"),
            ("down_below", "warn_above", "degraded or down"),
        )
        for below, above, verdict in pairs:
            low, high = getattr(self, below), getattr(self, above)
            if low is not None and high is not None and low > high:
                return f"{below} {low:g} is above {above} {high:g}: every value would be {verdict}"
        return None

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


#: The options that decide who answers and how: checks equal in these share one request.
_DEVICE_KEYS = (
    "version",
    "community_file",
    "community_env",
    "user",
    "auth_protocol",
    "auth_key_file",
    "auth_key_env",
    "priv_protocol",
    "priv_key_file",
    "priv_key_env",
    "retries",
)


def group_key(target: str, options: Options) -> Hashable:
    """Checks with the same device and credentials are polled with one request."""
    return (target, *(getattr(options, k) for k in _DEVICE_KEYS))


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


async def probe(
    target: str, timeout: float, options: Options, *, previous: ProbeResult | None = None
) -> ProbeResult:
    """One poll with an engine of its own (``availmon probe``); checks share one engine."""
    split_target(target)  # a bad target is the caller's bug: raise before any work
    from probes import snmp_io  # pysnmp only when an snmp check runs

    return await snmp_io.probe(target, timeout, options, previous=previous)


def session() -> AbstractAsyncContextManager[ProbeSession]:
    """The agent's one SNMP engine, shared by every snmp check."""
    from probes import snmp_io

    return snmp_io.SnmpPoller()
