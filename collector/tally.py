"""A period's figures from parts of it: each part (a day, say) summed up on its own, the
parts put together into the same ``Accounts`` the whole period gives.

Why: a busy quarter is a million outages, and holding them (and the two million bookings
the rules make of them) at once is most of a report's memory. A part keeps only what the
figures need of its bookings: per area and class the union of their time, the partners',
providers' and causes' unions, and each incident's time and names. Those are a few spans a
day where the bookings were thousands, and a part of a period that has ended is the same
whenever it is asked for, so the report can keep it (``collector.report``).

Putting parts together is exact (a property test holds it against the whole period):
unions of unions are the union; an incident whose time reaches a part's end is joined to
the one the next part starts with at that instant, as the whole period's clustering would
have joined them; and the order of an incident's names is the order of its bookings, which
both keep. What a part cannot know alone: a quorum service's verdict runs on across the
members' outages, so a part never ends while a member's record reaches its end
(``accounts_in_parts`` moves the cut to the next day); the windows are expanded once, over
the whole period.
"""

from __future__ import annotations

import base64
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from availmon.config import Estate
from collector.accounting import (
    _CAUSE,
    _KIND,
    _NOTE,
    _PARENT,
    _PATH,
    _PLANNED_BY,
    _PROVIDER,
    _SERVICE,
    _SITE,
    _START,
    Accounts,
    AreaFigures,
    BusinessCalendar,
    Incident,
    Outage,
    PartnerFigures,
    Period,
    Share,
    Span,
    _by_time,
    _combined,
    _listed,
    clip,
    intersect,
    local_midnight,
    merged,
    partner_of,
    paused_gc,
    ratio_of,
    subtract_spans,
    target_met,
    to_us,
    total,
    union,
    walk,
)

GroupKey = tuple[str, str]
#: An incident's group: area, kind, counted.
IncidentKey = tuple[str, str, bool]
#: The two kinds of names downtime is shared out by.
SHARES: dict[str, Callable[[Any], str | None]] = {"provider": _PROVIDER, "cause": _CAUSE}


@dataclass
class Cluster:
    """One part's stretch of overlapping time of one kind in one area: an incident, or
    the piece of one that lies in the part. Lists of names keep the order they were first
    seen in, sets are kept sorted."""

    #: Where its time starts and ends, and how much of it there is (in business hours).
    first: int
    last: int
    duration: int
    business: int
    ids: list[str]
    checks: list[str]
    causes: list[str]
    providers: list[str]
    notes: list[str]
    planned_by: list[str]
    services: list[str]
    parents: list[str]
    sites: list[str]
    partners: list[str]
    seen_by: list[str]
    #: Its checks (``site/check``) that others depend on: what time behind it can name.
    refs: list[str]
    path: bool
    #: Outages of bookings that start at the part's start or end at its end: an incident
    #: at the period's start or end takes its dates from them where they reach past it.
    lo_ids: list[str]
    hi_ids: list[str]

    def join(self, other: Cluster) -> None:
        """``other`` (the next part's, starting where this one ends) taken in."""
        self.last = max(self.last, other.last)
        self.duration += other.duration
        self.business += other.business
        for name in _ORDERED:
            setattr(self, name, _firsts(getattr(self, name), getattr(other, name)))
        for name in ("sites", "partners", "seen_by", "refs"):
            setattr(self, name, sorted({*getattr(self, name), *getattr(other, name)}))
        self.path = self.path and other.path
        self.lo_ids = [*self.lo_ids, *other.lo_ids]
        self.hi_ids = [*self.hi_ids, *other.hi_ids]


#: A cluster's lists of names in the order first seen.
_ORDERED = ("ids", "checks", "causes", "providers", "notes", "planned_by", "services", "parents")
#: A cluster's lists of names that repeat from one incident to the next.
_SHARED = (
    "checks",
    "causes",
    "providers",
    "notes",
    "planned_by",
    "services",
    "parents",
    "sites",
    "partners",
    "seen_by",
    "refs",
)


def _firsts(*lists: Iterable[str]) -> list[str]:
    """The names once each, in the order first seen."""
    return list(dict.fromkeys(n for names in lists for n in names))


