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
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from availmon.alertconfig import CHANNEL_TYPES, AlertsConfig, Severity, alert_issues
from availmon.areas import DEFAULT_AREAS
from availmon.durations import Seconds, duration
from availmon.errors import ConfigError, ConfigIssue
from availmon.files import NotAFile, read_limited
from availmon.limits import CONFIG_MAX_BYTES, MAX_HEARTBEAT_CHECKS
from availmon.secrets import inline_secrets, redact_url, resolve_secret, shown
from probes.registry import REGISTRY
from probes.snmp import AuthProtocol, PrivProtocol

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
Name = Annotated[str, Field(pattern=_NAME.pattern, max_length=64)]
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
    #: Events per MQTT message on ``.../events`` (kept under collector.max_payload_bytes too).
    batch_events: Annotated[int, Field(ge=1, le=500)] = 100
    #: An event a required collector has not confirmed this long after it was published (while
    #: that collector is online and not busy confirming others) is published again.
    ack_timeout: Seconds = 30.0
    #: Whose confirmation deletes an event from the spool (collector client ids); default:
    #: every collector in collector.members.
    confirm_by: tuple[Name, ...] | None = None
    #: Each agent logs in to the broker as its agent id with this password (one per host).
    password_file: Path | None = None
    password_env: str | None = None

    def password(self) -> str | None:
        return resolve_secret(self.password_file, self.password_env, "agent.password")


