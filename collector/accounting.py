"""Availability accounting: periods, outage-interval unions, business hours, rounding down.

Pure: no database, no files, no clock. The caller passes the outage rows and "now"; this module
applies the accounting rules of shared/DESIGN.md (issue 3):

- area downtime is the union of the area's counted outage intervals, clipped to the period, so
  overlapping outages count once and an outage across a boundary is split between periods;
- period boundaries are local midnight in the accounting timezone and period minutes are real
  elapsed minutes (a quarter holding a clock change is an hour longer or shorter);
- ``unknown`` time is "not monitored", never downtime;
- percentages are rounded down to two decimals; exact ratios are kept as ``Fraction``.

Times are integer microseconds since the Unix epoch (UTC) so that every sum is exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal
from zoneinfo import ZoneInfo

import holidays

from availmon.clock import from_iso
from availmon.clock import from_us as from_us  # re-exported: accounting works in µs
from availmon.clock import to_us as to_us
from availmon.config import Accounting, Estate
from availmon.errors import UsageError
from availmon.limits import FIRST_YEAR, LAST_YEAR, MAX_PERIOD_YEARS

US_PER_MINUTE = 60_000_000

#: ``[start, end)`` in microseconds since the epoch, UTC.
Span = tuple[int, int]
Kind = Literal["unplanned", "planned", "degraded"]
PeriodKind = Literal["fy_quarter", "quarter", "month", "range"]

#: The partner of outages whose site is not (or no longer) in the estate config.
UNASSIGNED = "unassigned"


class PeriodError(UsageError):
    """A period could not be parsed (``FY2019Q2``, ``2019Q3``, ``2019-09``, ``A..B``), or
    lies outside the years a report can cover."""


# -- time conversions ---------------------------------------------------------------------


def minutes(us: int) -> int | float:
    """Minutes for JSON: an int when whole (quarters always are), else the float nearest."""
    if us % US_PER_MINUTE == 0:
        return us // US_PER_MINUTE
    return us / US_PER_MINUTE


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Midnight is never inside a UK clock change (they happen at 01:00 UTC)."""
    return datetime.combine(day, time(0), tzinfo=tz)


# -- interval maths -----------------------------------------------------------------------


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans covering the same time; empty spans vanish, touching ones merge."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def clip(spans: Iterable[Span], lo: int, hi: int) -> list[Span]:
    """The parts of ``spans`` inside ``[lo, hi)``."""
    return [(max(s, lo), min(e, hi)) for s, e in spans if min(e, hi) > max(s, lo)]


def total(spans: Iterable[Span]) -> int:
    """Length of already-disjoint spans (use ``union`` first)."""
    return sum(e - s for s, e in spans)


def intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Intersection of two unions (sorted, disjoint), by walking both once."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


# -- rounding -------------------------------------------------------------------------------


def floor_percent(ratio: Fraction | None) -> Decimal | None:
    """A ratio as a percentage rounded down to two decimals: never claim more than achieved.

    Exact arithmetic, so 1 - 273/131040 gives 99.79 and exactly 0.95 gives 95.00 (a float
    floor would turn 0.95 * 10000 = 9499.999... into 94.99).
    """
    if ratio is None:
        return None
    hundredths = math.floor(ratio * 10_000)
    hundredths = min(max(hundredths, 0), 10_000)
    return (Decimal(hundredths) / 100).quantize(Decimal("0.01"))


def ratio_of(downtime_us: int, period_us: int) -> Fraction | None:
    """``1 - downtime / period`` exactly, kept within [0, 1]; None for an empty period.

    The combined figure sums four areas, so in a pathological quarter the sum can exceed the
    period; availability is then reported as 0 rather than a negative number.
    """
    if period_us <= 0:
        return None
    return min(max(1 - Fraction(downtime_us, period_us), Fraction(0)), Fraction(1))


def target_met(ratio: Fraction | None, target_percent: float) -> bool | None:
    """Compared on the exact ratio; the target is read as its decimal text (95.0 is 95/100)."""
    if ratio is None:
        return None
    return ratio * 100 >= Fraction(Decimal(str(target_percent)))