def _names(values: Iterable[str | None]) -> list[str]:
    """``accounting._distinct`` as a list."""
    return [v for v in dict.fromkeys(values) if v]


@dataclass
class Part:
    """What the figures need of the bookings of ``[lo, hi)``: times that add up across
    parts as totals, the few spans the figures still need as spans."""

    lo: int
    hi: int
    #: (area, class) -> the length of the union of the class's time in the area.
    totals: dict[GroupKey, int] = field(default_factory=dict)
    #: area -> its downtime (the union of the classes it counts), and the time its policy
    #: takes out of the period (less that downtime).
    down: dict[str, list[Span]] = field(default_factory=dict)
    excluded: dict[str, list[Span]] = field(default_factory=dict)
    #: area -> its downtime without the time a provider is recorded for; only where one is.
    own: dict[str, list[Span]] = field(default_factory=dict)
    #: The partners of every site booked (a partner's line shows even with nothing counted).
    partners: list[str] = field(default_factory=list)
    #: (partner, area) -> the length of the union of its counted time.
    by_partner: dict[GroupKey, int] = field(default_factory=dict)
    #: "provider" or "cause" -> name ("" none recorded) -> [counted time, in business hours].
    shares: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: (area, kind, counted) -> the part's incidents (or pieces of them), in time order.
    clusters: dict[IncidentKey, list[Cluster]] = field(default_factory=dict)
    #: (parent, site/check) -> time a check was unreachable behind that parent.
    behind: dict[GroupKey, list[Span]] = field(default_factory=dict)
    #: Window id -> the time it planned.
    covered: dict[str, int] = field(default_factory=dict)
    #: The records that reach past ``hi`` (ids): the next part starts with them.
    carry: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """As plain JSON (tuple keys as lists, spans packed), for the store's figures
        cache."""

        def packed(d: Mapping[str, list[Span]]) -> dict[str, str]:
            return {k: pack(v) for k, v in d.items()}

        return {
            "lo": self.lo,
            "hi": self.hi,
            "totals": [[*k, v] for k, v in self.totals.items()],
            "down": packed(self.down),
            "excluded": packed(self.excluded),
            "own": packed(self.own),
            "partners": self.partners,
            "by_partner": [[*k, v] for k, v in self.by_partner.items()],
            "shares": self.shares,
            "clusters": [[*k, [c.__dict__ for c in cs]] for k, cs in self.clusters.items()],
            "behind": [[*k, pack(v)] for k, v in self.behind.items()],
            "covered": self.covered,
            "carry": self.carry,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], same: dict[str, str] | None = None) -> Part:
        """``same``: the names read so far, shared with those read here (JSON makes a new
        string of every name each time it reads one, and a quarter's incidents name the
        same sites and checks a million times)."""
        one = (same if same is not None else {}).setdefault

        def unpacked(d: Mapping[str, str]) -> dict[str, list[Span]]:
            return {k: unpack(v) for k, v in d.items()}

        def cluster(c: dict[str, Any]) -> Cluster:
            for name in _SHARED:
                c[name] = [one(v, v) for v in c[name]]
            return Cluster(**c)

        return cls(
            lo=d["lo"],
            hi=d["hi"],
            totals={(a, c): v for a, c, v in d["totals"]},
            down=unpacked(d["down"]),
            excluded=unpacked(d["excluded"]),
            own=unpacked(d["own"]),
            partners=d["partners"],
            by_partner={(p, a): v for p, a, v in d["by_partner"]},
            shares=d["shares"],
            clusters={
                (area, kind, counted): [cluster(c) for c in cs]
                for area, kind, counted, cs in d["clusters"]
            },
            behind={(p, r): unpack(v) for p, r, v in d["behind"]},
            covered=d["covered"],
            carry=d["carry"],
        )


def pack(spans: Sequence[Span]) -> str:
    """Spans as text: their bounds as little-endian 64-bit integers, base64 (as JSON
    numbers they cost several times as much to read back)."""
    flat = array("q", [t for span in spans for t in span])
    if sys.byteorder != "little":
        flat.byteswap()
    return base64.b64encode(flat.tobytes()).decode("ascii")


