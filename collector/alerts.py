"""From outages to notifications (issue 11): routes, waits, repeats, escalation, flapping,
suppression and acknowledgement, decided by pure functions on a clock the caller passes.

The collector derives outages from committed events; this module never sees a probe. One
alert per outage: it is created when the engine first sees the outage, matched once to its
routes (business hours or not is decided then), and each step compares it with the outage
as it now stands. What a step decides to say is a list of :class:`Notice` s, which the
outbox (``collector/outbox.py``) turns into one message per channel, keyed so that the same
notice is never queued twice.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from availmon.alertconfig import AlertsConfig, Route
from availmon.config import Estate, split_ref
from availmon.text import one_line
from collector.accounting import BusinessCalendar, to_us
from collector.attribution import Reason

Kind = Literal["firing", "repeat", "escalation", "resolved", "test"]
#: An alert's life: open while its outage lasts; resolved when it ended; ``late`` when the
#: engine learnt of it too late to tell anyone; ``before`` for outages that had ended before
#: alerting was installed.
Status = Literal["open", "resolved", "late", "before"]


@dataclass(frozen=True)
class OutageInfo:
    """An outage as the engine needs it (annotations applied)."""

    id: str
    site: str
    agent: str | None
    check: str | None
    area: str
    state: str
    start: datetime
    end: datetime | None
    source: str = "agent"
    planned: bool = False
    cause: str | None = None
    provider: str | None = None
    note: str | None = None
    #: What the probes saw in the run that opened it (the start event's evidence).
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class RouteState:
    """Where one route of an alert stands."""

    route: str
    #: 0: matched; n: reached by the n-th escalation.
    level: int
    #: When its first message is due (the outage's start + the route's wait, or later).
    first_at: datetime
    sent: bool = False
    repeats: int = 0
    next_repeat: datetime | None = None
    escalate_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "level": self.level,
            "first_at": self.first_at.isoformat(),
            "sent": self.sent,
            "repeats": self.repeats,
            "next_repeat": self.next_repeat.isoformat() if self.next_repeat else None,
            "escalate_at": self.escalate_at.isoformat() if self.escalate_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouteState:
        def t(key: str) -> datetime | None:
            v = data.get(key)
            return datetime.fromisoformat(v) if v else None

        first = t("first_at")
        assert first is not None
        return cls(
            data["route"],
            int(data["level"]),
            first,
            bool(data["sent"]),
            int(data["repeats"]),
            t("next_repeat"),
            t("escalate_at"),
        )


@dataclass
class Alert:
    """One outage's alert."""

    outage_id: str
    site: str
    check: str | None
    area: str
    state: str
    severity: str
    start: datetime
    end: datetime | None
    created_at: datetime
    status: Status = "open"
    routes: list[RouteState] = field(default_factory=list)
    #: Why its messages are held back (maintenance, a dependency down), or None.
    suppressed: str | None = None
    flapping: bool = False
    acked_at: datetime | None = None
    acked_by: str | None = None

    def due(self) -> datetime | None:
        """The next time a step can change anything by the clock alone."""
        if self.status != "open":
            return None
        times: list[datetime] = []
        for r in self.routes:
            if not r.sent:
                times.append(r.first_at)
            elif self.acked_at is None:
                times += [t for t in (r.next_repeat, r.escalate_at) if t is not None]
        return min(times, default=None)

    @property
    def notified(self) -> bool:
        return any(r.sent for r in self.routes)


@dataclass(frozen=True)
class Notice:
    """Something to tell a route's channels about an alert; ``n`` tells repeats apart."""

    kind: Kind
    route: str
    n: int = 0


@dataclass(frozen=True)
class Context:
    """What a step needs besides the alert and the outage."""

    config: AlertsConfig
    calendar: BusinessCalendar
    estate: Estate

    @classmethod
    def of(cls, estate: Estate) -> Context:
        return cls(estate.alerts, BusinessCalendar.from_accounting(estate.accounting), estate)

    def route(self, name: str) -> Route:
        for r in self.config.routes:
            if r.name == name:
                return r
        raise KeyError(name)


def severity_of(outage: OutageInfo, estate: Estate) -> str:
    """Degraded is a ticket; down is what the check says (a page unless set otherwise)."""
    if outage.state == "degraded":
        return "ticket"
    site = estate.sites.get(outage.site)
    if site is None or outage.check is None:
        return "page"
    check = estate.check(outage.site, outage.check)
    return check.severity if check is not None else "page"


