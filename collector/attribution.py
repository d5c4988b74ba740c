"""What really went down (issue 10): from stored outages to classified, attributed time.

Pure: outages, not-monitored records, windows and the estate's rules in; ``Booking`` s out,
each a piece of time with one class, one area and one reason. The rules, in the order they
apply (docs/accounting.md has a worked example of each):

1. **Per check**, its outages make a timeline: down beats degraded beats unknown where they
   overlap; time its agent was offline past its grace (a not-monitored record) is unknown
   where the check has nothing else to say; a check counts only while it exists (``added``,
   ``retired``).
2. **Dependencies**: while any ancestor of a check (``depends_on``, at its site or another)
   is down, the check's down and unknown time is ``unreachable``: its minutes are counted
   once, in the ancestor's area, and it does not alert on its own. The top-most ancestor
   down at the time is named.
3. **Quorum services**: the members of a service vote; the service is down from the moment
   at least the quorum of the members that can see it (existing, monitored, reachable) say
   so. A failure seen by too few members is booked to each such site's path (its link, in
   the Network area), not to the service.
4. **Planned**: time inside a maintenance window that covers it is planned (an overrun is
   not); an outage marked planned by an annotation is planned throughout.
5. **Confirmation**: from a check's first failed probe until it was declared down.

Times are integer microseconds; results never depend on the order outages are given in.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from operator import attrgetter, itemgetter
from typing import NamedTuple, TypedDict
from zoneinfo import ZoneInfo

from availmon.areas import NETWORK_AREA
from availmon.config import Check, Estate, split_ref
from collector.accounting import (
    UNASSIGNED,
    Outage,
    Span,
    clip,
    to_us,
    total,
    union,
)
from collector.accounting import subtract_spans as subtract
from collector.maintenance import Target, Window, expand, planned_parts

#: A check: (site, check name). A record of a check the config does not know (an import, a
#: retired check) is taken on its own, as recorded: ``(site, "name@area#id")``.
Key = tuple[str, str]
#: Precedence inside one check's timeline where its records overlap.
_RANK = {"down": 0, "degraded": 1, "unknown": 2}


@dataclass(frozen=True)
class Offline:
    """A not-monitored record: the collector heard nothing from a site's agent."""

    site: str
    agent: str
    start: int
    end: int | None


class Booking(NamedTuple):
    """One piece of classified time in one area (a named tuple: a busy quarter books a
    million of these, and a tuple is made and read at C speed)."""

    area: str
    site: str
    #: The check's name, or the service's id for a service's own time.
    check: str | None
    #: down, confirmation, degraded, planned, unknown or unreachable.
    cls: str
    start: int
    end: int
    #: The stored outages this time comes from.
    outages: tuple[str, ...] = ()
    cause: str | None = None
    provider: str | None = None
    note: str | None = None
    #: The window that made it planned; "annotation" when a person marked it planned.
    planned_by: str | None = None
    #: ``site/check`` of the ancestor that was down (unreachable time).
    parent: str | None = None
    #: The quorum service this time belongs to (its own time, or a member's path time).
    service: str | None = None
    #: Sites whose agents said down (a service's time) or the one site that saw it (path).
    seen_by: tuple[str, ...] = ()
    #: True for a member's failure that too few sites saw: booked to that site's path.
    path: bool = False
    #: The check the time was seen on, when booked elsewhere (path time).
    origin: str | None = None
    #: What the probes said (down, degraded, unknown), whatever the class became.
    state: str = ""

    @property
    def span(self) -> Span:
        return (self.start, self.end)


class _Piece(NamedTuple):
    start: int
    end: int
    state: str  # down, degraded, unknown
    outage: Outage | None  # None: a not-monitored record


class _Cursor:
    """Walks one member's sorted, disjoint pieces forward: the piece covering ``a`` for
    increasing ``a`` in amortised constant time."""

    def __init__(self, pieces: Sequence[_Piece]) -> None:
        self.pieces = pieces
        self.i = 0

    def at(self, a: int) -> _Piece | None:
        while self.i < len(self.pieces) and self.pieces[self.i].end <= a:
            self.i += 1
        if self.i < len(self.pieces) and self.pieces[self.i].start <= a:
            return self.pieces[self.i]
        return None