def unpack(text: str) -> list[Span]:
    """``pack`` undone."""
    flat = array("q")
    flat.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        flat.byteswap()
    it = iter(flat)
    return list(zip(it, it, strict=True))


def groups_of(bookings: Iterable[Any]) -> dict[GroupKey, list[Any]]:
    """Bookings (in start order) by (area, class), each group in start order."""
    groups: dict[GroupKey, list[Any]] = {}
    for b in bookings:
        key = (b.area, b.cls)
        group = groups.get(key)
        if group is None:
            groups[key] = [b]
        else:
            group.append(b)
    return groups


class _Business:
    """Business hours, and the part of them a span can meet (an incident is short; a
    quarter's business hours are a hundred spans)."""

    def __init__(self, spans: Sequence[Span]) -> None:
        self.spans = spans
        self.starts = [s for s, _ in spans]

    def time_in(self, spans: Sequence[Span]) -> int:
        if not spans or not self.spans:
            return 0
        a, b = spans[0][0], spans[-1][1]
        near = self.spans[max(bisect_right(self.starts, a) - 1, 0) : bisect_left(self.starts, b)]
        return total(intersect(spans, near))


def summarise(
    groups: Mapping[GroupKey, list[Any]],
    treat: Mapping[GroupKey, str],
    estate: Estate,
    lo: int,
    hi: int,
    business: Sequence[Span],
    parents: Collection[str],
    *,
    combined_only: bool = False,
) -> Part:
    """The part ``[lo, hi)`` from its bookings by (area, class), each group in start
    order; ``business``: the business hours in it; ``parents``: the checks others depend
    on (``Rules.parent_refs``). ``combined_only``: the areas' figures only (the history's
    quarters)."""
    part = Part(lo, hi)
    hours = _Business(business)
    unions: dict[GroupKey, list[Span]] = {}
    for key, bs in groups.items():
        unions[key] = walk(bs)
        part.totals[key] = total(unions[key])
    for aid in {a for a, _ in groups}:
        counted = [c for (a, c) in groups if a == aid and treat[(a, c)] == "downtime"]
        down = union(sp for c in counted for sp in unions[(aid, c)])
        part.down[aid] = down
        part.excluded[aid] = subtract_spans(
            (
                sp
                for (a, c), spans in unions.items()
                if a == aid and treat[(a, c)] == "excluded"
                for sp in spans
            ),
            down,
        )
        if any(any(map(_PROVIDER, groups[(aid, c)])) for c in counted):
            part.own[aid] = union(
                sp for c in counted for sp in walk(groups[(aid, c)], skip=_PROVIDER)
            )
    if combined_only:
        return part
    counted_groups = [(k, bs) for k, bs in groups.items() if treat[k] == "downtime"]
    partner_at = {
        site: partner_of(site, estate) for site in {b.site for bs in groups.values() for b in bs}
    }
    part.partners = sorted(set(partner_at.values()))
    by_partner: dict[GroupKey, list[Span]] = {}
    for (aid, _c), bs in counted_groups:
        for b in bs:
            by_partner.setdefault((partner_at[b.site], aid), []).append((b.start, b.end))
    part.by_partner = {k: total(union(v)) for k, v in by_partner.items()}
    for label, name_of in SHARES.items():
        # Few bookings carry a name (people annotate one outage in hundreds): those are
        # picked out at C speed, and the rest's union per area is a walk of each group.
        named: dict[GroupKey, list[Span]] = {}
        for (aid, _c), bs in counted_groups:
            picked = list(filter(name_of, bs))
            for b in picked:
                named.setdefault((name_of(b) or "", aid), []).append((b.start, b.end))
            if len(picked) < len(bs):
                named.setdefault(("", aid), []).extend(walk(bs, skip=name_of))
        got: dict[str, list[int]] = {}
        for (name, _aid), spans in named.items():
            u = union(spans)
            d = got.setdefault(name, [0, 0])
            d[0] += total(u)
            d[1] += hours.time_in(u)
        part.shares[label] = got
    # A window's planned time: the union of what it made planned (two checks down through
    # it are its length once; degraded time that stays degraded where it is not counted is
    # not planned, though the window touched it).
    covered: dict[str, list[Span]] = {}
    for (_a, cls), bs in groups.items():
        if cls == "unreachable":
            behind: dict[GroupKey, list[Span]] = {}
            for u in bs:
                behind.setdefault((u.parent, f"{u.site}/{u.check}"), []).append((u.start, u.end))
            for k, v in behind.items():
                part.behind[k] = union([*part.behind.get(k, ()), *v])
        elif cls == "planned":
            for b in bs:
                if b.planned_by and b.planned_by != "annotation":
                    covered.setdefault(b.planned_by, []).append((b.start, b.end))
    part.covered = {wid: total(union(spans)) for wid, spans in covered.items()}
    part.clusters = _clusters(groups, treat, estate, (lo, hi), hours, parents)
    return part


