"""A period's figures a day at a time (``collector.tally``) are the whole period's: random
estates' records with every rule in play (dependencies, a quorum service, windows, not
monitored time, open and annotated outages, records reaching past the period), worked out
both ways, and again from the days a cache kept."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from availmon.config import Estate, parse_config
from collector.accounting import (
    US_PER_MINUTE,
    Accounts,
    BusinessCalendar,
    Outage,
    account,
    date_range,
    to_us,
)
from collector.attribution import Offline
from collector.maintenance import Window
from collector.tally import Part, PartCache, accounts_in_parts, pack, unpack
from tests.collector.helpers import LONDON, PARTNERS, SITES

M = US_PER_MINUTE
PERIOD = date_range(datetime(2019, 10, 24).date(), datetime(2019, 10, 29).date(), LONDON)
AREAS = ["network_telephony", "email", "internet_web", "servers"]


def check(name: str, area: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "tcp", "target": "127.0.0.1:9", "area": area, **kw}


def estate(service: bool) -> Estate:
    """Each site a router and three checks behind it; with ``service``, the sites' webmail
    checks vote as one quorum service; a recurring window every day at 23:30."""
    sites: dict[str, Any] = {}
    for sid, partner in SITES.items():
        sites[sid] = {
            "partner": partner,
            "checks": [
                check("router", "network_telephony"),
                check("webmail", "email", depends_on="router"),
                check("web", "internet_web", depends_on="router"),
                check("files", "servers", added="2019-10-26"),
            ],
        }
    data: dict[str, Any] = {
        "name": "tally estate",
        "partners": {k: {"name": v} for k, v in PARTNERS.items()},
        "sites": sites,
        "maintenance": [
            {
                "name": "nightly",
                "every": "day",
                "start": "23:30",
                "end": "00:40",
                "areas": ["servers"],
            }
        ],
    }
    if service:
        data["services"] = {
            "email": {
                "name": "Email",
                "checks": [f"{s}/webmail" for s in SITES],
                "quorum": 2,
                "site": "dc",
            }
        }
    return parse_config(data, "test")


def records(seed: int) -> tuple[list[Outage], list[Offline], list[Window]]:
    rnd = random.Random(seed)
    lo, hi = PERIOD.start_us, PERIOD.end_us
    names = {"router": AREAS[0], "webmail": AREAS[1], "web": AREAS[2], "files": AREAS[3]}
    rows: list[Outage] = []
    for n in range(rnd.randint(5, 60)):
        site = rnd.choice(list(SITES))
        name = rnd.choice([*names, "ghost"])  # "ghost": a check the config does not know
        area = names.get(name, rnd.choice(AREAS))
        start = rnd.randint(lo - 2 * 1440 * M, hi) // M * M
        if rnd.random() < 0.3:
            start = to_us(datetime(2019, 10, rnd.randint(24, 29), tzinfo=LONDON)) + rnd.choice(
                [-M, 0, M]
            )
        length = rnd.choice([M, 5 * M, 90 * M, 1440 * M, 3 * 1440 * M]) * rnd.randint(1, 3)
        end = None if rnd.random() < 0.08 else start + length
        rows.append(
            Outage(
                id=f"o{n}",
                site=site,
                check=name,
                area=area,
                state=rnd.choice(["down", "down", "down", "degraded", "unknown"]),
                start=start,
                end=end,
                planned=rnd.random() < 0.1,
                cause=rnd.choice([None, None, "fibre cut", "power"]),
                provider=rnd.choice([None, None, "BT Openreach"]),
                note=rnd.choice([None, "seen"]),
                detected=start + rnd.choice([0, 2 * M, 3 * M]) if rnd.random() < 0.7 else None,
            )
        )
    offline = [
        Offline(s, s, t, None if rnd.random() < 0.2 else t + rnd.randint(10, 3000) * M)
        for s in rnd.sample(list(SITES), 2)
        for t in [rnd.randint(lo, hi) // M * M]
    ]
    at = rnd.randint(lo, hi) // M * M
    windows = [Window("m:1", at, at + rnd.randint(30, 2000) * M, recorded_at=lo - 1440 * M)]
    return rows, offline, windows


def in_parts(
    rows: Sequence[Outage],
    est: Estate,
    now: datetime,
    offline: list[Offline],
    windows: list[Window],
    cache: PartCache | None = None,
    combined_only: bool = False,
) -> Accounts:
    lo = PERIOD.start_us

    def between(after: int | None, before: int) -> Iterator[Outage]:
        return (
            o
            for o in rows
            if (after is None or o.start >= after)
            and o.start < before
            and (o.end is None or o.end > lo)
        )

    def by_id(ids: Sequence[str]) -> list[Outage]:
        want = set(ids)
        return [o for o in rows if o.id in want]

    calendar = BusinessCalendar.from_accounting(est.accounting)
    return accounts_in_parts(
        PERIOD,
        between,
        by_id,
        est,
        now,
        calendar,
        offline=offline,
        windows=windows,
        cache=cache,
        combined_only=combined_only,
    )


def same_figures(a: Accounts, b: Accounts) -> None:
    for name in (
        "areas",
        "partners",
        "incidents",
        "providers",
        "causes",
        "partial",
        "covered",
        "combined_downtime",
        "combined_ratio",
        "combined_business_ratio",
        "combined_own_ratio",
        "measured_end",
    ):
        assert getattr(a, name) == getattr(b, name), name
    assert [w.id for w in a.windows] == [w.id for w in b.windows]


class DictCache:
    """A ``PartCache`` in a dict, as the store's cache keeps parts: through JSON."""

    def __init__(self) -> None:
        self.kept: dict[int, dict[str, Any]] = {}
        self.read = 0

    def get(self, lo: int) -> Part | None:
        got = self.kept.get(lo)
        if got is None:
            return None
        self.read += 1
        return Part.from_json(got)

    def put(self, part: Part) -> None:
        self.kept[part.lo] = part.to_json()

    def cache(self) -> PartCache:
        return PartCache(
            self.get, self.put, lambda lo: self.kept[lo]["hi"] if lo in self.kept else None
        )


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    service=st.booleans(),
    now_day=st.sampled_from([26, 31]),  # the period running (to the 26th, midday) or ended
)
def test_days_make_the_same_figures_as_the_whole_period(
    seed: int, service: bool, now_day: int
) -> None:
    est = estate(service)
    rows, offline, windows = records(seed)
    now = datetime(2019, 10, now_day, 12, 0, tzinfo=UTC)
    whole = account(PERIOD, rows, est, now, offline=offline, windows=windows)
    store = DictCache()
    days = in_parts(rows, est, now, offline, windows, store.cache())
    same_figures(whole, days)
    # Again, the kept days read back rather than worked out: the same figures.
    again = in_parts(rows, est, now, offline, windows, store.cache())
    assert store.read == len(store.kept)
    same_figures(whole, again)
    combined = in_parts(rows, est, now, offline, windows, store.cache(), combined_only=True)
    assert combined.areas == whole.areas
    assert combined.combined_ratio == whole.combined_ratio