@dataclass(frozen=True)
class _Seg:
    """A stretch of a service's time with one verdict."""

    start: int
    end: int
    cls: str
    seen: frozenset[str] = frozenset()
    outages: tuple[Outage, ...] = ()


@dataclass
class Attribution:
    """Everything classified in ``[lo, hi)``: the bookings, and what the report says about
    checks that existed for only part of the time."""

    lo: int
    hi: int
    bookings: list[Booking] = field(default_factory=list)
    #: site/check -> the part of ``[lo, hi)`` it existed in, when that is not all of it.
    partial: dict[str, Span] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)


def _bound(value: datetime | date | None, tz: ZoneInfo) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return to_us(value if value.tzinfo else value.replace(tzinfo=tz))
    return to_us(datetime.combine(value, time(0), tzinfo=tz))


def lifetime(check: Check | None, tz: ZoneInfo) -> Span:
    """``[added, retired)``; unbounded where the config says nothing."""
    if check is None:
        return (-(2**62), 2**62)
    lo = _bound(check.added, tz)
    hi = _bound(check.retired, tz)
    return (lo if lo is not None else -(2**62), hi if hi is not None else 2**62)


def key_of(o: Outage, known: Mapping[Key, Check]) -> Key:
    if o.check and (o.site, o.check) in known:
        return (o.site, o.check)
    return (o.site, f"{o.check or ''}@{o.area}#{o.id}")


def name_of(key: Key) -> str | None:
    """The check's name as people know it (None for an imported record without one)."""
    return key[1].split("@", 1)[0] or None


def partner_of(site: str, estate: Estate) -> str:
    s = estate.sites.get(site)
    return s.partner if s is not None else UNASSIGNED


def _timeline(
    outages: Sequence[Outage], offline: Sequence[Span], lo: int, hi: int, now: int
) -> list[_Piece]:
    """One check's time, disjoint pieces in order: the most severe record wins an overlap;
    not-monitored time fills what no record covers.

    Records that overlap nothing are their own pieces; only a run of overlapping records
    (or not-monitored time) needs the sweep, so a check's timeline costs its records' count.
    """
    spans: list[tuple[int, int, Outage]] = []
    for o in outages:
        s = o.start if o.start > lo else lo
        e = o.end if o.end is not None else (now if now > o.start else o.start)
        if e > hi:
            e = hi
        if e > s:
            spans.append((s, e, o))
    spans.sort(key=_first)
    off = clip(union(offline), lo, hi)
    if off:
        return _sweep(spans, off, lo, hi)
    runs: list[list[tuple[int, int, Outage]]] = []
    run_end = lo
    for t in spans:
        if runs and t[0] < run_end:
            runs[-1].append(t)
            run_end = max(run_end, t[1])
        else:
            runs.append([t])
            run_end = t[1]
    pieces: list[_Piece] = []
    for run in runs:
        if len(run) > 1:
            pieces += _sweep(run, [], lo, hi)
        elif run[0][2].state in _RANK:
            s, e, o = run[0]
            pieces.append(_Piece(s, e, o.state, o))
    return pieces


#: A clipped record's start (the sort key of a timeline's records).
_first = itemgetter(0)


def _sweep(
    spans: Sequence[tuple[int, int, Outage]], off: Sequence[Span], lo: int, hi: int
) -> list[_Piece]:
    """The timeline of ``spans`` (sorted by start) and not-monitored ``off``, cut at every
    boundary: in each stretch the most severe record, else not-monitored time."""
    cuts = {lo, hi}
    for s, e, _o in spans:
        cuts.update((s, e))
    for s, e in off:
        cuts.update((s, e))
    points = sorted(cuts)
    pieces: list[_Piece] = []
    active: list[tuple[int, int, Outage]] = []
    nxt = oi = 0
    for a, b in itertools.pairwise(points):
        # Records covering [a, b): those started by a and not ended by a.
        while nxt < len(spans) and spans[nxt][0] <= a:
            active.append(spans[nxt])
            nxt += 1
        active = [t for t in active if t[1] > a]
        best: Outage | None = None
        for _s, _e, o in active:
            if best is None or (_RANK.get(o.state, 3), o.start, o.id) < (
                _RANK.get(best.state, 3),
                best.start,
                best.id,
            ):
                best = o
        while oi < len(off) and off[oi][1] <= a:
            oi += 1
        if best is not None and best.state in _RANK:
            piece = _Piece(a, b, best.state, best)
        elif oi < len(off) and off[oi][0] <= a:
            piece = _Piece(a, b, "unknown", None)
        else:
            continue
        last = pieces[-1] if pieces else None
        if last and last.end == a and last.state == piece.state and last.outage is piece.outage:
            pieces[-1] = last._replace(end=b)
        else:
            pieces.append(piece)
    return pieces


