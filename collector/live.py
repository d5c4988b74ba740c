"""The collector's outages as the live pages need them, held in memory (issue 9).

``/api/v1/status``, the board and ``/metrics`` read open outages, the latest ones and the
quarter-to-date KPI many times a second; the history behind them only changes when a write
commits. So the view is loaded once, then brought up to date on the writer thread after
every committed write (``Store.take_changes``): outages opened or closed by events in order
come with the commit's changes as the ingest wrote them (times in µs, nothing read back:
issue 8's throughput; a provisional record is read back by id) and their spans are merged
into each area's union; anything that rewrote history (a late event's re-derivation, an
annotation, an import, a provisional outage dropped) rereads the rows from the earliest
time it touched. A read never touches the store and costs what the live state costs,
whatever the history holds.

The KPI is kept as each area's union of closed counted outages (sorted disjoint spans with
running totals) and the earliest start of its open counted outages; the quarter-to-date
downtime at any "now" is then a bisection, equal to what ``report.kpi_snapshot`` computes
from the store (a test holds them together) as long as issue 10's rules have nothing to
add: no recurring or declared maintenance window, quorum service, dependency, check
lifetime or accounting policy (``plain``; not-monitored time counts as up by default, as in
the view). Otherwise
the collector computes the KPI from the store by the full rules, as before issue 9.
As the report does (``attribution.Rules.area_of``), a configured check's outages count in
the area the config gives the check, whatever area they were stored with (a check moved to
another area keeps its history under the old one); a record of a check the config does not
list counts in its own.
The view also holds the declared windows the board judges open outages by (issue 10).
"""

from __future__ import annotations

import heapq
import operator
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from availmon.clock import iso_to_us, to_iso, to_us, us_to_iso
from availmon.config import TIME_CLASSES, Estate
from collector.accounting import (
    Period,
    floor_percent,
    quarter_containing,
    ratio_of,
    target_met,
)
from collector.store import FOREVER, Changes, Store, written_board_row

#: The status API's "recent_outages" and the board's "recent" list.
RECENT_STARTED = 50
RECENT_CLOSED = 10
#: The keys of ``Store.outages()`` rows (the status API's), out of the board's rows.
STATUS_KEYS = (
    "id",
    "site",
    "agent",
    "check_name",
    "area",
    "state",
    "start",
    "end",
    "source",
    "planned",
    "cause",
    "provider",
    "note",
)


#: How far ahead the board looks for declared maintenance windows.
WINDOWS_AHEAD = timedelta(days=7)
#: How much further the view reads them, so that time passing needs no read for a day.
WINDOWS_REREAD = timedelta(days=1)


def plain_rules(estate: Estate) -> bool:
    """Whether the config leaves issue 10's rules nothing to do to a quarter's downtime: no
    recurring window, quorum service, dependency, check lifetime or accounting policy (the
    defaults are the rules before issue 10, which the memory KPI applies)."""
    acc = estate.accounting
    if estate.maintenance or estate.services:
        return False
    policies = [acc.policy, *(a.policy for a in estate.areas.values())]
    if any(getattr(p, cls) is not None for p in policies for cls in TIME_CLASSES):
        return False
    return not any(
        c.depends_on or c.added or c.retired for site in estate.sites.values() for c in site.checks
    )


