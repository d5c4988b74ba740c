"""The live outage board (issue 12): server-rendered HTML, updated over Server-Sent Events.

One feed task per app waits on ``Collector.changed`` (every committed batch), builds the
board's view once on the reader thread, renders its sections with the same Jinja macros
as the full page, and hands the result to every connected browser; the browser swaps the
sections in place. Event ids are ``<boot>-<version>``, so a browser reconnecting with
``Last-Event-ID`` after a collector restart gets the whole board again, and one that
reconnects to the same collector with nothing new is sent nothing until something changes.
A ``tick`` every few seconds lets the page tell a live board from a stale one.

Writes (annotate, mark planned, acknowledge an alert) are :class:`WriteAction` s: each is one
route on the page (a form) and one on the API (JSON), behind the write token; adding
"declare maintenance" is one more action and one form.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp_sse import sse_response
from jinja2 import Environment, PackageLoader
from markupsafe import Markup, escape
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from yarl import URL

from availmon.aio import waited
from availmon.clock import from_iso, to_iso, utcnow
from availmon.config import Estate, scope_issues
from availmon.limits import ANNOTATION_MAX_CHARS, REASON_MAX_CHARS
from availmon.logs import Sparse
from availmon.schema import State
from availmon.text import encodable
from collector import auth
from collector.accounting import (
    BusinessCalendar,
    Outage,
    clip,
    counts,
    floor_percent,
    from_us,
    local_midnight,
    quarter_containing,
    to_us,
    total,
    union,
)
from collector.maintenance import Window, expand
from collector.metrics import LiveCheck
from collector.outage_csv import parse_time
from collector.outbox import alert_detail
from collector.report import accounts_for, show_minutes, window_of
from collector.standing import expand_around, verdicts_of
from collector.store import DuplicateWindow

if TYPE_CHECKING:
    from collector.main import Collector
    from collector.store import Store

log = logging.getLogger(__name__)

#: What the board shows, worst first; "maintenance" is a planned outage, never red.
STATES = ("down", "degraded", "maintenance", "unreachable", "unknown", "up")
LABELS = {
    "up": "Up",
    "degraded": "Degraded",
    "down": "Down",
    "maintenance": "Maintenance",
    "unreachable": "Unreachable",
    "unknown": "Unknown",
    "nodata": "No data",
}
#: Seconds between ``tick`` events; the page calls itself stale after three missed.
TICK = 5.0
#: Refresh the board even without a committed change (the KPI moves during an outage).
REFRESH = 30.0
#: At most one rebuild of the board per this many seconds: at a thousand events a second
#: the changes come faster than anyone reads a wall screen (issue 9).
MIN_INTERVAL = 1.0
#: The most of the collector's CPU the board may take while commits come back to back (a
#: backlog drain): after a refresh that cost t CPU-seconds, the next waits t * (1/share - 1).
#: A board of a thousand checks costs about 0.2 s to build (so it refreshes every 3-4 s
#: while a backlog drains), and rebuilding it after every commit cut the ingest rate by a
#: third (issue 8); a small board still follows each commit. CPU, not wall time: a refresh
#: that waited (for the writer's commit, for an event loop busy elsewhere) cost nothing
#: meanwhile, and counting the wait paused the board for 19 times as long. The KPI worked
#: out for it on the reader thread (issue 10's rules) is its CPU too.
BOARD_SHARE = 0.05
#: The longest that pause, whatever the board costs: a committed change reaches the page
#: within this plus two builds (one under way when it came, and its own), where issue 12
#: gives five seconds. A board that costs more than 3/19 of a CPU-second (well over a
#: thousand checks) takes more than the share above, not a longer pause.
MAX_PAUSE = 3.0
#: ``GET /`` shows the board as the feed last built it (no build per request) while
#: nothing it shows has changed since and that build is younger than this; otherwise it
#: waits for a new build (one for every request waiting, within ``BOARD_SHARE``). The page
#: then follows over its event stream.
PAGE_MAX_AGE = TICK
#: An event stream is ended after this long (a ``bye`` event, then the end of the response):
#: the browser reconnects by itself with the last event id and misses nothing, and no client
#: holds a stream for ever.
STREAM_LIFETIME = 600.0
#: A stream whose event has not gone out in this long (a client that stopped reading) is
#: dropped, its connection aborted.
SEND_TIMEOUT = 30.0
#: A refused stream's Retry-After, seconds.
STREAM_RETRY_AFTER = 10
#: The reconnection delay the browser is told (SSE ``retry``), milliseconds.
RECONNECT_MS = 2000
#: Latency samples kept per check: one per 30 s for 24 h.
LATENCY_SAMPLES = 2880
LATENCY_STEP = 30.0


def worst(states: Iterable[str]) -> str:
    present = set(states)
    return next((s for s in STATES if s in present), "unknown")


# -- time for people -----------------------------------------------------------------------


def when(text: str | None, now: datetime, tz: ZoneInfo) -> str:
    """Local time; the date unless today, and the year unless this year (issue 12)."""
    if not text:
        return ""
    t = from_iso(text).astimezone(tz)
    local_now = now.astimezone(tz)
    if t.date() == local_now.date():
        return f"today {t:%H:%M}"
    if t.year == local_now.year:
        return f"{t:%a} {t.day} {t:%b %H:%M}"
    return f"{t.day} {t:%b %Y %H:%M}"


def span_text(seconds: float) -> str:
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {s:02d}s"


def outage_shown(row: Mapping[str, Any]) -> str:
    """The board's word for an outage: planned work is maintenance, whatever its state."""
    if row.get("planned"):
        return "maintenance"
    state = str(row.get("state") or "down")
    return state if state in ("degraded", "unknown") else "down"


def outage_kind(row: Mapping[str, Any]) -> str:
    """The report's word (and the import CSV's): unplanned, planned, degraded; unknown is
    "not monitored"."""
    if row.get("state") == "unknown":
        return "unknown"
    if row.get("planned"):
        return "planned"
    return "degraded" if row.get("state") == "degraded" else "unplanned"


# -- latency history (in memory: the last 24 h since this collector started) ------------


@dataclass
class LatencyHistory:
    """Per-check latency samples taken from the live view after committed batches."""

    samples: dict[tuple[str, str], deque[tuple[float, float | None]]] = field(default_factory=dict)

    def sample(self, checks: Iterable[LiveCheck], now: datetime) -> None:
        t = now.timestamp()
        for c in checks:
            ring = self.samples.setdefault((c.site, c.check), deque(maxlen=LATENCY_SAMPLES))
            if ring and t - ring[-1][0] < LATENCY_STEP:
                continue
            # A down check has no latency worth drawing: a gap, not a figure.
            value = c.latency if c.state in (State.UP, State.DEGRADED) else None
            ring.append((t, value))

    def series(self, site: str, check: str) -> list[tuple[float, float | None]]:
        return list(self.samples.get((site, check), ()))


def latency_svg(points: list[tuple[float, float | None]], width: int = 600) -> str:
    """A small inline SVG line chart of latency in ms; gaps where the check was down."""
    values = [v for _, v in points if v is not None]
    if len(values) < 2:
        return ""
    height, pad = 120, 4
    t0, t1 = points[0][0], points[-1][0]
    top = max(values) * 1.1 or 1.0
    span_t = max(t1 - t0, 1.0)
    paths: list[str] = []
    current: list[str] = []
    for t, v in points:
        if v is None:
            if len(current) > 1:
                paths.append(" ".join(current))
            current = []
            continue
        x = pad + (t - t0) / span_t * (width - 2 * pad)
        y = height - pad - v / top * (height - 2 * pad)
        current.append(f"{x:.1f},{y:.1f}")
    if len(current) > 1:
        paths.append(" ".join(current))
    lines = "".join(
        f'<polyline points="{p}" fill="none" stroke="currentColor" stroke-width="2"/>'
        for p in paths
    )
    return (
        f'<svg class="latency" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="latency, highest {max(values) * 1000:.0f} ms">'
        f'<line x1="0" y1="{height - pad}" x2="{width}" y2="{height - pad}" '
        f'stroke="#999"/>{lines}</svg>'
    )