class CollectorConfig(Frozen):
    database: Path = Path("/var/lib/availmon/collector.db")
    #: Fixed, so the broker keeps our persistent session (and its backlog) across restarts.
    client_id: Name = "availmon-collector"
    #: The largest MQTT payload ingested; the rendered broker config refuses packets above it.
    max_payload_bytes: Annotated[int, Field(ge=256, le=16 * 1024 * 1024)] = 65_536
    #: Events stamped further than this into the future are rejected.
    max_future_skew: Seconds = 300.0
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 500
    #: How long an agent must stay offline before its site gets a provisional outage.
    offline_grace: Seconds = 60.0
    #: Every collector of the estate by client id, in order of preference for sending alerts
    #: (the first one online leads); default: just this one (client_id).
    members: tuple[Name, ...] = ()
    #: A seq an agent skipped that is still missing this long after it was first expected is
    #: logged and counted (availmon_events_missing); it must exceed agent.ack_timeout.
    gap_grace: Seconds = 120.0
    #: The longest wait between retries of a batch the store could not commit.
    store_retry_max: Seconds = 10.0
    #: No heartbeat for this long marks an agent offline (its checks unknown), without waiting
    #: for the broker's keepalive to fire its last will; default: two heartbeat intervals + 5 s.
    heartbeat_timeout: Seconds | None = None
    #: Events for a check the config no longer lists (or for its former area) are accepted
    #: this long after the last one stored, and always while it has an open outage: an agent's
    #: spool still holds them, and an outage's end must never be refused. Invented checks and
    #: areas, which the store has never held, are rejected.
    removed_check_grace: Seconds = 7 * 86_400.0


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def listen_address(value: str) -> str:
    """An IP address, or a host name that resolves to this machine's: refused here rather
    than when the daemon binds (``"999.1.1.1"`` would even be looked up in the DNS)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.split(".")
    if (
        len(value) <= 253
        and all(_HOST_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    ):
        return value
    raise ValueError("expected an IP address or a host name, such as '127.0.0.1' or '::'")


ListenAddress = Annotated[str, AfterValidator(listen_address)]


def allowed_host(value: str) -> str:
    """A name the web answers to, lower-cased: a host name, or one with a leading ``.`` or
    ``*.`` (kept as ``.``) for that name and any under it. Refused here rather than silently
    never matching: a URL, a port or a path (``https://board.example:443/``) is no Host
    header's name, and an IP address is always answered anyway."""
    name = value.lower().removesuffix(".")
    for prefix in ("*.", "."):
        if name.startswith(prefix):
            name, wild = name.removeprefix(prefix), "."
            break
    else:
        wild = ""
    try:
        ipaddress.ip_address(name)
        is_ip = True
    except ValueError:
        is_ip = False
    labels = name.split(".")
    if (
        not is_ip
        and len(name) <= 253
        and all(_HOST_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    ):
        return wild + name
    raise ValueError(
        "expected a host name such as 'availmon.internal' or '.council.example', without a"
        " scheme, port or path (IP addresses need no entry: they are always answered)"
    )


AllowedHost = Annotated[str, AfterValidator(allowed_host)]


class WebConfig(Frozen):
    listen: ListenAddress = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9810  # 0: any free port (tests)
    #: Bearer token for writes (annotate an outage, mark it planned); without one the web
    #: surface is read-only and every write is refused.
    token_file: Path | None = None
    token_env: str | None = None
    #: When set, reads (board, API, /metrics) need this token or the write token too.
    read_token_file: Path | None = None
    read_token_env: str | None = None
    #: Open connections at most; more are answered 503 and closed at once, so idle sockets
    #: can never use up the process's file descriptors (systemd's LimitNOFILE is 4096).
    max_connections: Annotated[int, Field(ge=1, le=60_000)] = 256
    #: A connection that has not sent a complete request head in this long, or sits idle
    #: between requests this long, is closed.
    idle_timeout: Seconds = 15.0
    #: How long a request body may take to arrive: a write whose body is not in within this
    #: is answered 408 and closed, and a body we do not read may keep arriving this long
    #: after the response.
    body_timeout: Seconds = 5.0
    #: The largest request body accepted (writes are small JSON bodies and forms).
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65_536
    #: The board's event streams (``/board/events``, one per open page) open at once; more
    #: are answered 503. Unset: a quarter of ``max_connections`` (64 of 256). At most half of
    #: it, so that pages left open can never take the connections /healthz, /metrics and the
    #: API need.
    max_streams: Annotated[int, Field(ge=1, le=30_000)] | None = None
    #: Streams open at once from one client address; more are answered 429. Behind a
    #: reverse proxy every browser comes from the proxy's address: raise it there.
    max_streams_per_client: Annotated[int, Field(ge=1, le=30_000)] = 8
    #: The names the web answers to in the Host header (a DNS-rebinding page reaches it
    #: under its own name); a leading ``.`` matches that name and any under it. IP
    #: addresses, and requests without a Host header, are always answered. Unset:
    #: ``localhost``, this machine's name and fully qualified name, the host of
    #: ``alerts.board_url`` and ``web.listen`` when it is a name. Others are answered 421.
    allowed_hosts: tuple[AllowedHost, ...] | None = None
    #: Whether the sign-in cookie is marked ``Secure``. Unset: when the request came over
    #: TLS; true behind a proxy that terminates TLS (the collector then sees plain HTTP);
    #: false never.
    secure_cookie: bool | None = None

    @field_validator("max_streams")
    @classmethod
    def _streams_leave_connections(cls, value: int | None, info: ValidationInfo) -> int | None:
        connections = info.data.get("max_connections")
        if value is not None and connections is not None and value > connections // 2:
            raise ValueError(
                f"at most half of web.max_connections ({connections}): open pages would"
                " leave no connection for /healthz, /metrics and the API"
            )
        return value

    def streams(self) -> int:
        """Event streams open at once, at most (``max_streams``, or a quarter of
        ``max_connections``)."""
        return self.max_streams or max(1, self.max_connections // 4)

    def streams_per_client(self) -> int:
        """Event streams open at once from one address, at most."""
        return min(self.max_streams_per_client, self.streams())

    def token(self) -> str | None:
        return resolve_secret(self.token_file, self.token_env, "web.token")

    def read_token(self) -> str | None:
        return resolve_secret(self.read_token_file, self.read_token_env, "web.read_token")


#: How a class of time counts in an area's figure (issue 10, docs/accounting.md):
#: ``downtime`` counts against availability, ``excluded`` takes it out of the period (neither
#: up nor down), ``up`` counts it as service delivered.
Treatment = Literal["downtime", "excluded", "up"]
#: The classes of not-up time the accounting tells apart, in the order the report prints them.
TIME_CLASSES = ("down", "degraded", "planned", "unknown", "unreachable", "confirmation")


class Policy(Frozen):
    """One treatment per class of time; a class left out takes the next level's choice (area,
    then ``[accounting.policy]``, then the defaults, which are the service's practice)."""

    #: Unplanned outages once confirmed.
    down: Treatment | None = None
    #: Slow or lossy service (the area's ``degraded_counts_as_down`` sets it too).
    degraded: Treatment | None = None
    #: Outages inside a maintenance window or marked planned (``count_planned`` sets it too).
    planned: Treatment | None = None
    #: Not monitored: an agent offline past its grace, no data.
    unknown: Treatment | None = None
    #: Behind a dependency that was down: counted once, in the parent's area.
    unreachable: Treatment | None = None
    #: From the first failed probe until the failure was declared (``failures_to_down``).
    confirmation: Treatment | None = None


#: The service's practice before issue 10: degraded and planned time counted, unknown time
#: shown as "not monitored" and counted as up, unreachable time counted once (in the parent's
#: area, so as up in the child's), and an outage dated from its first failed probe.
DEFAULT_POLICY: dict[str, Treatment] = {
    "down": "downtime",
    "degraded": "downtime",
    "planned": "downtime",
    "unknown": "up",
    "unreachable": "up",
    "confirmation": "downtime",
}


class Area(Frozen):
    name: str
    degraded_counts_as_down: bool = True
    policy: Policy = Policy()


class Partner(Frozen):
    name: str


#: The bank holidays the accounting takes by default: known to the library, so a config
#: that keeps them never imports it (it loads every country's rules: 0.15 CPU-s).
_DEFAULT_HOLIDAYS = ("GB", "ENG")


def _wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("expected a local time of day such as '08:30', without an offset")
    return value


#: A time of day on the local clock (the accounting's or a window's timezone): an offset
#: would be ignored by some uses and refused by others (comparing it to a local time).
WallTime = Annotated[time, AfterValidator(_wall_clock)]


class Accounting(Frozen):
    timezone: str = "Europe/London"
    target_percent: Annotated[float, Field(gt=0, le=100)] = 95.0
    #: Planned maintenance counts as downtime unless this is false (it is always shown apart).
    count_planned: bool = True
    business_days: tuple[Annotated[int, Field(ge=0, le=6)], ...] = (0, 1, 2, 3, 4)
    business_start: WallTime = time(8, 30)
    business_end: WallTime = time(17, 0)
    holidays_country: str = "GB"
    #: England by default; another country's whole list unless a region is given.
    holidays_subdiv: str | None = "ENG"
    #: Outages shorter than this are summed but not listed one by one in the board report.
    report_min_outage_minutes: Annotated[float, Field(ge=0)] = 15.0
    #: The estate-wide treatment of each class of time; an area's own ``policy`` wins.
    policy: Policy = Policy()

    @model_validator(mode="before")
    @classmethod
    def _region_of_country(cls, data: Any) -> Any:
        """England is the default region of the default country only: ``holidays_country =
        "IE"`` alone means Ireland's holidays, not a region 'ENG' of Ireland."""
        if (
            isinstance(data, dict)
            and "holidays_subdiv" not in data
            and data.get("holidays_country", _DEFAULT_HOLIDAYS[0]) != _DEFAULT_HOLIDAYS[0]
        ):
            return {**data, "holidays_subdiv": None}
        return data

    def treatment(self, area: Area | None, cls: str) -> Treatment:
        """The treatment of one class of time in one area (areas outside the config take
        the estate's)."""
        own = getattr(area.policy, cls) if area is not None else None
        if own is not None:
            return own  # type: ignore[no-any-return]
        if cls == "degraded" and area is not None and not area.degraded_counts_as_down:
            return "up"
        if cls == "planned" and not self.count_planned:
            return "up"
        estate_wide = getattr(self.policy, cls)
        return estate_wide if estate_wide is not None else DEFAULT_POLICY[cls]  # type: ignore[no-any-return]


_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_EVERY = re.compile(
    r"^\s*(?:(?P<day>day)|(?P<ord>first|second|third|fourth|last)\s+(?P<oday>[a-z]+)"
    r"(?:\s+of\s+the\s+month)?|(?P<days>[a-z]+(?:\s*,\s*[a-z]+)*))\s*$",
    re.IGNORECASE,
)


_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _weekday(word: str) -> int:
    """``sunday`` or ``sun`` (any case) -> 6."""
    w = word.strip().lower()
    for i, name in enumerate(_DAY_NAMES):
        if w in (name, name[:3]):
            return i
    raise ValueError(f"{word.strip()!r} is not a day of the week")


def parse_every(text: str) -> tuple[str, tuple[int, ...], int | None]:
    """``"sunday"``, ``"mon, wed"``, ``"day"``, ``"first tuesday"`` (of the month), ``"last
    friday"`` -> (frequency, weekdays, nth). Raises ValueError in the words of the config."""
    m = _EVERY.match(text)
    if not m:
        raise ValueError(
            "expected 'day', weekday names ('sunday', 'mon, wed') or 'first tuesday' /"
            " 'last friday' (of the month)"
        )
    if m.group("day"):
        return "daily", (), None
    if m.group("ord"):
        return "monthly", (_weekday(m.group("oday")),), _ORDINALS[m.group("ord").lower()]
    return "weekly", tuple(sorted({_weekday(d) for d in m.group("days").split(",")})), None


class Scope(Frozen):
    """What a maintenance window covers: each list left empty matches everything, and an
    outage is covered when it matches every list given (sites AND areas AND ...)."""

    sites: tuple[Name, ...] = ()
    areas: tuple[Name, ...] = ()
    #: Check names (any site) or ``site/check``; a quorum service's id covers the service.
    checks: tuple[str, ...] = ()
    partners: tuple[Name, ...] = ()


class RecurringWindow(Scope):
    """Planned work that repeats (``[[maintenance]]``): e.g. every Sunday 02:00-04:00."""

    name: Name
    #: ``"sunday"``, ``"mon, thu"``, ``"day"``, ``"first tuesday"``, ``"last friday"``.
    every: str
    start: WallTime
    #: Wall-clock end; at or before ``start`` means the next day.
    end: WallTime
    timezone: str | None = None
    #: Only from / until these days (inclusive), e.g. a contract's term.
    first_day: date | None = None
    last_day: date | None = None
    reason: str | None = Field(default=None, max_length=500)

    @field_validator("every")
    @classmethod
    def _every_parses(cls, every: str) -> str:
        parse_every(every)
        return every


Quorum = Annotated[int | str, Field(union_mode="left_to_right")]


class Service(Frozen):
    """A central service probed from several sites (``[services.<id>]``): down only when a
    quorum of the agents that can see it say so; a failure seen from fewer sites is booked
    to those sites' path."""

    name: str | None = None
    #: Members as ``site/check``.
    checks: tuple[str, ...]
    #: How many of the members that can see it must say down: a number, or ``"50%"`` of
    #: those that can see it at the time.
    quorum: Quorum = 2
    #: Where its outages are booked (default: the members' area).
    area: Name | None = None
    #: Its home site, whose partner its outages are booked to (default: the first member's).
    site: Name | None = None
    #: Where a failure seen by too few sites goes: the path (link) to that site.
    path_area: Name = "network_telephony"

    def quorum_of(self, eligible: int) -> int:
        """Votes needed when ``eligible`` members can see the service (at least 1)."""
        if isinstance(self.quorum, int):
            return self.quorum
        pct = float(self.quorum.strip().rstrip("%"))
        return max(1, -(-int(pct * eligible * 100) // 10_000))  # ceil(pct/100 * eligible)


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
    "added",
    "retired",
    "severity",
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
    #: A check at this site (``wan-link``) or at another one (``dc/internet-link``): while it
    #: is down this check is unreachable, counted once in the parent's area, not alerted.
    depends_on: str | None = None
    #: When the check came into service / was retired: it counts only over that time.
    added: datetime | date | None = None
    retired: datetime | date | None = None
    #: How much its being down matters to alert routes (degraded is always a ticket).
    severity: Severity = "page"
    #: Probe-specific keys, written flat in the check's table and validated by the probe.
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = {k: v for k, v in data.items() if k not in _CHECK_KEYS}
            if extra and isinstance(data.get("options", {}), dict):
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
    listen: ListenAddress = "0.0.0.0"
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
    #: Bounded like a heartbeat's statuses, which carry every check of the site.
    checks: list[Check] = Field(default_factory=list, max_length=MAX_HEARTBEAT_CHECKS)
    #: An SNMP trap receiver in this site's agent: linkDown/linkUp change snmp checks at once.
    traps: TrapConfig | None = None


class _Memo:
    """A value derived from a frozen model, kept beside it. pydantic compares private
    attributes, so this one compares equal to any other (or to none): a cache is no part of
    the model's value."""

    __slots__ = ("source", "value")

    def __init__(self, source: object, value: Any) -> None:
        self.source, self.value = source, value

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, _Memo)

    __hash__ = None  # type: ignore[assignment]


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
    #: Recurring maintenance windows (one-off ones are declared with ``availmon maintenance``).
    maintenance: list[RecurringWindow] = Field(default_factory=list)
    #: Services seen from several sites, with a quorum.
    services: dict[Name, Service] = Field(default_factory=dict)
    alerts: AlertsConfig = AlertsConfig()

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

    @model_validator(mode="after")
    def _share_fields_sets(self) -> Estate:
        """Checks that set the same keys share one record of them (pydantic's
        ``model_fields_set``): a set of five or more names is 728 bytes, more than half of a
        check's model, and an agent holds a thousand checks (issue 9: in at most 60 MB).
        pydantic copies the set before changing it (``model_copy``); a test holds it to that.
        """
        shared: dict[frozenset[str], set[str]] = {}
        for site in self.sites.values():
            for check in site.checks:
                own = check.__pydantic_fields_set__
                one = shared.setdefault(frozenset(own), own)
                if one is not own:
                    object.__setattr__(check, "__pydantic_fields_set__", one)
        return self

    @model_validator(mode="after")
    def _share_strings(self) -> Estate:
        """Equal text in the checks' fields and options is one object: TOML makes a new
        string for each occurrence, and the same type, area, option key, shared target or
        secret path repeated over 1,000 checks is about 200 KB of an agent (issue 9). Only
        the object changes, never a value (the models are frozen to everyone else)."""
        seen: dict[str, str] = {}
        for site in self.sites.values():
            for check in site.checks:
                fields = check.__dict__
                for key, value in fields.items():
                    if type(value) is str:
                        fields[key] = seen.setdefault(value, value)
                if check.options:
                    fields["options"] = {
                        seen.setdefault(k, k): seen.setdefault(v, v) if type(v) is str else v
                        for k, v in check.options.items()
                    }
        return self

    def collectors(self) -> tuple[str, ...]:
        """Every collector's client id, in order of preference for sending alerts."""
        return self.collector.members or (self.collector.client_id,)

    def confirmers(self) -> tuple[str, ...]:
        """The collectors whose confirmation an agent needs before it deletes an event."""
        return self.agent.confirm_by or self.collectors()

    def heartbeat_timeout(self) -> float:
        return self.collector.heartbeat_timeout or 2 * self.agent.heartbeat_interval + 5.0

    _check_areas: _Memo | None = PrivateAttr(None)

    def check_areas(self) -> dict[tuple[str, str], str]:
        """``(site, check)`` -> area: the collector looks every event and heartbeat status up
        here, so a dict built once rather than a walk of the site's checks each time. Kept
        with the very ``sites`` table it was built from: a ``model_copy`` that replaces
        ``sites`` keeps private attributes."""
        memo = self._check_areas
        if memo is None or memo.source is not self.sites:
            areas = {(sid, c.name): c.area for sid, site in self.sites.items() for c in site.checks}
            memo = self._check_areas = _Memo(self.sites, areas)
        return memo.value  # type: ignore[no-any-return]

    def agent_id(self, site: str) -> str:
        return self.sites[site].agent or site

    def check(self, site: str, name: str) -> Check | None:
        for c in self.sites[site].checks:
            if c.name == name:
                return c
        return None


def _check_key(data: Any, site: Any, index: int) -> str | None:
    """A check's name where it identifies the check (present, valid text, unique in its
    site): ``sites.dc.checks.webmail.timeout`` reads better than ``checks[2]``."""
    try:
        checks = data["sites"][site]["checks"]
        name = checks[index]["name"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(name, str) or not _NAME.match(name):
        return None
    if sum(1 for c in checks if isinstance(c, dict) and c.get("name") == name) != 1:
        return None
    return name


def _path(loc: tuple[int | str, ...], data: Any = None) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            name = (
                _check_key(data, loc[i - 2], part)
                if i >= 3 and loc[i - 1] == "checks" and loc[i - 3] == "sites"
                else _window_key(data, part)
                if loc[:i] == ("maintenance",)
                else None
            )
            out += f".{name}" if name is not None else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _window_key(data: Any, i: int) -> str | None:
    """A maintenance window by its name, as the cross-field checks name it."""
    windows = data.get("maintenance") if isinstance(data, dict) else None
    window = windows[i] if isinstance(windows, list) and 0 <= i < len(windows) else None
    name = window.get("name") if isinstance(window, dict) else None
    return name if isinstance(name, str) else None


def _shown(loc: tuple[int | str, ...], value: Any) -> str:
    """The bad value as it will be printed (and logged): never a secret written inline by
    mistake (``password = "..."`` where ``password_file`` was meant), a header's value, or a
    URL holding a password, under whatever key."""
    return shown(loc, value)


def _union_tag(loc: tuple[int | str, ...], i: int) -> bool:
    """pydantic names the member of a tagged union in ``loc`` (``alerts.channels.mail.email
    .from``); the key path is ``alerts.channels.mail.from``."""
    return i == 3 and loc[:2] == ("alerts", "channels") and loc[i] in CHANNEL_TYPES


def _issues_from(
    file: str, prefix: tuple[int | str, ...], exc: ValidationError, data: Any = None
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # pydantic names the validator of Annotated/union members in loc; keep key names only.
        loc = tuple(
            p
            for i, p in enumerate(loc)
            if not (isinstance(p, str) and ("[" in p or p == "function-before"))
            and not _union_tag(loc, i)
        )
        shown = _shown(loc, err["input"])
        if err["type"] == "missing":
            msg = "missing required key"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown key (value {shown})"
        else:
            text = err["msg"].removeprefix("Value error, ")
            msg = f"{text} (got {shown})"
        issues.append(ConfigIssue(file, _path(loc, data), msg))
    return issues


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    """``data[key]`` where it is a table, else empty (the type check reports what it is)."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _semantic_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """Cross-field rules, run over the raw data so that they are reported beside type errors."""
    issues: list[ConfigIssue] = []
    areas = set(DEFAULT_AREAS) | set(_table(data, "areas"))
    partners = _table(data, "partners")
    sites = data.get("sites") or {}
    agents: Counter[str] = Counter()
    if not isinstance(sites, dict):
        return issues
    try:
        tz = ZoneInfo(str(_table(data, "accounting").get("timezone", "Europe/London")))
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("Europe/London")  # reported by _accounting_issues
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
        names = Counter(
            c["name"] for c in checks if isinstance(c, dict) and isinstance(c.get("name"), str)
        )
        seen: set[str] = set()
        for i, check in enumerate(checks):
            if not isinstance(check, dict):
                continue
            where = _path(("sites", site_id, "checks", i), data)
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
            added = _instant(check.get("added"), tz)
            retired = _instant(check.get("retired"), tz)
            if added is not None and retired is not None and retired <= added:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.retired",
                        f"{check['retired']} is not after added {check['added']}:"
                        " the check would count over no time",
                    )
                )
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
            if isinstance(dep, str):
                problem = _dependency_problem(sites, site_id, dep)
                if problem:
                    issues.append(ConfigIssue(file, f"{where}.depends_on", problem))
            interval, timeout = check.get("interval", 30), check.get("timeout", 5)
            try:
                t, iv = float(duration(timeout)), float(duration(interval))
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
            # A target holding credentials is already refused; its own check would echo it.
            if isinstance(target, str) and spec.check_target is not None and not redact_url(target):
                problem = spec.check_target(target)
                if problem:
                    issues.append(ConfigIssue(file, f"{where}.target", problem))
            options = {k: v for k, v in check.items() if k not in _CHECK_KEYS}
            given = check.get("options") or {}
            if not isinstance(given, dict):
                continue  # reported by the type check
            options.update(given)
            try:
                spec.parse_options(options)
            except ValidationError as exc:
                issues.extend(_issues_from(file, ("sites", site_id, "checks", i), exc, data))
    issues += _collector_issues(file, data)
    issues += alert_issues(file, data)
    for agent, count in agents.items():
        if count > 1:
            issues.append(
                ConfigIssue(file, "sites", f"agent id {agent!r} is used by {count} sites")
            )
    issues += _cycle_issues(file, data, sites)
    issues += _service_issues(file, data, sites, areas)
    issues += _maintenance_issues(file, data, sites, areas, partners)
    return issues


def split_ref(site: str, ref: str) -> tuple[str, str]:
    """``wan-link`` at ``site`` or ``dc/internet-link`` -> (site, check)."""
    if "/" in ref:
        other, name = ref.split("/", 1)
        return other, name
    return site, ref


def _site_checks(sites: dict[str, Any], site: str) -> set[Any] | None:
    s = sites.get(site)
    if not isinstance(s, dict):
        return None
    return {c.get("name") for c in s.get("checks") or [] if isinstance(c, dict)}


def _dependency_problem(sites: dict[str, Any], site: str, ref: str) -> str | None:
    other, name = split_ref(site, ref)
    names = _site_checks(sites, other)
    if names is None:
        return f"no site {other!r} (write site/check for a check at another site)"
    if name not in names:
        return f"no check named {name!r} in site {other!r}"
    return None


def _cycle_issues(file: str, data: dict[str, Any], sites: dict[str, Any]) -> list[ConfigIssue]:
    """A check may not depend on itself through others: its time would be booked nowhere."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}
    for sid, site in sites.items():
        if not isinstance(site, dict) or not isinstance(site.get("checks"), list):
            continue
        for c in site["checks"]:
            if isinstance(c, dict) and isinstance(c.get("depends_on"), str):
                key = (sid, str(c.get("name")))
                ref = split_ref(sid, c["depends_on"])
                if _dependency_problem(sites, sid, c["depends_on"]) is None:
                    parent[key] = ref
    issues = []
    for start in sorted(parent):
        seen = [start]
        node = parent.get(start)
        while node is not None and node not in seen:
            seen.append(node)
            node = parent.get(node)
        if node == start:
            loop = " -> ".join(f"{a}/{b}" for a, b in [*seen, start])
            issues.append(
                ConfigIssue(
                    file,
                    f"sites.{start[0]}.checks.{start[1]}.depends_on",
                    f"dependency loop: {loop}",
                )
            )
    return issues


def _service_issues(
    file: str, data: dict[str, Any], sites: dict[str, Any], areas: set[str]
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    services = data.get("services") or {}
    if not isinstance(services, dict):
        return issues
    owner: dict[str, str] = {}
    for sid, svc in services.items():
        if not isinstance(svc, dict):
            continue
        where = f"services.{sid}"
        members = svc.get("checks")
        if not isinstance(members, list):
            continue
        for ref in members:
            if not isinstance(ref, str):
                continue
            if "/" not in ref:
                issues.append(
                    ConfigIssue(
                        file, f"{where}.checks", f"write members as site/check (got {ref!r})"
                    )
                )
                continue
            site, _ = split_ref("", ref)
            problem = _dependency_problem(sites, site, ref)
            if problem:
                issues.append(ConfigIssue(file, f"{where}.checks", problem))
            elif ref in owner:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.checks",
                        f"{ref} is already a member of service {owner[ref]!r}",
                    )
                )
            else:
                owner[ref] = sid
        if not members:
            issues.append(
                ConfigIssue(file, f"{where}.checks", "a service needs at least one member")
            )
        quorum = svc.get("quorum", 2)
        if isinstance(quorum, bool):
            issues.append(
                ConfigIssue(
                    file,
                    f"{where}.quorum",
                    f"expected a number of members or a percentage such as '50%' (got {quorum})",
                )
            )
        elif isinstance(quorum, int):
            if not 1 <= quorum <= len(members):
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.quorum",
                        f"quorum must be between 1 and the {len(members)} members (got {quorum})",
                    )
                )
        elif isinstance(quorum, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", quorum)
            if not m or not 0 < float(m.group(1)) <= 100:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.quorum",
                        "expected a number of members or a percentage such as '50%'"
                        f" (got {quorum!r})",
                    )
                )
        for key in ("area", "path_area"):
            area = svc.get(key)
            if isinstance(area, str) and area not in areas:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.{key}",
                        f"unknown area {area!r} (known: {', '.join(sorted(areas))})",
                    )
                )
        home = svc.get("site")
        if isinstance(home, str) and home not in sites:
            issues.append(ConfigIssue(file, f"{where}.site", f"no site {home!r}"))
    return issues


