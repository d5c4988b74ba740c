"""The estate config: one TOML file parsed once into frozen models.

Every error names the file, the key path and the bad value, and all of them are reported at
once (``availmon config check``). Probe-specific keys of a check are validated by that probe's
own ``Options`` model, so adding a probe never touches this module.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections import Counter
from datetime import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from availmon.areas import DEFAULT_AREAS
from availmon.errors import ConfigError, ConfigIssue
from availmon.secrets import resolve_secret
from probes.registry import REGISTRY
from probes.snmp import AuthProtocol, PrivProtocol

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _duration(value: Any) -> Any:
    """Seconds as a number, or text such as ``"30s"``, ``"5m"``, ``"250ms"``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError("expected seconds or a duration such as '30s', '5m', '250ms'")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


Seconds = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TLS(Frozen):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


class BrokerConfig(Frozen):
    host: str = "127.0.0.1"
    port: Port = 1883
    #: Run an amqtt broker inside the process (demo, first run); production uses Mosquitto.
    embedded: bool = False
    tls: TLS | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30

    def password(self) -> str | None:
        return resolve_secret(self.password_file, self.password_env, "broker.password")


class AgentConfig(Frozen):
    state_dir: Path = Path("/var/lib/availmon/agent")
    heartbeat_interval: Seconds = 30.0
    #: The spool's cap; at the cap only superseded intermediate states are dropped.
    spool_max_events: Annotated[int, Field(ge=10)] = 100_000
    reconnect_max: Seconds = 30.0
    #: Each agent logs in to the broker as its agent id with this password (one per host).
    password_file: Path | None = None
    password_env: str | None = None

    def password(self) -> str | None:
        return resolve_secret(self.password_file, self.password_env, "agent.password")


class CollectorConfig(Frozen):
    database: Path = Path("/var/lib/availmon/collector.db")
    #: Fixed, so the broker keeps our persistent session (and its backlog) across restarts.
    client_id: Name = "availmon-collector"
    max_payload_bytes: Annotated[int, Field(ge=256)] = 65_536
    #: Events stamped further than this into the future are rejected.
    max_future_skew: Seconds = 300.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    #: How long an agent must stay offline before its site gets a provisional outage.
    offline_grace: Seconds = 60.0


class WebConfig(Frozen):
    listen: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9810  # 0: any free port (tests)
    token_file: Path | None = None
    token_env: str | None = None

    def token(self) -> str | None:
        return resolve_secret(self.token_file, self.token_env, "web.token")


class Area(Frozen):
    name: str
    degraded_counts_as_down: bool = True


class Partner(Frozen):
    name: str


class Accounting(Frozen):
    timezone: str = "Europe/London"
    target_percent: Annotated[float, Field(gt=0, le=100)] = 95.0
    #: Planned maintenance counts as downtime unless this is false (it is always shown apart).
    count_planned: bool = True
    business_days: tuple[Annotated[int, Field(ge=0, le=6)], ...] = (0, 1, 2, 3, 4)
    business_start: time = time(8, 30)
    business_end: time = time(17, 0)
    holidays_country: str = "GB"
    holidays_subdiv: str | None = "ENG"
    #: Outages shorter than this are summed but not listed one by one in the board report.
    report_min_outage_minutes: Annotated[float, Field(ge=0)] = 15.0


_CHECK_KEYS = {
    "name",
    "type",
    "target",
    "area",
    "interval",
    "timeout",
    "failures_to_down",
    "successes_to_up",
    "slow_to_degraded",
    "degraded_latency",
    "degraded_loss",
    "provider",
    "depends_on",
    "options",
}


class Check(Frozen):
    name: Name
    type: str
    target: str
    area: str
    interval: Seconds = 30.0
    timeout: Seconds = 5.0
    failures_to_down: Annotated[int, Field(ge=1)] = 3
    successes_to_up: Annotated[int, Field(ge=1)] = 2
    slow_to_degraded: Annotated[int, Field(ge=1)] = 3
    degraded_latency: Seconds | None = None
    degraded_loss: Annotated[float, Field(ge=0, le=100)] | None = None
    provider: str | None = None
    depends_on: str | None = None
    #: Probe-specific keys, written flat in the check's table and validated by the probe.
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = {k: v for k, v in data.items() if k not in _CHECK_KEYS}
            if extra:
                data = {k: v for k, v in data.items() if k in _CHECK_KEYS}
                data["options"] = {**data.get("options", {}), **extra}
        return data

    def parsed_options(self) -> Any:
        return REGISTRY[self.type].parse_options(self.options)


# --- SNMP traps: the receiver is agent/traps.py; its config lives here with the rest ---