# -- the board's view (runs on the reader thread) ---------------------------------------


@dataclass(frozen=True)
class Names:
    """Ids to the names people use."""

    estate: Estate

    def site(self, site: str) -> str:
        s = self.estate.sites.get(site)
        return (s.name or site) if s else site

    def partner_of(self, site: str) -> str | None:
        s = self.estate.sites.get(site)
        return s.partner if s else None

    def partner(self, pid: str | None) -> str:
        if pid is None:
            return "Other"
        p = self.estate.partners.get(pid)
        return p.name if p else pid

    def area(self, area: str) -> str:
        a = self.estate.areas.get(area)
        return a.name if a else area


def outage_view(
    row: Mapping[str, Any], names: Names, evidence: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """One outage as the board and the API show it."""
    start, end = row["start"], row["end"]
    stop = from_iso(end) if end else now
    reason = (evidence or {}).get("error") or None
    site = row["site"]
    return {
        "id": row["id"],
        "site": site,
        "site_name": names.site(site),
        "partner": names.partner_of(site),
        "partner_name": names.partner(names.partner_of(site)),
        "check": row.get("check_name"),
        "area": row["area"],
        "area_name": names.area(row["area"]),
        "state": row["state"],
        "kind": outage_kind(row),
        "shown": outage_shown(row),
        "planned": bool(row.get("planned")),
        "start": start,
        "end": end,
        "open": end is None,
        "duration_seconds": max((stop - from_iso(start)).total_seconds(), 0.0),
        "reason": reason,
        "cause": row.get("cause") or (evidence or {}).get("cause") or None,
        "provider": row.get("provider") or None,
        "note": row.get("note") or None,
        "source": row.get("source") or "agent",
        "annotated_by": row.get("annotated_by"),
        "annotated_at": row.get("annotated_at"),
        "why": None,
    }


def check_view(
    site: str,
    check: str,
    live: LiveCheck | None,
    estate: Estate,
    names: Names,
    planned: bool | str,
    now: datetime,
) -> dict[str, Any]:
    """One check's live state; latency only while it answers, never for a down check.

    ``planned``: True (or "maintenance") shows a failing check as maintenance;
    "unreachable" shows it behind a down dependency (issue 10)."""
    cfg = estate.check(site, check) if site in estate.sites else None
    state = live.state.value if live else "unknown"
    override = "maintenance" if planned is True else (planned or None)
    shown = override if override and state != "up" else state
    answering = state in ("up", "degraded")
    area = live.area if live else (cfg.area if cfg else "")
    expiry = (
        (live.cert_not_after - now).total_seconds()
        if live is not None and live.cert_not_after is not None
        else None
    )
    return {
        "site": site,
        "site_name": names.site(site),
        "partner": names.partner_of(site),
        "partner_name": names.partner(names.partner_of(site)),
        "check": check,
        "type": cfg.type if cfg else None,
        "target": cfg.target if cfg else None,
        "provider": cfg.provider if cfg else None,
        "area": area,
        "area_name": names.area(area),
        "agent": live.agent if live else None,
        "state": shown,
        "since": to_iso(live.since) if live and live.since else None,
        "reason": (live.error if live and state != "up" else None) or None,
        "latency_seconds": live.latency if live and answering else None,
        "loss_ratio": live.loss / 100 if live and live.loss is not None else None,
        "jitter_seconds": live.jitter if live else None,
        "cert_expiry_seconds": expiry,
        "probe_duration_seconds": live.duration if live else None,
    }


def kpi_view(store: Store, estate: Estate, now: datetime) -> dict[str, Any]:
    """Quarter-to-date availability per area and combined, against the target, read from
    the store by the full rules (the board reads ``LiveOutages.kpi_view`` instead while
    that gives the same: ``LiveOutages.plain``)."""
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    quarter = quarter_containing(now, calendar.tz)
    acc = accounts_for(store, estate, quarter, now, calendar, combined_only=True)

    def pct(ratio: Any) -> float | None:
        value = floor_percent(ratio)
        return float(value) if value is not None else None

    target = estate.accounting.target_percent
    return {
        "period": quarter.id,
        "target_percent": target,
        "areas": [
            {
                "id": a.id,
                "name": a.name,
                "percent": pct(a.ratio),
                "ratio": float(a.ratio) if a.ratio is not None else None,
                "downtime_minutes": a.downtime / 60_000_000,
                "met": a.ratio is not None and float(a.ratio) * 100 >= target,
            }
            for a in acc.areas
        ],
        "combined": {
            "percent": pct(acc.combined_ratio),
            "ratio": float(acc.combined_ratio) if acc.combined_ratio is not None else None,
            "downtime_minutes": acc.combined_downtime / 60_000_000,
            "met": acc.met,
        },
    }


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def banner(checks: list[dict[str, Any]], outages: list[dict[str, Any]]) -> dict[str, str]:
    """One line for the whole estate: "All services up", "2 services down at 1 site"."""
    by_state: dict[str, list[dict[str, Any]]] = {s: [] for s in STATES}
    for c in checks:
        by_state[c["state"]].append(c)
    unreachable = sorted({o["site"] for o in outages if o["open"] and o["source"] == "provisional"})
    parts: list[str] = []
    if unreachable:
        parts.append(_plural(len(unreachable), "site unreachable", "sites unreachable"))
    down = by_state["down"]
    if down:
        sites = len({c["site"] for c in down})
        parts.append(
            f"{_plural(len(down), 'service', 'services')} down at {_plural(sites, 'site', 'sites')}"
        )
    if by_state["degraded"]:
        parts.append(f"{_plural(len(by_state['degraded']), 'service', 'services')} degraded")
    if by_state["maintenance"]:
        parts.append(f"{len(by_state['maintenance'])} in planned maintenance")
    if by_state["unknown"]:
        parts.append(f"{len(by_state['unknown'])} not reporting")
    if not unreachable and all(c["state"] == "unknown" for c in checks):
        return {"level": "unknown", "text": "No checks reporting yet"}
    if not parts:
        return {"level": "up", "text": "All services up"}
    level = (
        "down"
        if unreachable or down
        else worst(s for s in ("degraded", "maintenance", "unknown") if by_state[s])
    )
    return {"level": level, "text": "; ".join(parts)}


def board_snapshot(
    collector: Collector, now: datetime, kpi: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the board shows, from memory: the collector's live dicts and its outage
    view (issue 9), so a refresh costs what the live state costs, whatever the history.
    ``kpi``: the quarter-to-date figures when the view's are not the accounting's
    (``Collector.kpi_view``, issue 10); None takes the view's."""
    held, estate = collector.view, collector.estate
    names = Names(estate)
    open_rows = held.open_rows()
    outages = [outage_view(r, names, held.evidence(r["start_event"]), now) for r in open_rows]
    # Issue 10: windows, dependencies and quorum decide what an open outage is, as the report
    # will count it: in a window it is maintenance, behind a down parent unreachable. The
    # declared windows come from the view too (read by the writer thread, not here).
    windows = expand_around(estate, held.windows(), now)
    verdicts = verdicts_of(estate, open_rows, windows, now)
    for o in outages:
        reason = verdicts.get(o["id"])
        if reason is not None:
            o["why"] = reason.text
            if reason.kind == "maintenance":
                o["shown"] = "maintenance"
            elif reason.kind == "unreachable":
                o["shown"] = "unreachable"
    # Down first, then degraded, maintenance last; longest-running first within each.
    order = {"down": 0, "degraded": 1, "unknown": 2, "unreachable": 3, "maintenance": 4}
    outages.sort(key=lambda o: (order.get(o["shown"], 9), o["start"]))
    planned: dict[tuple[str, str], str] = {
        (o["site"], o["check"]): o["shown"]
        for o in outages
        if o["shown"] in ("maintenance", "unreachable")
    }
    planned.update({(o["site"], o["check"]): "maintenance" for o in outages if o["planned"]})
    reasons = {(o["site"], o["check"]): o["reason"] for o in outages if o["reason"]}
    live = dict(collector.live)
    keys: list[tuple[str, str]] = [
        (sid, c.name) for sid, site in estate.sites.items() for c in site.checks
    ]
    configured = set(keys)
    keys += sorted(k for k in live if k not in configured)
    checks = []
    for site, check in keys:
        view = check_view(
            site,
            check,
            live.get((site, check)),
            estate,
            names,
            planned.get((site, check), False),
            now,
        )
        if view["state"] != "up" and not view["reason"]:
            view["reason"] = reasons.get((site, check))
        checks.append(view)
    recent = [outage_view(r, names, None, now) for r in held.recent_closed()]
    return {
        "now": to_iso(now),
        "estate": estate.name,
        "banner": banner(checks, outages),
        "outages": outages,
        "grid": grid(checks, estate, names),
        "checks": checks,
        "kpi": kpi if kpi is not None else held.kpi_view(now),
        "recent": recent,
        "agents": [
            {
                "site": a.site,
                "site_name": names.site(a.site),
                "agent": a.agent,
                "status": a.status,
                "spool_depth": a.spool_depth,
                # Seqs the agent numbered that never reached this collector (issue 8).
                "missing": collector.missing.get(a.agent, 0),
                # Per required collector, what the agent's spool still holds for it.
                "held": {c: n for c, n in a.unconfirmed if n},
                # Its spool cannot be written: what it holds in memory a stop would lose.
                "spool_error": a.spool_error,
                "spool_unwritten": a.spool_unwritten or 0,
            }
            for a in sorted(collector.agents.values(), key=lambda a: (a.site, a.agent))
        ],
        "collector": {
            "id": estate.collector.client_id,
            "is_leader": collector.is_leader,
            "store_error": collector.store_error,
        },
        "areas": [{"id": aid, "name": a.name} for aid, a in estate.areas.items()],
        "services": service_views(checks, estate),
        "windows": [window_view(w, names.estate) for w in windows if w.effective[0] < w.end][:10],
    }


def service_views(checks: list[dict[str, Any]], estate: Estate) -> list[dict[str, Any]]:
    """Each quorum service with what each of its agents sees right now."""
    by_key = {(c["site"], c["check"]): c for c in checks}
    out = []
    for sid, svc in estate.services.items():
        members = []
        for ref in svc.checks:
            site, name = ref.split("/", 1)
            c = by_key.get((site, name))
            members.append({"site": site, "check": name, "state": c["state"] if c else "unknown"})
        able = [m for m in members if m["state"] not in ("unknown", "unreachable")]
        saying = [m for m in able if m["state"] == "down"]
        need = svc.quorum_of(len(able)) if able else None
        if need is not None and len(saying) >= need:
            state = "down"
        elif saying:
            state = "degraded"  # some sites see it fail: their path, until a quorum agrees
        else:
            state = "up" if able else "unknown"
        out.append(
            {
                "id": sid,
                "name": svc.name or sid,
                "state": state,
                "quorum": svc.quorum,
                "need": need,
                "saying_down": [m["site"] for m in saying],
                "members": members,
            }
        )
    return out


def window_view(w: Window, estate: Estate) -> dict[str, Any]:
    scope = w.scope.model_dump()
    return {
        "id": w.id,
        "start": to_iso(from_us(w.start)),
        "end": to_iso(from_us(w.end)),
        "reason": w.reason,
        "by": w.by,
        "source": w.source,
        "covers": "; ".join(f"{k} {', '.join(v)}" for k, v in scope.items() if v) or "everything",
    }


def grid(checks: list[dict[str, Any]], estate: Estate, names: Names) -> list[dict[str, Any]]:
    """Sites grouped by partner (config order), each against every area."""
    by_site: dict[str, list[dict[str, Any]]] = {}
    for c in checks:
        by_site.setdefault(c["site"], []).append(c)
    partners: dict[str | None, list[str]] = {pid: [] for pid in estate.partners}
    for sid in [*estate.sites, *sorted(set(by_site) - set(estate.sites))]:
        partners.setdefault(names.partner_of(sid), []).append(sid)
    out = []
    for pid, sites in partners.items():
        rows = []
        for sid in sites:
            mine = by_site.get(sid, [])
            cells = []
            for aid in estate.areas:
                here = [c for c in mine if c["area"] == aid]
                cells.append(
                    {
                        "area": aid,
                        "area_name": names.area(aid),
                        "state": worst(c["state"] for c in here) if here else None,
                        "checks": here,
                    }
                )
            rows.append({"site": sid, "site_name": names.site(sid), "cells": cells})
        if rows:
            out.append({"partner": pid, "partner_name": names.partner(pid), "sites": rows})
    return out


# -- history of one check ------------------------------------------------------------------


def _buckets(window: str, now: datetime, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    local = now.astimezone(tz)
    if window == "24h":
        top = local.replace(minute=0, second=0, microsecond=0)
        starts = [top - timedelta(hours=h) for h in range(23, -1, -1)]
        return [(s, s + timedelta(hours=1)) for s in starts]
    if window == "30d":
        first = local.date() - timedelta(days=29)
    else:
        first = quarter_containing(now, tz).start.date()
    days = (local.date() - first).days + 1
    out = []
    for i in range(days):
        day = first + timedelta(days=i)
        out.append((local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)))
    return out


WINDOWS = {"24h": "Last 24 hours", "30d": "Last 30 days", "quarter": "This quarter"}


def check_history(
    store: Store, estate: Estate, site: str, check: str, now: datetime
) -> dict[str, Any]:
    """Bars for the last 24 h (hourly), 30 days and this quarter (daily), with uptime.

    A bar's uptime counts downtime as the quarterly report does (``accounting.counts``), so
    the board and the report agree; time before the check was first recorded is "no data".
    """
    tz = ZoneInfo(estate.accounting.timezone)
    names = Names(estate)
    quarter = quarter_containing(now, tz)
    earliest = min(quarter.start, now - timedelta(days=30))
    rows = store.board_outages(site=site, check=check, start=earliest, end=now, limit=10_000)
    first = store.check_first_seen(site, check)
    first_us = to_us(from_iso(first)) if first else None
    now_us = to_us(now)
    outages = [Outage.from_row(r) for r in rows]
    spans: dict[str, list[tuple[int, int]]] = {
        k: [] for k in ("down", "degraded", "maintenance", "unknown")
    }
    counted: list[tuple[int, int]] = []
    for o in outages:
        span = o.span(now_us)
        kind = "maintenance" if o.planned else ("down" if o.state == "down" else o.state)
        spans.setdefault(kind, []).append(span)
        if counts(o, estate):
            counted.append(span)
    merged = {k: union(v) for k, v in spans.items()}
    counted = union(counted)
    windows = []
    for wid, label in WINDOWS.items():
        bars = []
        w_observed = w_down = 0
        for lo_dt, hi_dt in _buckets(wid, now, tz):
            lo, hi = to_us(lo_dt), min(to_us(hi_dt), now_us)
            observed_lo = max(lo, first_us) if first_us is not None else hi
            observed = max(hi - observed_lo, 0)
            secs = {k: total(clip(v, lo, hi)) / 1e6 for k, v in merged.items()}
            down = total(clip(counted, observed_lo, hi)) if observed else 0
            w_observed += observed
            w_down += down
            if observed == 0:
                state = "nodata"
            else:
                state = next(
                    (k for k in ("down", "degraded", "maintenance", "unknown") if secs[k] > 0), "up"
                )
            ratio = 1 - down / observed if observed else None
            bars.append(
                {
                    "start": lo_dt.isoformat(),
                    "end": hi_dt.isoformat(),
                    "state": state,
                    "uptime_ratio": ratio,
                    "down_seconds": secs["down"],
                    "degraded_seconds": secs["degraded"],
                    "maintenance_seconds": secs["maintenance"],
                    "unknown_seconds": secs["unknown"],
                    "title": _bar_title(lo_dt, wid, state, ratio, secs),
                }
            )
        ratio = 1 - w_down / w_observed if w_observed else None
        windows.append(
            {
                "id": wid,
                "label": label,
                "uptime_ratio": ratio,
                "uptime_percent": _floor2(ratio),
                "downtime_seconds": w_down / 1e6,
                "bars": bars,
            }
        )
    return {
        "site": site,
        "check": check,
        "first_seen": first,
        "windows": windows,
        "outages": [outage_view(r, names, None, now) for r in rows[:50]],
    }


def _floor2(ratio: float | None) -> float | None:
    """Percent rounded down to two decimals: never claim more than was achieved."""
    if ratio is None:
        return None
    return math.floor(round(ratio * 100 * 100, 6)) / 100


def _bar_title(
    start: datetime, window: str, state: str, ratio: float | None, secs: Mapping[str, float]
) -> str:
    head = f"{start:%H:00 %a %d %b}" if window == "24h" else f"{start:%a %d %b %Y}"
    if ratio is None:
        return f"{head}: no data"
    parts = [f"{head}: {_floor2(ratio):.2f}% up"]
    for key, word in (
        ("down", "down"),
        ("degraded", "degraded"),
        ("maintenance", "planned"),
        ("unknown", "not monitored"),
    ):
        if secs[key] > 0:
            parts.append(f"{math.ceil(secs[key] / 60)} min {word}")
    return ", ".join(parts)


def outage_detail(
    store: Store, estate: Estate, outage_id: str, now: datetime
) -> dict[str, Any] | None:
    """An outage with what each probe run saw and who changed what."""
    row = store.board_outage(outage_id)
    if row is None:
        return None
    events = store.outage_events(outage_id)
    evidence = store.start_evidence([row["start_event"]]) if row["start_event"] else {}
    view = outage_view(row, Names(estate), evidence.get(row["start_event"] or ""), now)
    view["events"] = [
        {
            "id": e["id"],
            "at": e["at"],
            "detected_at": e["detected_at"],
            "from": e["from_state"],
            "to": e["to_state"],
            "error": e["evidence"].get("error"),
            "latency_seconds": e["evidence"].get("latency"),
            "loss_percent": e["evidence"].get("loss"),
            "probes": e["evidence"].get("probes"),
            "cause": e["evidence"].get("cause"),
        }
        for e in events
    ]
    view["annotations"] = [
        {**h, "planned": None if h["planned"] is None else bool(h["planned"])}
        for h in store.annotation_history(outage_id)
    ]
    return view


# -- writes ----------------------------------------------------------------------------


class BodyError(Exception):
    """A request body that could not be read: the status and a short message to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    async def answer(self, request: web.Request, action: str | None = None) -> web.Response:
        """JSON ``{"error": "bad <action> request: ..."}`` for the API, text for a form.

        A body not read to its end (it stalled, is broken, or was not wanted) is not waited
        for: the answer is sent and the connection closed. Left to aiohttp, it would linger
        reading the rest, and log a broken body's error a second time as a traceback."""
        if action is None:
            resp = web.Response(text=self.message, status=self.status)
        else:
            resp = _error(self.status, f"bad {action} request: {self.message}")
        if request.content.is_eof():
            return resp
        resp.force_close()
        with contextlib.suppress(ConnectionError):  # the client may be gone already
            await resp.prepare(request)
            await resp.write_eof()
        request.protocol.force_close()  # after what was written goes out
        return resp


@contextlib.asynccontextmanager
async def _reading(request: web.Request) -> AsyncIterator[None]:
    """Read a body within ``web.body_timeout``, every way the reading can fail a BodyError."""
    limit = request.app[COLLECTOR].estate.web.body_timeout
    try:
        async with asyncio.timeout(limit):
            yield
    except TimeoutError:
        raise BodyError(408, f"the request body did not arrive within {limit:g} s") from None
    except ConnectionResetError:
        log.debug("%s %s: the client left before sending its body", request.method, request.path)
        raise BodyError(400, "the connection was lost before the body arrived") from None
    except web.HTTPException as exc:  # too large (413), too many fields (400)
        raise BodyError(exc.status, exc.text or exc.reason) from None
    except (ContentEncodingError, web.RequestPayloadError):
        # The parser's words may quote the body: a fixed message instead.
        raise BodyError(400, "the body is not what its Content-Encoding says") from None
    except HttpProcessingError:
        raise BodyError(400, "the body is not well-formed") from None


async def read_json(request: web.Request) -> Any:
    """A JSON write's body, whatever Content-Type it came with (``curl -d`` sends a form's;
    the token, not the type, is what keeps a browser's cross-site post out), in its charset
    or UTF-8. Call it after the token is checked: a stalled body is then only ever an
    authorised client's, and is cut off after ``web.body_timeout`` all the same."""
    async with _reading(request):
        raw = await request.read()
    charset = request.charset or "utf-8"
    try:
        text = raw.decode(charset)
    except LookupError:
        raise BodyError(400, "unknown charset in the Content-Type") from None
    except UnicodeDecodeError:
        raise BodyError(400, f"the body is not valid {charset} text") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BodyError(400, "not JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:  # says where, never what
        raise BodyError(400, f"not JSON: {exc}") from None
    except ValueError:  # an integer of thousands of digits
        raise BodyError(400, "not JSON: a number too long to read") from None


async def read_form(request: web.Request) -> dict[str, str]:
    """A form's text fields (urlencoded or multipart; files and binary parts left out)."""
    async with _reading(request):
        try:
            form = await request.post()
        except LookupError:
            raise BodyError(400, "unknown charset in the Content-Type") from None
        except UnicodeDecodeError:
            raise BodyError(400, "the form is not valid text in its charset") from None
        except ContentEncodingError:
            raise  # said by _reading
        except (ValueError, AssertionError, HttpProcessingError):
            # multipart without a boundary, or with a broken part: nothing of it is echoed
            raise BodyError(400, "the form is not well-formed") from None
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def storable(value: Any) -> Any:
    """Text SQLite can store whole: JSON may escape a lone surrogate (``"\\udcff"``), which
    nothing can encode (a 500 from the write), and a NUL (``"\\u0000"`` or a form's ``%00``)
    would be stored, then cut off there by SQLite's text functions."""
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str):
            if "\x00" in text:
                raise ValueError("not valid text: a NUL character (\\u0000)")
            if not encodable(text):
                raise ValueError("not valid text: a lone surrogate (\\ud800-\\udfff)")
    return value


#: What ``storable`` refuses, in the published schema (JSON Schema's regex dialect).
NO_NUL: dict[str, JsonValue] = {"pattern": "^[^\\u0000]*$"}


def not_null(value: Any) -> Any:
    """A field given as null: refused as the schema says (leaving it out keeps its value)."""
    if value is None:
        raise ValueError("null is not a value: leave the field out to keep it as it is")
    return value


class AnnotationIn(BaseModel):
    """What people know about an outage; fields left out keep their value."""

    # The published schema says what the validator says: at least one field, none null.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"minProperties": 1})

    # null never reaches the length check (``not_null``): that raised a TypeError, a 500.
    cause: str | SkipJsonSchema[None] = Field(
        default=None, max_length=ANNOTATION_MAX_CHARS["cause"], json_schema_extra=NO_NUL
    )
    provider: str | SkipJsonSchema[None] = Field(
        default=None, max_length=ANNOTATION_MAX_CHARS["provider"], json_schema_extra=NO_NUL
    )
    note: str | SkipJsonSchema[None] = Field(
        default=None, max_length=ANNOTATION_MAX_CHARS["note"], json_schema_extra=NO_NUL
    )
    #: True marks it planned work (shown as maintenance, never red); false unplanned. Only
    #: JSON's true and false: "yes" or 1 is refused, not taken as true.
    planned: StrictBool | SkipJsonSchema[None] = None

    _not_null = field_validator("cause", "provider", "note", "planned", mode="before")(not_null)
    _storable = field_validator("cause", "provider", "note")(storable)

    @model_validator(mode="after")
    def _something(self) -> AnnotationIn:
        if all(v is None for v in (self.cause, self.provider, self.note, self.planned)):
            raise ValueError("nothing to record: give cause, provider, note or planned")
        return self


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class WriteAction(Generic[M]):
    """One kind of write: its input model and what it does (target id, input, who, when).

    ``apply`` returns the changed record as JSON-ready data, or None when the target does
    not exist. Each action is served as one API route and one page form (``add_write``).
    """

    name: str
    model: type[M]
    apply: Callable[[Collector, str, M, str, datetime], Awaitable[dict[str, Any] | None]]


async def _annotate(
    collector: Collector, outage_id: str, data: AnnotationIn, by: str, at: datetime
) -> dict[str, Any] | None:
    store = collector.store
    if await collector.read(collector.read_store.outage, outage_id) is None:
        return None
    await collector.write(
        lambda: store.annotate(
            outage_id,
            at,
            cause=data.cause,
            provider=data.provider,
            note=data.note,
            planned=data.planned,
            by=by,
        )
    )
    log.info("outage %s annotated by %s: %s", outage_id, by, data.model_dump(exclude_none=True))
    await collector.notify_changed()
    detail: dict[str, Any] | None = await collector.read(
        outage_detail, collector.read_store, collector.estate, outage_id, utcnow()
    )
    return detail


ANNOTATE = WriteAction("annotate", AnnotationIn, _annotate)


class MaintenanceIn(BaseModel):
    """A one-off maintenance window (issue 10); a scope list left out matches everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: AwareDatetime
    end: AwareDatetime
    sites: list[str] = Field(default_factory=list, max_length=100)
    areas: list[str] = Field(default_factory=list, max_length=100)
    checks: list[str] = Field(default_factory=list, max_length=100)
    partners: list[str] = Field(default_factory=list, max_length=100)
    reason: str = Field(min_length=1, max_length=REASON_MAX_CHARS, json_schema_extra=NO_NUL)

    _storable = field_validator("sites", "areas", "checks", "partners", "reason")(storable)

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceIn:
        for t in (self.start, self.end):
            if not 1990 <= t.year <= 2100:
                raise ValueError(f"{t.isoformat()} is outside 1990-2100")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > timedelta(days=366):
            raise ValueError("a window is at most a year long")
        return self


def maintenance_problem(estate: Estate, data: MaintenanceIn) -> str | None:
    """A scope that names nothing: refused, as the config refuses it."""
    scope = data.model_dump(include={"sites", "areas", "checks", "partners"})
    issues = scope_issues(
        "request",
        "body",
        scope,
        sites={
            k: {"checks": [{"name": c.name} for c in v.checks]} for k, v in estate.sites.items()
        },
        areas=set(estate.areas),
        partners=dict(estate.partners),
        services=dict(estate.services),
    )
    return "; ".join(f"{i.path}: {i.message}" for i in issues) or None


async def declare_maintenance(
    collector: Collector, data: MaintenanceIn, by: str, at: datetime
) -> dict[str, Any]:
    scope = data.model_dump(include={"sites", "areas", "checks", "partners"})
    row: dict[str, Any] = await collector.write(
        collector.store.declare_window, data.start, data.end, scope, data.reason, by, at
    )
    log.info("maintenance %s declared by %s: %s", row["id"], by, data.model_dump_json())
    await collector.notify_changed()
    return row


def duplicate_problem(exc: DuplicateWindow) -> str:
    """A declaration refused (409): the same window is declared already, not cancelled."""
    w = exc.existing
    return (
        f"{w['id']} already declares this window (the same start, end and scope;"
        f" {w['reason']!r}, declared by {w['by']}): nothing changed; cancel {w['id']} to"
        " declare it anew"
    )


def windows_near(store: Store, estate: Estate, now: datetime) -> list[dict[str, Any]]:
    """Windows from a week ago to a month ahead, declared and recurring."""
    lo, hi = now - timedelta(days=7), now + timedelta(days=31)
    declared = [window_of(r) for r in store.windows(lo, hi)]
    found = expand(estate.maintenance, declared, to_us(lo), to_us(hi), estate.accounting.timezone)
    return [window_view(w, estate) for w in found]


async def api_windows(request: web.Request) -> web.StreamResponse:
    collector = request.app[COLLECTOR]
    rows = await collector.read(windows_near, collector.read_store, collector.estate, utcnow())
    return web.json_response({"windows": rows})


async def api_maintenance(request: web.Request) -> web.StreamResponse:
    collector = request.app[COLLECTOR]
    by = auth.writer(request, auth.bearer(request), request.headers.get(auth.USER_HEADER))
    try:
        data = MaintenanceIn.model_validate(await read_json(request))
    except BodyError as exc:
        return await exc.answer(request, "maintenance")
    except ValidationError as exc:
        return _error(400, f"bad maintenance request: {_why(exc)}")
    problem = maintenance_problem(collector.estate, data)
    if problem:
        return _error(400, f"bad maintenance request: {problem}")
    try:
        row = await declare_maintenance(collector, data, by, utcnow())
    except DuplicateWindow as exc:
        return _error(409, f"maintenance not declared: {duplicate_problem(exc)}")
    return web.json_response(row, status=201)


def _maintenance_fields(form: Mapping[str, str], tz: ZoneInfo) -> dict[str, Any]:
    """The form's fields for the model; a time without an offset is local wall time, and
    one the clocks skip or repeat is refused (ValueError), as the CLI and imports refuse it."""
    out: dict[str, Any] = {"reason": form.get("reason", "").strip()}
    for key in ("start", "end"):
        text = form.get(key, "").strip()
        if not text:
            out[key] = text  # the model says it is missing
            continue
        try:
            out[key] = parse_time(text, tz)
        except ValueError as exc:
            raise ValueError(f"{key} {text!r}: {exc}") from None
    for key in ("sites", "areas", "checks", "partners"):
        out[key] = [v.strip() for v in form.get(key, "").split(",") if v.strip()]
    return out


async def maintenance_page(request: web.Request) -> web.StreamResponse:
    collector = request.app[COLLECTOR]
    ctx = _ctx(request)
    message = None
    status = 200
    if request.method == "POST":
        try:
            text = await _write_form(request)
        except BodyError as exc:
            return await exc.answer(request)
        try:
            by = auth.writer(request, text.get("token") or None, text.get("by"))
            data = MaintenanceIn.model_validate(_maintenance_fields(text, ctx["tz"]))
            problem = maintenance_problem(collector.estate, data)
            if problem:
                raise ValueError(problem)
        except web.HTTPException as exc:
            message, status = _why_http(exc), exc.status
        except (ValueError, ValidationError) as exc:
            message, status = _why(exc), 400
        else:
            try:
                row = await declare_maintenance(collector, data, by, utcnow())
            except DuplicateWindow as exc:
                message, status = duplicate_problem(exc), 409
            else:
                raise web.HTTPSeeOther(f"/board/maintenance?saved={quote(row['id'], safe=':')}")
    now = utcnow()
    rows = await collector.read(windows_near, collector.read_store, collector.estate, now)
    return _render(
        request,
        "board_maintenance.html",
        status=status,
        now=to_iso(now),
        windows=rows,
        message=message,
        saved=request.query.get("saved"),
        estate=collector.estate.name,
        **ctx,
    )


class AckIn(BaseModel):
    """Acknowledge an alert (issue 11): no body fields; who and when go with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


async def _acknowledge(
    collector: Collector, outage_id: str, data: AckIn, by: str, at: datetime
) -> dict[str, Any] | None:
    """Someone is on it: the alert's repeats and escalations stop."""
    del data
    done: dict[str, Any] | None = await collector.write(
        collector.alerting.book.acknowledge, outage_id, by, at
    )
    if done is not None:
        log.info("alert %s acknowledged by %s", outage_id, by)
        await collector.notify_changed()
    return done


ACKNOWLEDGE = WriteAction("acknowledge", AckIn, _acknowledge)


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def api_write(action: WriteAction[Any]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The JSON route: bearer token, ``X-Availmon-User``, a JSON body for the model."""

    async def handler(request: web.Request) -> web.StreamResponse:
        by = auth.writer(request, auth.bearer(request), request.headers.get(auth.USER_HEADER))
        try:
            data = action.model.model_validate(await read_json(request))
        except BodyError as exc:
            return await exc.answer(request, action.name)
        except ValidationError as exc:
            return _error(400, f"bad {action.name} request: {_why(exc)}")
        collector = request.app[COLLECTOR]
        result = await action.apply(collector, request.match_info["id"], data, by, utcnow())
        if result is None:
            return _error(404, f"no outage with id {request.match_info['id']!r}")
        return web.json_response(result)

    return handler


def form_write(
    action: WriteAction[Any], fields: Callable[[Mapping[str, str]], dict[str, Any]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The page route: the same action from an HTML form (token and name are form fields,
    so no cookie can authorise a write on someone's behalf), then back to the page."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            text = await _write_form(request)
        except BodyError as exc:
            return await exc.answer(request)
        oid = request.match_info["id"]
        back = f"/board/outages/{quote(oid, safe=':')}"
        try:
            by = auth.writer(request, text.get("token") or None, text.get("by"))
        except web.HTTPException as exc:
            return await _outage_page(request, oid, status=exc.status, message=_why_http(exc))
        try:
            data = action.model.model_validate(fields(text))
        except ValidationError as exc:
            return await _outage_page(request, oid, status=400, message=_why(exc))
        result = await action.apply(request.app[COLLECTOR], oid, data, by, utcnow())
        if result is None:
            raise web.HTTPNotFound(text=f"no outage with id {oid!r}")
        raise web.HTTPSeeOther(f"{back}?saved={action.name}")

    return handler


async def _write_form(request: web.Request) -> dict[str, str]:
    """A write form's fields; none read when writes are disabled (``auth.writer`` then
    refuses it whatever the form says)."""
    if request.app[auth.TOKENS].write is None:
        return {}
    return await read_form(request)


def annotation_fields(form: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("cause", "provider", "note"):
        value = form.get(key, "").strip()
        if value:
            out[key] = value
    if form.get("planned") in ("yes", "no"):
        out["planned"] = form["planned"] == "yes"
    return out


#: What pydantic adds to a location inside an ``X | None`` field: the member that failed.
_UNION_MEMBERS = {"bool", "str", "constrained-str"}


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        # An ``X | None`` field (None: not given) reports each member; null itself is refused
        # first (``not_null``), so "should be None" only hides what is wrong.
        errors = [e for e in errors if e["type"] != "none_required"] or errors
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p not in _UNION_MEMBERS) or 'body'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in errors
        )
    return str(exc) or type(exc).__name__


def _why_http(exc: web.HTTPException) -> str:
    try:
        return str(json.loads(exc.text or "{}").get("error") or exc.reason)
    except ValueError:
        return exc.reason


# -- the feed --------------------------------------------------------------------------


@dataclass(eq=False)
class Built:
    """One build of the board: what the page and the event stream show, and what it was
    built from (``BoardFeed.key``), with the pages rendered from it so far."""

    key: tuple[Any, ...]
    estate: Estate
    #: Monotonic time the build began: it shows everything committed before then.
    started: float
    event_id: str
    title: str
    now: str
    sections: dict[str, str]
    snap: dict[str, Any]
    #: Response bodies made from this build, each once: ``GET /``'s per page variant
    #: (``("page", wall, writes_enabled)``); the API may keep its own here too.
    bodies: dict[Hashable, bytes] = field(default_factory=dict)


class BoardFeed:
    """Builds the board once per committed change (at most once a second, and only while
    a browser listens) and fans it out to every browser; ``GET /`` is served from the same
    builds (``current``). The build runs off the event loop: rendering a thousand checks
    must not hold up ingest or the API."""

    def __init__(self, collector: Collector, env: Environment) -> None:
        self.collector = collector
        self.env = env
        self.boot = secrets.token_hex(4)
        self.version = 0
        self.payload = ""
        self._sections: dict[str, str] = {}
        #: The last build (None before the first).
        self.built: Built | None = None
        self.updated = asyncio.Condition()
        self.closing = asyncio.Event()
        self.latency = LatencyHistory()
        self._dirty = asyncio.Event()
        #: One build at a time, applied in the order they began.
        self._building = asyncio.Lock()
        #: Browsers holding the SSE stream open.
        self.listeners = 0
        #: CPU-seconds the last refresh took (``refresh``), and its build (``_build``).
        self.cost = 0.0
        self._built = 0.0
        #: Monotonic time the last refresh ended.
        self._done = 0.0

    @property
    def event_id(self) -> str:
        return f"{self.boot}-{self.version}"

    def key(self) -> tuple[Any, ...]:
        """What the board shows that changes without time passing: every committed batch
        and web write (``notifications``), the live view's data (another process's writes
        read in), the store's health, leadership and the events counted missing."""
        c = self.collector
        return (
            c.notifications,
            c.view.version,
            c.store_error,
            c.is_leader,
            tuple(sorted(c.missing.items())),
        )

    def _build(self, now: datetime) -> tuple[dict[str, Any], dict[str, str]]:
        """The board; ``_built``: the CPU-seconds it took on this (the scrape) thread and
        on the reader's for its KPI, kept however the build ends."""
        cpu, kpi_cpu = time.thread_time(), 0.0
        try:
            kpi, kpi_cpu = self.collector.kpi_view_costing(now)
            snap = board_snapshot(self.collector, now, kpi)
            return snap, render_sections(self.env, snap, self.collector.estate)
        finally:
            self._built = time.thread_time() - cpu + kpi_cpu

    def pause(self) -> float:
        """Seconds to wait after the last refresh before the next (``BOARD_SHARE``)."""
        return min(self.cost * (1 / BOARD_SHARE - 1), MAX_PAUSE)

    def _rest(self) -> float:
        """Seconds until the next build is due: ``pause()`` after the last one ended."""
        return max(0.0, self._done + self.pause() - time.monotonic())

    async def refresh(self) -> Built:
        """Build the board and hand it to the browsers if it changed (after any build
        under way)."""
        async with self._building:
            return await self._refresh()

    async def _refresh(self) -> Built:
        """``refresh`` with the lock held. ``cost``: the CPU the build took, on the scrape
        thread and in this coroutine's own steps, its waits (and the other tasks run
        meanwhile) left out."""
        started = time.monotonic()
        step = time.thread_time()
        now = utcnow()
        self.latency.sample(list(self.collector.live.values()), now)
        own = time.thread_time() - step  # this coroutine's steps, never across an await
        self._built = 0.0
        try:
            await self.collector.catch_up_async()
            step = time.thread_time()
            key, estate = self.key(), self.collector.estate
            own += time.thread_time() - step
            snap, sections = await self.collector.scrape(self._build, now)
            step = time.thread_time()
            changed = sections != self._sections
            title = page_title(snap)
            if changed:
                self._sections = sections
                self.version += 1
                self.payload = json.dumps(
                    {"now": snap["now"], "title": title, "sections": sections}
                )
            built = Built(key, estate, started, self.event_id, title, snap["now"], sections, snap)
            self.built = built
            own += time.thread_time() - step
        finally:  # a build that failed cost what it cost, too
            self.cost = self._built + own
            self._done = time.monotonic()
        if changed:
            async with self.updated:
                self.updated.notify_all()
        return built

    def _fresh(self, built: Built | None, key: tuple[Any, ...], arrived: float) -> bool:
        """Whether ``built`` shows everything a request that arrived at ``arrived`` (and
        found ``key``) should see: begun after it arrived, or showing the same and recent."""
        return built is not None and (
            built.started >= arrived
            or (
                built.key == key
                and built.estate is self.collector.estate
                and arrived - built.started < PAGE_MAX_AGE
            )
        )

    async def current(self) -> Built:
        """The board for a request arriving now: the last build while nothing it shows has
        changed since (and it is under ``PAGE_MAX_AGE`` old), else a new one, shared by every
        request waiting and begun no sooner than the board's CPU share allows."""
        arrived = time.monotonic()
        await self.collector.catch_up_async()
        key = self.key()
        if self._fresh(self.built, key, arrived):
            assert self.built is not None
            return self.built
        async with self._building:
            if self._fresh(self.built, key, arrived):  # built while this one waited
                assert self.built is not None
                return self.built
            # A rate limit, not a synchronisation: the board's share of the CPU.
            await asyncio.sleep(self._rest())
            return await self._refresh()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch(), name="board-watch")
            while True:
                self._dirty.clear()
                started = time.monotonic()
                try:
                    if self.listeners or not self.payload:
                        await self.refresh()
                    else:  # nobody watching: keep the latency history only
                        self.latency.sample(list(self.collector.live.values()), utcnow())
                        self.cost = 0.0  # nothing built: the first listener waits for none
                except Exception:
                    # The board must outlive a bad read; the next change tries again.
                    log.exception("could not build the board")
                # A rate limit, not a synchronisation: changes meanwhile set the dirty flag.
                await asyncio.sleep(self._rest())
                await waited(self._dirty.wait(), REFRESH)
                # A rate limit, not a synchronisation: changes meanwhile make one rebuild.
                await asyncio.sleep(max(0.0, MIN_INTERVAL - (time.monotonic() - started)))

    def listen(self) -> None:
        """A browser opened the stream: build for it now if the board is behind."""
        self.listeners += 1
        self._dirty.set()

    async def _watch(self) -> None:
        """Turn every notification into the dirty flag. The lock is held from one wait to
        the next, so no commit's notification falls between two waits and is lost."""
        changed = self.collector.changed
        async with changed:
            while True:
                await changed.wait()
                self._dirty.set()

    async def wait_newer(self, version: int, timeout: float) -> bool:
        async with self.updated:
            await waited(
                self.updated.wait_for(lambda: self.version != version or self.closing.is_set()),
                timeout,
            )
        return self.version != version


