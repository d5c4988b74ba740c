"""Availability accounting: periods, outage-interval unions, business hours, rounding down.

Pure: no database, no files, no clock. The caller passes the outage rows and "now"; this module
applies the accounting rules of docs/accounting.md (issue 3):

- area downtime is the union of the area's counted outage intervals, clipped to the period, so
  overlapping outages count once and an outage across a boundary is split between periods;
- period boundaries are local midnight in the accounting timezone and period minutes are real
  elapsed minutes (a quarter holding a clock change is an hour longer or shorter);
- ``unknown`` time is "not monitored", never downtime;
- percentages are rounded down to two decimals; exact ratios are kept as ``Fraction``.

Times are integer microseconds since the Unix epoch (UTC) so that every sum is exact.
"""

from __future__ import annotations

import gc
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import filterfalse
from operator import attrgetter
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from availmon.clock import from_iso
from availmon.clock import from_us as from_us  # re-exported: accounting works in µs
from availmon.clock import to_us as to_us
from availmon.config import Accounting, Estate
from availmon.errors import UsageError
from availmon.limits import FIRST_YEAR, LAST_YEAR, MAX_PERIOD_YEARS

US_PER_MINUTE = 60_000_000

#: ``[start, end)`` in microseconds since the epoch, UTC.
Span = tuple[int, int]
PeriodKind = Literal["fy_quarter", "quarter", "month", "range"]

#: The partner of outages whose site is not (or no longer) in the estate config.
UNASSIGNED = "unassigned"


class PeriodError(UsageError):
    """A period could not be parsed (``FY2019Q2``, ``2019Q3``, ``2019-09``, ``A..B``), or
    lies outside the years a report can cover."""


# -- time conversions ---------------------------------------------------------------------


def _us(value: int | str) -> int:
    """A row's time as microseconds: the store's integer, or ISO text parsed."""
    return value if isinstance(value, int) else to_us(from_iso(value))


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
    return merged(sorted(spans))


def merged(spans: Iterable[Span]) -> list[Span]:
    """``union`` of spans already in start order: a walk, no sort."""
    out: list[Span] = []
    cs = ce = 0
    open_ = False
    for start, end in spans:
        if end <= start:
            continue
        if open_ and start <= ce:
            if end > ce:
                ce = end
        else:
            if open_:
                out.append((cs, ce))
            cs, ce, open_ = start, end, True
    if open_:
        out.append((cs, ce))
    return out


def walk(bookings: Iterable[Any], skip: Callable[[Any], Any] | None = None) -> list[Span]:
    """``union`` of the spans of bookings already in start order (a quarter's groups hold a
    million: no sort, no list of them); those ``skip`` is true for left out."""
    return merged(map(_by_time, bookings if skip is None else filterfalse(skip, bookings)))


def clip(spans: Iterable[Span], lo: int, hi: int) -> list[Span]:
    """The parts of ``spans`` inside ``[lo, hi)``."""
    return [(max(s, lo), min(e, hi)) for s, e in spans if min(e, hi) > max(s, lo)]


def total(spans: Iterable[Span]) -> int:
    """Length of already-disjoint spans (use ``union`` first)."""
    return sum(e - s for s, e in spans)


def subtract_spans(a: Iterable[Span], b: Iterable[Span]) -> list[Span]:
    """The time in ``a`` that is not in ``b`` (any spans in; sorted, disjoint out)."""
    out: list[Span] = []
    cut = union(b)
    for s, e in union(a):
        cur = s
        for cs, ce in cut:
            if ce <= cur or cs >= e:
                continue
            if cs > cur:
                out.append((cur, cs))
            cur = max(cur, ce)
            if cur >= e:
                break
        if cur < e:
            out.append((cur, e))
    return out


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
    if first.year < FIRST_YEAR or last.year > LAST_YEAR:  # 9999-12-31 has no day after it
        raise _outside(f"{first}..{last}")
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


#: Public holidays by (country, subdivision, year) (``BusinessCalendar.holidays_of``).
_HOLIDAYS: dict[tuple[str, str | None, int], frozenset[date]] = {}