def _cut(pieces: Iterable[_Piece], spans: Sequence[Span]) -> tuple[list[_Piece], list[_Piece]]:
    """Pieces split into the parts inside ``spans`` (sorted, disjoint) and the parts outside."""
    inside: list[_Piece] = []
    outside: list[_Piece] = []
    starts = [s for s, _ in spans]
    for p in pieces:
        i = max(bisect.bisect_right(starts, p.start) - 1, 0)
        cur = p.start
        while i < len(spans) and spans[i][0] < p.end:
            s, e = spans[i]
            if e > cur:
                if s > cur:
                    outside.append(p._replace(start=cur, end=s))
                lo, hi = max(s, cur), min(e, p.end)
                inside.append(p._replace(start=lo, end=hi))
                cur = hi
            i += 1
        if cur < p.end:
            outside.append(p._replace(start=cur, end=p.end))
    return inside, outside


def _spans(pieces: Iterable[_Piece], *states: str) -> list[Span]:
    return union((p.start, p.end) for p in pieces if p.state in states)


class _Meta(TypedDict):
    cause: str | None
    provider: str | None
    note: str | None


def _meta_of(o: Outage | None) -> _Meta:
    """``_meta([o])``, without the sets and sorts (a check's own piece: most bookings)."""
    if o is None:
        return _Meta(cause=None, provider=None, note=None)
    return _Meta(cause=o.cause or None, provider=o.provider or None, note=o.note or None)


def _meta(outages: Iterable[Outage | None]) -> _Meta:
    def first(values: Iterable[str | None]) -> str | None:
        seen = sorted({v for v in values if v})
        return "; ".join(seen) or None

    got = [o for o in outages if o is not None]
    return _Meta(
        cause=first(o.cause for o in got),
        provider=first(o.provider for o in got),
        note=first(o.note for o in got),
    )


def _confirmation(o: Outage | None) -> Span | None:
    """From the first failed probe to the moment the failure was declared."""
    if o is None or o.detected is None or o.detected <= o.start:
        return None
    return (o.start, o.detected)


@dataclass(frozen=True)
class Rules:
    """The estate's rules, indexed once per computation."""

    estate: Estate
    tz: ZoneInfo
    checks: dict[Key, Check]
    parent: dict[Key, Key]
    member_of: dict[Key, str]
    #: Each configured check's lifetime.
    lives: dict[Key, Span]
    #: The configured checks with a ``provider``: their records name it where none is recorded.
    providers: dict[Key, str]

    @classmethod
    def of(cls, estate: Estate) -> Rules:
        checks: dict[Key, Check] = {}
        parent: dict[Key, Key] = {}
        for sid, site in estate.sites.items():
            for c in site.checks:
                checks[(sid, c.name)] = c
                if c.depends_on:
                    parent[(sid, c.name)] = split_ref(sid, c.depends_on)
        member_of = {
            split_ref("", ref): sid for sid, svc in estate.services.items() for ref in svc.checks
        }
        tz = ZoneInfo(estate.accounting.timezone)
        lives = {k: lifetime(c, tz) for k, c in checks.items()}
        providers = {k: c.provider for k, c in checks.items() if c.provider}
        return cls(estate, tz, checks, parent, member_of, lives, providers)

    def parent_refs(self) -> set[str]:
        """``site/check`` of every check another depends on: the only ones time can be
        unreachable behind."""
        return {f"{site}/{check}" for site, check in self.parent.values()}

    def ancestors(self, key: Key) -> list[Key]:
        """Nearest first (the config refuses loops; this stops on one all the same)."""
        out: list[Key] = []
        node = self.parent.get(key)
        while node is not None and node not in out and node != key:
            out.append(node)
            node = self.parent.get(node)
        return out

    def area_of(self, key: Key, outages: Sequence[Outage]) -> str:
        c = self.checks.get(key)
        if c is not None:
            return c.area
        if outages:
            return max(outages, key=lambda o: (o.start, o.id)).area
        return key[1].split("@", 1)[-1].split("#", 1)[0]

    def target(self, site: str, areas: Iterable[str], checks: Iterable[str]) -> Target:
        return Target(site, partner_of(site, self.estate), frozenset(areas), frozenset(checks))


