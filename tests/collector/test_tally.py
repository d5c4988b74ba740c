"""The report's one-pass engine (collector/tally.py) gives exactly what the accounting rules
(collector/accounting.py, ``account``) give, on random outages read back from a real store."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from availmon.clock import to_us
from collector.accounting import BusinessCalendar, Outage, account, parse_period
from collector.store import Store
from collector.tally import combined_downtime, tally
from tests.collector.helpers import LONDON, make_estate, store_row

PERIOD = parse_period("2019-09", LONDON)
T0 = PERIOD.start_us
HOUR = 3_600_000_000

outage_rows = st.lists(
    st.tuples(
        st.sampled_from(["network_telephony", "email", "servers", "retired_area"]),
        st.sampled_from(["dc", "ccc-guildhall", "hdc-pathfinder", "gone-site"]),
        st.sampled_from(["down", "down", "degraded", "unknown"]),
        st.integers(-48, 31 * 24 + 48),  # start hour, around September
        st.one_of(st.none(), st.integers(0, 30)),  # length in hours; None: open
        st.booleans(),  # planned
        st.sampled_from([None, "", "fibre cut", "power"]),  # cause
        st.sampled_from([None, None, (True, None), (False, "by hand"), (None, "noted")]),
    ),
    max_size=40,
)


def fill(store: Store, rows: list[Any]) -> None:
    imported = []
    for n, (area, site, state, start_h, length, planned, cause, _) in enumerate(rows):
        start = T0 + start_h * HOUR + (n % 3) * 1_000_000  # ties and near-ties
        end = None if length is None else start + length * HOUR
        o = Outage(f"t:{n:03d}", site, f"check{n % 4}", area, state, start, end, planned, cause)
        imported.append(store_row(o))
    store.import_outages(imported)
    at = datetime(2020, 1, 1, tzinfo=UTC)
    for n, row in enumerate(rows):
        note = row[7]
        if note is not None:
            store.annotate(f"t:{n:03d}", at, planned=note[0], note=note[1], by="test")


FILLER = ("servers", "dc", "down", 300, 1, False, None, None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Two incidents of one area starting at the same instant are listed in the order their
# kinds first appeared in the period (as accounting groups them), not the order they began.
@example(
    rows=[
        ("email", "dc", "down", 1, 1, False, None, None),
        ("email", "dc", "down", 2, 1, True, None, None),
        FILLER,
        ("email", "dc", "down", 5, 1, True, None, None),
        FILLER,
        FILLER,
        ("email", "dc", "down", 5, 1, False, None, None),
    ],
    now_h=31 * 24 + 100,
    count_planned=True,
    degraded_email=True,
)
@given(
    rows=outage_rows,
    now_h=st.sampled_from([-10, 5, 200, 31 * 24 + 100]),
    count_planned=st.booleans(),
    degraded_email=st.booleans(),
)
def test_tally_is_account(
    rows: list[Any], now_h: int, count_planned: bool, degraded_email: bool
) -> None:
    estate = make_estate(
        areas={
            "network_telephony": {"name": "Network"},
            "email": {"name": "Email", "degraded_counts_as_down": degraded_email},
            "servers": {"name": "Servers"},
        },
        count_planned=count_planned,
    )
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    now = datetime(2019, 9, 1, tzinfo=LONDON) + timedelta(hours=now_h)
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "c.db")
        try:
            fill(store, rows)
            outages = [Outage.from_row(r) for r in store.outages_between(PERIOD.start, PERIOD.end)]
            want = account(PERIOD, outages, estate, now, calendar)
            got = tally(store, PERIOD, estate, to_us(now), calendar)
            lean = tally(store, PERIOD, estate, to_us(now), calendar, members=False)
            combined = combined_downtime(store, PERIOD, estate, to_us(now))
        finally:
            store.close()
    assert got == want
    assert combined == want.combined_downtime
    assert lean.areas == want.areas
    assert lean.partners == want.partners
    assert [(i.start, i.area, i.sites, i.causes, i.duration) for i in lean.incidents] == [
        (i.start, i.area, i.sites, i.causes, i.duration) for i in want.incidents
    ]
    assert all(i.ids == () and i.checks == () for i in lean.incidents)
