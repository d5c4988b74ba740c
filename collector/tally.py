"""Every figure of a period in one pass over its outages (issue 9): the report's engine.

``collector.accounting.account`` states the accounting rules over ``Outage`` objects; this
module gives exactly the same ``Accounts`` (a test holds the two together on random
outages) from rows streamed out of the store in start order, one area at a time: each row
is three small integers and a site, every union (area, planned, degraded, not monitored,
partner, incident) is merged as the rows go by, and nothing as large as the period's rows
is kept but, when asked for, the incidents' member ids. Unions are never clipped row by
row: the clipped union equals the union clipped, so only the merged spans are clipped.

Pure, like ``accounting``: the rows come from a :class:`Source` (the store implements it).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import accumulate, compress, islice
from operator import gt
from typing import Protocol

from availmon.config import Estate
from collector.accounting import (
    UNASSIGNED,
    Accounts,
    AreaFigures,
    BusinessCalendar,
    Incident,
    Kind,
    PartnerFigures,
    Period,
    Span,
    intersect,
    ratio_of,
    target_met,
    total,
)

#: The rules' version: cached figures computed under another are never used. Bump it when
#: a change here or in ``collector.accounting`` changes a figure for the same outages.
FIGURES_VERSION = 1

#: A row: ``(start, end, code, site)``; ``end`` None while open; ``code`` is
#: ``len(state) + 16 * planned`` (a number SQLite computes cheaply: 4 down, 8 degraded,
#: 7 unknown), planned as stored: ``Source.span_flips`` says where an annotation differs.
Row = tuple[int, int | None, int, str]
#: A row with a cause, provider or note: ``(start, code, cause, provider, note)``, its code
#: with the annotation's planned applied.
NoteRow = tuple[int, int, str | None, str | None, str | None]
PLANNED = 16
KINDS: tuple[Kind, ...] = ("unplanned", "planned", "degraded")
#: Before any time a store holds: the empty union's end.
_NEVER = -(1 << 62)


class Source(Protocol):
    """Where the rows come from. Every method reads the outages of one area that overlap
    ``[lo, hi)`` (``start < hi`` and, unless open, ``end > lo``) in ``(start, id)``
    order, so that their streams line up row for row."""

    def snapshot(self) -> AbstractContextManager[None]:
        """Reads inside see one state of the data (the streams must line up)."""
        ...

    def span_areas(self, lo: int, hi: int) -> list[str]:
        """Areas with at least one outage overlapping ``[lo, hi)``, sorted."""
        ...

    def span_rows(self, area: str, lo: int, hi: int) -> Iterable[Row]: ...

    def span_flips(self, area: str, lo: int, hi: int) -> Iterable[tuple[int, bool]]:
        """``(start, flipped)`` for every row that begins at the same instant as a row
        whose annotation changes its planned flag (``flipped`` for those): the rows of
        one instant come in the same order as in ``span_rows``."""
        ...

    def span_notes(self, area: str, lo: int, hi: int) -> Iterable[NoteRow]:
        """Only the rows with a cause, provider or note."""
        ...

    def span_members(self, area: str, lo: int, hi: int) -> Iterable[tuple[str, str | None]]:
        """``(id, check)`` of every row."""
        ...

    def counted_spans(
        self, area: str, lo: int, hi: int, now: int, *, degraded: bool, planned: bool
    ) -> Sequence[tuple[int, int]]:
        """``(start, span_end)`` of the rows that count as downtime: not unknown, degraded
        only when ``degraded``, planned only when ``planned``."""
        ...


#: What a row code means: (counted, in the planned figure, state 0/1/2, group, kind).
#: Unknown rows (state 2) belong to no group (-1) and have no kind (the value is unused).
Meaning = tuple[bool, bool, int, int, Kind]


def _code_table(degraded_counts: bool, count_planned: bool) -> list[Meaning]:
    """Every row code's meaning: ``accounting.counts`` and ``Outage.kind`` as a table."""
    out: list[Meaning] = []
    for code in range(2 * PLANNED):
        length, planned = code % PLANNED, code >= PLANNED
        state = {len("degraded"): 1, len("unknown"): 2}.get(length, 0)
        if state == 2:
            out.append((False, False, 2, -1, "unplanned"))
            continue
        counts_ignoring_planned = state == 0 or degraded_counts
        counted = counts_ignoring_planned and (not planned or count_planned)
        kind: Kind = "planned" if planned else ("degraded" if state == 1 else "unplanned")
        group = KINDS.index(kind) * 2 + int(counted)
        out.append((counted, planned and counts_ignoring_planned, state, group, kind))
    return out