def attribute(
    estate: Estate,
    outages: Iterable[Outage],
    lo: int,
    hi: int,
    now: int,
    *,
    offline: Iterable[Offline] = (),
    windows: Iterable[Window] = (),
    ordered: bool = True,
    rules: Rules | None = None,
    expanded: Sequence[Window] | None = None,
) -> Attribution:
    """Classify every not-up microsecond of ``[lo, hi)`` (``now`` closes open records).

    ``ordered``: bookings sorted by time (what a listing wants); the figures do not need it.
    ``expanded``: the windows already expanded over a longer period this part of it belongs
    to (a recurring window's occurrences are counted from the start of what is expanded, so
    a day of a quarter takes the quarter's, not its own).
    """
    rules = rules or Rules.of(estate)
    hi = max(lo, hi)
    result = Attribution(lo, hi)
    result.windows = (
        expand(estate.maintenance, windows, lo, hi, estate.accounting.timezone)
        if expanded is None
        else [w for w in expanded if w.effective[0] < hi and w.effective[1] > lo]
    )
    by_key: dict[Key, list[Outage]] = {}
    known = rules.checks
    providers = rules.providers
    for o in outages:
        k = (o.site, o.check) if o.check and (o.site, o.check) in known else key_of(o, known)
        # A check's provider in the config stands for its records that name none (a line
        # run by a carrier): the board and the alerts name it, and so do the figures.
        if providers and not o.provider and k in providers:
            o = o._replace(provider=providers[k])
        got = by_key.get(k)
        if got is None:
            by_key[k] = [o]
        else:
            got.append(o)
    by_start = attrgetter("start", "id")
    for recs in by_key.values():
        recs.sort(key=by_start)
    off_by_site: dict[str, list[Span]] = {}
    for r in offline:
        off_by_site.setdefault(r.site, []).append((r.start, r.end if r.end is not None else now))
    # A check with no record and no not-monitored time has no timeline to make (a day of
    # a busy estate has records for a few of its thousand checks).
    for key in known:
        if key not in by_key and any(s < hi and e > lo for s, e in off_by_site.get(key[0], ())):
            by_key[key] = []

    # 1. Each check's own timeline, within its lifetime.
    pieces: dict[Key, list[_Piece]] = {}
    result.partial = partial_of(rules, lo, hi)
    for key in sorted(by_key):
        life = rules.lives.get(key) or lifetime(None, rules.tz)
        klo, khi = max(lo, life[0]), min(hi, life[1])
        mine = [o for o in by_key[key] if o.source != "provisional" or o.check]
        # Not-monitored records speak for the checks the config gives the agent's site.
        off = off_by_site.get(key[0], []) if key in rules.checks else []
        pieces[key] = _timeline(mine, off, klo, max(klo, khi), now)

    # 2. Dependencies: time behind a down ancestor is unreachable, named after the top one.
    own_down = {k: _spans(pieces[k], "down") for k in set(rules.parent.values()) if k in pieces}
    unreachable: dict[Key, list[tuple[_Piece, Key]]] = {}
    for key in sorted(pieces):
        ancestors = rules.ancestors(key)
        if not ancestors:
            continue
        rest = pieces[key]
        behind: list[tuple[_Piece, Key]] = []
        for anc in reversed(ancestors):  # the top-most ancestor down takes the time first
            failing = [p for p in rest if p.state in ("down", "unknown")]
            keep = [p for p in rest if p.state not in ("down", "unknown")]
            inside, outside = _cut(failing, own_down.get(anc, []))
            behind += [(p, anc) for p in inside]
            rest = sorted(keep + outside, key=lambda p: p.start)
        pieces[key] = rest
        unreachable[key] = behind
    for key, behind in unreachable.items():
        area = rules.area_of(key, by_key.get(key, []))
        for p, anc in behind:
            result.bookings.append(
                Booking(
                    area=area,
                    site=key[0],
                    check=name_of(key),
                    cls="unreachable",
                    state=p.state,
                    start=p.start,
                    end=p.end,
                    outages=(p.outage.id,) if p.outage else (),
                    parent=f"{anc[0]}/{anc[1]}",
                    **_meta_of(p.outage),
                )
            )

    # 3. Quorum services take their members' time.
    members = {k for k in rules.member_of if k in pieces}
    for sid, svc in sorted(estate.services.items()):
        keys = [split_ref("", ref) for ref in svc.checks]
        result.bookings += _service(sid, keys, pieces, unreachable, rules, lo, hi, result)

    # 4. Checks on their own.
    plans = _Plans(result.windows)
    for key in sorted(pieces):
        if key in members:
            continue
        area = rules.area_of(key, by_key.get(key, []))
        name = name_of(key)
        for p in pieces[key]:
            result.bookings += _own(key, name, area, p, rules, plans)

    if ordered:
        result.bookings.sort(key=lambda b: (b.start, b.area, b.site, b.check or "", b.cls, b.end))
    return result