def _maintenance_issues(
    file: str,
    data: dict[str, Any],
    sites: dict[str, Any],
    areas: set[str],
    partners: dict[str, Any],
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    windows = data.get("maintenance") or []
    if not isinstance(windows, list):
        return issues
    names: Counter[str] = Counter()
    services = data.get("services") or {}
    for i, w in enumerate(windows):
        if not isinstance(w, dict):
            continue
        name = w.get("name")
        where = f"maintenance.{name}" if isinstance(name, str) else f"maintenance[{i}]"
        if isinstance(name, str):
            names[name] += 1
            if names[name] == 2:
                issues.append(ConfigIssue(file, f"{where}.name", f"duplicate window {name!r}"))
        issues += scope_issues(
            file, where, w, sites=sites, areas=areas, partners=partners, services=services
        )
        tz = w.get("timezone")
        if isinstance(tz, str):
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                issues.append(ConfigIssue(file, f"{where}.timezone", f"unknown timezone {tz!r}"))
        first, last = _day(w.get("first_day")), _day(w.get("last_day"))
        if first is not None and last is not None and last < first:
            issues.append(
                ConfigIssue(
                    file,
                    f"{where}.last_day",
                    f"{last} is before first_day {first}: the window would cover nothing",
                )
            )
    return issues


def _instant(value: Any, tz: ZoneInfo) -> datetime | None:
    """A check's ``added`` or ``retired`` as the accounting reads it (a day or a local time
    in ``tz``), None where the type check reports it."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=tz)
    return None


def _day(value: Any) -> date | None:
    """A day as the config gives it (TOML date or text), None where the type check reports
    it."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, date) and not isinstance(value, datetime) else None


def scope_issues(
    file: str,
    where: str,
    scope: dict[str, Any],
    *,
    sites: dict[str, Any],
    areas: set[str],
    partners: dict[str, Any],
    services: dict[str, Any],
) -> list[ConfigIssue]:
    """References in a window's scope that match nothing: a window that silently covers
    nothing is worse than an error."""
    issues: list[ConfigIssue] = []
    known = {
        "sites": set(sites),
        "areas": areas,
        "partners": set(partners) if partners else None,
    }
    for key, names in known.items():
        values = scope.get(key)
        if names is None or not isinstance(values, list):
            continue
        for v in values:
            if isinstance(v, str) and v not in names:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.{key}",
                        f"unknown {key[:-1]} {v!r} (known: {', '.join(sorted(names))})",
                    )
                )
    checks = scope.get("checks")
    if isinstance(checks, list):
        every = {
            (sid, c.get("name"))
            for sid, s in sites.items()
            if isinstance(s, dict)
            for c in (s.get("checks") or [])
            if isinstance(c, dict)
        }
        for ref in checks:
            if not isinstance(ref, str):
                continue
            if "/" in ref:
                hit = tuple(ref.split("/", 1)) in every
            else:
                hit = any(n == ref for _, n in every) or ref in services
            if not hit:
                issues.append(ConfigIssue(file, f"{where}.checks", f"no check or service {ref!r}"))
    return issues


