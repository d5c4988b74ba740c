"""The board's quarterly report and the live KPI, built on the collector's outage store.

``report_json`` gathers every figure once (collector/accounting.py does the sums); the html,
md and csv renderers only lay that same dict out, so all four formats always agree. The
figures of a quarter that has ended are cached in the store (``Store.cached_figures``, issue
9), keyed on the accounting rules they were computed with; every write that changes an
outage, a declared window or a not-monitored record in that quarter drops them, so a late
event or an annotation is never hidden by the cache (``--as-of`` reports are never cached).
``kpi_snapshot`` is the quarter-to-date view for /metrics. Functions here are synchronous:
the collector runs them in a thread, off the event loop.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import math
import os
import re
import time
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import cache, partial
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

import jinja2
import orjson
import pygal
from pygal.style import Style

from availmon.clock import from_iso
from availmon.config import TIME_CLASSES, Estate, Scope
from availmon.text import csv_cell, markdown
from collector.accounting import (
    Accounts,
    BusinessCalendar,
    Incident,
    Outage,
    Period,
    Share,
    account,
    floor_percent,
    from_us,
    last_quarters,
    local_midnight,
    minutes,
    parse_period,
    paused_gc,
    quarter_containing,
    to_us,
)
from collector.attribution import Offline
from collector.maintenance import Window, expand
from collector.rules import accounting_view, digest, estate_with
from collector.store import Store
from collector.tally import (
    Part,
    PartCache,
    RowsBetween,
    RowsById,
    accounts_in_parts,
    parts_of,
)

TARGET_COLOUR = "#b3261e"
AREA_COLOURS = ("#1f4e79", "#8fb3d9")
#: Planned time an area's policy does not count: grey, apart from the counted kinds.
UNCOUNTED_COLOUR = "#b0b0b0"


# -- gathering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """Every record a period's figures come from, as recorded by one moment. The outages
    come once, as the store reads them: the accounting keeps those it needs, and the
    largest thing a report holds is let go as soon as it has been attributed."""

    outages: Iterator[Outage]
    offline: list[Offline]
    windows: list[Window]


def window_of(row: Mapping[str, Any]) -> Window:
    """A declared window as the accounting uses it."""
    return Window(
        id=row["id"],
        start=to_us(from_iso(row["start"])),
        end=to_us(from_iso(row["end"])),
        scope=Scope.model_validate(row["scope"]),
        reason=row.get("reason"),
        by=row.get("by"),
        recorded_at=to_us(from_iso(row["recorded_at"])),
    )


def facts_for(store: Store, start: datetime, end: datetime, as_of: datetime | None = None) -> Facts:
    """Outages, not-monitored records and declared windows overlapping ``[start, end)``;
    with ``as_of``, only what had been recorded by then (``--as-of``)."""
    outages = (
        _outages(store.outage_records_us(start, end))
        if as_of is None
        else map(Outage.from_row, store.outages_as_of(start, end, as_of))
    )
    offline = _offline(store, start, end, as_of)
    windows = [window_of(r) for r in store.windows(start, end, as_of)]
    return Facts(outages, offline, windows)


def _offline(store: Store, start: datetime, end: datetime, as_of: datetime | None) -> list[Offline]:
    return [
        Offline(
            r["site"],
            r["agent"],
            to_us(from_iso(r["start"])),
            to_us(from_iso(r["end"])) if r["end"] else None,
        )
        for r in store.not_monitored(start, end, as_of)
    ]


def _outages(
    rows: Iterable[tuple[Any, ...]], same: dict[Any, Any] | None = None
) -> Iterator[Outage]:
    """``Outage`` s of rows in its field order, each repeated text (site, check, area,
    state, source, agent) one shared string: SQLite hands back a new string per cell, and
    the million rows of a busy quarter held 700 MB, half of it copies of the same few
    hundred names (sharing them costs less CPU than it saves: fewer objects are kept)."""
    one = (same if same is not None else {}).setdefault
    new = tuple.__new__
    for r in rows:
        yield new(
            Outage,
            (
                r[0],
                one(r[1], r[1]),
                one(r[2], r[2]),
                one(r[3], r[3]),
                one(r[4], r[4]),
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                one(r[11], r[11]),
                r[12],
                one(r[13], r[13]),
            ),
        )


def accounts_for(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    *,
    as_of: datetime | None = None,
    combined_only: bool = False,
    bookings: bool = False,
) -> Accounts:
    """The figures as of ``as_of`` (records made by then, open ones closed then), else
    live as of ``now``.

    Live figures are worked out a day at a time (``collector.tally``), each ended day's
    summary kept in the store's figures cache (dropped by any write into it): a report
    holds one day's records at once, and one made again reads only the days written to
    since. ``bookings``: every booking as well (``availmon list``), from the whole period
    at once.
    """
    with paused_gc():  # a million rows read: see paused_gc
        if as_of is not None or bookings:
            facts = facts_for(store, period.start, period.end, as_of)
            return account(
                period,
                facts.outages,
                estate,
                as_of or now,
                calendar,
                offline=facts.offline,
                windows=facts.windows,
                combined_only=combined_only,
            )
        return accounts_in_parts(
            period,
            *_readers(store, period.start_us),
            estate,
            now,
            calendar,
            offline=_offline(store, period.start, period.end, None),
            windows=[window_of(r) for r in store.windows(period.start, period.end)],
            combined_only=combined_only,
            cache=_part_cache(store, estate, min(period.end_us, to_us(now)), combined_only),
        )


def _readers(store: Store, lo: int) -> tuple[RowsBetween, RowsById]:
    """How a period starting at ``lo`` is read a part at a time: its outages by start,
    and by id; each repeated name one string throughout (see ``_outages``)."""
    same: dict[Any, Any] = {}

    def rows_between(after: int | None, before: int) -> Iterator[Outage]:
        return _outages(store.outage_records_starting(after, before, lo), same)

    def rows_by_id(ids: Sequence[str]) -> Iterator[Outage]:
        return _outages(store.outage_records_by_id(ids), same)

    return rows_between, rows_by_id


def _part_cache(
    store: Store, estate: Estate, hi: int, read_only: bool, refused: list[int] | None = None
) -> PartCache:
    """Days' summaries in the store's figures cache, keyed on the rules and the day's
    start; the version is taken before any is worked out, so a write that comes between
    keeps what was read before it out of the cache. ``read_only``: parts are only read
    (the history's and the live KPI's figures: no write for them). ``refused``: where the
    start of each part the store would not keep goes."""
    prefix = f"part:{fingerprint(estate)}:"
    same: dict[str, str] = {}
    version = None if read_only else store.figures_version(hi)

    def get(lo: int) -> Part | None:
        hit = store.cached_figures(f"{prefix}{lo}")
        if hit is None:
            return None
        try:
            return Part.from_json(json.loads(hit), same)
        except (ValueError, KeyError, TypeError):  # not a part this code wrote: work it out
            return None

    def put(part: Part) -> None:
        kept = store.cache_figures(
            f"{prefix}{part.lo}", part.lo, part.hi, version, _encoded(part.to_json())
        )
        if not kept and refused is not None:
            refused.append(part.lo)

    return PartCache(get, put, lambda lo: store.cached_until(f"{prefix}{lo}"))


def keep_days(
    store: Store, estate: Estate, now: datetime, refused: list[int] | None = None
) -> Iterator[float]:
    """Work out and keep the summary of each day of this quarter and the last that has
    ended and is not kept yet (the collector does, in the background), one day per step:
    yields the CPU seconds each took. A report then reads them back rather than the
    quarter's records. ``refused``: the start of each day the store would not keep (it
    cannot be written, or a write into the quarter came while the day was worked out)."""
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    # Figures kept under other rules (a config changed since) are never read again under
    # these: dropped, or the store would keep a quarter's days for every change.
    store.drop_figures_except(fingerprint(estate))
    # To the last midnight: the day still running is worked out by each report.
    now = local_midnight(now.astimezone(calendar.tz).date(), calendar.tz)
    with _holidays_kept(store, estate, calendar):
        yield from _keep_days(store, estate, now, calendar, refused)


def keep_history(store: Store, estate: Estate, now: datetime) -> Iterator[float]:
    """Work out and keep the combined figure of each ended quarter that the history chart
    of this quarter's report or the last one's shows and that is not kept (the collector
    does, after the days): yields the CPU seconds of each. After a change of the rules or an
    import, the quarterly report then reads them back rather than the records of three more
    quarters (a fifth of a cold report's cost)."""
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    tz = calendar.tz
    now = local_midnight(now.astimezone(tz).date(), tz)
    earliest = store.earliest_record()
    if earliest is None or store.figures_version(0) is None:
        return  # nothing recorded, or a store that cannot keep what would be worked out
    first = from_iso(earliest)
    shown = {
        (q.start_us, q.end_us): q
        for report in last_quarters(quarter_containing(now, tz), tz, 2)
        for q in last_quarters(report, tz)
    }
    now_us = to_us(now)
    with _holidays_kept(store, estate, calendar):
        for _, q in sorted(shown.items()):
            key = _history_key(estate, q)
            if q.end_us > now_us or q.end <= first or store.cached_until(key) is not None:
                continue  # running (never kept), before the records, or kept
            started = time.thread_time()
            _cached(
                store, key, q, now_us, partial(_combined, store, estate, q, now, calendar, None)
            )
            yield time.thread_time() - started


def _history_key(estate: Estate, q: Period) -> str:
    return f"combined:{fingerprint(estate)}:{q.start_us}:{q.end_us}"


def _keep_days(
    store: Store,
    estate: Estate,
    now: datetime,
    calendar: BusinessCalendar,
    refused: list[int] | None,
) -> Iterator[float]:
    for period in last_quarters(quarter_containing(now, calendar.tz), calendar.tz, 2):
        hi = min(period.end_us, to_us(now))
        if hi <= period.start_us:
            continue
        lo = period.start_us
        started = time.thread_time()
        for _part, made in parts_of(
            period,
            *_readers(store, lo),
            estate,
            now,
            calendar,
            offline=_offline(store, period.start, period.end, None),
            expanded=expand(
                estate.maintenance,
                [window_of(r) for r in store.windows(period.start, period.end)],
                lo,
                hi,
                estate.accounting.timezone,
            ),
            cache=_part_cache(store, estate, hi, False, refused),
            skim=True,
        ):
            if made:
                yield time.thread_time() - started
                started = time.thread_time()


def rules_in_force(store: Store, estate: Estate, as_of: datetime | None) -> tuple[Estate, str]:
    """The estate whose rules were in force ``as_of`` (recorded ones), and what to print
    about them; live reports use today's config."""
    view = accounting_view(estate)
    if as_of is not None:
        found = store.rules_at(as_of)
        if found is not None:
            dig, recorded, text = found
            return estate_with(estate, text), f"rules {dig}, recorded {recorded}"
        return estate, f"rules {digest(view)} (today's config: none recorded by then)"
    return estate, f"rules {digest(view)}"


def _percent(ratio: Fraction | None) -> float | None:
    """The rounded-down figure as a JSON number (99.79); float() of a 2-dp Decimal is exact
    enough that formatting it with two decimals gives the same digits back."""
    value = floor_percent(ratio)
    return float(value) if value is not None else None


def _ratio(ratio: Fraction | None) -> float | None:
    return float(ratio) if ratio is not None else None


#: Bumped when the code changes what cached figures hold (the rules are in the key too).
FIGURES_VERSION = "issue9-days-2"
#: The bank holidays' release, from the package's metadata: importing the library to ask
#: costs 0.08 CPU-s, and a report read back from kept days needs nothing else of it.
HOLIDAYS_VERSION = importlib.metadata.version("holidays")


def fingerprint(estate: Estate) -> str:
    """What cached figures depend on besides the data: the part of the config the figures
    are worked out from (``accounting_view``: names, partners, sites and their checks'
    areas and dependencies, accounting settings and policy, recurring windows, services;
    what a report ``as_of`` works its figures out from too), the rules' version, and the
    bank holidays' (business hours move when a holiday is added). A change elsewhere (a
    probe's timeout, an alert route, the web settings) keeps them. The time zone rules are
    in it too (``zone_rules``)."""
    global _fingerprinted
    last = _fingerprinted
    if last is not None and last[0] is estate:  # a report asks for it once per cache key
        return last[1]
    # In the config's order, not sorted: the report lists areas and partners in it.
    view = json.dumps(accounting_view(estate), separators=(",", ":"))
    zones = {estate.accounting.timezone} | {
        w.timezone for w in estate.maintenance if w.timezone is not None
    }
    rules = ",".join(zone_rules(z) for z in sorted(zones))
    text = f"{FIGURES_VERSION}:{HOLIDAYS_VERSION}:{rules}:{view}"
    found = hashlib.sha256(text.encode()).hexdigest()[:32]
    _fingerprinted = (estate, found)
    return found


@cache
def zone_rules(key: str) -> str:
    """A digest of the time zone rules ``ZoneInfo(key)`` reads, found where it finds them
    (the system's zone files first, then the tzdata package): a tz database update that
    moves a clock change moves local midnights, so figures kept under the old rules are
    not read under the new. Once per process, as ``ZoneInfo`` keeps the rules it loaded."""
    for root in zoneinfo.TZPATH:
        path = os.path.join(root, key)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()[:16]
    try:
        import importlib.resources

        found = importlib.resources.files("tzdata.zoneinfo").joinpath(*key.split("/"))
        return hashlib.sha256(found.read_bytes()).hexdigest()[:16]
    except (ImportError, OSError, ValueError):
        return "unknown"  # ZoneInfo(key) cannot load it either: the config check says so


#: The last estate fingerprinted, and its fingerprint (an estate is never changed in place:
#: a reload makes a new one).
_fingerprinted: tuple[Estate, str] | None = None


T = TypeVar("T")


@contextmanager
def _holidays_kept(store: Store, estate: Estate, calendar: BusinessCalendar) -> Iterator[None]:
    """The calendar's bank holidays read from the store before figures are worked out,
    and the years worked out meanwhile kept after, so that a report read back from kept
    days never imports the holidays library (``BusinessCalendar.holidays_of``). Keyed on
    the fingerprint (it holds the library's release and the calendar's country), with no
    period: no write of records drops them, and the keeper's cleanup keeps them while the
    rules hold."""
    key = f"holidays:{fingerprint(estate)}:"
    hit = store.cached_figures(key)
    had: set[int] = set()
    if hit is not None:
        try:
            kept = json.loads(hit)
            calendar.learn(kept)
            had = {int(year) for year in kept}
        except (ValueError, TypeError, AttributeError):  # not what this code wrote: ask
            pass
    yield
    known = calendar.known()
    if known.keys() - had:
        data = _encoded({str(year): dates for year, dates in known.items()})
        store.cache_figures(key, 0, 0, store.figures_version(0), data)


def _encoded(value: Any) -> bytes:
    """Figures as JSON (UTF-8 bytes) for the store's cache. orjson writes a quarter's
    figures (tens of MB) four times faster than the standard library; reading them back,
    the standard library is the faster and the smaller (measured: orjson took 80 MB more).
    Kept as bytes: decoding them to text would hold a second copy."""
    return orjson.dumps(value)


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
    store.cache_figures(key, period.start_us, period.end_us, version, _encoded(value))
    return value


def _local(us: int | None, tz: ZoneInfo) -> str | None:
    return from_us(us).astimezone(tz).isoformat() if us is not None else None


def history(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    as_of: datetime | None = None,
    known: Mapping[tuple[int, int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Combined availability of the report's quarter and the three before it.

    A quarter that ended before anything was recorded, or has not started, has no figure
    (``None``) rather than a 100% nobody measured. ``known``: a quarter's figure already
    worked out, by ``(start, end)`` µs (the report's own quarter is not computed twice);
    live figures of ended quarters come through the store's cache.
    """
    tz = calendar.tz
    earliest = store.earliest_record()
    first = from_iso(earliest) if earliest else None
    at = as_of or now
    now_us = to_us(now)
    out = []
    for q in last_quarters(period, tz):
        measured = first is not None and q.end > first and q.start < at
        fig: dict[str, Any] | None = None
        if measured:
            fig = (known or {}).get((q.start_us, q.end_us))
            if fig is None:
                compute = partial(_combined, store, estate, q, now, calendar, as_of)
                fig = (
                    compute()
                    if as_of is not None
                    else _cached(store, _history_key(estate, q), q, now_us, compute)
                )
        out.append(
            {
                "id": q.id,
                "start": q.start.isoformat(),
                "end": q.end.isoformat(),
                "availability_percent": fig["availability_percent"] if fig else None,
                "availability_ratio": fig["availability_ratio"] if fig else None,
                "complete": fig["complete"] if fig else None,
            }
        )
    return out


def _combined(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    as_of: datetime | None,
) -> dict[str, Any]:
    """One quarter's combined availability, as ``history`` lists it."""
    acc = accounts_for(store, estate, period, now, calendar, as_of=as_of, combined_only=True)
    return {
        "availability_percent": _percent(acc.combined_ratio),
        "availability_ratio": _ratio(acc.combined_ratio),
        "complete": acc.complete,
    }


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
        "planned_by": list(i.planned_by),
        "services": list(i.services),
        "seen_by": list(i.seen_by),
        "path": i.path,
        "behind": list(i.behind),
        "unreachable_behind": list(i.parents),
    }


def _shares(shares: list[Share], none: str) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name or none,
            "recorded": bool(s.name),
            "downtime_minutes": minutes(s.downtime),
            "business_hours_downtime_minutes": minutes(s.business),
        }
        for s in shares
    ]


def policy_json(estate: Estate, area_ids: Iterable[str] = ()) -> dict[str, dict[str, str]]:
    """Each area's treatment of each class of time (what the report prints and lays its
    columns and charts out by): the config's areas, then any other of ``area_ids`` (an
    area the records hold and the config no longer does: the estate-wide treatment)."""
    acc = estate.accounting
    ids = list(estate.areas)
    ids += [aid for aid in area_ids if aid not in estate.areas]
    return {
        aid: {cls: acc.treatment(estate.areas.get(aid), cls) for cls in TIME_CLASSES} for aid in ids
    }


@paused_gc()  # the figures of a busy quarter are millions of tuples
def build_report(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    *,
    as_of: datetime | None = None,
    generated_at: datetime | None = None,
) -> dict[str, Any]:
    """Every figure of the report as one JSON-ready dict (the ``json`` format, verbatim).

    ``as_of``: only the records made by then, under the rules in force then (the figures
    as they were reported then). ``generated_at`` is an input, never read from a clock
    here, so the same data gives the same bytes (default: ``as_of``, else ``now``).
    """
    estate, rules_text = rules_in_force(store, estate, as_of)
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    with _holidays_kept(store, estate, calendar):
        at = as_of or now
        compute = partial(_figures, store, estate, period, now, calendar, as_of, rules_text)
        f = (
            compute()
            if as_of is not None
            else _cached(
                store,
                f"period:{fingerprint(estate)}:{period.start_us}:{period.end_us}",
                period,
                to_us(now),
                compute,
            )
        )
        own = {
            "availability_percent": f["combined"]["availability_percent"],
            "availability_ratio": f["combined"]["availability_ratio"],
            "complete": f["period"]["complete"],
        }
        return {
            "estate": f["estate"],
            # The cache is keyed on the span: "2019Q3" and "FY2019Q2" share it, not their names.
            "period": {
                **f["period"],
                "id": period.id,
                "start": period.start.isoformat(),
                "end": period.end.isoformat(),
            },
            "period_minutes": f["period_minutes"],
            "business_hours_minutes": f["business_hours_minutes"],
            "as_of": at.astimezone(calendar.tz).isoformat(timespec="seconds"),
            "generated_at": (generated_at or at)
            .astimezone(calendar.tz)
            .isoformat(timespec="seconds"),
            **{k: v for k, v in f.items() if k not in _ENVELOPE},
            "history": history(
                store, estate, period, now, calendar, as_of, {(period.start_us, period.end_us): own}
            ),
        }


#: The keys ``_figures`` leaves to ``build_report`` (they move with the clock or the call).
_ENVELOPE = frozenset({"estate", "period", "period_minutes", "business_hours_minutes"})


def _figures(
    store: Store,
    estate: Estate,
    period: Period,
    now: datetime,
    calendar: BusinessCalendar,
    as_of: datetime | None,
    rules_text: str,
) -> dict[str, Any]:
    """The report's figures from the period's records: everything but when it was made
    and the history (cached as one JSON object once the period has ended)."""
    acc_cfg = estate.accounting
    tz = calendar.tz
    acc = accounts_for(store, estate, period, now, calendar, as_of=as_of)
    areas = [
        {
            "id": a.id,
            "name": a.name,
            "downtime_minutes": minutes(a.downtime),
            "planned_minutes": minutes(a.planned),
            "degraded_minutes": minutes(a.degraded),
            "not_monitored_minutes": minutes(a.not_monitored),
            "unreachable_minutes": minutes(a.unreachable),
            "confirmation_minutes": minutes(a.confirmation),
            "excluded_minutes": minutes(a.excluded),
            "measured_minutes": minutes(a.measured),
            "third_party_minutes": minutes(a.third_party),
            "business_hours_downtime_minutes": minutes(a.business_downtime),
            "availability_percent": _percent(a.ratio),
            "availability_ratio": _ratio(a.ratio),
            "availability_without_third_party_percent": _percent(a.ratio_own),
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
    covered = acc.covered
    windows = [
        {
            "id": w.id,
            "source": w.source,
            "start": _local(w.start, tz),
            "end": _local(w.end, tz),
            "reason": w.reason,
            "by": w.by,
            "recorded_at": _local(w.recorded_at, tz),
            "scope": w.scope.model_dump(mode="json"),
            "covered_minutes": minutes(covered.get(w.id, 0)),
        }
        for w in acc.windows
        if w.source == "declared" or w.id in covered
    ]
    partial_checks = [
        {
            "check": ref,
            "from": _local(max(lo, acc.period.start_us), tz),
            "to": _local(min(hi, acc.measured_end), tz),
            "minutes": minutes(max(0, min(hi, acc.measured_end) - lo)),
        }
        for ref, (lo, hi) in sorted(acc.partial.items())
    ]
    return {
        "estate": estate.name,
        "period": {
            "id": period.id,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "timezone": acc_cfg.timezone,
            "measured_to": _local(acc.measured_end, tz),
            "complete": acc.complete,
        },
        "period_minutes": minutes(acc.period_time),
        "business_hours_minutes": minutes(acc.business_time),
        "settings": {
            "count_planned": acc_cfg.count_planned,
            "business_hours": calendar.describe(),
            "report_min_outage_minutes": acc_cfg.report_min_outage_minutes,
            "rules": rules_text,
        },
        "policy": policy_json(estate, (a.id for a in acc.areas)),
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
            "without_third_party": {
                "downtime_minutes": minutes(acc.combined_own_downtime),
                "availability_percent": _percent(acc.combined_own_ratio),
                "availability_ratio": _ratio(acc.combined_own_ratio),
            },
        },
        "by_partner": partners,
        "by_provider": _shares(acc.providers, "no provider recorded"),
        "by_cause": _shares(acc.causes, "cause not recorded"),
        "windows": windows,
        "partial_checks": partial_checks,
        "outages": [_incident_json(i, estate, tz) for i in acc.incidents],
    }


def report_json(
    store: Store, estate: Estate, period_text: str | None, now: datetime
) -> dict[str, Any]:
    """``/api/v1/report?period=P``; no P is the quarter to date. Raises ``PeriodError`` (an
    AvailmonError) for a P that is not a period, an empty one too (as ``/api/v1/outages``)."""
    tz = ZoneInfo(estate.accounting.timezone)
    period = quarter_containing(now, tz) if period_text is None else parse_period(period_text, tz)
    return build_report(store, estate, period, now)


def kpi_snapshot(store: Store, estate: Estate, now: datetime) -> dict[str, tuple[float, float]]:
    """Quarter to date, for /metrics: area id (and ``combined``) -> (downtime s, ratio).

    The ratio is over the time elapsed so far in the quarter; areas are always present (0
    downtime, ratio 1.0) so a dashboard never shows a gap for a clean quarter.
    """
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    quarter = quarter_containing(now, calendar.tz)
    acc = accounts_for(store, estate, quarter, now, calendar, combined_only=True)
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


def show_target(value: float | None) -> str:
    """The target exactly as configured, with at least two decimals: rounding it as a
    figure would print 99.995 as 100.00, a target nobody set."""
    if value is None:
        return "—"
    whole, _, frac = f"{Decimal(str(value)):f}".partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def show_days(start: str, end: str) -> str:
    """A span of local time as the days it covers, the way the period is shown: the end is
    exclusive, so a span ending at midnight ends on the day before (a check retired on
    20 August existed until 19 August); a start or end within a day keeps its time."""

    def day(at: datetime) -> str:
        midnight = at.time() == datetime.min.time()
        return at.strftime("%-d %B %Y" if midnight else "%-d %B %Y %H:%M")

    lo, hi = datetime.fromisoformat(start), datetime.fromisoformat(end)
    last = hi - timedelta(days=1) if hi.time() == datetime.min.time() and hi > lo else hi
    return f"{day(lo)} to {day(last)}"


def downtime_summary(data: Mapping[str, Any]) -> str:
    """The downtime and what the combined figure divides it by, so that the one line the
    CLI prints can be worked again: the period's minutes when no area has time excluded
    (1 − downtime / period), else each area's downtime over its own measured minutes (the
    combined figure is 1 − the sum of those)."""
    total = show_minutes(data["combined"]["downtime_minutes"])
    period = data["period_minutes"]
    areas = [(a, a.get("measured_minutes", period)) for a in data["areas"]]
    if all(measured == period for _, measured in areas):
        return f"{total} minutes of downtime in {show_minutes(period)}"
    each = ", ".join(
        f"{a['id']} {show_minutes(a['downtime_minutes'])}/{show_minutes(measured)}"
        for a, measured in areas
    )
    return (
        f"{total} minutes of downtime, each area's over its measured minutes (the period's"
        f" {show_minutes(period)} less the time its policy excludes): {each}"
    )


def show_time(text: str | None, fmt: str = "%a %d %b %Y %H:%M") -> str:
    return datetime.fromisoformat(text).strftime(fmt) if text else "open"


def significant(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The outages the board reads one by one: at least the configured threshold long."""
    threshold = data["settings"]["report_min_outage_minutes"]
    return [o for o in data["outages"] if o["minutes"] >= threshold]


def planned_treatment(data: Mapping[str, Any], area_id: str) -> str:
    """How an area's planned time counted: its policy as the report prints it (an estate
    policy or an area's own can say ``up`` or ``excluded`` whatever ``count_planned``
    says). Figures kept before the policy named every area fall back on the setting."""
    policy = data["policy"].get(area_id)
    if policy is not None:
        return str(policy["planned"])
    return "downtime" if data["settings"]["count_planned"] else "up"


#: Planned time that is not downtime, in a figure's words, by treatment.
PLANNED_APART = {"up": "not counted", "excluded": "excluded"}
#: How planned maintenance counted, in the report's note, by treatment.
PLANNED_WORDS = {
    "downtime": "counted as downtime",
    "up": "not counted as downtime",
    "excluded": "not counted as downtime (taken out of the period)",
}


def planned_cell(data: Mapping[str, Any], area: Mapping[str, Any]) -> str:
    """The "of which planned" cell: the planned minutes inside the area's downtime. Where
    its policy does not count planned time, none of the downtime is planned, and the
    planned minutes are said apart ("0 (120 not counted)"): a part larger than the whole
    read as if the downtime had been understated."""
    treatment = planned_treatment(data, area["id"])
    if treatment == "downtime" or not area["planned_minutes"]:
        return show_minutes(area["planned_minutes"])
    return f"0 ({show_minutes(area['planned_minutes'])} {PLANNED_APART[treatment]})"


def planned_note(data: Mapping[str, Any]) -> str:
    """How planned maintenance counted, in one sentence: for the estate when every area
    treats it alike, else area by area (each area's policy can differ)."""
    by: dict[str, list[str]] = {}
    for a in data["areas"]:
        by.setdefault(planned_treatment(data, a["id"]), []).append(a["name"])
    if len(by) <= 1:
        alike = next(iter(by), planned_treatment(data, ""))
        return f"Planned maintenance is {PLANNED_WORDS[alike]}."
    parts = [f"{PLANNED_WORDS[t]} in {', '.join(names)}" for t, names in by.items()]
    return f"Planned maintenance is {'; '.join(parts)}."


def _kind_text(o: Mapping[str, Any]) -> str:
    text = {
        "planned": "Planned",
        "unplanned": "Unplanned",
        "degraded": "Degraded",
        "unreachable": "Unreachable",
    }[o["kind"]]
    return text if o["counted"] else f"{text} (not counted)"


def attribution_text(o: Mapping[str, Any]) -> str:
    """Why this line is where it is, in words: the window, the sites, what was behind it."""
    parts = []
    windows = [w for w in o.get("planned_by", []) if w != "annotation"]
    if windows:
        parts.append("window " + ", ".join(windows))
    if "annotation" in o.get("planned_by", []):
        parts.append("marked planned")
    if o.get("services") and not o.get("path"):
        parts.append("seen from " + ", ".join(o.get("seen_by", [])))
    if o.get("path"):
        parts.append("path: seen from " + ", ".join(o.get("seen_by", [])) + " only")
    behind = o.get("behind", [])
    if behind:
        sites = {b.split("/", 1)[0] for b in behind}
        parts.append(
            f"{len(behind)} check{'s' if len(behind) != 1 else ''} at {len(sites)}"
            f" site{'s' if len(sites) != 1 else ''} unreachable behind it"
        )
    if o.get("unreachable_behind"):
        parts.append("behind " + ", ".join(o["unreachable_behind"]))
    return "; ".join(parts)


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
    w.writerow([show_target(c["target_percent"]), {True: "yes", False: "no"}.get(c["met"], "")])
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
            "Why here",
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
                attribution_text(o),
            ]
        )
    # Issue 10's blocks follow the outages, so the first five keep their places.
    w.writerow([])
    own = data["combined"]["without_third_party"]
    w.writerow(["Without third-party causes", "Downtime minutes", "Availability %"])
    w.writerow(
        ["", show_minutes(own["downtime_minutes"]), show_percent(own["availability_percent"])]
    )
    w.writerow([])
    for title, rows in (("Provider", data["by_provider"]), ("Cause", data["by_cause"])):
        w.writerow([title, "Downtime minutes", "Business-hours downtime minutes"])
        for r in rows:
            w.writerow(
                [
                    r["name"],
                    show_minutes(r["downtime_minutes"]),
                    show_minutes(r["business_hours_downtime_minutes"]),
                ]
            )
        w.writerow([])
    w.writerow(["Area", *TIME_CLASSES])
    for aid, pol in data["policy"].items():
        w.writerow([aid, *(pol[c] for c in TIME_CLASSES)])
    w.writerow([])
    w.writerow(["Data as of", "Generated", "Rules"])
    w.writerow([data["as_of"], data["generated_at"], data["settings"]["rules"]])
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
    env.filters["target"] = lambda v: "—" if v is None else f"{show_target(v)}%"
    env.filters["when"] = show_time
    env.filters["kind"] = _kind_text
    env.filters["why"] = attribution_text
    env.filters["days"] = lambda p: show_days(p["from"], p["to"])
    return env


TREATMENT_WORDS = {"downtime": "downtime", "excluded": "excluded", "up": "as up"}
CLASS_WORDS = {
    "down": "Down",
    "confirmation": "Before declared",
    "degraded": "Degraded",
    "planned": "Planned",
    "unknown": "Not monitored",
    "unreachable": "Unreachable",
}


def _context(data: Mapping[str, Any]) -> dict[str, Any]:
    p = data["period"]
    listed = significant(data)
    threshold = data["settings"]["report_min_outage_minutes"]
    shorter = [o for o in data["outages"] if o["minutes"] < threshold]
    return {
        "class_words": CLASS_WORDS,
        "treatment_words": TREATMENT_WORDS,
        "data": data,
        "listed": listed,
        # Only the counted ones are in the totals; the others are said apart.
        "shorter_counted": sum(1 for o in shorter if o["counted"]),
        "shorter_not_counted": sum(1 for o in shorter if not o["counted"]),
        "planned_cell": partial(planned_cell, data),
        "planned_note": planned_note(data),
        "period_from": show_time(p["start"], "%-d %B %Y"),
        "period_to": show_time(
            (datetime.fromisoformat(p["end"]) - timedelta(days=1)).isoformat(), "%-d %B %Y"
        ),
    }


def render_markdown(data: Mapping[str, Any]) -> str:
    return _environment("md").get_template("report.md.j2").render(**_context(data))


_SCRIPT = re.compile(r"<script\b.*?</script>", re.DOTALL)
#: pygal's banner comments, one of which carries the day it drew the chart.
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _svg(chart: Any) -> str:
    """Inline SVG with no scripts: pygal embeds a small config script even with ``js=[]``;
    a board paper is static, and mail gateways strip scripts anyway. And no comments:
    pygal's banner dates each chart with the day it was drawn, so the same data gave other
    bytes the next day (the report's own date is ``generated_at``, an input)."""
    return _COMMENT.sub("", _SCRIPT.sub("", chart.render(is_unicode=True)))


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
        # The legend is the page's own (HTML, under the chart): pygal's bottom legend let a
        # long label run over the next swatch on A4 (issue 10).
        "show_legend": False,
        "print_values": False,
    }


def _downtime_series(
    data: Mapping[str, Any], areas: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str, list[float]]]:
    """The downtime chart's series (label, colour, a value per area of ``areas``): the
    counted downtime that is not planned, the planned time that counts, and the planned
    time an area's policy does not count, each per that area's own policy. A kind of
    planned time no area has is left out (and so from the legend)."""
    counts = [planned_treatment(data, a["id"]) == "downtime" for a in areas]
    series = [
        (
            "Unplanned and degraded",
            AREA_COLOURS[0],
            [
                max(a["downtime_minutes"] - (a["planned_minutes"] if c else 0), 0)
                for a, c in zip(areas, counts, strict=True)
            ],
        )
    ]
    if any(counts) or not areas:
        series.append(
            (
                "Planned maintenance",
                AREA_COLOURS[1],
                [a["planned_minutes"] if c else 0 for a, c in zip(areas, counts, strict=True)],
            )
        )
    if not all(counts):
        series.append(
            (
                "Planned maintenance (not counted)",
                UNCOUNTED_COLOUR,
                [0 if c else a["planned_minutes"] for a, c in zip(areas, counts, strict=True)],
            )
        )
    return series