# -- periods --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """``[start, end)`` between local midnights; ``id`` is what the user typed, normalised."""

    id: str
    kind: PeriodKind
    start: datetime  # aware, in the accounting timezone
    end: datetime

    @property
    def start_us(self) -> int:
        return to_us(self.start)

    @property
    def end_us(self) -> int:
        return to_us(self.end)

    @property
    def minutes(self) -> int | float:
        """Real elapsed minutes (aware datetimes in one zone subtract by wall clock: use µs)."""
        return minutes(self.end_us - self.start_us)


_FY = re.compile(r"^FY(\d{4})Q([1-4])$", re.IGNORECASE)
_CQ = re.compile(r"^(\d{4})Q([1-4])$", re.IGNORECASE)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


def _months_later(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + n
    return index // 12, index % 12 + 1


def _span(pid: str, kind: PeriodKind, first: date, after: date, tz: ZoneInfo) -> Period:
    return Period(pid, kind, local_midnight(first, tz), local_midnight(after, tz))


def fy_quarter(fy: int, q: int, tz: ZoneInfo) -> Period:
    """UK financial year FY2019 runs 1 April 2019 to 31 March 2020; Q2 is July to September."""
    y, m = _months_later(fy, 4, 3 * (q - 1))
    y2, m2 = _months_later(y, m, 3)
    return _span(f"FY{fy}Q{q}", "fy_quarter", date(y, m, 1), date(y2, m2, 1), tz)


def calendar_quarter(year: int, q: int, tz: ZoneInfo) -> Period:
    y2, m2 = _months_later(year, 1, 3 * q)
    return _span(f"{year}Q{q}", "quarter", date(year, 3 * q - 2, 1), date(y2, m2, 1), tz)


def month(year: int, m: int, tz: ZoneInfo) -> Period:
    y2, m2 = _months_later(year, m, 1)
    return _span(f"{year}-{m:02d}", "month", date(year, m, 1), date(y2, m2, 1), tz)


def date_range(first: date, last: date, tz: ZoneInfo) -> Period:
    """``--from/--to`` with both days included: 2019-07-01..2019-09-30 is FY2019Q2."""
    if last < first:
        raise PeriodError(f"--to {last} is before --from {first}")
    return _bounded(_span(f"{first}..{last}", "range", first, last + timedelta(days=1), tz))


def _outside(text: str) -> PeriodError:
    return PeriodError(f"period {text} is outside {FIRST_YEAR}-01-01 to {LAST_YEAR}-12-31")


def _bounded(period: Period, text: str | None = None) -> Period:
    """Periods people ask for lie in FIRST_YEAR..LAST_YEAR and span at most MAX_PERIOD_YEARS:
    anything else is a mistake, and an unbounded one holds a reader thread for minutes
    (business hours are walked day by day)."""
    first, after = period.start.date(), period.end.date()
    if first.year < FIRST_YEAR or after > date(LAST_YEAR + 1, 1, 1):
        raise _outside(text or period.id)
    limit = date(first.year + MAX_PERIOD_YEARS, first.month, 1) + timedelta(days=first.day - 1)
    if after > limit:
        raise PeriodError(f"period {text or period.id} is longer than {MAX_PERIOD_YEARS} years")
    return period


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise PeriodError(f"not a date (YYYY-MM-DD): {text!r}") from None


def parse_period(text: str, tz: ZoneInfo) -> Period:
    """``FY2019Q2``, ``2019Q3``, ``2019-09`` or ``2019-07-01..2019-09-30``."""
    try:
        return _bounded(_parse_period(text, tz), text.strip())
    except (ValueError, OverflowError) as exc:  # e.g. FY0000Q1: no such date
        if isinstance(exc, PeriodError):
            raise
        raise _outside(text.strip()) from None


def _parse_period(text: str, tz: ZoneInfo) -> Period:
    s = text.strip()
    if m := _FY.match(s):
        return fy_quarter(int(m.group(1)), int(m.group(2)), tz)
    if m := _CQ.match(s):
        return calendar_quarter(int(m.group(1)), int(m.group(2)), tz)
    if m := _MONTH.match(s):
        if not 1 <= int(m.group(2)) <= 12:
            raise PeriodError(f"no month {m.group(2)} in {text!r}")
        return month(int(m.group(1)), int(m.group(2)), tz)
    if m := _RANGE.match(s):
        return date_range(parse_date(m.group(1)), parse_date(m.group(2)), tz)
    raise PeriodError(
        f"unknown period {text!r}: use FY2019Q2 (UK financial quarter), 2019Q3 (calendar"
        " quarter), 2019-09 (month) or 2019-07-01..2019-09-30"
    )


def quarter_containing(at: datetime, tz: ZoneInfo, *, financial: bool = True) -> Period:
    """The quarter holding ``at`` (financial and calendar quarters share their boundaries)."""
    local = at.astimezone(tz)
    q = (local.month - 1) // 3 + 1
    if not financial:
        return calendar_quarter(local.year, q, tz)
    fq = (q + 2) % 4 + 1  # calendar Q2 (April) is financial Q1
    return fy_quarter(local.year - (1 if q == 1 else 0), fq, tz)


def last_quarters(period: Period, tz: ZoneInfo, n: int = 4) -> list[Period]:
    """The quarter the period ends in and the ``n - 1`` before it, oldest first.

    A calendar-quarter report keeps calendar names; anything else uses financial quarters.
    """
    financial = period.kind != "quarter"
    last = quarter_containing(period.end - timedelta(microseconds=1), tz, financial=financial)
    out = [last]
    while len(out) < n:
        out.append(quarter_containing(out[-1].start - timedelta(days=1), tz, financial=financial))
    return out[::-1]


# -- business hours ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessCalendar:
    """Working days and hours in the accounting timezone, minus public holidays."""

    tz: ZoneInfo
    days: frozenset[int]
    start: time
    end: time
    country: str
    subdiv: str | None

    @classmethod
    def from_accounting(cls, acc: Accounting) -> BusinessCalendar:
        return cls(
            ZoneInfo(acc.timezone),
            frozenset(acc.business_days),
            acc.business_start,
            acc.business_end,
            acc.holidays_country,
            acc.holidays_subdiv,
        )

    def holidays_between(self, first: date, last: date) -> set[date]:
        years = range(first.year, last.year + 1)
        hol = holidays.country_holidays(self.country, subdiv=self.subdiv, years=years)
        return set(hol.keys())

    def spans(self, lo: int, hi: int) -> list[Span]:
        """Business-hours spans inside ``[lo, hi)``; each day's hours are local wall time."""
        if hi <= lo:
            return []
        first = from_us(lo).astimezone(self.tz).date() - timedelta(days=1)
        last = from_us(hi).astimezone(self.tz).date() + timedelta(days=1)
        closed = self.holidays_between(first, last)
        out: list[Span] = []
        day = first
        while day <= last:
            if day.weekday() in self.days and day not in closed:
                s = to_us(datetime.combine(day, self.start, tzinfo=self.tz))
                e = to_us(datetime.combine(day, self.end, tzinfo=self.tz))
                out.append((s, e))
            day += timedelta(days=1)
        return clip(union(out), lo, hi)

    def describe(self) -> str:
        names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        days = sorted(self.days)
        if days and days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
            day_text = f"{names[days[0]]}–{names[days[-1]]}"
        else:
            day_text = ", ".join(names[d] for d in days)
        hol = f"{self.country}-{self.subdiv}" if self.subdiv else self.country
        return f"{day_text} {self.start:%H:%M}–{self.end:%H:%M}, excluding {hol} bank holidays"


# -- outages and figures ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    """One stored not-up interval, as the accounting sees it (annotations already applied)."""

    id: str
    site: str
    check: str | None
    area: str
    state: str  # down, degraded, unknown
    start: int
    end: int | None  # None: still open, clipped at "now"
    planned: bool = False
    cause: str | None = None
    provider: str | None = None
    note: str | None = None
    source: str = "agent"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Outage:
        """From a ``Store.outages()``-shaped row (ISO UTC text times)."""
        return cls(
            id=row["id"],
            site=row["site"],
            check=row.get("check_name") or None,
            area=row["area"],
            state=row["state"],
            start=to_us(from_iso(row["start"])),
            end=to_us(from_iso(row["end"])) if row.get("end") else None,
            planned=bool(row.get("planned")),
            cause=row.get("cause") or None,
            provider=row.get("provider") or None,
            note=row.get("note") or None,
            source=row.get("source") or "agent",
        )

    @property
    def kind(self) -> Kind | None:
        """None for ``unknown`` (not monitored); planned wins over degraded."""
        if self.state == "unknown":
            return None
        if self.planned:
            return "planned"
        return "degraded" if self.state == "degraded" else "unplanned"

    def span(self, now: int) -> Span:
        return (self.start, self.end if self.end is not None else max(now, self.start))


@dataclass(frozen=True)
class AreaFigures:
    id: str
    name: str
    downtime: int
    planned: int
    degraded: int
    not_monitored: int
    business_downtime: int
    ratio: Fraction | None
    business_ratio: Fraction | None


@dataclass(frozen=True)
class PartnerFigures:
    id: str
    name: str
    areas: dict[str, int]
    downtime: int
    ratio: Fraction | None


@dataclass(frozen=True)
class Incident:
    """Overlapping outages of one kind in one area, seen from one or more sites."""

    ids: tuple[str, ...]
    area: str
    kind: Kind
    counted: bool
    start: int
    end: int | None
    duration: int  # inside the period
    business: int  # inside the period and business hours
    sites: tuple[str, ...]
    partners: tuple[str, ...]
    checks: tuple[str, ...]
    causes: tuple[str, ...]
    providers: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Accounts:
    period: Period
    measured_end: int  # min(period end, now): the figures cover [start, measured_end)
    period_time: int
    business_time: int
    areas: list[AreaFigures]
    combined_downtime: int
    combined_business_downtime: int
    combined_ratio: Fraction | None
    combined_business_ratio: Fraction | None
    target_percent: float
    met: bool | None
    partners: list[PartnerFigures]
    incidents: list[Incident] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.measured_end >= self.period.end_us


def counts(outage: Outage, estate: Estate, *, ignore_planned_rule: bool = False) -> bool:
    """Whether an outage is downtime under the accounting settings."""
    if outage.state == "unknown":
        return False
    area = estate.areas.get(outage.area)
    if outage.state == "degraded" and area is not None and not area.degraded_counts_as_down:
        return False
    return not (outage.planned and not estate.accounting.count_planned and not ignore_planned_rule)


def partner_of(site: str, estate: Estate) -> str:
    s = estate.sites.get(site)
    return s.partner if s is not None else UNASSIGNED


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        if v:
            seen.setdefault(v, None)
    return tuple(seen)


def _incidents(
    outages: Sequence[Outage],
    estate: Estate,
    lo: int,
    hi: int,
    now: int,
    business: Sequence[Span],
) -> list[Incident]:
    """Group each area's overlapping outages of one kind, so a WAN fault seen from three
    sites is one line in the board report; an incident's minutes are its union, clipped.
    Counted and uncounted outages never share an incident, so the counted incidents of an
    area cover exactly its downtime."""
    groups: dict[tuple[str, Kind, bool], list[Outage]] = {}
    for o in outages:
        if o.kind is not None:
            groups.setdefault((o.area, o.kind, counts(o, estate)), []).append(o)
    out: list[Incident] = []
    for (area, kind, counted), members in groups.items():
        members.sort(key=lambda o: o.start)
        cluster: list[Outage] = []
        cluster_end = -1
        clusters: list[list[Outage]] = []
        for o in members:
            s, e = o.span(now)
            if cluster and s <= cluster_end:
                cluster.append(o)
                cluster_end = max(cluster_end, e)
            else:
                if cluster:
                    clusters.append(cluster)
                cluster, cluster_end = [o], e
        if cluster:
            clusters.append(cluster)
        for c in clusters:
            spans = clip(union(o.span(now) for o in c), lo, hi)
            if not spans:
                continue
            ends = [o.end for o in c]
            out.append(
                Incident(
                    ids=tuple(o.id for o in c),
                    area=area,
                    kind=kind,
                    counted=counted,
                    start=min(o.start for o in c),
                    end=None if None in ends else max(e for e in ends if e is not None),
                    duration=total(spans),
                    business=total(intersect(spans, business)),
                    sites=tuple(sorted({o.site for o in c})),
                    partners=tuple(sorted({partner_of(o.site, estate) for o in c})),
                    checks=_distinct(o.check for o in c),
                    causes=_distinct(o.cause for o in c),
                    providers=_distinct(o.provider for o in c),
                    notes=_distinct(o.note for o in c),
                )
            )
    out.sort(key=lambda i: (i.start, i.area))
    return out


def account(
    period: Period,
    outages: Iterable[Outage],
    estate: Estate,
    now: datetime,
    calendar: BusinessCalendar | None = None,
) -> Accounts:
    """Every figure of the quarterly report for one period, from the outages that touch it."""
    cal = calendar or BusinessCalendar.from_accounting(estate.accounting)
    now_us = to_us(now)
    lo = period.start_us
    hi = max(lo, min(period.end_us, now_us))
    business = cal.spans(lo, hi)
    rows = [o for o in outages if o.start < hi and (o.end is None or o.end > lo)]

    def figure(selected: Iterable[Outage]) -> list[Span]:
        return clip(union(o.span(now_us) for o in selected), lo, hi)

    area_ids = list(estate.areas)
    area_ids += sorted({o.area for o in rows} - set(area_ids))  # never lose stored downtime
    period_time, business_time = hi - lo, total(business)
    areas: list[AreaFigures] = []
    for aid in area_ids:
        mine = [o for o in rows if o.area == aid]
        down = figure(o for o in mine if counts(o, estate))
        bdown = total(intersect(down, business))
        areas.append(
            AreaFigures(
                id=aid,
                name=estate.areas[aid].name if aid in estate.areas else aid,
                downtime=total(down),
                planned=total(
                    figure(
                        o for o in mine if o.planned and counts(o, estate, ignore_planned_rule=True)
                    )
                ),
                degraded=total(figure(o for o in mine if o.state == "degraded")),
                not_monitored=total(figure(o for o in mine if o.state == "unknown")),
                business_downtime=bdown,
                ratio=ratio_of(total(down), period_time),
                business_ratio=ratio_of(bdown, business_time),
            )
        )
    combined = sum(a.downtime for a in areas)
    combined_business = sum(a.business_downtime for a in areas)
    combined_ratio = ratio_of(combined, period_time)

    partner_ids = list(estate.partners)
    partner_ids += sorted({partner_of(o.site, estate) for o in rows} - set(partner_ids))
    partners: list[PartnerFigures] = []
    for pid in partner_ids:
        theirs = [o for o in rows if partner_of(o.site, estate) == pid and counts(o, estate)]
        per_area = {aid: total(figure(o for o in theirs if o.area == aid)) for aid in area_ids}
        down_p = sum(per_area.values())
        name = estate.partners[pid].name if pid in estate.partners else pid
        partners.append(PartnerFigures(pid, name, per_area, down_p, ratio_of(down_p, period_time)))

    return Accounts(
        period=period,
        measured_end=hi,
        period_time=period_time,
        business_time=business_time,
        areas=areas,
        combined_downtime=combined,
        combined_business_downtime=combined_business,
        combined_ratio=combined_ratio,
        combined_business_ratio=ratio_of(combined_business, business_time),
        target_percent=estate.accounting.target_percent,
        met=target_met(combined_ratio, estate.accounting.target_percent),
        partners=partners,
        incidents=_incidents(rows, estate, lo, hi, now_us, business),
    )