def in_business_hours(calendar: BusinessCalendar, at: datetime) -> bool:
    us = to_us(at)
    return bool(calendar.spans(us, us + 1))


def matching_routes(ctx: Context, outage: OutageInfo, severity: str, business: bool) -> list[Route]:
    """The routes an outage goes to: the first that matches, and the next ones while a
    matching route says ``continue``."""
    partner = ctx.estate.sites[outage.site].partner if outage.site in ctx.estate.sites else None
    out: list[Route] = []
    for r in ctx.config.routes:
        if (
            (r.areas and outage.area not in r.areas)
            or (r.sites and outage.site not in r.sites)
            or (r.partners and partner not in r.partners)
            or (r.checks and outage.check not in r.checks)
            or (r.states and outage.state not in r.states)
            or (r.severities and severity not in r.severities)
            or (r.hours == "business" and not business)
            or (r.hours == "out_of_hours" and business)
        ):
            continue
        out.append(r)
        if not r.continue_:
            break
    return out


_DEPENDS = re.compile(r"^depends on (?P<parent>\S+) \((?P<state>down|unknown|degraded)\)")


def depends_on_down(outage: OutageInfo) -> str | None:
    """The check this outage's agent said it depends on, when that was down at the time."""
    m = _DEPENDS.match(str(outage.evidence.get("cause") or ""))
    return m.group("parent") if m and m.group("state") != "degraded" else None


def suppressed(outage: OutageInfo, standing: Reason | None = None) -> str | None:
    """Why this outage's alert is held back, or None (issue 11, part 3). The one place that
    knows: planned work (an outage marked planned, or inside a maintenance window), a check
    behind a dependency that is down (the dependency's own alert names it), and a quorum
    service's member that too few sites see. ``standing``: what the report's rules make of
    the outage now (:func:`collector.standing.open_verdicts`)."""
    if outage.planned:
        why = outage.cause or outage.note
        return f"planned maintenance{f': {why}' if why else ''}"
    parent = depends_on_down(outage)
    if parent is not None:
        return f"depends on {parent}, which is down at {outage.site}"
    if standing is None:
        return None
    if standing.kind == "maintenance":
        return f"planned maintenance: {standing.text}"
    if standing.kind == "unreachable":
        where, check = split_ref(outage.site, standing.ref)
        return f"depends on {check}, which is down at {where}"
    return standing.text


def _hold(ctx: Context, flapping: bool) -> float:
    return ctx.config.flap_hold if flapping else 0.0


def open_alert(
    ctx: Context, outage: OutageInfo, now: datetime, *, recent_starts: int
) -> Alert | None:
    """A new alert for an outage seen for the first time, or None for one nobody is told
    about (an ``unknown`` interval: not monitored, not down). ``recent_starts``: outages of
    the same check that began within ``flap_window`` before this one (this one excluded)."""
    if outage.state not in ("down", "degraded"):
        return None
    severity = severity_of(outage, ctx.estate)
    cfg = ctx.config
    flapping = cfg.flap_count > 0 and recent_starts + 1 >= cfg.flap_count
    alert = Alert(
        outage.id,
        outage.site,
        outage.check,
        outage.area,
        outage.state,
        severity,
        outage.start,
        outage.end,
        now,
        flapping=flapping,
    )
    if outage.end is not None and outage.end < now - timedelta(seconds=cfg.late_limit):
        alert.status = "late"
        return alert
    business = in_business_hours(ctx.calendar, now)
    hold = _hold(ctx, flapping)
    for r in matching_routes(ctx, outage, severity, business):
        wait = max(r.wait, hold)
        alert.routes.append(RouteState(r.name, 0, outage.start + timedelta(seconds=wait)))
    return alert


