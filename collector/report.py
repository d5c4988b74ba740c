"""The board's quarterly report and the live KPI, built on the collector's outage store.

``report_json`` gathers every figure once (collector/tally.py reads the period's outages in
one pass and applies the rules of collector/accounting.py); the html, md and csv renderers
only lay that same dict out, so all four formats always agree. The figures of a quarter
that has ended are cached in the store (``Store.cached_figures``), keyed on the config they
were computed with; every write that changes an outage in that quarter drops them, so a
late event or an annotation is never hidden by the cache. ``kpi_snapshot`` is the
quarter-to-date view. Functions here are synchronous: the collector runs them in a thread,
off the event loop.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import partial
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import jinja2
import pygal
from pygal.style import Style

from availmon.clock import from_iso, to_us
from availmon.config import Estate
from availmon.text import csv_cell, markdown
from collector.accounting import (
    Accounts,
    BusinessCalendar,
    Incident,
    Outage,
    Period,
    floor_percent,
    from_us,
    last_quarters,
    minutes,
    parse_period,
    quarter_containing,
    ratio_of,
)
from collector.store import Store
from collector.tally import FIGURES_VERSION, combined_downtime, tally

TARGET_COLOUR = "#b3261e"
AREA_COLOURS = ("#1f4e79", "#8fb3d9")


# -- gathering ----------------------------------------------------------------------------


def outages_for(store: Store, period: Period) -> list[Outage]:
    """The period's outages as objects (for ``accounting.account``; the report reads rows)."""
    return [Outage.from_row(r) for r in store.outages_between(period.start, period.end)]


def accounts_for(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    *,
    members: bool = True,
) -> Accounts:
    """``accounting.account`` for the period, in one pass over the store's rows."""
    return tally(store, period, estate, to_us(now), calendar, members=members)


def fingerprint(estate: Estate) -> str:
    """What cached figures depend on besides the data: the config (names, partners, sites,
    accounting settings) and the rules' version."""
    text = f"{FIGURES_VERSION}:{estate.model_dump_json()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _percent(ratio: Fraction | None) -> float | None:
    """The rounded-down figure as a JSON number (99.79); float() of a 2-dp Decimal is exact
    enough that formatting it with two decimals gives the same digits back."""
    value = floor_percent(ratio)
    return float(value) if value is not None else None


def _ratio(ratio: Fraction | None) -> float | None:
    return float(ratio) if ratio is not None else None


def _local(us: int | None, tz: ZoneInfo) -> str | None:
    return from_us(us).astimezone(tz).isoformat() if us is not None else None


def history(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    known: Mapping[tuple[int, int], int] | None = None,
) -> list[dict[str, Any]]:
    """Combined availability of the report's quarter and the three before it.

    A quarter that ended before anything was recorded, or has not started, has no figure
    (``None``) rather than a 100% nobody measured. ``known``: combined downtime (µs) already
    summed, by ``(start, end)`` of the period (the report's own quarter is not read twice).
    """
    tz = calendar.tz
    earliest = store.earliest_record()
    first = from_iso(earliest) if earliest else None
    now_us = to_us(now)
    out = []
    for q in last_quarters(period, tz):
        measured = first is not None and q.end > first and q.start < now
        ratio: Fraction | None = None
        if measured:
            lo = q.start_us
            hi = max(lo, min(q.end_us, now_us))
            down = (known or {}).get((lo, q.end_us))
            if down is None:
                down = _cached(
                    store,
                    f"combined:{fingerprint(estate)}:{lo}:{q.end_us}",
                    q,
                    now_us,
                    partial(combined_downtime, store, q, estate, now_us),
                )
            ratio = ratio_of(down, hi - lo)
        out.append(
            {
                "id": q.id,
                "start": q.start.isoformat(),
                "end": q.end.isoformat(),
                "availability_percent": _percent(ratio) if measured else None,
                "availability_ratio": _ratio(ratio) if measured else None,
                "complete": now_us >= q.end_us if measured else None,
            }
        )
    return out


T = TypeVar("T")