@dataclass
class Union:
    """Sorted disjoint spans ``[starts[i], ends[i])`` with the length of those before each
    (``before[i]``), kept as closed outages arrive: nearly always at the end."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    before: list[int] = field(default_factory=lambda: [0])

    def add(self, s: int, e: int) -> None:
        if e <= s:
            return
        i = bisect_left(self.ends, s)  # the first span that ends at or after s
        j = bisect_right(self.starts, e)  # the spans that start at or before e
        if i < j:  # overlapping or touching spans merge into one
            s = min(s, self.starts[i])
            e = max(e, self.ends[j - 1])
        self.starts[i:j] = [s]
        self.ends[i:j] = [e]
        del self.before[i + 1 :]
        for k in range(i, len(self.starts)):
            self.before.append(self.before[k] + self.ends[k] - self.starts[k])

    def cut(self, at: int) -> None:
        """Forget everything from ``at`` on."""
        i = bisect_left(self.ends, at)  # spans ending at or after at lose their tail
        del self.starts[i + (1 if i < len(self.starts) and self.starts[i] < at else 0) :]
        del self.ends[len(self.starts) :]
        if self.ends and self.ends[-1] > at:
            self.ends[-1] = at
        del self.before[1:]
        for k in range(len(self.starts)):
            self.before.append(self.before[k] + self.ends[k] - self.starts[k])

    def covered(self, lo: int, hi: int) -> int:
        """Length of the union inside ``[lo, hi)``."""
        return self._upto(hi) - self._upto(lo)

    def _upto(self, x: int) -> int:
        i = bisect_left(self.starts, x)  # spans starting before x
        if i == 0:
            return 0
        return self.before[i] - max(0, self.ends[i - 1] - x)


@dataclass
class _Area:
    closed: Union = field(default_factory=Union)
    #: The earliest start of an outage of the area (any state) open or ending after the
    #: quarter began: an area not in the config is listed from then on.
    first: int | None = None


class LiveOutages:
    """Open and recent outages and the quarter-to-date KPI, kept up to date by the writer
    thread (``load``, ``apply``) and read by the web from any thread."""

    def __init__(self, estate: Estate) -> None:
        self.estate = estate
        self.tz = ZoneInfo(estate.accounting.timezone)
        self._lock = threading.Lock()
        #: Bumped by every change; the web's cached bodies are keyed on it.
        self.version = 0
        self.loaded = False
        self._quarter: Period | None = None
        self._open: dict[str, dict[str, Any]] = {}
        self._evidence: dict[str, dict[str, Any]] = {}
        self._started: list[dict[str, Any]] = []
        self._closed: list[dict[str, Any]] = []
        self._areas: dict[str, _Area] = {}
        #: Per area, the open outages that count (id -> start µs), and the earliest start.
        self._open_counted: dict[str, dict[str, int]] = {}
        self._open_first: dict[str, int] = {}
        #: ``Store.outage_writes`` and ``Store.own_writes`` at the last load: when the first
        #: moved further than the second, another process wrote (``stale``).
        self._writes_at_load = (0, 0)
        #: Issue 10: the config's side of ``plain``, and the store's (``load_records``).
        self.rules_plain = plain_rules(estate)
        self._records_plain = True
        #: ``(site, check)`` -> the area a configured check's time counts in (``_home``),
        #: and per area the configured checks whose time counts elsewhere (``_away``).
        self._homes = estate.check_areas()
        self._away_of: dict[str, tuple[tuple[str, str], ...]] = {}
        #: Declared windows from the quarter's start to ``WINDOWS_AHEAD`` from now.
        self._windows: list[dict[str, Any]] = []
        #: What ``load_records`` last read from the store: the windows up to its horizon
        #: (ISO text), with the quarter and the store's write marks it was read at.
        self._windows_read: list[dict[str, Any]] = []
        self._windows_key: tuple[str, int, int] | None = None
        self._windows_horizon = ""

    # -- the writer thread ------------------------------------------------------------------

    def load(self, store: Store, now: datetime) -> None:
        """Read everything from the store (at start, at a new quarter, after another
        process wrote)."""
        quarter = quarter_containing(now, self.tz)
        lo = quarter.start_us
        with store.snapshot():
            writes = (store.outage_writes(), store.own_writes)
            open_rows = store.board_outages(open_only=True, limit=1_000_000)
            evidence = store.start_evidence(
                [r["start_event"] for r in open_rows if r["start_event"]]
            )
            started = store.board_rows(r["id"] for r in store.outages(limit=RECENT_STARTED))
            closed = store.recent_outages(RECENT_CLOSED)
            areas = self._read_areas(
                store, lo, lo, {aid: _Area() for aid in self._stored(store, lo)}
            )
        with self._lock:
            self._quarter = quarter
            self._open = {r["id"]: r for r in open_rows}
            self._evidence = evidence
            self._started = _latest_started(started)
            self._closed = closed
            self._areas = areas
            self._count_open()
            self._writes_at_load = writes
            self.loaded = True
            self.version += 1

    def _stored(self, store: Store, lo: int) -> list[str]:
        return list(dict.fromkeys([*self.estate.areas, *store.span_areas(lo, FOREVER)]))

    def _counts(self, area: str) -> tuple[bool, bool]:
        """Whether degraded and planned outages count as downtime in ``area``."""
        cfg = self.estate.areas.get(area)
        return (cfg.degraded_counts_as_down if cfg else True), self.estate.accounting.count_planned

    def _home(self, site: str, check: str | None, area: str) -> str:
        """The area a record's time counts in: its check's in the config, else its own."""
        return self._homes.get((site, check or ""), area)

    def _away(self, area: str) -> tuple[tuple[str, str], ...]:
        """The configured checks whose time counts in another area than ``area``."""
        away = self._away_of.get(area)
        if away is None:
            away = self._away_of[area] = tuple(k for k, a in self._homes.items() if a != area)
        return away

    def _read_areas(
        self, store: Store, lo: int, since: int, into: dict[str, _Area]
    ) -> dict[str, _Area]:
        """``into`` (one entry per stored area) with each area's counted closed spans from
        ``since`` on added, every record in its ``_home`` (the quarter began at ``lo``)."""
        homes = self._homes
        degraded = {aid: self._counts(aid)[0] for aid in into}
        for stored in list(into):
            counts, mine = degraded[stored], into[stored].closed
            planned = self._counts(stored)[1]
            checks = store.kpi_checks(stored, since)
            if all(homes.get((site, check or ""), stored) == stored for site, check in checks):
                # Every record counts here: no lookup a row (a quarter is a million).
                for s, e in store.kpi_plain_spans(stored, since, degraded=counts, planned=planned):
                    mine.add(max(s, since), e)
                continue
            # Degraded rows too: a configured check's may count in its area, not this one.
            rows = store.kpi_spans(stored, since, degraded=True, planned=planned)
            for s, e, site, check, state in rows:
                aid = homes.get((site, check or ""), stored)
                if aid == stored:
                    if counts or state != "degraded":
                        mine.add(max(s, since), e)
                elif degraded[aid] or state != "degraded":
                    into[aid].closed.add(max(s, since), e)
        for aid, area in into.items():
            area.first = store.first_overlapping(aid, lo, away=self._away(aid))
        return into

    def apply(self, store: Store, changes: Changes, now: datetime) -> None:
        """Bring the view up to date with committed ``changes`` (read through ``store``,
        on the thread that wrote them, right after the commit)."""
        quarter = quarter_containing(now, self.tz)
        if not self.loaded or self._quarter is None or quarter.id != self._quarter.id:
            self.load(store, now)
            return
        lo = quarter.start_us
        if changes.replaced_since is not None:
            # From the earliest change, not the earliest replacement: outages that events in
            # order closed in the same commits (other checks of the batch) may end before it.
            since = max(changes.since if changes.since is not None else changes.replaced_since, lo)
            with store.snapshot():
                open_rows = store.board_outages(open_only=True, limit=1_000_000)
                started = store.board_rows(r["id"] for r in store.outages(limit=RECENT_STARTED))
                closed = store.recent_outages(RECENT_CLOSED)
                fresh: dict[str, _Area] = {}
                for aid in self._stored(store, lo):
                    old = self._areas.get(aid) or _Area()
                    kept = Union(old.closed.starts[:], old.closed.ends[:], old.closed.before[:])
                    kept.cut(since)
                    fresh[aid] = _Area(kept)
                self._read_areas(store, lo, since, fresh)
                evidence = self._evidence_for(store, open_rows)
            with self._lock:
                self._open = {r["id"]: r for r in open_rows}
                self._evidence = evidence
                self._started = _latest_started(started)
                self._closed = closed
                self._areas = fresh
                self._count_open()
                self.version += 1
            return
        ids = list(dict.fromkeys([*changes.opened, *changes.closed]))
        if not ids:
            return
        written = self._written(store, changes, ids)
        wanted = [
            w.start_event
            for w in written
            if w.end is None and w.start_event and w.start_event not in self._evidence
        ]
        evidence = store.start_evidence(wanted) if wanted else {}
        stale: set[str] = set()  # areas whose first outage may have been one of no time
        with self._lock:
            touched: set[str] = set()
            for w in written:
                oid, start, end = w.id, w.start, w.end
                aid = self._home(w.site, w.check, w.area)
                area = self._areas.setdefault(aid, _Area())
                was = self._open.get(oid)
                if was is not None:  # it was open: no longer as it was (closed, area moved)
                    before = self._home(was["site"], was["check_name"], was["area"])
                    touched.add(before)
                    self._open_counted.get(before, {}).pop(oid, None)
                if end is None:
                    self._open[oid] = w.row()
                    if area.first is None or start < area.first:
                        area.first = start
                    if self._counts_state(aid, w.state, w.planned):
                        self._open_counted.setdefault(aid, {})[oid] = start
                        touched.add(aid)
                    continue
                if was is not None:
                    del self._open[oid]
                if w.start_event:
                    self._evidence.pop(w.start_event, None)
                if end <= start:  # ended as it began: no time (``Store.first_overlapping``)
                    if area.first == start:
                        stale.add(aid)
                elif end > lo and (area.first is None or start < area.first):
                    area.first = start
                if end > lo and self._counts_state(aid, w.state, w.planned):
                    area.closed.add(max(start, lo), end)
            self._evidence.update(evidence)
            for aid in touched:
                starts = self._open_counted.get(aid)
                if starts:
                    self._open_first[aid] = min(starts.values())
                else:
                    self._open_first.pop(aid, None)
            ended = [w for w in written if w.end is not None]
            self._started = _latest_started(
                [*self._started, *_may_rank(self._started, written, _BY_START, RECENT_STARTED)]
            )
            self._closed = _latest_closed(
                [*self._closed, *_may_rank(self._closed, ended, _BY_END, RECENT_CLOSED)]
            )
            self.version += 1
        if stale:  # ask the store, which holds every outage of the area
            firsts = {aid: store.first_overlapping(aid, lo, away=self._away(aid)) for aid in stale}
            with self._lock:
                for aid, first in firsts.items():
                    self._areas[aid].first = first

    def _written(self, store: Store, changes: Changes, ids: list[str]) -> list[_Written]:
        """The outages ``ids`` as the commit left them: as events in order wrote them
        (``Changes.rows``, and for one open before, the view's row with the end written), with
        no read back and no ISO text parsed (issue 8's throughput); read back from the store
        when written otherwise (a provisional record), or when another process has written
        outages since the load (its annotation would be in the store, not in the view)."""
        foreign = self._foreign_writes(store)
        out: list[_Written] = []
        back: list[str] = []
        for oid in ids:
            raw = None if foreign else changes.rows.get(oid)
            if raw is not None:
                out.append(_Written.of_store(raw))
                continue
            end = None if foreign else changes.ends.get(oid)
            was = self._open.get(oid) if end is not None else None
            if end is None or was is None:
                back.append(oid)
                continue
            at, end_event, area = end
            row = {**was, "area": area, "end": us_to_iso(at), "end_event": end_event}
            out.append(_Written.of_row(row, iso_to_us(was["start"]), at))
        if back:
            with store.snapshot():
                rows = store.board_rows(back)
            for row in rows:
                end_text = row["end"]
                start = iso_to_us(row["start"])
                out.append(_Written.of_row(row, start, iso_to_us(end_text) if end_text else None))
        return out

    def _foreign_writes(self, store: Store) -> bool:
        """Whether another process changed outages since the load (``stale``'s test)."""
        db, own = self._writes_at_load
        return store.outage_writes() - db != store.own_writes - own

    def _evidence_for(
        self, store: Store, open_rows: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        have = dict(self._evidence)
        wanted = [r["start_event"] for r in open_rows if r["start_event"]]
        missing = [e for e in wanted if e not in have]
        have.update(store.start_evidence(missing))
        return {e: have[e] for e in wanted if e in have}

    def _counted(self, row: Mapping[str, Any]) -> bool:
        """``accounting.counts`` for a row."""
        return self._counts_state(self._row_home(row), row["state"], row["planned"])

    def _row_home(self, row: Mapping[str, Any]) -> str:
        """``_home`` of an outage row."""
        return self._home(row["site"], row["check_name"], row["area"])

    def _counts_state(self, area: str, state: str, is_planned: Any) -> bool:
        """``accounting.counts`` for an outage of ``area`` in ``state``."""
        if state == "unknown":
            return False
        degraded, planned = self._counts(area)
        if state == "degraded" and not degraded:
            return False
        return not (is_planned and not planned)

    def _count_open(self) -> None:
        counted: dict[str, dict[str, int]] = {}
        for oid, row in self._open.items():
            if self._counted(row):
                counted.setdefault(self._row_home(row), {})[oid] = iso_to_us(row["start"])
        self._open_counted = counted
        self._open_first = {aid: min(starts.values()) for aid, starts in counted.items()}

    def stale(self, store: Store, now: datetime) -> bool:
        """True when the view must be loaded again: a new quarter began, or another
        process (the CLI) changed outages."""
        if self._quarter is None or quarter_containing(now, self.tz).id != self._quarter.id:
            return True
        return self._foreign_writes(store)

    def load_records(self, store: Store, now: datetime) -> None:
        """Writer thread, after each write and at each tick: the declared windows the board
        needs, and whether the quarter holds one (then the memory KPI is not the
        accounting's figure: ``plain`` turns false). Not-monitored time needs no such check:
        it is "unknown" time where a check has nothing else to say, which counts as up
        unless a policy says otherwise, and a policy already makes ``rules_plain`` false."""
        quarter = quarter_containing(now, self.tz)
        ahead = to_iso(now + WINDOWS_AHEAD)
        # The rows read last time hold every window up to their horizon, unless a window was
        # declared or cancelled since, here or by another process (issue 8's throughput:
        # this runs after every commit).
        key = (quarter.id, store.window_writes, store.data_version())
        if key != self._windows_key or ahead >= self._windows_horizon:
            horizon = now + WINDOWS_AHEAD + WINDOWS_REREAD
            self._windows_read = store.windows(quarter.start, horizon)
            self._windows_key, self._windows_horizon = key, to_iso(horizon)
        # ``Store.windows(quarter.start, now + WINDOWS_AHEAD)``: the same text comparison.
        windows = [w for w in self._windows_read if w["start"] < ahead]
        with self._lock:
            self._windows = windows
            self._records_plain = not windows

    def records_unknown(self) -> None:
        """``load_records`` failed: the KPI comes from the store until it succeeds."""
        with self._lock:
            self._records_plain = False

    # -- reads, from any thread -----------------------------------------------------------------

    @property
    def plain(self) -> bool:
        """True when ``kpi`` and ``kpi_view`` are the accounting's figures (see the module)."""
        return self.rules_plain and self._records_plain

    def windows(self) -> list[dict[str, Any]]:
        """``Store.windows`` from the quarter's start to a week ahead (ISO text times)."""
        with self._lock:
            return list(self._windows)

    def open_rows(self) -> list[dict[str, Any]]:
        """Open outages as ``Store.board_outages(open_only=True)`` gives them."""
        with self._lock:
            rows = list(self._open.values())
        rows.sort(key=lambda r: r["id"])
        rows.sort(key=lambda r: r["start"], reverse=True)
        return rows

    def evidence(self, start_event: str | None) -> dict[str, Any] | None:
        return self._evidence.get(start_event or "")

    def status_open(self) -> list[dict[str, Any]]:
        """``Store.outages(open_only=True)``."""
        return [{k: r[k] for k in STATUS_KEYS} for r in self.open_rows()]

    def status_recent(self) -> list[dict[str, Any]]:
        """``Store.outages(limit=50)``."""
        return [{k: r[k] for k in STATUS_KEYS} for r in self.recent_started()]

    def recent_started(self) -> list[dict[str, Any]]:
        """The board rows of ``status_recent``, latest start first."""
        with self._lock:
            return list(self._started)

    def recent_closed(self) -> list[dict[str, Any]]:
        """``Store.recent_outages(10)``."""
        with self._lock:
            return list(self._closed)

    def kpi_figures(self, now: datetime) -> tuple[Period, int, list[tuple[str, int]]]:
        """The quarter holding ``now``, the time elapsed in it (µs) and each area's
        downtime (µs), configured areas first: ``report.kpi_snapshot``'s figures."""
        quarter = quarter_containing(now, self.tz)
        lo = quarter.start_us
        hi = max(lo, min(quarter.end_us, to_us(now)))
        out: list[tuple[str, int]] = []
        with self._lock:
            extra = sorted(
                a
                for a, st in self._areas.items()
                if a not in self.estate.areas and st.first is not None and st.first < hi
            )
            for aid in [*self.estate.areas, *extra]:
                area = self._areas.get(aid)
                first_open = self._open_first.get(aid)
                closed = area.closed if area is not None else Union()
                if first_open is not None and first_open < hi:
                    m = max(first_open, lo)
                    out.append((aid, closed.covered(lo, m) + hi - m))
                else:
                    out.append((aid, closed.covered(lo, hi)))
        return quarter, hi - lo, out

    def kpi(self, now: datetime) -> dict[str, tuple[float, float]]:
        """``report.kpi_snapshot`` from memory: area id (and ``combined``) -> (downtime
        seconds, availability ratio)."""
        _, elapsed, areas = self.kpi_figures(now)
        out: dict[str, tuple[float, float]] = {}
        for aid, down in areas:
            ratio = ratio_of(down, elapsed)
            out[aid] = (down / 1_000_000, float(ratio) if ratio is not None else 1.0)
        combined = sum(d for _, d in areas)
        ratio = ratio_of(combined, elapsed)
        out["combined"] = (combined / 1_000_000, float(ratio) if ratio is not None else 1.0)
        return out

    def kpi_view(self, now: datetime) -> dict[str, Any]:
        """The board's quarter-to-date figures (what ``board.kpi_view`` read from the store)."""
        quarter, elapsed, areas = self.kpi_figures(now)
        target = self.estate.accounting.target_percent

        def pct(ratio: Fraction | None) -> float | None:
            value = floor_percent(ratio)
            return float(value) if value is not None else None

        figures = []
        for aid, down in areas:
            ratio = ratio_of(down, elapsed)
            cfg = self.estate.areas.get(aid)
            figures.append(
                {
                    "id": aid,
                    "name": cfg.name if cfg else aid,
                    "percent": pct(ratio),
                    "ratio": float(ratio) if ratio is not None else None,
                    "downtime_minutes": down / 60_000_000,
                    "met": ratio is not None and float(ratio) * 100 >= target,
                }
            )
        combined = sum(d for _, d in areas)
        ratio = ratio_of(combined, elapsed)
        return {
            "period": quarter.id,
            "target_percent": target,
            "areas": figures,
            "combined": {
                "percent": pct(ratio),
                "ratio": float(ratio) if ratio is not None else None,
                "downtime_minutes": combined / 60_000_000,
                "met": target_met(ratio, target),
            },
        }


def _latest_started(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {r["id"]: r for r in rows}
    return sorted(by_id.values(), key=lambda r: r["start"], reverse=True)[:RECENT_STARTED]


def _latest_closed(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id = {r["id"]: r for r in rows if r["end"] is not None}
    ordered = sorted(by_id.values(), key=lambda r: (r["end"], r["id"]), reverse=True)
    return ordered[:RECENT_CLOSED]


class _Written:
    """An outage as a commit left it, for ``LiveOutages.apply``: its times in µs, and its
    board row (``Store.board_rows``'s form) built only when the view keeps it: most outages
    of a large batch only add to the KPI, and their ISO text would be thrown away."""

    __slots__ = (
        "_raw",
        "_row",
        "area",
        "check",
        "end",
        "id",
        "planned",
        "site",
        "start",
        "start_event",
        "state",
    )

    def __init__(
        self,
        raw: Sequence[Any] | None,
        row: dict[str, Any] | None,
        oid: str,
        site: str,
        check: str | None,
        area: str,
        state: str,
        planned: Any,
        start: int,
        end: int | None,
        start_event: str | None,
    ) -> None:
        self._raw, self._row = raw, row
        self.id, self.site, self.check, self.area = oid, site, check, area
        self.state, self.planned = state, planned
        self.start, self.end, self.start_event = start, end, start_event

    @classmethod
    def of_store(cls, raw: Sequence[Any]) -> _Written:
        """A row of ``Changes.rows``."""
        return cls(raw, None, raw[0], raw[1], raw[3], raw[4], raw[5], 0, raw[6], raw[7], raw[8])

    @classmethod
    def of_row(cls, row: dict[str, Any], start: int, end: int | None) -> _Written:
        """A board row, with its start and end in µs."""
        return cls(
            None,
            row,
            row["id"],
            row["site"],
            row["check_name"],
            row["area"],
            row["state"],
            row["planned"],
            start,
            end,
            row["start_event"],
        )

    def row(self) -> dict[str, Any]:
        if self._row is None:
            assert self._raw is not None
            self._row = written_board_row(self._raw)
        return self._row


#: Sort keys of ``_latest_started`` and ``_latest_closed`` in µs.
_BY_START: Callable[[_Written], Any] = operator.attrgetter("start")
_BY_END: Callable[[_Written], Any] = operator.attrgetter("end", "id")


def _may_rank(
    held: list[dict[str, Any]], written: list[_Written], key: Callable[[_Written], Any], n: int
) -> list[dict[str, Any]]:
    """The rows of ``written`` that may be among the ``n`` latest by ``key`` beside
    ``held``: those replacing a held row, and the ``n`` latest of the others (any other has
    ``n`` ahead of it); building the rest would be wasted work."""
    ids = {r["id"] for r in held}
    again = [w for w in written if w.id in ids]
    others = [w for w in written if w.id not in ids]
    if len(others) > n:
        others = heapq.nlargest(n, others, key=key)
    return [w.row() for w in [*again, *others]]