def _accounting_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """Settings every figure depends on, refused here rather than by the first report or
    alert that uses them (an unknown zone was a traceback there; hours that end before they
    start gave negative business time)."""
    acc = data.get("accounting")
    if not isinstance(acc, dict):
        return []
    issues: list[ConfigIssue] = []
    tz = acc.get("timezone")
    if isinstance(tz, str):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            issues.append(ConfigIssue(file, "accounting.timezone", f"unknown timezone {tz!r}"))
    start, end = (
        _clock(acc.get(k, d)) for k, d in (("business_start", "08:30"), ("business_end", "17:00"))
    )
    if start is not None and end is not None and end <= start:
        issues.append(
            ConfigIssue(
                file,
                "accounting.business_end",
                f"{end:%H:%M} is not after business_start {start:%H:%M}"
                " (business hours are one stretch of each business day)",
            )
        )
    country = acc.get("holidays_country", _DEFAULT_HOLIDAYS[0])
    subdiv = acc.get(
        "holidays_subdiv", _DEFAULT_HOLIDAYS[1] if country == _DEFAULT_HOLIDAYS[0] else None
    )
    if isinstance(country, str) and (subdiv is None or isinstance(subdiv, str)):
        problem = _holidays_problem(country, subdiv)
        if problem:
            key, message = problem
            issues.append(ConfigIssue(file, f"accounting.{key}", message))
    return issues