@dataclass
class _Incident:
    """Overlapping outages of one (kind, counted) group, as they are gathered."""

    number: int  # its place in the area's list
    rank: int  # its group's order of first appearance in the area (the tie-break)
    kind: Kind
    counted: bool
    start: int
    reach: int  # the largest span end so far: the cluster grows while starts reach it
    end: int | None = None  # the largest end of a closed member
    open: bool = False
    sites: set[str] = field(default_factory=set)
    causes: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


@dataclass
class _Area:
    """One area's figures for one period, before they become ``AreaFigures``."""

    present: bool = False
    down: list[Span] = field(default_factory=list)
    planned: int = 0
    degraded: int = 0
    unknown: int = 0
    partners: dict[str, int] = field(default_factory=dict)
    sites: set[str] = field(default_factory=set)
    incidents: list[_Incident] = field(default_factory=list)


class _Business:
    """Overlap of spans with business hours, by bisection (incidents ask one span each)."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.starts = [s for s, _ in spans]
        self.ends = [e for _, e in spans]
        self.before = [0, *accumulate(e - s for s, e in spans)]

    def overlap(self, s: int, e: int) -> int:
        if e <= s or not self.starts:
            return 0
        i = bisect_right(self.ends, s)  # the first business span ending after s
        j = bisect_left(self.starts, e)  # business spans starting before e
        if i >= j:
            return 0
        inside = self.before[j] - self.before[i]
        inside -= max(0, s - self.starts[i])
        inside -= max(0, self.ends[j - 1] - e)
        return inside


def _clipped(s: int, e: int, lo: int, hi: int) -> int:
    return max(0, min(e, hi) - max(s, lo))


def _area_pass(
    rows: Iterable[Row],
    flips: Iterable[tuple[int, bool]],
    lo: int,
    hi: int,
    now: int,
    partner_of: dict[str, str],
    table: list[Meaning],
    members: list[int] | None,
) -> _Area:
    """Stream one area's rows: a union per figure, incidents clustered per (kind,
    counted) on their unclipped spans as ``accounting._incidents`` clusters them.
    ``members`` collects each row's incident number (-1 for unknown) for ``_add_members``.

    The loop is written flat (locals, no calls per union) because it runs once per row."""
    out = _Area()
    down: list[Span] = []
    ds = de = ps = pe = gs = ge = us = ue = _NEVER
    planned_t = degraded_t = unknown_t = 0
    # Per partner: [start, end, total] of its current merged span; by site, the same lists.
    partner_union: dict[str, list[int]] = {}
    site_union: dict[str, list[int]] = {}
    current: list[_Incident | None] = [None] * 6
    ranks: dict[int, int] = {}
    incidents = out.incidents
    sites = out.sites
    number = -1
    flipped: dict[int, deque[bool]] = {}
    for at, flip in flips:
        flipped.setdefault(at, deque()).append(flip)
    for start, end, code, site in rows:
        if start in flipped and flipped[start].popleft():
            code ^= PLANNED
        if end is None:
            is_open = True
            end = now if now > start else start
        else:
            is_open = False
        counted, in_planned, state, group, kind = table[code]
        if end > start:
            if counted:
                if start <= de:
                    if end > de:
                        de = end
                else:
                    if de > ds:
                        down.append((ds, de))
                    ds, de = start, end
                pu = site_union.get(site)
                if pu is None:
                    partner = partner_of.get(site, UNASSIGNED)
                    pu = partner_union.get(partner)
                    if pu is None:
                        pu = partner_union[partner] = [_NEVER, _NEVER, 0]
                    site_union[site] = pu
                if start <= pu[1]:
                    if end > pu[1]:
                        pu[1] = end
                else:
                    pu[2] += _clipped(pu[0], pu[1], lo, hi)
                    pu[0], pu[1] = start, end
            if in_planned:
                if start <= pe:
                    if end > pe:
                        pe = end
                else:
                    planned_t += _clipped(ps, pe, lo, hi)
                    ps, pe = start, end
            if state == 1:
                if start <= ge:
                    if end > ge:
                        ge = end
                else:
                    degraded_t += _clipped(gs, ge, lo, hi)
                    gs, ge = start, end
            elif state == 2:
                if start <= ue:
                    if end > ue:
                        ue = end
                else:
                    unknown_t += _clipped(us, ue, lo, hi)
                    us, ue = start, end
        if state == 2:
            sites.add(site)  # the incidents' sites are added up at the end
            if members is not None:
                members.append(-1)
            continue
        inc = current[group]
        if inc is None or start > inc.reach:
            number = len(incidents)
            inc = _Incident(number, ranks.setdefault(group, len(ranks)), kind, counted, start, end)
            current[group] = inc
            incidents.append(inc)
        elif end > inc.reach:
            inc.reach = end
        if is_open:
            inc.open = True
        elif inc.end is None or end > inc.end:
            inc.end = end
        inc.sites.add(site)
        if members is not None:
            members.append(inc.number)
    if de > ds:
        down.append((ds, de))
    for inc in incidents:
        sites |= inc.sites
    out.present = bool(sites)
    out.down = [(max(s, lo), min(e, hi)) for s, e in down if min(e, hi) > max(s, lo)]
    out.planned = planned_t + _clipped(ps, pe, lo, hi)
    out.degraded = degraded_t + _clipped(gs, ge, lo, hi)
    out.unknown = unknown_t + _clipped(us, ue, lo, hi)
    for partner, pu in partner_union.items():
        out.partners[partner] = pu[2] + _clipped(pu[0], pu[1], lo, hi)
    return out


def _add_notes(incidents: list[_Incident], table: list[Meaning], notes: Iterable[NoteRow]) -> None:
    """Causes, providers and notes to the incidents their rows are in (the rows come in
    member order, so each incident keeps them in order of first appearance)."""
    by_group: dict[int, tuple[list[int], list[_Incident]]] = {}
    for inc in incidents:
        starts, incs = by_group.setdefault(KINDS.index(inc.kind) * 2 + inc.counted, ([], []))
        starts.append(inc.start)
        incs.append(inc)
    for start, code, cause, provider, note in notes:
        group = table[code][3]
        if group < 0 or group not in by_group:
            continue
        starts, incs = by_group[group]
        at = bisect_right(starts, start) - 1
        if at < 0:
            continue
        inc = incs[at]
        if cause and cause not in inc.causes:
            inc.causes.append(cause)
        if provider and provider not in inc.providers:
            inc.providers.append(provider)
        if note and note not in inc.notes:
            inc.notes.append(note)


def _add_members(
    incidents: list[_Incident], members: list[int], rows: Iterable[tuple[str, str | None]]
) -> None:
    """Each row's id (and check) to the incident the area pass put it in."""
    for number, (oid, check) in zip(members, rows, strict=True):
        if number < 0:
            continue
        inc = incidents[number]
        inc.ids.append(oid)
        if check:
            inc.checks.append(check)