def _clusters(
    by_class: Mapping[GroupKey, Sequence[Any]],
    treat: Mapping[GroupKey, str],
    estate: Estate,
    period: Span,
    hours: _Business,
    parents: Collection[str],
) -> dict[IncidentKey, list[Cluster]]:
    """Group each area's overlapping time of one kind, so a WAN fault seen from three
    sites is one line in the board report; an incident's minutes are its union. Counted and
    uncounted time never share an incident, so the counted incidents of an area cover
    exactly its downtime. Unreachable time is listed under the fault it was behind (and as
    its own line only where the area counts it)."""
    lo, hi = period
    groups: dict[IncidentKey, list[Any]] = {}
    for (area, cls), bs in by_class.items():
        kind = _KIND.get(cls)
        if kind is None:
            continue
        counted = treat[(area, cls)] == "downtime"
        if kind == "unreachable" and not counted:
            continue
        groups.setdefault((area, kind, counted), []).extend(bs)
    out: dict[IncidentKey, list[Cluster]] = {}
    for key, members in sorted(groups.items()):
        # Clustered in start order; only a cluster where two bookings start together needs
        # the full order (a million bookings' key tuples cost more than the clustering).
        members.sort(key=_START)
        clusters: list[list[Any]] = []
        tied: set[int] = set()
        cluster_end = last_start = -1
        for b in members:
            if clusters and b.start <= cluster_end:
                if b.start == last_start:
                    tied.add(len(clusters) - 1)
                clusters[-1].append(b)
                if b.end > cluster_end:
                    cluster_end = b.end
            else:
                clusters.append([b])
                cluster_end = b.end
            last_start = b.start
        for n in tied:
            clusters[n].sort(key=_listed)
        found = out[key] = []
        for c in clusters:
            spans = union(map(_by_time, c))
            found.append(
                Cluster(
                    first=spans[0][0],
                    last=spans[-1][1],
                    duration=total(spans),
                    business=hours.time_in(spans),
                    ids=_names(i for b in c for i in b.outages),
                    checks=_names(b.origin or b.check for b in c),
                    causes=_names(map(_CAUSE, c)),
                    providers=_names(map(_PROVIDER, c)),
                    notes=_names(map(_NOTE, c)),
                    planned_by=_names(map(_PLANNED_BY, c)),
                    services=_names(map(_SERVICE, c)),
                    parents=_names(map(_PARENT, c)),
                    sites=sorted({s for b in c for s in (b.seen_by or (b.site,))}),
                    partners=sorted({partner_of(s, estate) for s in set(map(_SITE, c))}),
                    seen_by=sorted({s for b in c for s in b.seen_by}),
                    # Only a check others depend on can have time behind it.
                    refs=sorted(
                        (
                            {f"{b.site}/{b.check}" for b in c if b.check}
                            | {b.origin for b in c if b.origin}
                        ).intersection(parents)
                    ),
                    path=all(map(_PATH, c)),
                    lo_ids=[i for b in c if b.start == lo for i in b.outages],
                    hi_ids=[i for b in c if b.end == hi for i in b.outages],
                )
            )
    return out


def _joined(
    parts: Iterable[Part], get: Callable[[Part], Mapping[Any, list[Span]]]
) -> dict[Any, list[Span]]:
    """Per key, the union of the parts' spans (parts in time order: a walk)."""
    out: dict[Any, list[Span]] = {}
    for p in parts:
        for k, v in get(p).items():
            got = out.get(k)
            out[k] = v if got is None else [*got, *v]
    return {k: merged(v) for k, v in out.items()}