def _clock(value: Any) -> time | None:
    """A time of day as the config gives it (TOML time or text), None where the type check
    reports it."""
    if isinstance(value, str):
        try:
            value = time.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, time) and value.tzinfo is None else None


def _holidays_problem(country: str, subdiv: str | None) -> tuple[str, str] | None:
    """(key, message) where the ``holidays`` library knows no such country or region."""
    if (country, subdiv) == _DEFAULT_HOLIDAYS:
        return None
    import holidays

    regions = holidays.list_supported_countries()
    if country not in regions:
        return (
            "holidays_country",
            f"unknown country {country!r}: an ISO 3166 code the holidays library knows,"
            " such as 'GB' or 'IE'",
        )
    try:
        holidays.country_holidays(country, subdiv=subdiv)
    except NotImplementedError:
        known = ", ".join(regions[country]) or "none"
        return (
            "holidays_subdiv",
            f'{country} has no region {subdiv!r} (known: {known}; "" for the whole country)',
        )
    return None


def _seconds(table: dict[str, Any], key: str, default: float | None) -> float | None:
    """A duration setting in seconds, None where it is not given (without a default) or the
    type check reports it."""
    try:
        value = duration(table.get(key, default))
    except ValueError:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return float(value) if ok else None


def _timing_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """Durations that only make sense against another: a collector that gave up on an
    agent's heartbeat before the next one was due marked every agent offline between
    heartbeats (not-monitored time, then provisional outages); one that counted an event
    missing before the agent would publish it again reported losses that were not."""
    collector, agent = _table(data, "collector"), _table(data, "agent")
    issues: list[ConfigIssue] = []
    interval = _seconds(agent, "heartbeat_interval", 30.0)
    timeout = _seconds(collector, "heartbeat_timeout", None)
    if interval is not None and timeout is not None and timeout <= interval:
        issues.append(
            ConfigIssue(
                file,
                "collector.heartbeat_timeout",
                f"{timeout:g} s is not longer than agent.heartbeat_interval ({interval:g} s):"
                " every agent would be offline between heartbeats",
            )
        )
    ack = _seconds(agent, "ack_timeout", 30.0)
    grace = _seconds(collector, "gap_grace", 120.0)
    if ack is not None and grace is not None and grace <= ack:
        issues.append(
            ConfigIssue(
                file,
                "collector.gap_grace",
                f"{grace:g} s is not longer than agent.ack_timeout ({ack:g} s): events an"
                " agent is about to publish again would be counted missing",
            )
        )
    return issues