_new_tuple = tuple.__new__


def partial_of(rules: Rules, lo: int, hi: int) -> dict[str, Span]:
    """site/check -> the part of ``[lo, hi)`` each configured check existed in, for those
    that did not exist all of it."""
    out: dict[str, Span] = {}
    for key, life in sorted(rules.lives.items()):
        klo, khi = max(lo, life[0]), min(hi, life[1])
        if (klo, khi) != (lo, hi):
            out[f"{key[0]}/{key[1]}"] = (klo, max(klo, khi))
    return out


class _Plans:
    """The period's windows, and the time any of them covers (most pieces are outside it
    all, and need no look at each window)."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = windows
        self.spans = union(w.effective for w in windows)
        self.starts = [s for s, _ in self.spans]

    def touch(self, s: int, e: int) -> bool:
        """Whether ``[s, e)`` shares time with any window."""
        if not self.starts:
            return False
        i = bisect.bisect_left(self.starts, e) - 1
        return i >= 0 and self.spans[i][1] > s


def _own(
    key: Key, name: str | None, area: str, p: _Piece, rules: Rules, plans: _Plans
) -> list[Booking]:
    """A check's own piece of time, planned where a window covers it."""
    o = p.outage
    state = p.state
    if o is None:  # not-monitored time
        return [Booking(area, key[0], name, state, p.start, p.end, state=state)]
    # Booking's fields in order, made as a tuple: this runs once per piece of a quarter.
    base: Booking = _new_tuple(
        Booking,
        (
            area,
            key[0],
            name,
            state,
            p.start,
            p.end,
            (o.id,),
            o.cause or None,
            o.provider or None,
            o.note or None,
            None,
            None,
            None,
            (),
            False,
            None,
            state,
        ),
    )
    if state == "unknown":
        return [base]
    conf = _confirmation(o)
    if not o.planned and not plans.touch(p.start, p.end):
        if conf is None or state != "down":
            return [base]  # nothing to split: the common case, kept cheap
        return _confirmed(base, conf)
    check = name or ""
    return _plan(
        base,
        rules.target(key[0], {area}, {check, f"{key[0]}/{check}"}),
        plans.windows,
        [conf] if conf else [],
        bool(o.planned),
    )


def _confirmed(base: Booking, conf: Span) -> list[Booking]:
    """``_plan``'s split of down time that no window touches and no one marked planned:
    its confirmation window, then the down time before and after it (every declared
    failure has one, so a quarter makes a million of these: tuples built directly)."""
    s, e = base.start, base.end
    cs = conf[0] if conf[0] > s else s
    ce = conf[1] if conf[1] < e else e
    if ce <= cs:
        return [base]
    head, tail = base[:3], base[6:]
    out: list[Booking] = [_new_tuple(Booking, (*head, "confirmation", cs, ce, *tail))]
    if s < cs:
        out.append(_new_tuple(Booking, (*head, "down", s, cs, *tail)))
    if ce < e:
        out.append(_new_tuple(Booking, (*head, "down", ce, e, *tail)))
    return out