def finish(
    parts: Sequence[Part],
    period: Period,
    estate: Estate,
    lo: int,
    hi: int,
    business: Sequence[Span],
    sources: Mapping[str, Outage],
    *,
    combined_only: bool = False,
    partial: dict[str, Span] | None = None,
    bookings: list[Any] | None = None,
    windows: list[Any] | None = None,
) -> Accounts:
    """The figures of ``[lo, hi)`` from its parts, in time order. ``sources``: the records
    reaching past the period, that incidents take their dates from."""
    acc_cfg = estate.accounting
    totals: dict[GroupKey, int] = {}
    for p in parts:
        for k, v in p.totals.items():
            totals[k] = totals.get(k, 0) + v
    down_of = _joined(parts, lambda p: p.down)
    excluded_of = _joined(parts, lambda p: p.excluded)
    theirs = {a for p in parts for a in p.own}
    own_of = _joined(parts, lambda p: {**p.down, **p.own}) if theirs else down_of
    area_ids = list(estate.areas)
    area_ids += sorted({a for a, _ in totals} - set(area_ids))  # never lose downtime
    period_time, business_time = hi - lo, total(business)

    areas: list[AreaFigures] = []
    own_parts: list[tuple[int, int]] = []
    for aid in area_ids:
        down = down_of.get(aid, [])
        excluded = excluded_of.get(aid, [])
        measured = period_time - total(excluded)
        bmeasured = business_time - total(intersect(excluded, business))
        bdown = total(intersect(down, business))
        own = own_of.get(aid, []) if aid in theirs else down
        own_parts.append((total(own), measured))

        def time_of(cls: str, aid: str = aid) -> int:
            return totals.get((aid, cls), 0)

        areas.append(
            AreaFigures(
                id=aid,
                name=estate.areas[aid].name if aid in estate.areas else aid,
                downtime=total(down),
                planned=time_of("planned"),
                degraded=time_of("degraded"),
                not_monitored=time_of("unknown"),
                business_downtime=bdown,
                ratio=ratio_of(total(down), measured),
                business_ratio=ratio_of(bdown, bmeasured),
                unreachable=time_of("unreachable"),
                confirmation=time_of("confirmation"),
                excluded=total(excluded),
                measured=measured,
                third_party=total(down) - total(own),
                ratio_own=ratio_of(total(own), measured),
            )
        )
    combined_ratio = _combined((a.downtime, a.measured) for a in areas)
    business_parts = [
        (
            a.business_downtime,
            business_time - total(intersect(excluded_of.get(a.id, []), business)),
        )
        for a in areas
    ]
    partners: list[PartnerFigures] = []
    providers: list[Share] = []
    causes: list[Share] = []
    incidents: list[Incident] = []
    covered: dict[str, int] = {}
    if not combined_only:
        measured_of = {a.id: a.measured for a in areas}
        seen = {pid for p in parts for pid in p.partners}
        partner_ids = list(estate.partners)
        partner_ids += sorted(seen - set(partner_ids))
        by_partner: dict[GroupKey, int] = {}
        for p in parts:
            for k, v in p.by_partner.items():
                by_partner[k] = by_partner.get(k, 0) + v
        for pid in partner_ids:
            per_area = {aid: by_partner.get((pid, aid), 0) for aid in area_ids}
            name = estate.partners[pid].name if pid in estate.partners else pid
            ratio = _combined((per_area[aid], measured_of[aid]) for aid in area_ids)
            partners.append(PartnerFigures(pid, name, per_area, sum(per_area.values()), ratio))
        providers = _shares(parts, "provider")
        causes = _shares(parts, "cause")
        incidents = _incidents(parts, sources, lo, hi)
        for p in parts:
            for wid, us in p.covered.items():
                covered[wid] = covered.get(wid, 0) + us
    return Accounts(
        period=period,
        measured_end=hi,
        period_time=period_time,
        business_time=business_time,
        areas=areas,
        combined_downtime=sum(a.downtime for a in areas),
        combined_business_downtime=sum(a.business_downtime for a in areas),
        combined_ratio=combined_ratio,
        combined_business_ratio=_combined(business_parts) if business_time > 0 else None,
        target_percent=acc_cfg.target_percent,
        met=target_met(combined_ratio, acc_cfg.target_percent),
        partners=partners,
        incidents=incidents,
        providers=providers,
        causes=causes,
        combined_own_downtime=sum(d for d, _ in own_parts),
        combined_own_ratio=_combined(own_parts),
        partial=partial or {},
        bookings=bookings or [],
        windows=windows or [],
        covered=covered,
    )