def _cached(store: Store, key: str, period: Period, now_us: int, compute: Callable[[], T]) -> T:
    """``compute()``, through the store's cache when the period has ended (its figures no
    longer move with the clock, only with the data, and a write into it drops them)."""
    if now_us < period.end_us:
        return compute()
    hit = store.cached_figures(key)
    if hit is not None:
        value: T = json.loads(hit)
        return value
    version = store.figures_version(period.end_us)
    value = compute()
    store.cache_figures(key, period.start_us, period.end_us, version, json.dumps(value))
    return value


def _incident_json(i: Incident, estate: Estate, tz: ZoneInfo) -> dict[str, Any]:
    area = estate.areas.get(i.area)
    return {
        "ids": list(i.ids),
        "start": _local(i.start, tz),
        "end": _local(i.end, tz),
        "minutes": minutes(i.duration),
        "business_hours_minutes": minutes(i.business),
        "area": i.area,
        "area_name": area.name if area else i.area,
        "sites": list(i.sites),
        "partners": list(i.partners),
        "check": ", ".join(i.checks) or None,
        "kind": i.kind,
        "planned": i.kind == "planned",
        "counted": i.counted,
        "cause": "; ".join(i.causes) or None,
        "provider": "; ".join(i.providers) or None,
        "note": "; ".join(i.notes) or None,
    }


def _figures(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    members: bool,
) -> dict[str, Any]:
    """The parts of the report that come from the period's outages (cached once it ended:
    a cached entry with members serves a request without)."""
    now_us = to_us(now)
    fp = fingerprint(estate)
    span = f"{period.start_us}:{period.end_us}"
    if not members and now_us >= period.end_us:
        hit = store.cached_figures(f"period:{fp}:{span}:members")
        if hit is not None:
            whole: dict[str, Any] = json.loads(hit)
            return whole
    return _cached(
        store,
        f"period:{fp}:{span}:{'members' if members else 'lean'}",
        period,
        now_us,
        lambda: _figures_of(
            accounts_for(store, estate, period, now, calendar, members=members),
            estate,
            calendar.tz,
        ),
    )


def _figures_of(acc: Accounts, estate: Estate, tz: ZoneInfo) -> dict[str, Any]:
    areas = [
        {
            "id": a.id,
            "name": a.name,
            "downtime_minutes": minutes(a.downtime),
            "planned_minutes": minutes(a.planned),
            "degraded_minutes": minutes(a.degraded),
            "not_monitored_minutes": minutes(a.not_monitored),
            "business_hours_downtime_minutes": minutes(a.business_downtime),
            "availability_percent": _percent(a.ratio),
            "availability_ratio": _ratio(a.ratio),
            "business_hours_availability_percent": _percent(a.business_ratio),
            "business_hours_availability_ratio": _ratio(a.business_ratio),
        }
        for a in acc.areas
    ]
    partners = [
        {
            "id": p.id,
            "name": p.name,
            "downtime_minutes": minutes(p.downtime),
            "areas": {aid: minutes(us) for aid, us in p.areas.items()},
            "availability_percent": _percent(p.ratio),
            "availability_ratio": _ratio(p.ratio),
        }
        for p in acc.partners
    ]
    return {
        "measured_to": _local(acc.measured_end, tz),
        "complete": acc.complete,
        "period_minutes": minutes(acc.period_time),
        "business_hours_minutes": minutes(acc.business_time),
        "areas": areas,
        "combined": {
            "downtime_minutes": minutes(acc.combined_downtime),
            "availability_percent": _percent(acc.combined_ratio),
            "availability_ratio": _ratio(acc.combined_ratio),
            "target_percent": acc.target_percent,
            "met": acc.met,
            "business_hours_downtime_minutes": minutes(acc.combined_business_downtime),
            "business_hours_availability_percent": _percent(acc.combined_business_ratio),
            "business_hours_availability_ratio": _ratio(acc.combined_business_ratio),
        },
        "by_partner": partners,
        "outages": [_incident_json(i, estate, tz) for i in acc.incidents],
        "combined_us": acc.combined_downtime,  # for the history, not the report
    }