def tally(
    source: Source,
    period: Period,
    estate: Estate,
    now: int,
    calendar: BusinessCalendar,
    *,
    members: bool = True,
) -> Accounts:
    """``accounting.account`` for ``period`` from the rows of ``source``, ``now`` in µs.

    ``members=False`` leaves out each incident's ids and checks (the html and md formats
    show neither): the area pass is then the only read of the period's rows.
    """
    with source.snapshot():
        return _tally(source, period, estate, now, calendar, members)


def _tally(
    source: Source,
    period: Period,
    estate: Estate,
    now: int,
    calendar: BusinessCalendar,
    members: bool,
) -> Accounts:
    lo = period.start_us
    hi = max(lo, min(period.end_us, now))
    business = calendar.spans(lo, hi)
    hours = _Business(business)
    acc = estate.accounting
    partner_of = {sid: s.partner for sid, s in estate.sites.items()}
    area_ids = list(estate.areas)
    stored = source.span_areas(lo, hi)
    results: dict[str, _Area] = {}
    incidents: list[tuple[tuple[int, str, int], Incident]] = []
    for aid in area_ids + [a for a in stored if a not in estate.areas]:
        if aid not in stored:
            results[aid] = _Area()
            continue
        cfg = estate.areas.get(aid)
        table = _code_table(cfg.degraded_counts_as_down if cfg else True, acc.count_planned)
        numbers: list[int] | None = [] if members else None
        res = _area_pass(
            source.span_rows(aid, lo, hi),
            source.span_flips(aid, lo, hi),
            lo,
            hi,
            now,
            partner_of,
            table,
            numbers,
        )
        _add_notes(res.incidents, table, source.span_notes(aid, lo, hi))
        if numbers is not None:
            _add_members(res.incidents, numbers, source.span_members(aid, lo, hi))
        results[aid] = res
        for inc in res.incidents:
            s, e = max(inc.start, lo), min(inc.reach, hi)
            if e <= s:
                continue
            sites = tuple(sorted(inc.sites))
            incidents.append(
                (
                    (inc.start, aid, inc.rank),
                    Incident(
                        ids=tuple(inc.ids),
                        area=aid,
                        kind=inc.kind,
                        counted=inc.counted,
                        start=inc.start,
                        end=None if inc.open else inc.end,
                        duration=e - s,
                        business=hours.overlap(s, e),
                        sites=sites,
                        partners=tuple(sorted({partner_of.get(x, UNASSIGNED) for x in sites})),
                        checks=tuple(dict.fromkeys(inc.checks)),
                        causes=tuple(inc.causes),
                        providers=tuple(inc.providers),
                        notes=tuple(inc.notes),
                    ),
                )
            )
    # Configured areas keep their place; others appear once they hold an outage of the
    # period (stored downtime is never lost), sorted after them.
    shown = area_ids + sorted(a for a in results if a not in estate.areas and results[a].present)
    period_time, business_time = hi - lo, total(business)
    areas: list[AreaFigures] = []
    for aid in shown:
        r = results[aid]
        down = total(r.down)
        bdown = total(intersect(r.down, business))
        areas.append(
            AreaFigures(
                id=aid,
                name=estate.areas[aid].name if aid in estate.areas else aid,
                downtime=down,
                planned=r.planned,
                degraded=r.degraded,
                not_monitored=r.unknown,
                business_downtime=bdown,
                ratio=ratio_of(down, period_time),
                business_ratio=ratio_of(bdown, business_time),
            )
        )
    combined = sum(a.downtime for a in areas)
    combined_business = sum(a.business_downtime for a in areas)
    combined_ratio = ratio_of(combined, period_time)
    partner_ids = list(estate.partners)
    seen = {partner_of.get(site, UNASSIGNED) for aid in shown for site in results[aid].sites}
    partner_ids += sorted(seen - set(partner_ids))
    partners: list[PartnerFigures] = []
    for pid in partner_ids:
        per_area = {aid: results[aid].partners.get(pid, 0) for aid in shown}
        down_p = sum(per_area.values())
        name = estate.partners[pid].name if pid in estate.partners else pid
        partners.append(PartnerFigures(pid, name, per_area, down_p, ratio_of(down_p, period_time)))
    incidents.sort(key=lambda pair: pair[0])
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
        target_percent=acc.target_percent,
        met=target_met(combined_ratio, acc.target_percent),
        partners=partners,
        incidents=[i for _, i in incidents],
    )