def downtime_chart(data: Mapping[str, Any]) -> str:
    """Downtime minutes by area: unplanned and degraded, with planned maintenance apart."""
    areas = data["areas"][::-1]  # horizontal bars are drawn bottom-up; keep report order
    series = _downtime_series(data, areas)
    options = _chart_options()
    options["style"] = _style(colors=tuple(colour for _, colour, _ in series))
    # Horizontal, so that the long area names are read in full, not truncated.
    chart = pygal.HorizontalStackedBar(
        title="Downtime minutes by area", truncate_label=-1, **options
    )
    chart.x_labels = [a["name"] for a in areas]
    for label, _, values in series:
        chart.add(label, values)
    chart.uuid = "downtime"  # pygal draws a random id per chart: reports must be byte-stable
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
        f"Target {show_target(target)}%",
        [target] * len(hist),
        show_dots=False,
        print_values=False,
        stroke_style={"width": 2, "dasharray": "8, 6"},
    )
    chart.uuid = "history"
    return _svg(chart)


def legends(data: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The charts' legends, laid out by the page (one swatch and label per line item)."""
    target = data["combined"]["target_percent"]
    return {
        "downtime": [
            {"label": label, "colour": colour, "line": False}
            for label, colour, _ in _downtime_series(data, data["areas"])
        ],
        "history": [
            {"label": "Combined availability", "colour": AREA_COLOURS[0], "line": True},
            {"label": f"Target {show_target(target)}%", "colour": TARGET_COLOUR, "line": True},
        ],
    }


def render_html(data: Mapping[str, Any]) -> str:
    return (
        _environment("html")
        .get_template("report.html.j2")
        .render(
            **_context(data),
            downtime_svg=downtime_chart(data),
            history_svg=history_chart(data),
            legends=legends(data),
        )
    )


#: Report formats; adding one is a renderer and a line here.
FORMATS: Mapping[str, Renderer] = {
    "html": render_html,
    "md": render_markdown,
    "csv": render_csv,
    "json": render_json,
}


def render(fmt: str, data: Mapping[str, Any]) -> str:
    return FORMATS[fmt](data)