def build_report(
    store: Store, estate: Estate, period: Period, now: datetime, *, members: bool = True
) -> dict[str, Any]:
    """Every figure of the report as one JSON-ready dict (the ``json`` format, verbatim).

    ``members=False`` leaves each outage's ``ids`` empty and ``check`` null: the html and
    md formats show neither, and they are the one part that grows with every row.
    """
    acc_cfg = estate.accounting
    calendar = BusinessCalendar.from_accounting(acc_cfg)
    tz = calendar.tz
    f = _figures(store, estate, period, now, calendar, members)
    return {
        "estate": estate.name,
        "period": {
            "id": period.id,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "timezone": acc_cfg.timezone,
            "measured_to": f["measured_to"],
            "complete": f["complete"],
        },
        "period_minutes": f["period_minutes"],
        "business_hours_minutes": f["business_hours_minutes"],
        "generated_at": now.astimezone(tz).isoformat(timespec="seconds"),
        "settings": {
            "count_planned": acc_cfg.count_planned,
            "business_hours": calendar.describe(),
            "report_min_outage_minutes": acc_cfg.report_min_outage_minutes,
        },
        "areas": f["areas"],
        "combined": f["combined"],
        "by_partner": f["by_partner"],
        "outages": f["outages"],
        "history": history(
            store,
            estate,
            period,
            now,
            calendar,
            {(period.start_us, period.end_us): f["combined_us"]},
        ),
    }


def report_json(
    store: Store, estate: Estate, period_text: str | None, now: datetime
) -> dict[str, Any]:
    """``/api/v1/report?period=P``; no P is the quarter to date. Raises ``PeriodError`` (an
    AvailmonError) for a P that is not a period."""
    tz = ZoneInfo(estate.accounting.timezone)
    period = parse_period(period_text, tz) if period_text else quarter_containing(now, tz)
    return build_report(store, estate, period, now)


def kpi_snapshot(store: Store, estate: Estate, now: datetime) -> dict[str, tuple[float, float]]:
    """Quarter to date, for /metrics: area id (and ``combined``) -> (downtime s, ratio).

    The ratio is over the time elapsed so far in the quarter; areas are always present (0
    downtime, ratio 1.0) so a dashboard never shows a gap for a clean quarter.
    """
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    quarter = quarter_containing(now, calendar.tz)
    acc = accounts_for(store, estate, quarter, now, calendar, members=False)
    out: dict[str, tuple[float, float]] = {}
    for a in acc.areas:
        out[a.id] = (a.downtime / 1_000_000, float(a.ratio) if a.ratio is not None else 1.0)
    ratio = acc.combined_ratio
    out["combined"] = (
        acc.combined_downtime / 1_000_000,
        float(ratio) if ratio is not None else 1.0,
    )
    return out


# -- presentation helpers -----------------------------------------------------------------