def page_title(snap: Mapping[str, Any]) -> str:
    return f"{snap['banner']['text']} · {snap['estate']}"


SECTIONS = ("banner", "outages", "grid", "kpi", "checks", "recent", "delivery")


def render_sections(env: Environment, snap: Mapping[str, Any], estate: Estate) -> dict[str, str]:
    tmpl = env.get_template("board_sections.html")
    ctx = {**snap, "tz": ZoneInfo(estate.accounting.timezone)}
    module = tmpl.make_module(ctx)
    return {name: str(getattr(module, name)(ctx)) for name in SECTIONS}


# -- routes ----------------------------------------------------------------------------

COLLECTOR: web.AppKey[Collector] = web.AppKey("board_collector")
FEED: web.AppKey[BoardFeed] = web.AppKey("board_feed")
ENV: web.AppKey[Environment] = web.AppKey("board_env")


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("collector", "templates"),
        autoescape=True,  # whatever a template is called: pages show imported text
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        labels=LABELS,
        span_text=span_text,
        quote=lambda s: quote(str(s), safe=":"),
        when_at=lambda text, now, tz: when(text, from_iso(now), tz),
        since_seconds=lambda text: (utcnow() - from_iso(text)).total_seconds(),
    )
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.2f}%"
    env.filters["ms"] = lambda v: "" if v is None else f"{v * 1000:.0f} ms"
    # Rounded up to a tenth, as the report does: downtime is never understated.
    env.filters["mins"] = lambda v: f"{show_minutes(v)} min"
    # Let long area names such as "Network/Telephony" break after the slash, not mid-word.
    env.filters["slashbreak"] = lambda v: Markup("/<wbr>").join(escape(str(v)).split("/"))
    return env