def _shares(parts: Sequence[Part], label: str) -> list[Share]:
    """Per name, the union within each area, summed over the areas; "" for the time no
    name was recorded for (the downtime itself when none was)."""
    got: dict[str, list[int]] = {}
    for p in parts:
        for name, (d, bd) in p.shares.get(label, {}).items():
            t = got.setdefault(name, [0, 0])
            t[0] += d
            t[1] += bd
    out = [Share(n, d, bd) for n, (d, bd) in got.items()]
    out.sort(key=lambda s: (-s.downtime, s.name))
    return out


def _incidents(
    parts: Sequence[Part], sources: Mapping[str, Outage], lo: int, hi: int
) -> list[Incident]:
    """The parts' clusters, those that meet at a part's end joined, as incidents."""
    keys = sorted({k for p in parts for k in p.clusters})
    behind: dict[str, list[tuple[str, list[Span]]]] = {}
    for (parent, ref), spans in _joined(parts, lambda p: p.behind).items():
        behind.setdefault(parent, []).append((ref, spans))
    out: list[Incident] = []
    for key in keys:
        area, kind, counted = key
        joined: list[Cluster] = []
        for p in parts:
            for c in p.clusters.get(key, ()):
                # Only the period's own ends date an incident.
                c = Cluster(
                    **{
                        **c.__dict__,
                        "lo_ids": c.lo_ids if p.lo == lo else [],
                        "hi_ids": c.hi_ids if p.hi == hi else [],
                    }
                )
                if joined and c.first <= joined[-1].last:
                    joined[-1].join(c)
                else:
                    joined.append(c)
        for c in joined:
            first, last = c.first, c.last
            # Dates as the outage had them: its real start before the period, and open
            # (None) while it goes on; the minutes stay those inside the period.
            start: int = first
            end: int | None = last
            for oid in c.lo_ids:
                o = sources.get(oid)
                if o is not None and o.start < lo:
                    start = min(start, o.start)
            if last == hi:
                for oid in c.hi_ids:
                    o = sources.get(oid)
                    if o is not None and end is not None:
                        end = None if o.end is None else max(end, o.end)
            under = (
                sorted(
                    {
                        ref
                        for parent in behind.keys() & c.refs
                        for ref, spans in behind[parent]
                        if any(s < last and e > first for s, e in spans)
                    }
                )
                if behind
                else []
            )
            out.append(
                Incident(
                    ids=tuple(c.ids),
                    area=area,
                    kind=kind,  # type: ignore[arg-type]
                    counted=counted,
                    start=start,
                    end=end,
                    duration=c.duration,
                    business=c.business,
                    sites=tuple(c.sites),
                    partners=tuple(c.partners),
                    checks=tuple(c.checks),
                    causes=tuple(c.causes),
                    providers=tuple(c.providers),
                    notes=tuple(c.notes),
                    planned_by=tuple(c.planned_by),
                    services=tuple(c.services),
                    seen_by=tuple(c.seen_by),
                    path=c.path,
                    behind=tuple(under),
                    parents=tuple(c.parents),
                )
            )
    out.sort(key=lambda i: (i.start, i.area, i.kind))
    return out


def treatments(estate: Estate) -> Callable[[str, str], str]:
    """The policy's treatment of a class of time in an area, looked up once per pair."""
    acc_cfg = estate.accounting
    known: dict[GroupKey, str] = {}

    def treatment_of(area: str, cls: str) -> str:
        key = (area, cls)
        found = known.get(key)
        if found is None:
            found = known[key] = acc_cfg.treatment(estate.areas.get(area), cls)
        return found

    return treatment_of