def _plan(
    base: Booking,
    target: Target,
    windows: Sequence[Window],
    confirmation: Sequence[Span],
    annotated_planned: bool,
) -> list[Booking]:
    """Split down/degraded time into planned (windows, or a person's annotation), confirmation
    (down only) and the rest."""
    if annotated_planned:
        return [base._replace(cls="planned", planned_by="annotation")]
    out: list[Booking] = []
    planned = planned_parts(base.span, windows, target) if windows else []
    for (s, e), w in planned:
        out.append(base._replace(cls="planned", start=s, end=e, planned_by=w.id))
    rest = subtract([base.span], [s for s, _ in planned])
    for s, e in rest:
        if base.cls == "down":
            conf = clip(union(confirmation), s, e)
            for cs, ce in conf:
                out.append(base._replace(cls="confirmation", start=cs, end=ce))
            for ds, de in subtract([(s, e)], conf):
                out.append(base._replace(start=ds, end=de))
        else:
            out.append(base._replace(start=s, end=e))
    return out


def _service(
    sid: str,
    keys: list[Key],
    pieces: Mapping[Key, list[_Piece]],
    unreachable: Mapping[Key, list[tuple[_Piece, Key]]],
    rules: Rules,
    lo: int,
    hi: int,
    result: Attribution,
) -> list[Booking]:
    """A quorum service's own time, and its members' path time."""
    svc = rules.estate.services[sid]
    first = keys[0]
    area = svc.area or rules.area_of(first, [])
    home = svc.site or first[0]
    lives = {k: clip([lifetime(rules.checks.get(k), rules.tz)], lo, hi) for k in keys}
    cuts = {lo, hi}
    for k in keys:
        for p in pieces.get(k, []):
            cuts.update((p.start, p.end))
            conf = _confirmation(p.outage)
            if conf:
                cuts.update(c for c in conf if p.start < c < p.end)
        for s, e in lives[k]:
            cuts.update((s, e))
    points = sorted(c for c in cuts if lo <= c <= hi)
    cursors = {k: _Cursor(pieces.get(k, [])) for k in keys}
    behind = {
        k: _Cursor(sorted((p for p, _ in unreachable.get(k, [])), key=lambda p: p.start))
        for k in keys
    }
    segments: list[_Seg] = []
    for a, b in itertools.pairwise(points):
        eligible = 0
        down: list[tuple[Key, _Piece]] = []
        bad: list[tuple[Key, _Piece]] = []
        declared = 0
        planned_votes = 0
        existing = 0
        for k in keys:
            if not any(s <= a and e >= b for s, e in lives[k]):
                continue
            existing += 1
            here = cursors[k].at(a)
            if here is not None and here.state == "unknown":
                continue  # cannot see it: not monitored
            if behind[k].at(a) is not None:
                continue  # cannot see it: behind a down dependency
            eligible += 1
            if here is None:
                continue
            bad.append((k, here))
            if here.state == "down":
                down.append((k, here))
                if here.outage is not None and here.outage.planned:
                    planned_votes += 1
                conf = _confirmation(here.outage)
                if conf is None or conf[1] <= a:
                    declared += 1
        if eligible == 0:
            if existing:
                segments.append(_Seg(a, b, "unknown"))
            continue
        need = svc.quorum_of(eligible)
        if len(down) >= need:
            cls = "down" if len(down) - planned_votes >= need else "planned"
            if cls == "down" and declared < need:
                cls = "confirmation"
            voters = down
        elif len(bad) >= need:
            cls, voters = "degraded", bad
        else:
            continue
        seg = _Seg(
            a,
            b,
            cls,
            frozenset(k[0] for k, _ in voters),
            tuple(p.outage for _, p in voters if p.outage is not None),
        )
        last = segments[-1] if segments else None
        if last is not None and last.end == a and last.cls == cls:
            segments[-1] = _Seg(
                last.start, b, cls, last.seen | seg.seen, (*last.outages, *seg.outages)
            )
        else:
            segments.append(seg)
    out: list[Booking] = []
    #: The service's own time (down, degraded, planned): a member's failure inside it was
    #: seen by the quorum, whatever its own state, so none of it is that site's path.
    confirmed: list[Span] = []
    names = {sid, *(k[1] for k in keys), *(f"{k[0]}/{k[1]}" for k in keys)}
    target = rules.target(home, {area}, names)
    for seg in segments:
        base = Booking(
            area=area,
            site=home,
            check=sid,
            cls="down" if seg.cls == "confirmation" else seg.cls,
            state="degraded" if seg.cls == "degraded" else "down",
            start=seg.start,
            end=seg.end,
            outages=tuple(sorted({o.id for o in seg.outages})),
            service=sid,
            seen_by=tuple(sorted(seg.seen)),
            **_meta(seg.outages),
        )
        if seg.cls != "unknown":
            confirmed.append(base.span)
        if seg.cls == "unknown":
            out.append(base)
        elif seg.cls == "planned":
            out.append(base._replace(planned_by="annotation"))
        else:
            waiting = [base.span] if seg.cls == "confirmation" else []
            out += _plan(base, target, result.windows, waiting, False)
    # Members' failures the service did not confirm: that site's path.
    confirmed = union(confirmed)
    for k in keys:
        for p in pieces.get(k, []):
            if p.state == "unknown":
                continue
            _, alone = _cut([p], confirmed)
            for q in alone:
                base = Booking(
                    area=svc.path_area or NETWORK_AREA,
                    site=k[0],
                    check=k[1],
                    cls=q.state,
                    state=q.state,
                    start=q.start,
                    end=q.end,
                    outages=(q.outage.id,) if q.outage else (),
                    service=sid,
                    seen_by=(k[0],),
                    path=True,
                    origin=f"{k[0]}/{k[1]}",
                    **_meta([q.outage]),
                )
                base = base._replace(cause=base.cause or f"seen from {k[0]} only")
                conf = _confirmation(q.outage)
                out += _plan(
                    base,
                    rules.target(
                        k[0], {base.area, rules.area_of(k, [])}, {k[1], f"{k[0]}/{k[1]}", sid}
                    ),
                    result.windows,
                    [conf] if conf else [],
                    q.outage is not None and q.outage.planned,
                )
    return out