def _keepable(year: int) -> bool:
    """A year whose holidays a period can need (a day either side of the periods people
    may ask for), so kept and taken back."""
    return FIRST_YEAR - 1 <= year <= LAST_YEAR + 1


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
        out: set[date] = set()
        for year in range(first.year, last.year + 1):
            out |= self.holidays_of(year)
        return out

    def holidays_of(self, year: int) -> frozenset[date]:
        """The holidays the ``holidays`` library lists for ``year`` (each year on its own:
        their union is what it lists for several), once per process, or as ``learn`` was
        told. The library is imported only here: it loads every country's module on first
        use (0.17 CPU-s, as much as a report read back from kept days spends on a tenth of
        its work)."""
        key = (self.country, self.subdiv, year)
        found = _HOLIDAYS.get(key)
        if found is None:
            import holidays

            listed = holidays.country_holidays(self.country, subdiv=self.subdiv, years=year)
            found = _HOLIDAYS[key] = frozenset(listed.keys())
        return found

    def known(self) -> dict[int, list[str]]:
        """The years worked out in this process or learnt, with their dates (ISO), to keep
        (``learn`` takes them back)."""
        return {
            year: sorted(d.isoformat() for d in dates)
            # A copy: another thread may add a year meanwhile (an alert's business hours).
            for (country, subdiv, year), dates in list(_HOLIDAYS.items())
            if (country, subdiv) == (self.country, self.subdiv) and _keepable(year)
        }

    def learn(self, years: Mapping[str, Iterable[str]]) -> None:
        """Holidays kept from an earlier process, under the same release of the library
        (the caller's to check): all of them, or none (``ValueError``) when any is not a
        year and its dates in it."""
        read: dict[tuple[str, str | None, int], frozenset[date]] = {}
        for year_text, dates in years.items():
            year = int(year_text)
            if isinstance(dates, str) or not _keepable(year):
                raise ValueError(f"not a year of holidays: {year_text!r}")
            days = frozenset(date.fromisoformat(d) for d in dates)
            if any(d.year != year for d in days):
                raise ValueError(f"holidays of {year} outside it")
            read[(self.country, self.subdiv, year)] = days
        for key, days in read.items():
            _HOLIDAYS.setdefault(key, days)

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