def test_a_service_members_outage_keeps_its_days_together() -> None:
    """A member's record across midnight: the service's verdict runs on across it, so the
    day it starts on and the next are one part."""
    est = estate(service=True)
    start = to_us(datetime(2019, 10, 25, 22, 0, tzinfo=LONDON))
    rows = [
        Outage(f"w{i}", site, "webmail", "email", "down", start + i * M, start + 240 * M)
        for i, site in enumerate(["dc", "ccc-guildhall"])
    ]
    store = DictCache()
    now = datetime(2019, 11, 1, tzinfo=UTC)
    days = in_parts(rows, est, now, [], [], store.cache())
    same_figures(account(PERIOD, rows, est, now), days)
    spans = sorted((p["lo"], p["hi"]) for p in store.kept.values())
    midnight = to_us(datetime(2019, 10, 26, tzinfo=LONDON))
    assert not any(hi == midnight for _, hi in spans)
    assert len(spans) == 5  # six days, two of them one part
    # The first minute only dc saw it (its path); then the quorum of two, until both end.
    path, service = days.incidents
    assert (path.path, path.duration, path.ids) == (True, M, ("w0",))
    assert (service.services, service.duration, service.ids) == (("email",), 239 * M, ("w0", "w1"))


def test_an_incident_across_midnight_is_one_line_with_its_names_in_order() -> None:
    est = estate(service=False)
    midnight = to_us(datetime(2019, 10, 26, tzinfo=LONDON))
    rows = [
        Outage("a", "dc", "web", "internet_web", "down", midnight - 60 * M, midnight + 60 * M),
        Outage("b", "ccc-guildhall", "web", "internet_web", "down", midnight, midnight + 5 * M),
        Outage(
            "c",
            "hdc-pathfinder",
            "web",
            "internet_web",
            "down",
            midnight + 30 * M,
            midnight + 90 * M,
            cause="power",
        ),
    ]
    now = datetime(2019, 11, 1, tzinfo=UTC)
    whole = account(PERIOD, rows, est, now)
    days = in_parts(rows, est, now, [], [])
    same_figures(whole, days)
    [incident] = days.incidents
    assert incident.ids == ("a", "b", "c")
    assert incident.duration == 150 * M
    assert incident.causes == ("power",)


def test_packed_spans_read_back_the_same() -> None:
    spans = [(-(2**62), -1), (0, 1), (1_572_000_000_000_000, 1_572_000_060_000_000)]
    assert unpack(pack(spans)) == spans
    assert unpack(pack([])) == []


def test_a_part_read_back_from_json_is_the_part() -> None:
    est = estate(service=True)
    rows, offline, windows = records(7)
    store = DictCache()
    in_parts(rows, est, datetime(2019, 11, 1, tzinfo=UTC), offline, windows, store.cache())
    for kept in store.kept.values():
        part = Part.from_json(kept)
        assert part.to_json() == kept
        assert asdict(Part.from_json(part.to_json())) == asdict(part)


def test_the_last_day_of_a_running_period_is_not_kept() -> None:
    """Days that have ended are kept; the day still running (its part ends at "now") is
    worked out again each time."""
    est = estate(service=False)
    now = datetime(2019, 10, 26, 12, 0, tzinfo=UTC)
    start = to_us(datetime(2019, 10, 25, 23, 0, tzinfo=LONDON))
    rows = [Outage("open", "dc", "web", "internet_web", "down", start, None)]
    store = DictCache()
    acc = in_parts(rows, est, now, [], [], store.cache())
    assert sorted((p["lo"], p["hi"]) for p in store.kept.values()) == [
        (
            to_us(datetime(2019, 10, d, tzinfo=LONDON)),
            to_us(datetime(2019, 10, d + 1, tzinfo=LONDON)),
        )
        for d in (24, 25)
    ]
    assert acc.areas[2].downtime == to_us(now) - start