def booked(bookings: list[Any], treatment_of: Callable[[str, str], str]) -> list[Any]:
    """The bookings as the figures count them, in start order.

    Degraded time in an area that does not count degraded time is not downtime, planned or
    not: a window never makes a figure worse than the same time unplanned. Sorted by start
    alone (an integer key sorts three times faster than a pair, and nothing after needs
    ties in end order), every group is then built in start order and its union is a walk.
    """
    if any(
        treatment_of(b.area, "degraded") != "downtime"
        for b in bookings
        if b.cls == "planned" and b.state == "degraded"
    ):
        bookings = [
            b._replace(cls="degraded")
            if b.cls == "planned"
            and b.state == "degraded"
            and treatment_of(b.area, "degraded") != "downtime"
            else b
            for b in bookings
        ]
    bookings.sort(key=_START)
    return bookings


#: Reads a period's outages a part at a time: those starting in ``[after, before)``
#: (``after`` None: any time before) that reach past the period's start.
RowsBetween = Callable[[int | None, int], Iterable[Outage]]
#: The outages of these ids, as ``RowsBetween`` gives them.
RowsById = Callable[[Sequence[str]], Iterable[Outage]]


@dataclass
class PartCache:
    """Where parts of ended days are kept (the store's figures cache, in the report):
    ``get(lo)`` the part starting at ``lo``, ``hi_of(lo)`` only where it ends (nothing
    read back), ``put(part)`` to keep one."""

    get: Callable[[int], Part | None]
    put: Callable[[Part], None]
    hi_of: Callable[[int], int | None]


def _midnights(lo: int, hi: int, calendar: BusinessCalendar) -> Iterator[int]:
    """The local midnights strictly inside ``(lo, hi)``."""
    tz = calendar.tz
    day = datetime.fromtimestamp(lo / 1_000_000, tz).date() + timedelta(days=1)
    while (t := to_us(local_midnight(day, tz))) < hi:
        if t > lo:
            yield t
        day += timedelta(days=1)


def _tied_at(bookings: Iterable[Any], t: int) -> bool:
    """Whether two bookings that reach ``t`` start together: an incident lists bookings
    that start together shorter first, and which of those is shorter is not known before
    they end, so a part must not end at ``t``."""
    starts = [b.start for b in bookings if b.end == t]
    return len(starts) != len(set(starts))


@paused_gc()
def accounts_in_parts(
    period: Period,
    rows_between: RowsBetween,
    rows_by_id: RowsById,
    estate: Estate,
    now: datetime,
    calendar: BusinessCalendar,
    *,
    offline: Sequence[Any] = (),
    windows: Iterable[Any] = (),
    combined_only: bool = False,
    cache: PartCache | None = None,
) -> Accounts:
    """``accounting.account`` of the period a day at a time: the same figures (but no
    bookings), holding one day's records at once, and taking the days ``cache`` keeps
    rather than reading them. ``combined_only`` parts lack what the rest of the figures
    need, so they are made but never kept."""
    from collector.attribution import Rules, partial_of
    from collector.maintenance import expand

    lo = period.start_us
    hi = max(lo, min(period.end_us, to_us(now)))
    expanded = expand(estate.maintenance, windows, lo, hi, estate.accounting.timezone)
    parts = [
        part
        for part, _made in parts_of(
            period,
            rows_between,
            rows_by_id,
            estate,
            now,
            calendar,
            offline=offline,
            expanded=expanded,
            combined_only=combined_only,
            cache=cache,
        )
        if part is not None
    ]
    sources: dict[str, Outage] = {}
    if not combined_only:
        edge_ids = {
            oid
            for p in (parts[0], parts[-1])
            for cs in p.clusters.values()
            for c in cs
            for oid in (*c.lo_ids, *c.hi_ids)
        }
        sources = {o.id: o for o in rows_by_id(sorted(edge_ids))}
    return finish(
        parts,
        period,
        estate,
        lo,
        hi,
        calendar.spans(lo, hi),
        sources,
        combined_only=combined_only,
        partial=partial_of(Rules.of(estate), lo, hi),
        windows=expanded,
    )


