"""The ``[alerts]`` section of the estate config: channels and routes (issue 11).

Routes pick the channels an outage goes to, matching on area, site, partner, check, state,
severity and business hours; each says how long to wait before the first message, how
often to repeat it and where to escalate while nobody acknowledges it. Channels say how to
reach people; their secrets (an SMTP password, a webhook's signing key, a Slack or Teams
webhook URL, which is itself the credential) come from ``*_file`` or ``*_env`` keys.

A shared module: it imports nothing from ``agent/`` or ``collector/``; the collector's
channel modules (``collector/channels/``) take these models.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from availmon.durations import Seconds, duration
from availmon.errors import ConfigIssue
from availmon.secrets import resolve_secret, shown

#: The longest wait, repeat, escalation or flapping hold: 30 days.
LONGEST_DELAY = 30 * 86400.0
#: The shortest repeat but 0 ("never"): a minute (``repeat = 0.001`` sent a message a step).
SHORTEST_REPEAT = 60.0
#: The shortest channel timeout (``timeout = 0.001`` failed every delivery, for ever): a
#: tenth of a second, which a receiver on the same LAN can keep to.
SHORTEST_TIMEOUT = 0.1
#: A duration where 0 means "at once" (wait) or "never" (repeat, flapping hold).
Delay = Annotated[float, BeforeValidator(duration), Field(ge=0, le=LONGEST_DELAY)]


def _repeat(value: float) -> float:
    if 0 < value < SHORTEST_REPEAT:
        raise ValueError("expected 0 (never) or at least a minute ('1m')")
    return value


#: How often a message is sent again: 0 (never), or from a minute to 30 days.
Repeat = Annotated[Delay, AfterValidator(_repeat)]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
Name = Annotated[str, Field(pattern=_NAME, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]
_BRACKETED = re.compile(r"\[[^\[\]]*\](:[^:]*)?")


def _http_url(url: str) -> str:
    """A URL a channel can post to. The pattern alone let through a port of 70000 or
    ``abc``, ``http://[::1/`` and ``http://:80/``, which aiohttp refuses: every delivery
    failed and was retried for ever. The messages never repeat the URL (it may hold a
    password): the config error shows it, hidden if need be."""
    bad_host = "expected a host name, an IPv4 address or an IPv6 address in brackets"
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(bad_host) from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise ValueError("expected a host after '//', such as 'http://alertmanager.internal'")
    host_port = parts.netloc.rpartition("@")[2]
    if "\\" in host_port or (host_port.startswith("[") and not _BRACKETED.fullmatch(host_port)):
        raise ValueError(bad_host)
    if not host.isascii():
        try:
            host.encode("idna")
        except UnicodeError:
            raise ValueError(bad_host) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("expected a port from 1 to 65535 after the host")
    return url


HttpUrl = Annotated[
    str,
    Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=2000),
    AfterValidator(_http_url),
]
Address = Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=254)]
#: A DNS label as SMTP relays are named (an underscore is tolerated: internal names have it).
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _smtp_host(host: str) -> str:
    """A host an SMTP client can connect to. Anything went, so ``smtp://mail:25``,
    ``mail.council.example:587`` or ``mail relay`` failed every send, and the alert was
    retried for ever. An IPv6 address may be given bare or in brackets; it is kept bare."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if "://" in host:
        raise ValueError("expected a host name or an address, not a URL")
    if ":" in host:
        raise ValueError("expected a host name or an address; the port goes in 'port'")
    name = host.removesuffix(".")
    try:
        ascii_name = name if name.isascii() else name.encode("idna").decode()
    except UnicodeError:
        ascii_name = ""
    labels = ascii_name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError("expected a host name (letters, digits, '-' and '.') or an IP address")
    if all(label.isdigit() for label in labels):  # 127.0.0.256, 10.1: no host has that name
        raise ValueError("expected an IPv4 address of four numbers from 0 to 255")
    return host


SmtpHost = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_smtp_host)]


def _channel_timeout(value: float) -> float:
    if value < SHORTEST_TIMEOUT:
        raise ValueError("expected at least 100ms: a shorter one fails every delivery")
    return value


#: How long a channel waits for its peer: from a tenth of a second to ``Seconds``' longest.
ChannelTimeout = Annotated[Seconds, AfterValidator(_channel_timeout)]

