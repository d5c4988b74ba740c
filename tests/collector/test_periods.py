"""Periods: local-midnight boundaries in Europe/London and real elapsed minutes (issue 3)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime

import pytest

from collector.accounting import (
    PeriodError,
    date_range,
    last_quarters,
    parse_period,
    quarter_containing,
)
from tests.collector.helpers import LONDON


@pytest.mark.parametrize(
    ("text", "pid", "start_utc", "end_utc", "minutes"),
    [
        # Financial FY2019 runs April 2019 to March 2020; Q2 is July to September.
        ("FY2019Q2", "FY2019Q2", "2019-06-30T23:00", "2019-09-30T23:00", 92 * 1440),
        # The worked example's 91-day quarter: no clock change inside it.
        ("FY2019Q1", "FY2019Q1", "2019-03-31T23:00", "2019-06-30T23:00", 131_040),
        # Clocks went back on 27 October 2019: one hour longer.
        ("FY2019Q3", "FY2019Q3", "2019-09-30T23:00", "2020-01-01T00:00", 92 * 1440 + 60),
        # Clocks went forward on 29 March 2020 (a leap year): one hour shorter.
        ("fy2019q4", "FY2019Q4", "2020-01-01T00:00", "2020-03-31T23:00", 91 * 1440 - 60),
        ("2019Q3", "2019Q3", "2019-06-30T23:00", "2019-09-30T23:00", 92 * 1440),
        ("2019Q1", "2019Q1", "2019-01-01T00:00", "2019-03-31T23:00", 90 * 1440 - 60),
        ("2019Q4", "2019Q4", "2019-09-30T23:00", "2020-01-01T00:00", 92 * 1440 + 60),
        ("2019-09", "2019-09", "2019-08-31T23:00", "2019-09-30T23:00", 30 * 1440),
        ("2019-10", "2019-10", "2019-09-30T23:00", "2019-11-01T00:00", 31 * 1440 + 60),
        ("2020-03", "2020-03", "2020-03-01T00:00", "2020-03-31T23:00", 31 * 1440 - 60),
        (
            "2019-07-01..2019-09-30",
            "2019-07-01..2019-09-30",
            "2019-06-30T23:00",
            "2019-09-30T23:00",
            92 * 1440,
        ),
    ],
)
def test_period_boundaries_and_minutes(
    text: str, pid: str, start_utc: str, end_utc: str, minutes: int
) -> None:
    p = parse_period(text, LONDON)
    assert p.id == pid
    assert p.start.astimezone(UTC) == datetime.fromisoformat(start_utc).replace(tzinfo=UTC)
    assert p.end.astimezone(UTC) == datetime.fromisoformat(end_utc).replace(tzinfo=UTC)
    assert p.minutes == minutes
    # Boundaries are local midnight.
    assert (p.start.hour, p.start.minute, p.end.hour, p.end.minute) == (0, 0, 0, 0)


def test_from_to_includes_both_days_and_equals_the_quarter() -> None:
    r = date_range(date(2019, 7, 1), date(2019, 9, 30), LONDON)
    q = parse_period("FY2019Q2", LONDON)
    assert (r.start_us, r.end_us) == (q.start_us, q.end_us)
    assert date_range(date(2019, 7, 1), date(2019, 7, 1), LONDON).minutes == 1440


@pytest.mark.parametrize(
    "text", ["FY2019Q5", "2019Q0", "2019-13", "2019-00", "Q3", "", "2019-09-31..2019-10-01"]
)
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text, LONDON)


def test_range_backwards_is_refused() -> None:
    with pytest.raises(PeriodError, match="before"):
        parse_period("2019-09-30..2019-07-01", LONDON)


@pytest.mark.parametrize(
    ("at", "financial", "expected"),
    [
        ("2019-07-01T00:00:00+01:00", True, "FY2019Q2"),
        ("2019-06-30T23:59:59+01:00", True, "FY2019Q1"),
        # 23:30 UTC on 30 June is already 1 July in London.
        ("2019-06-30T23:30:00+00:00", True, "FY2019Q2"),
        ("2020-02-10T12:00:00+00:00", True, "FY2019Q4"),
        ("2020-02-10T12:00:00+00:00", False, "2020Q1"),
        ("2019-12-31T23:59:00+00:00", True, "FY2019Q3"),
    ],
)
def test_quarter_containing(at: str, financial: bool, expected: str) -> None:
    assert quarter_containing(datetime.fromisoformat(at), LONDON, financial=financial).id == (
        expected
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FY2019Q2", ["FY2018Q3", "FY2018Q4", "FY2019Q1", "FY2019Q2"]),
        ("FY2019Q1", ["FY2018Q2", "FY2018Q3", "FY2018Q4", "FY2019Q1"]),
        ("2019Q1", ["2018Q2", "2018Q3", "2018Q4", "2019Q1"]),
        ("2019-09", ["FY2018Q3", "FY2018Q4", "FY2019Q1", "FY2019Q2"]),
        ("2019-07-01..2019-10-05", ["FY2018Q4", "FY2019Q1", "FY2019Q2", "FY2019Q3"]),
    ],
)
def test_last_four_quarters(text: str, expected: list[str]) -> None:
    quarters = last_quarters(parse_period(text, LONDON), LONDON)
    assert [q.id for q in quarters] == expected
    # Contiguous: each quarter starts where the one before ended.
    assert all(a.end_us == b.start_us for a, b in itertools.pairwise(quarters))


@pytest.mark.parametrize(
    "text",
    [
        "FY0000Q1",
        "FY0001Q1",  # was an OverflowError: a 500 from /api/v1/report
        "9999Q4",
        "0000-01",
        "0001-01-02..9999-12-30",  # held the reader thread for 83 s, then a 500
        "1989Q4",
        "FY2100Q4",  # January to March 2101
        "1989-12-31..1990-01-31",
    ],
)
def test_periods_outside_1990_to_2100_are_period_errors(text: str) -> None:
    # A PeriodError is a 400 from /api/v1/report; anything else was a 500.
    with pytest.raises(PeriodError, match=r"is outside 1990-01-01 to 2100-12-31$"):
        parse_period(text, LONDON)


def test_from_to_up_to_the_last_day_there_is_is_a_period_error() -> None:
    # --from/--to: the day after 9999-12-31 was 'unexpected OverflowError'.
    with pytest.raises(PeriodError, match=r"is outside 1990-01-01 to 2100-12-31$"):
        date_range(date(2019, 1, 1), date(9999, 12, 31), LONDON)


@pytest.mark.parametrize("text", ["1990Q1", "FY2100Q3", "2100-12", "1990-01-01..1999-12-31"])
def test_periods_at_the_edges_are_accepted(text: str) -> None:
    assert parse_period(text, LONDON).id == text


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2010-01-31..2020-01-30", True),  # ten years to the day
        ("2010-01-31..2020-01-31", False),
        ("2012-02-29..2022-02-28", True),
        ("2012-02-29..2022-03-01", False),
    ],
)
def test_periods_are_at_most_ten_years_long(text: str, ok: bool) -> None:
    if ok:
        assert parse_period(text, LONDON).kind == "range"
    else:
        with pytest.raises(PeriodError, match="is longer than 10 years"):
            parse_period(text, LONDON)


def test_cli_from_to_is_bounded_too() -> None:
    with pytest.raises(PeriodError, match="longer than 10 years"):
        date_range(date(1990, 1, 1), date(2100, 12, 31), LONDON)