class TrapUser(Frozen):
    """An SNMPv3 user a device sends traps as (authPriv)."""

    user: str
    #: The device's snmpEngineID in hex. A trap is not acknowledged, so the receiver cannot
    #: discover it: USM keys are localised with the sender's engine ID (RFC 3414 §2.5.1).
    engine_id: Annotated[str, Field(pattern=r"^(0x)?([0-9A-Fa-f]{2}){5,32}$")]
    auth_protocol: AuthProtocol = "SHA"
    auth_key_file: Path | None = None
    auth_key_env: str | None = None
    priv_protocol: PrivProtocol = "AES"
    priv_key_file: Path | None = None
    priv_key_env: str | None = None

    @model_validator(mode="after")
    def _keys(self) -> TrapUser:
        for key in ("auth_key", "priv_key"):
            given = [getattr(self, f"{key}_file"), getattr(self, f"{key}_env")]
            if sum(v is not None for v in given) != 1:
                raise ValueError(f"set exactly one of {key}_file and {key}_env")
        return self


class TrapDevice(Frozen):
    """A device allowed to send traps, and the credentials it must use."""

    #: The source address its traps come from.
    address: str
    #: The host as written in its snmp checks' targets, when that is not ``address``.
    host: str | None = None
    community_file: Path | None = None
    community_env: str | None = None
    users: tuple[TrapUser, ...] = ()

    @model_validator(mode="after")
    def _credentials(self) -> TrapDevice:
        try:
            ipaddress.ip_address(self.address)
        except ValueError:
            raise ValueError(f"address must be an IP address, got {self.address!r}") from None
        if self.community_file is not None and self.community_env is not None:
            raise ValueError("set at most one of community_file and community_env")
        if self.community_file is None and self.community_env is None and not self.users:
            raise ValueError("needs community_file, community_env or users")
        return self