@dataclass(frozen=True)
class Reason:
    """Why an ongoing outage is not to be raised on its own (issue 10, for the alerts)."""

    #: ``maintenance`` (a window, or marked planned), ``unreachable`` (behind a down
    #: dependency), ``path`` (a quorum service's member that too few sites see: the site's
    #: path, not the service).
    kind: str
    #: The window id ("annotation" when a person marked it planned), the ``site/check`` of
    #: the ancestor that is down, or the service's id.
    ref: str
    text: str


def live_verdicts(
    estate: Estate,
    open_outages: Iterable[Outage],
    windows: Iterable[Window],
    now: int,
) -> dict[str, Reason]:
    """For each ongoing outage that should not stand on its own, why (outage id -> Reason).

    The same rules as the report's, applied at the instant ``now``: what the board shows
    and what the alerts suppress can never disagree with what the quarter will count.
    """
    att = attribute(estate, open_outages, now, now + 1, now + 1, windows=windows)
    out: dict[str, Reason] = {}
    for b in att.bookings:
        for oid in b.outages:
            if b.cls == "unreachable" and b.parent:
                out.setdefault(oid, Reason("unreachable", b.parent, f"behind {b.parent}, down"))
            elif b.cls == "planned" and b.planned_by:
                text = (
                    "marked planned"
                    if b.planned_by == "annotation"
                    else f"in maintenance window {b.planned_by}"
                )
                out.setdefault(oid, Reason("maintenance", b.planned_by, text))
            elif b.path and b.service:
                out.setdefault(
                    oid,
                    Reason("path", b.service, f"only {b.site} sees {b.service} failing: its path"),
                )
    return out


def suppression(
    estate: Estate,
    outage: Outage,
    now: int,
    *,
    open_outages: Iterable[Outage],
    windows: Iterable[Window] = (),
) -> Reason | None:
    """Why ``outage`` should not alert on its own at ``now``, or None when it should.

    ``open_outages``: every outage open at ``now`` (the parents and the other members of a
    quorum service are among them); ``windows``: the declared windows (the config's
    recurring ones are added here). Pure: the alerting loop calls it per outage and tick.
    """
    others = [o for o in open_outages if o.id != outage.id]
    return live_verdicts(estate, [*others, outage], windows, now).get(outage.id)


def booked_minutes(bookings: Iterable[Booking], cls: str) -> int:
    """Total time of one class (union per area, summed): for tests and quick looks."""
    per_area: dict[str, list[Span]] = {}
    for b in bookings:
        if b.cls == cls:
            per_area.setdefault(b.area, []).append(b.span)
    return sum(total(union(v)) for v in per_area.values())