#: How much an alert matters: down is a page (wake someone), degraded a ticket.
Severity = Literal["page", "ticket"]
Hours = Literal["any", "business", "out_of_hours"]
AlertState = Literal["down", "degraded"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AlertmanagerChannel(_Frozen):
    """Prometheus Alertmanager: alerts POSTed to ``/api/v2/alerts`` with start and end."""

    type: Literal["alertmanager"]
    #: Alertmanager's base URL, e.g. ``http://alertmanager.internal:9093``.
    url: HttpUrl
    bearer_token_file: Path | None = None
    bearer_token_env: str | None = None
    timeout: ChannelTimeout = 10.0

    def bearer_token(self) -> str | None:
        return resolve_secret(self.bearer_token_file, self.bearer_token_env, "bearer_token")


class WebhookChannel(_Frozen):
    """A generic JSON webhook, signed with HMAC-SHA256 over the timestamp and the body."""

    type: Literal["webhook"]
    url: HttpUrl
    #: The signing key shared with the receiver (required: an unsigned alert can be forged).
    secret_file: Path | None = None
    secret_env: str | None = None
    timeout: ChannelTimeout = 10.0

    def secret(self) -> str:
        value = resolve_secret(self.secret_file, self.secret_env, "secret")
        assert value is not None  # required by the config check
        return value


class EmailChannel(_Frozen):
    """Email over SMTP (STARTTLS by default), a plain-text and an HTML part."""

    type: Literal["email"]
    host: SmtpHost
    port: Port = 587
    #: ``starttls`` (upgrade a plain connection), ``tls`` (implicit TLS, port 465) or
    #: ``none`` (a relay on the same host only).
    security: Literal["starttls", "tls", "none"] = "starttls"
    #: A CA bundle for the server's certificate (default: the system's).
    ca_file: Path | None = None
    #: With a password (``password_file`` or ``password_env``); neither, or both.
    username: str | None = Field(default=None, min_length=1, max_length=254)
    password_file: Path | None = None
    password_env: str | None = None
    sender: Address = Field(alias="from")
    to: tuple[Address, ...] = Field(min_length=1, max_length=100)
    timeout: ChannelTimeout = 30.0

    def password(self) -> str | None:
        return resolve_secret(self.password_file, self.password_env, "password")


class SlackChannel(_Frozen):
    """A Slack incoming webhook. Its URL is the credential: from ``url_file``/``url_env``."""

    type: Literal["slack"]
    url_file: Path | None = None
    url_env: str | None = None
    timeout: ChannelTimeout = 10.0

    def url(self) -> str:
        return _secret_url(self.url_file, self.url_env)


class TeamsChannel(_Frozen):
    """A Microsoft Teams incoming webhook (a Workflows or connector URL, which is the
    credential: from ``url_file``/``url_env``); the message is an Adaptive Card."""

    type: Literal["teams"]
    url_file: Path | None = None
    url_env: str | None = None
    timeout: ChannelTimeout = 10.0

    def url(self) -> str:
        return _secret_url(self.url_file, self.url_env)


def _secret_url(url_file: Path | None, url_env: str | None) -> str:
    """A chat webhook's URL, which is its credential and so read from a secret: checked as
    a config's URLs are (an http(s) URL with a host and a port aiohttp takes), at start, or
    every delivery fails and is retried for ever. The error never shows the URL."""
    from availmon.errors import StartupError

    value = resolve_secret(url_file, url_env, "url")
    assert value is not None  # required by the config check
    try:
        return _http_url(value)
    except ValueError as exc:
        where = f"url_file: {url_file}" if url_file is not None else f"url_env: {url_env}"
        raise StartupError(f"{where}: {exc}") from None


Channel = Annotated[
    AlertmanagerChannel | WebhookChannel | EmailChannel | SlackChannel | TeamsChannel,
    Field(discriminator="type"),
]
CHANNEL_TYPES = ("alertmanager", "webhook", "email", "slack", "teams")
#: The secret each channel type needs: (key stem, required).
_CHANNEL_SECRETS: dict[str, tuple[str, bool]] = {
    "alertmanager": ("bearer_token", False),
    "webhook": ("secret", True),
    "email": ("password", False),
    "slack": ("url", True),
    "teams": ("url", True),
}


class Route(_Frozen):
    """Which outages go where. A filter left empty matches everything; routes are tried in
    order and the first that matches wins, unless it says ``continue = true``."""

    name: Name
    areas: tuple[Name, ...] = ()
    sites: tuple[Name, ...] = ()
    partners: tuple[Name, ...] = ()
    checks: tuple[Name, ...] = ()
    states: tuple[AlertState, ...] = ()
    severities: tuple[Severity, ...] = ()
    #: ``business`` (the reports' calendar: accounting.business_*), ``out_of_hours`` or ``any``.
    hours: Hours = "any"
    channels: tuple[Name, ...] = Field(min_length=1)
    #: How long an outage must last before its first message (0: at once).
    wait: Delay = 0.0
    #: Send again this often while it lasts unacknowledged (0: never; else a minute to 30
    #: days).
    repeat: Repeat = 0.0
    #: Unacknowledged this long after the first message: also send to ``escalate_to`` (at
    #: most 30 days, as ``wait``).
    escalate_after: Annotated[Seconds, Field(le=LONGEST_DELAY)] | None = None
    escalate_to: Name | None = None
    continue_: bool = Field(default=False, alias="continue")

    @model_validator(mode="after")
    def _escalation_pair(self) -> Route:
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise ValueError("escalate_after and escalate_to go together")
        return self


class AlertsConfig(_Frozen):
    #: The board's address as people reach it, for links in messages (default: the
    #: collector's own web.listen and web.port).
    board_url: HttpUrl | None = None
    channels: dict[Name, Channel] = Field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    #: Delivery retries: the first after this, doubling up to ``retry_max`` (not less than
    #: this), for ever: a channel that is down delays an alert, never drops it.
    retry_initial: Seconds = 5.0
    retry_max: Seconds = 600.0
    #: Flapping: a check with ``flap_count`` outages starting within ``flap_window`` (this
    #: one included) is flapping, and its outage is sent only once it has lasted
    #: ``flap_hold`` (0 for flap_count: no hold).
    flap_count: Annotated[int, Field(ge=0, le=1000)] = 4
    flap_window: Seconds = 1800.0
    flap_hold: Delay = 600.0
    #: An outage first learnt of (a spool replayed late) after it ended this long ago is
    #: recorded, not sent.
    late_limit: Seconds = 3600.0


def alert_issues(file: str, data: dict[str, Any]) -> list[ConfigIssue]:
    """Cross-field rules of ``[alerts]``: channels and routes that exist, escalations that
    end, filters that name things in the estate, and every required secret given."""
    alerts = data.get("alerts")
    if not isinstance(alerts, dict):
        return []
    issues = _retry_issues(file, alerts)
    channels = alerts.get("channels") or {}
    routes = alerts.get("routes") or []
    if not isinstance(channels, dict) or not isinstance(routes, list):
        return issues  # the rest is reported by the type check
    for name, ch in channels.items():
        if not isinstance(ch, dict) or not isinstance(ch.get("type"), str):
            continue  # reported by the type check
        if ch["type"] not in _CHANNEL_SECRETS:
            continue
        stem, required = _CHANNEL_SECRETS[ch["type"]]
        given = [k for k in (f"{stem}_file", f"{stem}_env") if ch.get(k) is not None]
        if len(given) > 1:
            issues.append(
                ConfigIssue(
                    file, f"alerts.channels.{name}", f"give {stem}_file or {stem}_env, not both"
                )
            )
        elif required and not given:
            issues.append(
                ConfigIssue(
                    file,
                    f"alerts.channels.{name}",
                    f"a {ch['type']} channel needs {stem}_file or {stem}_env",
                )
            )
        if ch["type"] == "email":
            issues += _login_issues(file, name, ch)
    sites = data.get("sites") if isinstance(data.get("sites"), dict) else {}
    assert isinstance(sites, dict)
    partners = data.get("partners")
    known = {
        "areas": _known_areas(data),
        "sites": set(sites),
        "partners": set(partners) if isinstance(partners, dict) else set(),
        "checks": {
            c["name"]
            for s in sites.values()
            if isinstance(s, dict) and isinstance(s.get("checks"), list)
            for c in s["checks"]
            if isinstance(c, dict) and isinstance(c.get("name"), str)
        },
    }
    names: dict[str, int] = {}
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        where = f"alerts.routes[{i}]"
        name = route.get("name")
        if isinstance(name, str):
            if name in names:
                issues.append(
                    ConfigIssue(file, f"{where}.name", f"route {name!r} is defined twice")
                )
            names.setdefault(name, i)
        chosen = route.get("channels")
        # Anything but a list (a string is not split into letters) is the type check's.
        for j, ch in enumerate(chosen if isinstance(chosen, list) else []):
            if isinstance(ch, str) and ch not in channels:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.channels[{j}]",
                        f"no channel {ch!r} (alerts.channels: {', '.join(channels) or 'none'})",
                    )
                )
        for key, pool in known.items():
            values = route.get(key) or []
            if not isinstance(values, list) or (key == "partners" and not pool):
                continue
            for j, value in enumerate(values):
                if isinstance(value, str) and value not in pool:
                    shown = ", ".join(sorted(str(p) for p in pool)) or "none"
                    issues.append(
                        ConfigIssue(
                            file,
                            f"{where}.{key}[{j}]",
                            f"no {key[:-1]} {value!r} in the estate (known: {shown})",
                        )
                    )
    targets: dict[str, Any] = {}
    for r in routes:
        if isinstance(r, dict) and isinstance(r.get("name"), str):
            targets.setdefault(r["name"], r.get("escalate_to"))
    for name, i in names.items():
        target = targets.get(name)
        if not isinstance(target, str):
            continue
        where = f"alerts.routes[{i}].escalate_to"
        if target not in targets:
            issues.append(
                ConfigIssue(
                    file, where, f"no route {target!r} (routes: {', '.join(targets) or 'none'})"
                )
            )
            continue
        seen = [name]
        step: Any = target
        while isinstance(step, str) and step in targets and step not in seen:
            seen.append(step)
            step = targets[step]
        if step in seen:
            issues.append(
                ConfigIssue(
                    file,
                    where,
                    f"escalation goes round in a circle ({' -> '.join([*seen, step])})",
                )
            )
    return issues