def show_minutes(value: float | None) -> str:
    """Minutes for people: whole minutes plain, otherwise rounded up to a tenth, so that
    downtime is never understated."""
    if value is None:
        return "—"
    tenths = math.ceil(round(value * 10, 6))
    return str(tenths // 10) if tenths % 10 == 0 else f"{tenths / 10:.1f}"


def show_percent(value: float | None) -> str:
    return "—" if value is None else f"{Decimal(str(value)):.2f}"


def show_time(text: str | None, fmt: str = "%a %d %b %Y %H:%M") -> str:
    return datetime.fromisoformat(text).strftime(fmt) if text else "open"


def significant(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The outages the board reads one by one: at least the configured threshold long."""
    threshold = data["settings"]["report_min_outage_minutes"]
    return [o for o in data["outages"] if o["minutes"] >= threshold]


def _kind_text(o: Mapping[str, Any]) -> str:
    text = {"planned": "Planned", "unplanned": "Unplanned", "degraded": "Degraded"}[o["kind"]]
    return text if o["counted"] else f"{text} (not counted)"


# -- renderers ----------------------------------------------------------------------------


class Renderer(Protocol):
    """One report format: the report dict in, the file's text out."""

    def __call__(self, data: Mapping[str, Any]) -> str: ...


def render_json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


class _SafeWriter:
    """Every cell through ``csv_cell``: no cause, note or name is run as a formula."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([csv_cell(cell) for cell in row])


def render_csv(data: Mapping[str, Any]) -> str:
    """Blocks separated by a blank line, each with its own header row, for spreadsheets."""
    buf = io.StringIO()
    w = _SafeWriter(csv.writer(buf, lineterminator="\n"))
    p = data["period"]
    w.writerow(["Period", "Start", "End", "Period minutes", "Business-hours minutes"])
    w.writerow(
        [
            p["id"],
            p["start"],
            p["end"],
            show_minutes(data["period_minutes"]),
            show_minutes(data["business_hours_minutes"]),
        ]
    )
    w.writerow([])
    w.writerow(
        [
            "Area",
            "Name",
            "Downtime minutes",
            "Planned minutes",
            "Business-hours downtime minutes",
            "Not monitored minutes",
            "Availability %",
            "Business-hours availability %",
        ]
    )
    for a in data["areas"]:
        w.writerow(
            [
                a["id"],
                a["name"],
                show_minutes(a["downtime_minutes"]),
                show_minutes(a["planned_minutes"]),
                show_minutes(a["business_hours_downtime_minutes"]),
                show_minutes(a["not_monitored_minutes"]),
                show_percent(a["availability_percent"]),
                show_percent(a["business_hours_availability_percent"]),
            ]
        )
    c = data["combined"]
    w.writerow(
        [
            "combined",
            "Combined service availability",
            show_minutes(c["downtime_minutes"]),
            "",
            show_minutes(c["business_hours_downtime_minutes"]),
            "",
            show_percent(c["availability_percent"]),
            show_percent(c["business_hours_availability_percent"]),
        ]
    )
    w.writerow([])
    w.writerow(["Target %", "Met"])
    w.writerow([show_percent(c["target_percent"]), {True: "yes", False: "no"}.get(c["met"], "")])
    w.writerow([])
    area_ids = [a["id"] for a in data["areas"]]
    w.writerow(["Partner", "Name", *area_ids, "Downtime minutes", "Availability %"])
    for pt in data["by_partner"]:
        w.writerow(
            [
                pt["id"],
                pt["name"],
                *(show_minutes(pt["areas"].get(a, 0)) for a in area_ids),
                show_minutes(pt["downtime_minutes"]),
                show_percent(pt["availability_percent"]),
            ]
        )
    w.writerow([])
    w.writerow(
        [
            "Start",
            "End",
            "Minutes",
            "Business-hours minutes",
            "Area",
            "Sites",
            "Check",
            "Kind",
            "Counted",
            "Cause",
            "Provider",
            "Note",
        ]
    )
    for o in data["outages"]:
        w.writerow(
            [
                o["start"],
                o["end"] or "",
                show_minutes(o["minutes"]),
                show_minutes(o["business_hours_minutes"]),
                o["area"],
                " ".join(o["sites"]),
                o["check"] or "",
                o["kind"],
                "yes" if o["counted"] else "no",
                o["cause"] or "",
                o["provider"] or "",
                o["note"] or "",
            ]
        )
    return buf.getvalue()


def _environment(fmt: str) -> jinja2.Environment:
    """Escaping by construction, whatever a template is called (issue 15): the HTML
    environment autoescapes every value; the Markdown one passes every value through
    ``availmon.text.markdown`` (``finalize``), so no template can forget to."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("collector", "templates"),
        autoescape=fmt == "html",
        finalize=markdown if fmt == "md" else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["minutes"] = show_minutes
    env.filters["percent"] = show_percent
    env.filters["pct"] = lambda v: "—" if v is None else f"{show_percent(v)}%"
    env.filters["when"] = show_time
    env.filters["kind"] = _kind_text
    return env


def _context(data: Mapping[str, Any]) -> dict[str, Any]:
    p = data["period"]
    return {
        "data": data,
        "listed": significant(data),
        "period_from": show_time(p["start"], "%-d %B %Y"),
        "period_to": show_time(
            (datetime.fromisoformat(p["end"]) - timedelta(days=1)).isoformat(), "%-d %B %Y"
        ),
    }


def render_markdown(data: Mapping[str, Any]) -> str:
    return _environment("md").get_template("report.md.j2").render(**_context(data))


_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL)


def _svg(chart: Any) -> str:
    """Inline SVG with no scripts: pygal embeds a small config script even with ``js=[]``;
    a board paper is static, and mail gateways strip scripts anyway."""
    return _SCRIPT.sub("", chart.render(is_unicode=True))


def _style(colors: tuple[str, ...] = AREA_COLOURS) -> Style:
    return Style(
        background="white",
        plot_background="white",
        foreground="#222",
        foreground_strong="#222",
        foreground_subtle="#999",
        font_family="Helvetica, Arial, sans-serif",
        label_font_size=14,
        major_label_font_size=14,
        legend_font_size=14,
        title_font_size=17,
        value_font_size=14,
        colors=colors,
    )


def _chart_options() -> dict[str, Any]:
    return {
        "style": _style(),
        "js": [],
        "disable_xml_declaration": True,
        "width": 900,
        "height": 300,
        "truncate_legend": -1,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 3,
        "print_values": False,
    }


def downtime_chart(data: Mapping[str, Any]) -> str:
    """Downtime minutes by area: unplanned and degraded, with planned maintenance apart."""
    counted_planned = data["settings"]["count_planned"]
    # Horizontal, so that the long area names are read in full, not truncated.
    chart = pygal.HorizontalStackedBar(
        title="Downtime minutes by area", truncate_label=-1, **_chart_options()
    )
    areas = data["areas"][::-1]  # horizontal bars are drawn bottom-up; keep report order
    chart.x_labels = [a["name"] for a in areas]
    chart.add(
        "Unplanned and degraded",
        [
            max(a["downtime_minutes"] - (a["planned_minutes"] if counted_planned else 0), 0)
            for a in areas
        ],
    )
    chart.add(
        "Planned maintenance" + ("" if counted_planned else " (not counted)"),
        [a["planned_minutes"] for a in areas],
    )
    return _svg(chart)


def history_chart(data: Mapping[str, Any]) -> str:
    """The last four quarters' combined availability against the target (a dashed line)."""
    hist = data["history"]
    target = data["combined"]["target_percent"]
    values = [h["availability_percent"] for h in hist]
    low = min([target, *(v for v in values if v is not None)])
    options = _chart_options()
    options["style"] = _style(colors=(AREA_COLOURS[0], TARGET_COLOUR))
    chart = pygal.Line(
        title="Combined availability, last four quarters (%)",
        range=(math.floor(low) - 1, 100),
        include_x_axis=False,
        dots_size=5,
        margin_right=60,  # room for the last quarter's value label
        print_values=True,
        value_formatter=show_percent,
        **{k: v for k, v in options.items() if k != "print_values"},
    )
    chart.x_labels = [
        h["id"]
        + (" (to date)" if h["complete"] is False else "")
        + ("" if h["availability_percent"] is not None else " (no data)")
        for h in hist
    ]
    chart.add("Combined availability", values, stroke_style={"width": 3})
    chart.add(
        f"Target {show_percent(target)}%",
        [target] * len(hist),
        show_dots=False,
        print_values=False,
        stroke_style={"width": 2, "dasharray": "8, 6"},
    )
    return _svg(chart)


def render_html(data: Mapping[str, Any]) -> str:
    return (
        _environment("html")
        .get_template("report.html.j2")
        .render(
            **_context(data),
            downtime_svg=downtime_chart(data),
            history_svg=history_chart(data),
        )
    )


#: Report formats; adding one is a renderer and a line here.
FORMATS: Mapping[str, Renderer] = {
    "html": render_html,
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
}
#: The formats that show each outage's ids or checks (``build_report(members=...)``).
SHOWS_MEMBERS = frozenset({"csv", "json"})


def render(fmt: str, data: Mapping[str, Any]) -> str:
    return FORMATS[fmt](data)
