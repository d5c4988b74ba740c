"""The accounting engine: unions, clipping, business hours, rounding down (issue 3)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availmon.config import Estate
from collector.accounting import (
    US_PER_MINUTE,
    Outage,
    Period,
    account,
    clip,
    date_range,
    floor_percent,
    intersect,
    parse_period,
    ratio_of,
    target_met,
    union,
)
from tests.collector.helpers import LONDON, local, make_estate, outage

NOW = datetime(2030, 1, 1, tzinfo=UTC)
M = US_PER_MINUTE


def downtime_minutes(period: str, outages: list[Outage], estate: Estate) -> dict[str, float]:
    acc = account(parse_period(period, LONDON), outages, estate, NOW)
    return {a.id: a.downtime / M for a in acc.areas}


# -- interval maths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([], []),
        ([(5, 5)], []),
        ([(0, 10), (5, 15)], [(0, 15)]),
        ([(0, 10), (10, 20)], [(0, 20)]),
        ([(20, 30), (0, 10)], [(0, 10), (20, 30)]),
        ([(0, 100), (10, 20), (30, 40)], [(0, 100)]),
        ([(9, 3)], []),
    ],
)
def test_union(spans: list[tuple[int, int]], expected: list[tuple[int, int]]) -> None:
    assert union(spans) == expected


def test_clip_and_intersect() -> None:
    assert clip([(0, 10), (20, 30), (40, 50)], 5, 45) == [(5, 10), (20, 30), (40, 45)]
    assert clip([(0, 10)], 10, 20) == []
    assert intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]
    assert intersect([(0, 10)], [(10, 20)]) == []


# -- rounding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "shown"),
    [
        # The worked example: 1 - 273/131040 = 0.997916...
        (1 - Fraction(273, 131_040), "99.79"),
        (Fraction(95, 100), "95.00"),
        # A float floor gives 28.99 here (0.29 * 100 == 28.999999999999996).
        (Fraction(29, 100), "29.00"),
        (Fraction(9_999_999, 10_000_000), "99.99"),
        (1 - Fraction(1, 132_480), "99.99"),
        (Fraction(1), "100.00"),
        (Fraction(0), "0.00"),
        (Fraction(-1, 10), "0.00"),
    ],
)
def test_floor_percent_rounds_down_exactly(ratio: Fraction, shown: str) -> None:
    assert floor_percent(ratio) == Decimal(shown)
    assert str(floor_percent(ratio)) == shown


def test_floor_percent_of_nothing_is_nothing() -> None:
    assert floor_percent(None) is None
    assert ratio_of(10, 0) is None


@pytest.mark.parametrize(
    ("ratio", "target", "met"),
    [(Fraction(95, 100), 95.0, True), (Fraction(9499, 10000), 95.0, False), (None, 95.0, None)],
)
def test_target_is_met_on_the_exact_ratio(ratio: Fraction | None, target: float, met: bool) -> None:
    assert target_met(ratio, target) is met


# -- the rules, by hand -------------------------------------------------------------------------


def test_worked_example_273_minutes_in_91_days(estate: Estate) -> None:
    outages = [
        outage("network_telephony", "2019-04-10T09:00", "2019-04-10T10:40"),  # 100
        outage("email", "2019-05-01T12:00", "2019-05-01T13:13", site="ccc-guildhall"),  # 73
        outage("internet_web", "2019-06-03T08:00", "2019-06-03T09:00"),  # 60
        outage("servers", "2019-06-29T23:20", "2019-06-30T00:00"),  # 40
    ]
    acc = account(parse_period("FY2019Q1", LONDON), outages, estate, NOW)
    assert acc.period_time == 131_040 * M
    assert acc.combined_downtime == 273 * M
    assert acc.combined_ratio == 1 - Fraction(273, 131_040)
    assert floor_percent(acc.combined_ratio) == Decimal("99.79")
    assert acc.met is True
    assert [a.downtime // M for a in acc.areas] == [100, 73, 60, 40]


def test_overlapping_outages_in_one_area_count_once(estate: Estate) -> None:
    outages = [
        outage("email", "2019-07-09T10:05", "2019-07-09T11:17"),
        outage("email", "2019-07-09T10:20", "2019-07-09T11:30", site="ccc-guildhall"),
        outage("email", "2019-07-09T10:30", "2019-07-09T10:40", site="hdc-pathfinder"),
        # The same time in another area counts again in the combined figure.
        outage("servers", "2019-07-09T10:05", "2019-07-09T11:30"),
    ]
    acc = account(parse_period("FY2019Q2", LONDON), outages, estate, NOW)
    figures = {a.id: a.downtime / M for a in acc.areas}
    assert figures == {"network_telephony": 0, "email": 85, "internet_web": 0, "servers": 85}
    assert acc.combined_downtime == 170 * M
    # Per partner: each partner's own union; the shared outage counts for each of them.
    by_partner = {p.id: p.areas["email"] / M for p in acc.partners}
    assert by_partner == {"CCC": 70, "HDC": 10, "SCDC": 0, "SHARED": 72}
    # One incident for the email fault, seen from three sites, 85 minutes long.
    email = [i for i in acc.incidents if i.area == "email"]
    assert len(email) == 1
    assert email[0].sites == ("ccc-guildhall", "dc", "hdc-pathfinder")
    assert email[0].duration == 85 * M


def test_outage_across_a_quarter_boundary_is_split(estate: Estate) -> None:
    o = [outage("network_telephony", "2019-06-30T23:30", "2019-07-01T00:45")]
    assert downtime_minutes("FY2019Q1", o, estate)["network_telephony"] == 30
    assert downtime_minutes("FY2019Q2", o, estate)["network_telephony"] == 45
    assert downtime_minutes("2019-07", o, estate)["network_telephony"] == 45


def test_autumn_clock_change_quarter(estate: Estate) -> None:
    # 00:30 BST to 01:30 GMT on 27 October 2019 is two hours of real time.
    o = [outage("servers", "2019-10-27T00:30+01:00", "2019-10-27T01:30+00:00")]
    acc = account(parse_period("FY2019Q3", LONDON), o, estate, NOW)
    assert acc.period_time == (92 * 1440 + 60) * M
    assert acc.combined_downtime == 120 * M
    assert acc.combined_ratio == 1 - Fraction(120, 132_540)
    assert floor_percent(acc.combined_ratio) == Decimal("99.90")


def test_spring_clock_change_quarter(estate: Estate) -> None:
    # 00:30 GMT to 02:30 BST on 29 March 2020 is one hour of real time.
    o = [outage("email", "2020-03-29T00:30", "2020-03-29T02:30")]
    acc = account(parse_period("FY2019Q4", LONDON), o, estate, NOW)
    assert acc.period_time == (91 * 1440 - 60) * M
    assert acc.combined_downtime == 60 * M
    assert acc.combined_ratio == 1 - Fraction(60, 130_980)


def test_outage_across_the_august_bank_holiday_weekend(estate: Estate) -> None:
    # Friday 23 Aug 16:00 to Tuesday 27 Aug 2019 10:00; Monday 26 Aug is a bank holiday in
    # England, so business hours are Friday 16:00-17:00 and Tuesday 08:30-10:00.
    o = [outage("network_telephony", "2019-08-23T16:00", "2019-08-27T10:00")]
    acc = account(parse_period("FY2019Q2", LONDON), o, estate, NOW)
    net = acc.areas[0]
    assert net.downtime == (4 * 1440 - 6 * 60) * M
    assert net.business_downtime == 150 * M
    # Scotland's summer bank holiday is earlier in August: Monday counts there.
    scot = make_estate(holidays_subdiv="SCT")
    acc = account(parse_period("FY2019Q2", LONDON), o, scot, NOW)
    assert acc.areas[0].business_downtime == (60 + 510 + 90) * M


def test_business_hours_are_configurable(estate: Estate) -> None:
    o = [outage("email", "2019-07-02T08:00", "2019-07-02T18:00")]  # a Tuesday
    acc = account(parse_period("2019-07", LONDON), o, estate, NOW)
    assert acc.areas[1].business_downtime == 510 * M
    # July 2019 has 23 weekdays and no bank holiday in England.
    assert acc.business_time == 23 * 510 * M
    late = make_estate(business_start="09:00:00", business_end="17:30:00", business_days=[1])
    acc = account(parse_period("2019-07", LONDON), o, late, NOW)
    assert acc.areas[1].business_downtime == 510 * M
    assert acc.business_time == 5 * 510 * M  # five Tuesdays


def test_degraded_counts_unless_the_area_says_not() -> None:
    o = [outage("internet_web", "2019-08-13T09:00", "2019-08-13T09:50", state="degraded")]
    default = make_estate()
    assert downtime_minutes("FY2019Q2", o, default)["internet_web"] == 50
    lenient = make_estate(areas={"internet_web": {"degraded_counts_as_down": False}})
    acc = account(parse_period("FY2019Q2", LONDON), o, lenient, NOW)
    web = next(a for a in acc.areas if a.id == "internet_web")
    assert (web.downtime, web.degraded) == (0, 50 * M)
    assert acc.incidents[0].counted is False


def test_planned_is_counted_and_shown_apart_unless_excluded() -> None:
    o = [
        outage("servers", "2019-07-20T07:00", "2019-07-20T11:00", planned=True),
        outage("servers", "2019-07-21T02:00", "2019-07-21T02:25"),
    ]
    acc = account(parse_period("FY2019Q2", LONDON), o, make_estate(), NOW)
    servers = acc.areas[3]
    assert (servers.downtime, servers.planned) == (265 * M, 240 * M)
    acc = account(parse_period("FY2019Q2", LONDON), o, make_estate(count_planned=False), NOW)
    servers = acc.areas[3]
    assert (servers.downtime, servers.planned) == (25 * M, 240 * M)
    assert acc.combined_downtime == 25 * M


def test_unknown_is_not_monitored_not_downtime(estate: Estate) -> None:
    o = [outage("network_telephony", "2019-07-05T10:00", "2019-07-05T12:00", state="unknown")]
    acc = account(parse_period("FY2019Q2", LONDON), o, estate, NOW)
    assert acc.areas[0].downtime == 0
    assert acc.areas[0].not_monitored == 120 * M
    assert acc.combined_ratio == 1
    assert acc.incidents == []


def test_open_outage_is_clipped_at_now_and_the_quarter_measured_to_now(estate: Estate) -> None:
    now = local("2019-07-02T12:00")
    o = [outage("email", "2019-07-02T11:00", None)]
    acc = account(parse_period("FY2019Q2", LONDON), o, estate, now)
    assert acc.complete is False
    assert acc.period_time == (1440 + 12 * 60) * M
    assert acc.combined_downtime == 60 * M
    assert acc.incidents[0].end is None


def test_an_incident_lists_its_records_in_time_order_when_they_start_together(
    estate: Estate,
) -> None:
    """Two sites' records of one fault start at the same moment: the shorter one is listed
    first, whatever order the checks were attributed in."""
    o = [
        outage("email", "2019-07-05T10:00", "2019-07-05T10:30", site="a-site", id="long"),
        outage("email", "2019-07-05T10:00", "2019-07-05T10:10", site="b-site", id="short"),
        outage("email", "2019-07-05T10:20", "2019-07-05T10:40", site="c-site", id="later"),
    ]
    acc = account(parse_period("FY2019Q2", LONDON), o, estate, NOW)
    assert [i.ids for i in acc.incidents] == [("short", "long", "later")]
    assert acc.incidents[0].duration == 40 * M


def test_stored_area_missing_from_the_config_is_still_reported(estate: Estate) -> None:
    o = [outage("telephony_legacy", "2019-07-05T10:00", "2019-07-05T10:30")]
    acc = account(parse_period("FY2019Q2", LONDON), o, estate, NOW)
    assert acc.areas[-1].id == "telephony_legacy"
    assert acc.combined_downtime == 30 * M


def test_site_missing_from_the_config_is_unassigned(estate: Estate) -> None:
    o = [outage("email", "2019-07-05T10:00", "2019-07-05T10:30", site="old-depot")]
    acc = account(parse_period("FY2019Q2", LONDON), o, estate, NOW)
    assert acc.partners[-1].id == "unassigned"
    assert acc.partners[-1].downtime == 30 * M


# -- the rules against a minute-by-minute reference ---------------------------------------------

AREAS = ("network_telephony", "email")
#: Short periods that hold the awkward days: a bank holiday weekend and both clock changes.
PERIODS = (
    (date(2019, 8, 23), date(2019, 8, 27)),
    (date(2019, 10, 26), date(2019, 10, 28)),
    (date(2020, 3, 28), date(2020, 3, 30)),
)

outages_strategy = st.lists(
    st.tuples(
        st.sampled_from(AREAS),
        st.sampled_from(("down", "down", "degraded", "unknown")),
        st.booleans(),  # planned
        st.integers(-300, 7500),  # start, minutes after the period starts
        st.integers(0, 3000),  # duration in minutes
        st.sampled_from(tuple(s for s in ("dc", "ccc-guildhall", "hdc-pathfinder"))),
    ),
    max_size=6,
)


def brute_force(
    period: Period, rows: list[Outage], estate: Estate
) -> tuple[dict[str, int], dict[str, int], dict[str, int], int]:
    """Walk the period one minute at a time, applying the rules as docs/accounting.md words them."""
    n = (period.end_us - period.start_us) // M
    hol = holidays.country_holidays("GB", subdiv="ENG", years=[2019, 2020])
    down = {a: [False] * n for a in AREAS}
    planned = {a: [False] * n for a in AREAS}
    for o in rows:
        counted = o.state != "unknown"
        counted &= o.state != "degraded" or estate.areas[o.area].degraded_counts_as_down
        first = (o.start - period.start_us) // M
        last = ((o.end or o.start) - period.start_us) // M
        for m in range(max(first, 0), min(last, n)):
            if counted and (not o.planned or estate.accounting.count_planned):
                down[o.area][m] = True
            if counted and o.planned:
                planned[o.area][m] = True
    business = []
    for m in range(n):
        t = (period.start.astimezone(UTC) + timedelta(minutes=m)).astimezone(LONDON)
        business.append(
            t.weekday() < 5 and t.date() not in hol and (8, 30) <= (t.hour, t.minute) < (17, 0)
        )
    totals = {a: sum(down[a]) for a in AREAS}
    planned_totals = {a: sum(planned[a]) for a in AREAS}
    in_hours = {a: sum(d and b for d, b in zip(down[a], business, strict=True)) for a in AREAS}
    return totals, planned_totals, in_hours, sum(business)


@settings(max_examples=40, deadline=None)
@given(
    period_index=st.integers(0, len(PERIODS) - 1),
    rows=outages_strategy,
    count_planned=st.booleans(),
    degraded_counts=st.booleans(),
)
def test_engine_matches_minute_by_minute_reference(
    period_index: int,
    rows: list[tuple[str, str, bool, int, int, str]],
    count_planned: bool,
    degraded_counts: bool,
) -> None:
    estate = make_estate(
        areas={"email": {"degraded_counts_as_down": degraded_counts}},
        count_planned=count_planned,
    )
    period = date_range(*PERIODS[period_index], LONDON)
    outages = [
        Outage(
            id=f"h{i}",
            site=site,
            check="c",
            area=a,
            state=state,
            start=period.start_us + start * M,
            end=period.start_us + (start + length) * M,
            planned=planned,
        )
        for i, (a, state, planned, start, length, site) in enumerate(rows)
    ]
    acc = account(period, outages, estate, NOW)
    totals, planned_totals, in_hours, business_minutes = brute_force(period, outages, estate)
    got = {a.id: a for a in acc.areas}
    for aid in AREAS:
        assert got[aid].downtime == totals[aid] * M
        assert got[aid].planned == planned_totals[aid] * M
        assert got[aid].business_downtime == in_hours[aid] * M
    assert acc.business_time == business_minutes * M
    n = (period.end_us - period.start_us) // M
    assert acc.combined_ratio == max(0, 1 - Fraction(sum(totals.values()), n))
    # Splitting the period at any midnight splits the downtime exactly.
    first, last = PERIODS[period_index]
    cut = first + timedelta(days=1)
    a = account(date_range(first, cut - timedelta(days=1), LONDON), outages, estate, NOW)
    b = account(date_range(cut, last, LONDON), outages, estate, NOW)
    assert a.combined_downtime + b.combined_downtime == acc.combined_downtime
    assert a.period_time + b.period_time == acc.period_time
    # Counted incidents of one area never add up to less than its downtime.
    for aid in AREAS:
        listed = sum(i.duration for i in acc.incidents if i.area == aid and i.counted)
        assert listed >= got[aid].downtime


def test_garbage_collection_comes_back_when_the_last_pause_ends() -> None:
    """Reports and the board's figures pause collection on two threads at once: it came
    back on when the first of them ended, under the other's million tuples."""
    import gc
    import threading

    from collector.accounting import paused_gc

    entered, leave = threading.Event(), threading.Event()

    def other() -> None:
        with paused_gc():
            entered.set()
            leave.wait(60)

    assert gc.isenabled()
    thread = threading.Thread(target=other)
    try:
        with paused_gc():  # this pause begins first and ends first
            thread.start()
            assert entered.wait(60)
        assert not gc.isenabled()  # the other thread's pause goes on
    finally:
        leave.set()
        thread.join(60)
    assert gc.isenabled()