#: Where an email channel's password may come from.
_PASSWORD_KEYS = ("password_file", "password_env")


def _login_issues(file: str, name: str, ch: dict[str, Any]) -> list[ConfigIssue]:
    """An SMTP login takes a username and a password: one without the other was ignored
    (a password) or failed every send (a username)."""
    where = f"alerts.channels.{name}.username"
    sources = [k for k in _PASSWORD_KEYS if ch.get(k) is not None]
    username = ch.get("username")
    if username is not None and (not isinstance(username, str) or not username):
        return []  # reported by the type check
    if sources and username is None:
        return [ConfigIssue(file, where, f"{sources[0]} needs a username")]
    if username is not None and not sources:
        got = shown(("alerts", "channels", name, "username"), username)
        needs = " or ".join(_PASSWORD_KEYS)
        return [ConfigIssue(file, where, f"a username needs {needs} (got {got})")]
    return []


def _retry_issues(file: str, alerts: dict[str, Any]) -> list[ConfigIssue]:
    """``retry_initial`` longer than ``retry_max`` would never take effect: named where it
    was written (``retry_initial``, else ``retry_max``)."""
    initial = alerts.get("retry_initial", AlertsConfig.model_fields["retry_initial"].default)
    most = alerts.get("retry_max", AlertsConfig.model_fields["retry_max"].default)
    try:
        first, cap = float(duration(initial)), float(duration(most))
    except (TypeError, ValueError):
        return []  # reported by the type check
    if not 0 < cap < first:
        return []
    if "retry_initial" not in alerts:
        return [
            ConfigIssue(
                file,
                "alerts.retry_max",
                f"retry_max {most!r} is shorter than retry_initial ({first:g} s by default)",
            )
        ]
    limit = f"{most!r}" if "retry_max" in alerts else f"({cap:g} s by default)"
    return [
        ConfigIssue(
            file,
            "alerts.retry_initial",
            f"retry_initial {initial!r} is longer than retry_max {limit}",
        )
    ]


def _known_areas(data: dict[str, Any]) -> set[str]:
    from availmon.areas import DEFAULT_AREAS

    areas = data.get("areas")
    return set(DEFAULT_AREAS) | (set(areas) if isinstance(areas, dict) else set())