def _ctx(request: web.Request) -> dict[str, Any]:
    collector = request.app[COLLECTOR]
    return {
        "tz": ZoneInfo(collector.estate.accounting.timezone),
        "wall": "wall" in request.query or "kiosk" in request.query,
        "writes_enabled": request.app[auth.TOKENS].write is not None,
    }


def _render(request: web.Request, name: str, status: int = 200, **ctx: Any) -> web.Response:
    env = request.app[ENV]
    when_ = lambda text: when(text, from_iso(ctx["now"]), ctx["tz"])  # noqa: E731
    html = env.get_template(name).render(when=when_, **ctx)
    return web.Response(text=html, content_type="text/html", status=status)


async def board_page(request: web.Request) -> web.Response:
    """The board, from the feed's builds (``BoardFeed.current``): nothing is built on the
    event loop, and clients asking at once, or while nothing changes, share one build and
    one rendered page."""
    built = await request.app[FEED].current()
    ctx = _ctx(request)
    variant = ("page", ctx["wall"], ctx["writes_enabled"])
    body = built.bodies.get(variant)
    if body is None:
        env = request.app[ENV]
        tz = ctx["tz"]
        when_ = lambda text: when(text, from_iso(built.now), tz)  # noqa: E731
        html = env.get_template("board.html").render(
            when=when_,
            sections=built.sections,
            title=built.title,
            event_id=built.event_id,
            **{**built.snap, **ctx},
        )
        body = built.bodies[variant] = html.encode()
    return web.Response(body=body, content_type="text/html", charset="utf-8")


