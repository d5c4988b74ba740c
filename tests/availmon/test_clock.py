"""The two time forms (availmon/clock.py) are exact and agree, whatever the offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from availmon.clock import from_us, iso_to_us, to_iso, to_us, us_to_iso

# 2000-2200, the years an event may carry (availmon.schema), and microseconds within them.
US = st.integers(to_us(datetime(2000, 1, 1, tzinfo=UTC)), to_us(datetime(2200, 1, 1, tzinfo=UTC)))
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(us=US, tz=OFFSETS)
def test_microseconds_round_trip_through_any_offset(us: int, tz: timezone) -> None:
    at = from_us(us)
    assert to_us(at) == us
    assert to_us(at.astimezone(tz)) == us
    assert at - datetime(1970, 1, 1, tzinfo=UTC) == timedelta(microseconds=us)
    assert iso_to_us(to_iso(at.astimezone(tz))) == us
    assert us_to_iso(us) == to_iso(at.astimezone(tz))


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_us(datetime(2026, 1, 1))