class TrapConfig(Frozen):
    """``[sites.<id>.traps]``: where to listen and whom to believe."""

    #: Traps come from the network, so all addresses by default.
    listen: str = "0.0.0.0"
    #: 0 picks a free port (tests); see :attr:`TrapReceiver.port`.
    port: Annotated[int, Field(ge=0, le=65535)] = 162
    devices: tuple[TrapDevice, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> TrapConfig:
        addresses = [ipaddress.ip_address(d.address) for d in self.devices]
        if len(set(addresses)) != len(addresses):
            raise ValueError("each device address may appear only once")
        return self


class Site(Frozen):
    name: str | None = None
    partner: str
    #: Agent identity on the wire; defaults to the site id. Unique across the estate.
    agent: Name | None = None
    checks: list[Check] = Field(default_factory=list)
    #: An SNMP trap receiver in this site's agent: linkDown/linkUp change snmp checks at once.
    traps: TrapConfig | None = None


class Estate(Frozen):
    name: str = "availmon"
    broker: BrokerConfig = BrokerConfig()
    agent: AgentConfig = AgentConfig()
    collector: CollectorConfig = CollectorConfig()
    web: WebConfig = WebConfig()
    accounting: Accounting = Accounting()
    areas: dict[Name, Area] = Field(default_factory=dict)
    partners: dict[Name, Partner] = Field(default_factory=dict)
    sites: dict[Name, Site] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _merge_default_areas(cls, data: Any) -> Any:
        if isinstance(data, dict):
            user = data.get("areas", {})
            if isinstance(user, dict):
                merged: dict[str, Any] = {k: {"name": v} for k, v in DEFAULT_AREAS.items()}
                for key, value in user.items():
                    base = merged.get(key, {})
                    merged[key] = {**base, **value} if isinstance(value, dict) else value
                data = {**data, "areas": merged}
        return data

    def agent_id(self, site: str) -> str:
        return self.sites[site].agent or site

    def check(self, site: str, name: str) -> Check | None:
        for c in self.sites[site].checks:
            if c.name == name:
                return c
        return None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_SECRET_KEY = re.compile(r"pass|secret|token|community|key", re.IGNORECASE)


def _shown(loc: tuple[int | str, ...], value: Any) -> str:
    """The bad value as it will be printed (and logged): never a secret written inline by
    mistake, e.g. ``password = "..."`` where ``password_file`` was meant."""
    key = next((p for p in reversed(loc) if isinstance(p, str)), "")
    if _SECRET_KEY.search(key) and not key.endswith(("_file", "_env")):
        return "<hidden: looks like a secret; use a *_file or *_env key>"
    return repr(value)


def _issues_from(
    file: str, prefix: tuple[int | str, ...], exc: ValidationError
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # pydantic names the validator of Annotated/union members in loc; keep key names only.
        loc = tuple(
            p for p in loc if not (isinstance(p, str) and ("[" in p or p == "function-before"))
        )
        shown = _shown(loc, err["input"])
        if err["type"] == "missing":
            msg = "missing required key"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown key (value {shown})"
        else:
            text = err["msg"].removeprefix("Value error, ")
            msg = f"{text} (got {shown})"
        issues.append(ConfigIssue(file, _path(loc), msg))
    return issues


def _semantic_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """Cross-field rules, run over the raw data so that they are reported beside type errors."""
    issues: list[ConfigIssue] = []
    areas = set(DEFAULT_AREAS) | set((data.get("areas") or {}).keys())
    partners = data.get("partners") or {}
    sites = data.get("sites") or {}
    agents: Counter[str] = Counter()
    if not isinstance(sites, dict):
        return issues
    for site_id, site in sites.items():
        if not isinstance(site, dict):
            continue
        agents[str(site.get("agent") or site_id)] += 1
        partner = site.get("partner")
        if partners and isinstance(partner, str) and partner not in partners:
            issues.append(
                ConfigIssue(
                    file,
                    f"sites.{site_id}.partner",
                    f"unknown partner {partner!r} (known: {', '.join(sorted(partners))})",
                )
            )
        checks = site.get("checks") or []
        if not isinstance(checks, list):
            continue
        names = Counter(c.get("name") for c in checks if isinstance(c, dict))
        seen: set[str] = set()
        for i, check in enumerate(checks):
            if not isinstance(check, dict):
                continue
            where = f"sites.{site_id}.checks[{i}]"
            name = check.get("name")
            if isinstance(name, str) and names[name] > 1:
                if name in seen:
                    issues.append(
                        ConfigIssue(
                            file,
                            f"{where}.name",
                            f"duplicate check name {name!r} in site {site_id!r}",
                        )
                    )
                seen.add(name)
            area = check.get("area")
            if isinstance(area, str) and area not in areas:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.area",
                        f"unknown area {area!r} (known: {', '.join(sorted(areas))})",
                    )
                )
            dep = check.get("depends_on")
            if isinstance(dep, str) and dep not in names:
                issues.append(
                    ConfigIssue(
                        file, f"{where}.depends_on", f"no check named {dep!r} in site {site_id!r}"
                    )
                )
            interval, timeout = check.get("interval", 30), check.get("timeout", 5)
            try:
                t, iv = float(_duration(timeout)), float(_duration(interval))
                if 0 < iv < t:
                    issues.append(
                        ConfigIssue(
                            file,
                            f"{where}.timeout",
                            f"timeout {timeout!r} is longer than interval {interval!r}",
                        )
                    )
            except (TypeError, ValueError):
                pass  # reported by the type check
            ctype = check.get("type")
            if not isinstance(ctype, str):
                continue
            spec = REGISTRY.get(ctype)
            if spec is None:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.type",
                        f"unknown check type {ctype!r} (known: {', '.join(sorted(REGISTRY))})",
                    )
                )
                continue
            target = check.get("target")
            if isinstance(target, str) and spec.check_target is not None:
                problem = spec.check_target(target)
                if problem:
                    issues.append(ConfigIssue(file, f"{where}.target", problem))
            options = {k: v for k, v in check.items() if k not in _CHECK_KEYS}
            options.update(check.get("options") or {})
            try:
                spec.parse_options(options)
            except ValidationError as exc:
                issues.extend(_issues_from(file, ("sites", site_id, "checks", i), exc))
    for agent, count in agents.items():
        if count > 1:
            issues.append(
                ConfigIssue(file, "sites", f"agent id {agent!r} is used by {count} sites")
            )
    return issues


def parse_config(data: dict[str, Any], file: str = "<config>") -> Estate:
    issues = _semantic_issues(file, data)
    estate: Estate | None = None
    try:
        estate = Estate.model_validate(data)
    except ValidationError as exc:
        issues = _issues_from(file, (), exc) + issues
    if issues or estate is None:
        raise ConfigError(issues)
    return estate


def load_config(path: str | Path) -> Estate:
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, "", f"not valid TOML: {exc}")]) from exc
    return parse_config(data, file)


def summary(estate: Estate) -> str:
    per_area: Counter[str] = Counter()
    for site in estate.sites.values():
        for check in site.checks:
            per_area[check.area] += 1
    total = sum(per_area.values())
    areas = ", ".join(f"{a} {n}" for a, n in sorted(per_area.items())) or "none"
    return f"ok: {len(estate.sites)} sites, {total} checks ({areas})"