def step(
    ctx: Context, alert: Alert, outage: OutageInfo | None, now: datetime, why: str | None = None
) -> tuple[Alert, list[Notice]]:
    """Bring an alert up to date with its outage (None: the outage is gone, its record
    revised away) at ``now``; the notices to send. ``why``: the reason its messages are held
    back now (:func:`suppressed`), if any. Pure: the alert passed in is not changed."""
    a = dataclasses.replace(alert, routes=[dataclasses.replace(r) for r in alert.routes])
    notices: list[Notice] = []
    if a.status != "open":
        return a, notices
    ended = outage is None or outage.end is not None
    end = outage.end if outage is not None else None
    if outage is not None:
        a.suppressed, a.end = why, end
    # A first message due before the end goes out even if the outage has ended since (a
    # collector restarted, an agent's spool replayed late): told late rather than never. An
    # outage shorter than the wait (or the flapping hold) is never told; nor one revised away.
    for r in a.routes:
        if r.sent or a.suppressed is not None or outage is None:
            continue
        if r.first_at <= now and (end is None or r.first_at < end):
            notices.append(Notice("firing", r.route, 0))
            _sent(ctx, r, now)
    if ended:
        a.status = "resolved"
        for r in a.routes:
            if r.sent:
                notices.append(Notice("resolved", r.route, 0))
        return a, notices
    if a.acked_at is None and a.suppressed is None:
        for r in list(a.routes):
            if not r.sent:
                continue
            if r.next_repeat is not None and r.next_repeat <= now:
                r.repeats += 1
                notices.append(Notice("repeat", r.route, r.repeats))
                route = ctx.route(r.route)
                r.next_repeat = now + timedelta(seconds=route.repeat)
            if r.escalate_at is not None and r.escalate_at <= now:
                r.escalate_at = None
                target = ctx.route(r.route).escalate_to
                if target is not None and all(x.route != target for x in a.routes):
                    up = RouteState(target, r.level + 1, now)
                    notices.append(Notice("escalation", target, r.level + 1))
                    _sent(ctx, up, now)
                    a.routes.append(up)
    return a, notices


def _sent(ctx: Context, r: RouteState, now: datetime) -> None:
    route = ctx.route(r.route)
    r.sent = True
    r.next_repeat = now + timedelta(seconds=route.repeat) if route.repeat > 0 else None
    r.escalate_at = (
        now + timedelta(seconds=route.escalate_after) if route.escalate_after is not None else None
    )


def acknowledge(alert: Alert, by: str, now: datetime) -> Alert:
    """Someone is on it: no more repeats or escalations (the resolution still goes out)."""
    if alert.acked_at is not None:
        return alert
    return dataclasses.replace(alert, acked_at=now, acked_by=by)


# -- what a message says ---------------------------------------------------------------------


def message(
    ctx: Context,
    alert: Alert,
    outage: OutageInfo | None,
    notice: Notice,
    now: datetime,
    *,
    board_url: str,
    dependents: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything a channel needs to say, as JSON-ready data: what is down, where (site and
    partner), since when, what the probes saw, the provider, the board's link."""
    estate = ctx.estate
    site = estate.sites.get(alert.site)
    partner_id = site.partner if site else None
    partner = estate.partners.get(partner_id) if partner_id else None
    check_cfg = estate.check(alert.site, alert.check) if site and alert.check else None
    area = estate.areas.get(alert.area)
    end = alert.end
    stop = end if end is not None else now
    evidence = dict(outage.evidence) if outage is not None else {}
    provider = (outage.provider if outage else None) or (check_cfg.provider if check_cfg else None)
    what = alert.check or "site"
    if outage is not None and outage.source == "provisional":
        what = "site unreachable"
    data: dict[str, Any] = {
        "schema": 1,
        "kind": notice.kind,
        "outage_id": alert.outage_id,
        "state": alert.state,
        "severity": alert.severity,
        "site": alert.site,
        "site_name": (site.name if site and site.name else alert.site),
        "partner": partner_id,
        "partner_name": partner.name if partner else partner_id,
        "check": alert.check,
        "what": what,
        "area": alert.area,
        "area_name": area.name if area else alert.area,
        "start": alert.start.isoformat(),
        "end": end.isoformat() if end else None,
        "duration_seconds": max((stop - alert.start).total_seconds(), 0.0),
        "reason": evidence.get("error") or (outage.cause if outage else None),
        "evidence": evidence,
        "provider": provider,
        "cause": outage.cause if outage else None,
        "note": outage.note if outage else None,
        "route": notice.route,
        "escalation_level": notice.n if notice.kind == "escalation" else 0,
        "repeat": notice.n if notice.kind == "repeat" else 0,
        "dependents": list(dependents),
        "url": f"{board_url.rstrip('/')}/board/outages/{alert.outage_id}",
        "sent_at": now.isoformat(),
    }
    data["title"] = title(data, ZoneInfo(estate.accounting.timezone))
    return data


def test_message(
    ctx: Context, route: str, channel: str, now: datetime, *, board_url: str
) -> dict[str, Any]:
    """A message that says it is a test, shaped like a real one (``availmon alerts test``)."""
    site_id = next(iter(ctx.estate.sites), "test-site")
    alert = Alert("test", site_id, "test", "network_telephony", "down", "page", now, None, now)
    outage = OutageInfo(
        "test", site_id, None, "test", "network_telephony", "down", now,
        None, evidence={"error": "a test message from availmon alerts test", "probes": 0},
    )  # fmt: skip
    m = message(ctx, alert, outage, Notice("test", route), now, board_url=board_url)
    m["what"] = "test alert"
    m["title"] = title(m, ZoneInfo(ctx.estate.accounting.timezone))
    m["key"] = f"test/{route}/{channel}/{to_us(now)}"
    m["channel"] = channel
    return m


def span(seconds: float) -> str:
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s}s" if minutes else f"{s}s"