#: Secrets of the broker, agent and web settings: ``<stem>_file`` or ``<stem>_env``.
_SECRETS = (("broker", "password"), ("agent", "password"), ("web", "token"), ("web", "read_token"))


def _secret_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """One source per secret, as the alert channels ask: with both, the file silently won."""
    issues: list[ConfigIssue] = []
    for section, stem in _SECRETS:
        table = _table(data, section)
        if table.get(f"{stem}_file") is not None and table.get(f"{stem}_env") is not None:
            issues.append(ConfigIssue(file, section, f"give {stem}_file or {stem}_env, not both"))
        env = table.get(f"{stem}_env")
        if isinstance(env, str) and not env.strip():
            issues.append(
                ConfigIssue(
                    file,
                    f"{section}.{stem}_env",
                    "expected the name of an environment variable (got '')",
                )
            )
    return issues


def _collector_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """A collector pair: this collector is one of the members, and agents wait only for
    collectors that exist."""
    collector = data.get("collector") or {}
    agent = data.get("agent") or {}
    if not isinstance(collector, dict) or not isinstance(agent, dict):
        return []
    client_id = collector.get("client_id", "availmon-collector")
    members = collector.get("members") or [client_id]
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        return []  # reported by the type check
    issues = []
    if len(set(members)) != len(members):
        issues.append(
            ConfigIssue(file, "collector.members", f"a collector is listed twice (got {members})")
        )
    if "members" in collector and client_id not in members:
        issues.append(
            ConfigIssue(
                file,
                "collector.client_id",
                f"{client_id!r} is not one of collector.members ({', '.join(members)})",
            )
        )
    confirm_by = agent.get("confirm_by")
    if isinstance(confirm_by, list):
        for i, name in enumerate(confirm_by):
            if name not in members:
                issues.append(
                    ConfigIssue(
                        file,
                        f"agent.confirm_by[{i}]",
                        f"{name!r} is not a collector (collector.members: {', '.join(members)})",
                    )
                )
    return issues


