"""Maintenance windows (issue 10): planned work declared before it happens.

Pure: windows in, planned time out. Two kinds, both in integer microseconds (UTC):

- **declared** (one-off): recorded with who and when (``availmon maintenance add``, the API,
  the board's form). A declared window plans time only from the moment it was recorded: work
  that is already under way when someone declares a window was not planned, and calling it
  planned afterwards is a reclassification, which has its own record (an annotation);
- **recurring**, in the config (``[[maintenance]]``): "every Sunday 02:00-04:00", "the first
  Tuesday of the month", expanded with dateutil's RFC 5545 rules in the window's own timezone,
  so a window at 02:00 local stays at 02:00 across the clock change.

A window covers an outage when the outage matches every list of its scope (sites, areas,
checks, partners; an empty list matches all). The part of an outage inside a window is
planned; what overruns the window is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil import rrule

from availmon.config import RecurringWindow, Scope, parse_every
from collector.accounting import Span, clip, from_us, to_us, union
from collector.accounting import subtract_spans as subtract

Source = Literal["declared", "config"]


@dataclass(frozen=True)
class Window:
    """One occurrence of planned work, as the accounting uses it."""

    id: str
    start: int
    end: int
    scope: Scope = field(default_factory=Scope)
    reason: str | None = None
    source: Source = "declared"
    #: Who declared it and when (declared windows); None for the config's.
    by: str | None = None
    recorded_at: int | None = None
    name: str | None = None

    @property
    def effective(self) -> Span:
        """The time it can plan: from its start, but never before it was declared."""
        start = self.start if self.recorded_at is None else max(self.start, self.recorded_at)
        return (start, max(start, self.end))


@dataclass(frozen=True)
class Target:
    """What a piece of time belongs to, for matching windows and routes."""

    site: str
    partner: str
    areas: frozenset[str]
    #: Names a window's ``checks`` may use: ``check``, ``site/check``, a service's id.
    checks: frozenset[str] = field(default_factory=frozenset)


def covers(scope: Scope, target: Target) -> bool:
    """Every list given must match; an empty list matches anything."""
    if scope.sites and target.site not in scope.sites:
        return False
    if scope.partners and target.partner not in scope.partners:
        return False
    if scope.areas and not target.areas & set(scope.areas):
        return False
    return not scope.checks or bool(target.checks & set(scope.checks))


_FREQ: dict[str, Literal[0, 1, 2, 3, 4, 5, 6]] = {
    "daily": rrule.DAILY,
    "weekly": rrule.WEEKLY,
    "monthly": rrule.MONTHLY,
}
_DAYS = (rrule.MO, rrule.TU, rrule.WE, rrule.TH, rrule.FR, rrule.SA, rrule.SU)


def occurrences(rule: RecurringWindow, lo: int, hi: int, default_tz: str) -> list[Window]:
    """The rule's windows that overlap ``[lo, hi)``.

    Each occurrence starts at the local wall-clock ``start`` on its day and ends at ``end``
    (the next day when ``end`` is not after ``start``), in the rule's timezone.
    """
    tz = ZoneInfo(rule.timezone or default_tz)
    freq, days, nth = parse_every(rule.every)
    first = from_us(lo).astimezone(tz).date() - timedelta(days=2)
    last = from_us(hi).astimezone(tz).date() + timedelta(days=1)
    if rule.first_day is not None:
        first = max(first, rule.first_day)
    if rule.last_day is not None:
        last = min(last, rule.last_day)
    if last < first:
        return []
    byweekday = [_DAYS[d](nth) if nth is not None else _DAYS[d] for d in days] or None
    dates = rrule.rrule(
        _FREQ[freq],
        dtstart=datetime.combine(first, datetime.min.time()),
        until=datetime.combine(last, datetime.min.time()),
        byweekday=byweekday,
    )
    out = []
    for d in dates:
        day: date = d.date()
        start = datetime.combine(day, rule.start, tzinfo=tz)
        end_day = day if rule.end > rule.start else day + timedelta(days=1)
        end = datetime.combine(end_day, rule.end, tzinfo=tz)
        s, e = to_us(start), to_us(end)
        if s < hi and e > lo:
            out.append(
                Window(
                    id=f"{rule.name}@{start.isoformat(timespec='minutes')}",
                    start=s,
                    end=e,
                    scope=Scope(
                        sites=rule.sites,
                        areas=rule.areas,
                        checks=rule.checks,
                        partners=rule.partners,
                    ),
                    reason=rule.reason,
                    source="config",
                    name=rule.name,
                )
            )
    return out


def expand(
    rules: Iterable[RecurringWindow], declared: Iterable[Window], lo: int, hi: int, tz: str
) -> list[Window]:
    """Every window, declared or recurring, that overlaps ``[lo, hi)``, in start order."""
    out = [w for w in declared if w.effective[0] < hi and w.effective[1] > lo]
    for rule in rules:
        out += occurrences(rule, lo, hi, tz)
    out.sort(key=lambda w: (w.effective[0], w.id))
    return out


def planned_parts(
    span: Span, windows: Sequence[Window], target: Target
) -> list[tuple[Span, Window]]:
    """The parts of ``span`` inside windows that cover ``target``, each with its window.

    Where windows overlap, the one that starts first (then the lower id) takes the time, so
    every planned microsecond names exactly one window.
    """
    out: list[tuple[Span, Window]] = []
    taken: list[Span] = []
    for w in windows:
        if not covers(w.scope, target):
            continue
        for part in clip([w.effective], *span):
            for free in subtract([part], taken):
                out.append((free, w))
            taken = union([*taken, part])
    out.sort(key=lambda p: p[0])
    return out