def parts_of(
    period: Period,
    rows_between: RowsBetween,
    rows_by_id: RowsById,
    estate: Estate,
    now: datetime,
    calendar: BusinessCalendar,
    *,
    offline: Sequence[Any] = (),
    expanded: Sequence[Any] = (),
    combined_only: bool = False,
    cache: PartCache | None = None,
    skim: bool = False,
) -> Iterator[tuple[Part | None, bool]]:
    """The period's parts in time order, each with whether it was worked out here (True)
    or read back from ``cache``. ``skim``: the parts kept are only stepped over (None), not
    read back: what keeps the days needs only those that are missing. ``expanded``: the
    windows, expanded over the whole period."""
    from collector.attribution import Rules, attribute

    rules = Rules.of(estate)
    parents = rules.parent_refs()
    now_us = to_us(now)
    lo = period.start_us
    hi = max(lo, min(period.end_us, now_us))
    business = calendar.spans(lo, hi)
    offline = list(offline)
    members = set(rules.member_of)
    member_sites = {site for site, _ in members}
    treatment_of = treatments(estate)
    treat: dict[GroupKey, str] = {}

    def quiet(rows: Iterable[Outage], t: int) -> bool:
        """Whether no quorum service's member has a record reaching ``t`` (its verdict
        runs on across them: a part must not end inside one)."""
        if not members:
            return True
        if any(
            (o.site, o.check) in members and (o.end is None or o.end >= t) and o.start < t
            for o in rows
        ):
            return False
        return not any(
            r.site in member_sites and r.start < t and (r.end is None or r.end >= t)
            for r in offline
        )

    carry: list[Outage] = []
    #: Where the records that reach into the next part are to be found, when a kept part
    #: was taken: its carry's ids, or (skimmed) the part itself.
    carry_ids: list[str] | None = None
    carry_at: int | None = None
    read_to: int | None = None
    a = lo
    ends = [*_midnights(lo, hi, calendar), hi]
    # Where a day ends: the period's last part is kept only when it ends at one.
    closes = {period.end_us, *_midnights(hi - 1, hi + 1, calendar)}
    i = 0
    while i < len(ends):
        kept: Part | None = None
        kept_hi: int | None = None
        if cache is not None:
            if skim:
                kept_hi = cache.hi_of(a)
            else:
                kept = cache.get(a)
                kept_hi = kept.hi if kept is not None else None
        if kept_hi is not None and kept_hi <= hi:
            if kept is not None:
                carry_ids, carry_at = kept.carry, None
            else:
                carry_ids, carry_at = None, a
            yield kept, False
            a = read_to = kept_hi
            while i < len(ends) and ends[i] <= a:
                i += 1
            continue
        if carry_at is not None and cache is not None:
            back = cache.get(carry_at)
            carry_ids = back.carry if back is not None else None
            if carry_ids is None:  # dropped meanwhile: read the period from its start
                carry, carry_at, read_to, a, i = [], None, None, lo, 0
                skim = False
                continue
        if carry_ids is not None:
            carry = list(rows_by_id(carry_ids))
        carry_ids = carry_at = None
        b = ends[i]
        rows = [*carry, *rows_between(read_to, b)]
        read_to = b
        while True:
            while b < hi and not quiet(rows, b):
                i += 1
                b = ends[i]
                rows += rows_between(read_to, b)
                read_to = b
            att = attribute(
                estate,
                rows,
                a,
                b,
                now_us,
                offline=offline,
                ordered=False,
                rules=rules,
                expanded=expanded,
            )
            if b == hi or not _tied_at(att.bookings, b):
                break
            i += 1
            b = ends[i]
            rows += rows_between(read_to, b)
            read_to = b
        carry = [o for o in rows if o.end is None or o.end > b]
        # Kept when it ends at a midnight that has passed (not at "now"), and only where a
        # longer period could end a part too.
        keep = (
            cache is not None
            and not combined_only
            and b <= now_us
            and (b < hi or (hi in closes and quiet(rows, b) and not _tied_at(att.bookings, b)))
        )
        del rows
        groups = groups_of(booked(att.bookings, treatment_of))
        del att
        for k in groups:
            treat.setdefault(k, treatment_of(*k))
        part = summarise(
            groups,
            treat,
            estate,
            a,
            b,
            clip(business, a, b),
            parents,
            combined_only=combined_only,
        )
        del groups
        part.carry = [o.id for o in carry]
        if keep and cache is not None:
            cache.put(part)
        yield part, True
        a = b
        i += 1