def local(text: str | None, tz: ZoneInfo) -> str:
    if not text:
        return ""
    return datetime.fromisoformat(text).astimezone(tz).strftime("%a %d %b %H:%M %Z")


def title(m: Mapping[str, Any], tz: ZoneInfo) -> str:
    """One line: what, where, since when, why. The reason is what a probe's peer or a person
    wrote (an agent's evidence, an annotated cause), so it can hold line breaks and other
    control characters: the title goes into one-line places (an email's Subject, a chat
    header, Alertmanager's summary), where a line break was an error (the email jammed its
    channel) or a forged line, so it is :func:`availmon.text.one_line`."""
    where = f"{m['site_name']} ({m['partner_name']})" if m.get("partner_name") else m["site_name"]
    head = {
        "firing": "",
        "repeat": "STILL ",
        "escalation": "ESCALATED: ",
        "resolved": "RESOLVED: ",
        "test": "TEST: ",
    }[m["kind"]]
    if m["kind"] == "resolved":
        return one_line(
            f"{head}{m['what']} at {where} was {m['state']} for {span(m['duration_seconds'])}"
            f" (from {local(m['start'], tz)} to {local(m['end'], tz)})"
        )
    reason = one_line(m.get("reason") or "")
    why = f": {reason}" if reason else ""
    return one_line(f"{head}{m['what']} at {where} {m['state']} since {local(m['start'], tz)}{why}")


def text_body(m: Mapping[str, Any], tz: ZoneInfo) -> str:
    """The plain-text message (email's text part, chat fallbacks): the title, then one
    ``Label: value`` line per row, which the email's HTML table and the Teams card read back
    as their rows. Each value is made one line, so that a reason, cause or note holding a
    line break cannot add a row of its own (``"...\nWhere: elsewhere"``)."""
    lines = [one_line(m["title"]), ""]
    rows = [
        ("What", f"{m['what']} ({m['area_name']}), {m['state']}, severity {m['severity']}"),
        ("Where", f"{m['site_name']} ({m['site']}), {m['partner_name'] or 'no partner'}"),
        ("Since", local(m["start"], tz)),
    ]
    if m.get("end"):
        rows.append(("Ended", f"{local(m['end'], tz)}, after {span(m['duration_seconds'])}"))
    else:
        rows.append(("For", span(m["duration_seconds"])))
    ev = m.get("evidence") or {}
    seen = m.get("reason") or "no reason given"
    if ev.get("probes"):
        seen += f" ({ev['probes']} probes in a row)"
    rows.append(("Probes saw", seen))
    if m.get("provider"):
        rows.append(("Provider", m["provider"]))
    for key, label in (("cause", "Cause"), ("note", "Note")):
        if m.get(key):
            rows.append((label, m[key]))
    if m.get("dependents"):
        rows.append(("Also unreachable", ", ".join(m["dependents"])))
    rows.append(("Board", m["url"]))
    lines += [f"{k}: {one_line(v)}" for k, v in rows]
    lines += [
        "",
        one_line(f"Alert {m['outage_id']} (route {m['route']}); acknowledge on the board."),
    ]
    return "\n".join(lines) + "\n"