#: Streams refused at a cap, and streams dropped for not reading: a line a minute at most.
_STREAMS_REFUSED = Sparse(60.0)
_STREAMS_DROPPED = Sparse(60.0)


class StreamGate:
    """The board's event streams open at once: at most ``web.max_streams`` in all and
    ``web.max_streams_per_client`` from one address (read at each stream's start, so a
    reload applies them), so that pages left open, or a client opening stream after
    stream, can never take the connections /healthz, /metrics and the API need."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.open = 0
        self.by_client: dict[str, int] = {}
        #: Notified when a stream ends (tests await it).
        self.changed = asyncio.Condition()

    def refusal(self, client: str) -> web.Response | None:
        """The answer to a stream over a cap (counted and logged), or None to open it."""
        cfg = self.collector.estate.web
        if self.open >= cfg.streams():
            status, why = 503, f"all {cfg.streams()} board streams are open"
        elif self.by_client.get(client, 0) >= cfg.streams_per_client():
            status, why = 429, f"{cfg.streams_per_client()} board streams are open from {client}"
        else:
            return None
        self.collector.metrics.web_connections_refused.inc()
        if count := _STREAMS_REFUSED.due():
            log.info(
                "board stream from %s refused (%d): %s; %d refused so (at most one such line"
                " a minute)",
                client,
                status,
                why,
                count,
            )
        response = web.Response(
            status=status,
            text=f"{why}: try again later\n",
            headers={"Retry-After": str(STREAM_RETRY_AFTER)},
        )
        response.force_close()
        return response

    def opened(self, client: str) -> None:
        self.open += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1

    async def closed(self, client: str) -> None:
        self.open -= 1
        left = self.by_client[client] - 1
        if left:
            self.by_client[client] = left
        else:
            del self.by_client[client]
        async with self.changed:
            self.changed.notify_all()


STREAMS: web.AppKey[StreamGate] = web.AppKey("board_streams")


async def board_events(request: web.Request) -> web.StreamResponse:
    """The SSE feed: the board's sections on every change, a tick every few seconds, a
    ``bye`` when the stream's lifetime is up; refused over ``StreamGate``'s caps."""
    feed = request.app[FEED]
    gate = request.app[STREAMS]
    client = request.remote or "unknown"
    refused = gate.refusal(client)
    if refused is not None:
        return refused
    last_seen = request.headers.get("Last-Event-ID")
    loop = asyncio.get_running_loop()
    gate.opened(client)
    try:
        async with sse_response(request, ping_interval=60, send_timeout=SEND_TIMEOUT) as resp:
            ends = loop.time() + STREAM_LIFETIME
            sent = -1
            if last_seen == feed.event_id or not feed.payload:
                # Reconnected to the same collector, nothing missed; or nothing built yet:
                # the first build is the first board (until then, ticks every TICK).
                sent = feed.version
            feed.listen()
            try:
                while not feed.closing.is_set() and resp.is_connected():
                    left = ends - loop.time()
                    if left <= 0:
                        # The browser reconnects with the last id it saw: nothing missed.
                        await resp.send(
                            json.dumps({"now": to_iso(utcnow())}), event="bye", retry=RECONNECT_MS
                        )
                        break
                    if feed.version != sent and feed.payload:
                        sent = feed.version
                        await resp.send(
                            feed.payload, id=feed.event_id, event="board", retry=RECONNECT_MS
                        )
                    else:
                        await resp.send(json.dumps({"now": to_iso(utcnow())}), event="tick")
                    await feed.wait_newer(sent, min(TICK, left))
            finally:
                feed.listeners -= 1
    except ConnectionError:
        # The browser went away (closed, navigated, or never stayed for the headers; a
        # send to it then fails with a reset, or aiohttp's "Connection lost"): nothing to
        # send it, and nothing wrong here.
        log.debug("board events: the client went away")
        return web.Response()  # never sent: its connection is gone
    except TimeoutError:
        # An event not taken within SEND_TIMEOUT: the client stopped reading, and its
        # connection is aborted (aiohttp_sse) rather than left holding a stream.
        if count := _STREAMS_DROPPED.due():
            log.info(
                "board stream to %s dropped: it took nothing for %g s; %d dropped so (at most"
                " one such line a minute)",
                client,
                SEND_TIMEOUT,
                count,
            )
        return web.Response()  # never sent: its connection is gone
    finally:
        await gate.closed(client)
    return resp


async def check_page(request: web.Request) -> web.Response:
    collector = request.app[COLLECTOR]
    site, check = request.match_info["site"], request.match_info["check"]
    if (site, check) not in collector.live and (
        site not in collector.estate.sites or collector.estate.check(site, check) is None
    ):
        raise web.HTTPNotFound(text=f"no check {check!r} at site {site!r}")
    now = utcnow()
    history = await collector.read(
        check_history, collector.read_store, collector.estate, site, check, now
    )
    names = Names(collector.estate)
    view = check_view(
        site, check, collector.live.get((site, check)), collector.estate, names, False, now
    )
    open_planned = any(o["open"] and o["planned"] for o in history["outages"])
    if open_planned and view["state"] != "up":
        view["state"] = "maintenance"
    chart = latency_svg(request.app[FEED].latency.series(site, check))
    return _render(
        request,
        "board_check.html",
        now=to_iso(now),
        c=view,
        history=history,
        chart=chart,
        estate=collector.estate.name,
        **_ctx(request),
    )


async def _outage_page(
    request: web.Request, oid: str, *, status: int = 200, message: str | None = None
) -> web.Response:
    collector = request.app[COLLECTOR]
    now = utcnow()
    detail = await collector.read(outage_detail, collector.read_store, collector.estate, oid, now)
    if detail is None:
        if message is not None:  # a refused write says why (a 401 before any 404)
            return web.Response(text=message, status=status)
        raise web.HTTPNotFound(text=f"no outage with id {oid!r}")
    alert = await collector.read(alert_detail, collector.read_store, oid)
    return _render(
        request,
        "board_outage.html",
        status=status,
        now=to_iso(now),
        o=detail,
        alert=alert,
        message=message,
        saved=request.query.get("saved"),
        estate=collector.estate.name,
        **_ctx(request),
    )


async def outage_page(request: web.Request) -> web.Response:
    return await _outage_page(request, request.match_info["id"])


def local_target(text: str) -> URL | None:
    """``text`` as the Location a sign-in sends the browser to, or None unless that is a path
    on this server. Judged on what will be sent: yarl's URL drops tab, CR and LF, so
    ``next=/%09/evil.example`` passed a check of the text and went out as
    ``//evil.example``. No scheme, no host, one leading slash; and no control character or
    backslash (which browsers read as a slash) in the text or in what is sent."""
    if any(c == "\\" or unicodedata.category(c) == "Cc" for c in text):
        return None
    try:
        url = URL(text)
    except ValueError:
        return None
    sent = str(url)
    if url.scheme or url.host is not None or not sent.startswith("/") or sent.startswith("//"):
        return None
    if "\\" in sent or any(unicodedata.category(c) == "Cc" for c in sent):
        return None
    return url


async def login_page(request: web.Request) -> web.StreamResponse:
    """Sign in for reading when ``web.read_token_file`` is set: sets an HttpOnly cookie
    holding the read token (never the write token: that is typed into each write's form).
    An address with too many wrong tokens is answered 429 before its token is compared."""
    tokens = request.app[auth.TOKENS]
    web_cfg = request.app[COLLECTOR].estate.web
    target = local_target(request.query.get("next", "/")) or URL("/")
    message = None
    status, headers = 200, dict[str, str]()
    if request.method == "POST":
        try:
            form = await read_form(request)
        except BodyError as exc:
            return await exc.answer(request)
        token = form.get("token") or None
        if tokens.read is None:  # reads are open: nothing to sign in for
            raise web.HTTPSeeOther(target)
        attempts, client = request.app[auth.ATTEMPTS], auth.client(request)
        wait = attempts.refused(client)
        if wait is not None:
            message = f"Too many wrong tokens from this address: try again in {wait} s."
            status, headers = 429, {"Retry-After": str(wait)}
        elif token is not None and tokens.may_sign_in(token):
            resp = web.HTTPSeeOther(target)
            resp.set_cookie(
                auth.COOKIE,
                token,
                httponly=True,
                samesite="Strict",
                path="/",
                # Over TLS, sent back only over TLS; web.secure_cookie behind a TLS proxy.
                secure=request.secure if web_cfg.secure_cookie is None else web_cfg.secure_cookie,
            )
            raise resp
        else:
            if token is not None:
                attempts.failed(client)
            message = (
                "That is the write token: sign in with the read token."
                if tokens.may_write(token)
                else "That token is not right."
            )
            status = 401
    page = _render(
        request,
        "board_login.html",
        status=status,
        now=to_iso(utcnow()),
        next=str(target),
        message=message,
        estate=request.app[COLLECTOR].estate.name,
        **_ctx(request),
    )
    page.headers.update(headers)
    return page


async def _feed_ctx(app: web.Application) -> AsyncIterator[None]:
    feed = app[FEED]
    task = asyncio.create_task(feed.run(), name="board-feed")

    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _on_shutdown(app: web.Application) -> None:
    """Let open SSE streams end, or the server would wait for them before it stops."""
    feed = app[FEED]
    feed.closing.set()
    async with feed.updated:
        feed.updated.notify_all()


def add_board(app: web.Application, collector: Collector) -> None:
    """Mount the board on the collector's app: pages, the SSE feed, static files, writes."""
    env = environment()
    app[COLLECTOR] = collector
    app[ENV] = env
    app[FEED] = BoardFeed(collector, env)
    app[STREAMS] = StreamGate(collector)
    app.cleanup_ctx.append(_feed_ctx)
    app.on_shutdown.append(_on_shutdown)
    static = Path(__file__).resolve().parent / "static"
    app.router.add_static("/static/", static)
    app.router.add_get("/", board_page)
    app.router.add_get("/board/events", board_events)
    app.router.add_get("/board/checks/{site}/{check}", check_page)
    app.router.add_get("/board/outages/{id}", outage_page)
    for path, page in (("/board/login", login_page), ("/board/maintenance", maintenance_page)):
        app.router.add_get(path, page)  # and HEAD; any other method is a 405
        app.router.add_post(path, page)
    add_form_write(app, "/board/outages/{id}/annotate", ANNOTATE, annotation_fields)
    add_form_write(app, "/board/outages/{id}/ack", ACKNOWLEDGE, lambda form: {})


def add_form_write(
    app: web.Application,
    path: str,
    action: WriteAction[Any],
    fields: Callable[[Mapping[str, str]], dict[str, Any]],
) -> None:
    app.router.add_post(path, form_write(action, fields))