def parse_config(data: dict[str, Any], file: str = "<config>") -> Estate:
    # Nothing secret inline, anywhere (issue 15): refused with its key path, value hidden.
    found = inline_secrets((), data, lambda loc: _path(loc, data))
    issues = [ConfigIssue(file, path, message) for path, message in found]
    issues += _semantic_issues(file, data)
    issues += _accounting_issues(file, data)
    issues += _timing_issues(file, data)
    issues += _secret_issues(file, data)
    estate: Estate | None = None
    try:
        estate = Estate.model_validate(data)
    except ValidationError as exc:
        issues = _issues_from(file, (), exc, data) + issues
    if issues or estate is None:
        raise ConfigError(issues)
    return estate


def load_config(path: str | Path) -> Estate:
    file = str(path)
    try:
        raw = read_limited(path, CONFIG_MAX_BYTES, pipes=True)
    except NotAFile as exc:
        raise ConfigError([ConfigIssue(file, "", f"cannot read: {exc}")]) from exc
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, "", f"cannot read: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(file, "", f"not valid TOML: {exc}")]) from exc
    except RecursionError as exc:  # tomllib parses nested arrays and tables recursively
        raise ConfigError([ConfigIssue(file, "", "not valid TOML: nested too deeply")]) from exc
    return parse_config(data, file)


def summary(estate: Estate) -> str:
    per_area: Counter[str] = Counter()
    for site in estate.sites.values():
        for check in site.checks:
            per_area[check.area] += 1
    total = sum(per_area.values())
    areas = ", ".join(f"{a} {n}" for a, n in sorted(per_area.items())) or "none"
    alerts = estate.alerts
    routes, channels = len(alerts.routes), len(alerts.channels)
    routed = (
        f"; {routes} alert route{'s' * (routes != 1)}, {channels} channel{'s' * (channels != 1)}"
        if routes or channels
        else ""
    )
    return f"ok: {len(estate.sites)} sites, {total} checks ({areas}){routed}"