def union_total(spans: Sequence[tuple[int, int]], lo: int, hi: int) -> int:
    """Length of the union of ``spans`` (sorted by start) clipped to ``[lo, hi)``, merged
    with C-level iteration (a running maximum of the ends marks where merged spans
    break), for the passes that need nothing else."""
    if not spans:
        return 0
    starts = [s for s, _ in spans]
    reach = list(accumulate((e for _, e in spans), max))
    # A merged span ends before row i when row i starts after every earlier end.
    breaks = list(compress(range(1, len(starts)), map(gt, islice(starts, 1, None), reach)))
    firsts = [starts[0], *(starts[i] for i in breaks)]
    lasts = [*(reach[i - 1] for i in breaks), reach[-1]]
    return sum(_clipped(s, e, lo, hi) for s, e in zip(firsts, lasts, strict=True))


def combined_downtime(source: Source, period: Period, estate: Estate, now: int) -> int:
    """The sum of the areas' downtime in ``period`` (to ``now``): all the history chart
    needs of a quarter, from the counted rows alone."""
    lo = period.start_us
    hi = max(lo, min(period.end_us, now))
    if hi <= lo:
        return 0
    count_planned = estate.accounting.count_planned
    out = 0
    with source.snapshot():
        for aid in source.span_areas(lo, hi):
            cfg = estate.areas.get(aid)
            spans = source.counted_spans(
                aid,
                lo,
                hi,
                now,
                degraded=cfg.degraded_counts_as_down if cfg else True,
                planned=count_planned,
            )
            out += union_total(spans, lo, hi)
    return out