class Outage(NamedTuple):
    """One stored not-up interval, as the accounting sees it (annotations already applied).

    A named tuple, not a dataclass: a report reads every row of its period (a million in a
    busy quarter), and the store's rows become these with no per-field work.
    """

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
    #: When the failure was declared (the start event's ``detected_at``): before it, the
    #: confirmation window (issue 10).
    detected: int | None = None
    agent: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Outage:
        """From a ``Store.outages()``-shaped row: times as ISO UTC text, or as the store
        keeps them (integer microseconds)."""
        return cls(
            id=row["id"],
            site=row["site"],
            check=row.get("check_name") or None,
            area=row["area"],
            state=row["state"],
            start=_us(row["start"]),
            end=_us(row["end"]) if row.get("end") is not None else None,
            planned=bool(row.get("planned")),
            cause=row.get("cause") or None,
            provider=row.get("provider") or None,
            note=row.get("note") or None,
            source=row.get("source") or "agent",
            detected=_us(row["detected_at"]) if row.get("detected_at") is not None else None,
            agent=row.get("agent") or None,
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
    #: Behind a down dependency (booked here, counted per the area's policy).
    unreachable: int = 0
    #: From first failed probe to declaration (inside ``downtime`` unless the policy says).
    confirmation: int = 0
    #: Taken out of the period by the policy (neither up nor down).
    excluded: int = 0
    #: The period the ratio is over: the measured period less ``excluded``.
    measured: int = 0
    #: Downtime with a provider (a supplier's), and the ratio without it.
    third_party: int = 0
    ratio_own: Fraction | None = None


@dataclass(frozen=True)
class PartnerFigures:
    id: str
    name: str
    areas: dict[str, int]
    downtime: int
    ratio: Fraction | None


Kind = Literal["unplanned", "planned", "degraded", "unreachable"]


@dataclass(frozen=True)
class Incident:
    """Overlapping time of one kind in one area, seen from one or more sites."""

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
    #: The windows that made it planned (or "annotation").
    planned_by: tuple[str, ...] = ()
    #: Quorum services, and the sites whose agents saw the failure.
    services: tuple[str, ...] = ()
    seen_by: tuple[str, ...] = ()
    #: A failure too few sites saw, booked to their path.
    path: bool = False
    #: ``site/check`` of the checks that were unreachable behind it.
    behind: tuple[str, ...] = ()
    #: ``site/check`` of the down ancestor (an unreachable incident).
    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class Share:
    """Counted downtime put down to one provider or one cause, summed over the areas."""

    name: str
    downtime: int
    business: int


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
    #: Counted downtime by provider ("" for none recorded) and by cause.
    providers: list[Share] = field(default_factory=list)
    causes: list[Share] = field(default_factory=list)
    #: The KPI without the downtime put down to third parties (a provider is recorded).
    combined_own_downtime: int = 0
    combined_own_ratio: Fraction | None = None
    #: site/check -> the part of the period the check existed in, when not all of it.
    partial: dict[str, Span] = field(default_factory=dict)
    #: Every booking, for listings that say which window covered what.
    bookings: list[Any] = field(default_factory=list)
    windows: list[Any] = field(default_factory=list)
    #: Window id -> the time it planned.
    covered: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.measured_end >= self.period.end_us


_CLASS_OF_STATE = {"down": "down", "degraded": "degraded", "unknown": "unknown"}


def counts(outage: Outage, estate: Estate, *, ignore_planned_rule: bool = False) -> bool:
    """Whether an outage, taken alone, is downtime under its area's policy."""
    cls = _CLASS_OF_STATE.get(outage.state, "down")
    if outage.planned and cls != "unknown" and not ignore_planned_rule:
        cls = "planned"
    return estate.accounting.treatment(estate.areas.get(outage.area), cls) == "downtime"


def partner_of(site: str, estate: Estate) -> str:
    s = estate.sites.get(site)
    return s.partner if s is not None else UNASSIGNED


def _distinct(values: Iterable[str | None]) -> tuple[str, ...]:
    """The values given, once each, in the order first seen (empty ones left out)."""
    return tuple(v for v in dict.fromkeys(values) if v)


_SITE, _CAUSE, _PROVIDER, _NOTE = (
    attrgetter("site"),
    attrgetter("cause"),
    attrgetter("provider"),
    attrgetter("note"),
)
_PLANNED_BY, _SERVICE, _PATH, _PARENT = (
    attrgetter("planned_by"),
    attrgetter("service"),
    attrgetter("path"),
    attrgetter("parent"),
)


_KIND = {
    "down": "unplanned",
    "confirmation": "unplanned",
    "planned": "planned",
    "degraded": "degraded",
    "unreachable": "unreachable",
}


def _combined(parts: Iterable[tuple[int, int]]) -> Fraction | None:
    """1 - the sum of each area's unavailability (its downtime over its own measured period).

    With nothing excluded every area's period is the same, and this is the board's formula
    1 - (sum of area downtime) / (period minutes)."""
    got = list(parts)
    if not got or all(p <= 0 for _, p in got):
        return None
    lost = sum((Fraction(d, p) for d, p in got if p > 0), Fraction(0))
    return min(max(1 - lost, Fraction(0)), Fraction(1))


#: A booking's span; its start, the order bookings are walked in.
_by_time = attrgetter("start", "end")
_START = attrgetter("start")


def _listed(b: Any) -> tuple[int, int, str, str]:
    """The order of an incident's bookings (and so of its ids, checks and causes)."""
    return (b.start, b.end, b.site, b.check or "")


class _Pauses:
    """``paused_gc``'s pauses under way, in every thread, and whether collection was
    enabled before the first of them."""

    lock = threading.Lock()
    count = 0
    was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: a busy quarter makes millions of tuples that
    never form a cycle, and every collection would walk all of them again (a third of a
    report's time at a million outages). Collection is one switch for the process, and the
    collector works figures out on two threads (the board's reads, the API's reports):
    counted, so that it comes back on when the last pause ends, not when the first does."""
    with _Pauses.lock:
        if _Pauses.count == 0:
            _Pauses.was_enabled = gc.isenabled()
            gc.disable()
        _Pauses.count += 1
    try:
        yield
    finally:
        with _Pauses.lock:
            _Pauses.count -= 1
            if _Pauses.count == 0 and _Pauses.was_enabled:
                gc.enable()


@paused_gc()
def account(
    period: Period,
    outages: Iterable[Outage],
    estate: Estate,
    now: datetime,
    calendar: BusinessCalendar | None = None,
    *,
    offline: Iterable[Any] = (),
    windows: Iterable[Any] = (),
    combined_only: bool = False,
) -> Accounts:
    """Every figure of the quarterly report for one period (issue 3, and the attribution
    rules of issue 10: windows, quorum services, dependencies, the per-area policy), with
    the garbage collector paused (see ``paused_gc``).

    ``combined_only``: the areas' and combined figures only, for the history's quarters
    (partners, incidents and the provider and cause shares left empty: a third of the
    work)."""
    from collector.attribution import Rules, attribute  # the rules sit on this module's maths
    from collector.tally import booked, finish, groups_of, summarise, treatments

    cal = calendar or BusinessCalendar.from_accounting(estate.accounting)
    now_us = to_us(now)
    lo = period.start_us
    hi = max(lo, min(period.end_us, now_us))
    business = cal.spans(lo, hi)
    rows = [o for o in outages if o.start < hi and (o.end is None or o.end > lo)]
    # The records an incident may take its dates from: those reaching past the period.
    edges = (
        {}
        if combined_only
        else {o.id: o for o in rows if o.start < lo or o.end is None or o.end >= hi}
    )
    rules = Rules.of(estate)
    att = attribute(
        estate, rows, lo, hi, now_us, offline=offline, windows=windows, ordered=False, rules=rules
    )
    # The records are the largest thing held (half a report's memory at a million): what
    # follows needs only the bookings, and reuses the records' memory.
    del rows
    treatment_of = treatments(estate)
    bookings = booked(att.bookings, treatment_of)
    groups = groups_of(bookings)
    treat = {k: treatment_of(*k) for k in groups}
    part = summarise(
        groups, treat, estate, lo, hi, business, rules.parent_refs(), combined_only=combined_only
    )
    del groups
    return finish(
        [part],
        period,
        estate,
        lo,
        hi,
        business,
        edges,
        combined_only=combined_only,
        partial=att.partial,
        bookings=bookings,
        windows=att.windows,
    )
