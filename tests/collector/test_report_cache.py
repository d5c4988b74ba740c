"""Figures of ended quarters are cached in the store (issue 9), and every write that changes
an outage in such a quarter drops them: a late event, an annotation, an import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import holidays
import pytest

from availmon.config import Estate, parse_config
from availmon.schema import Event, State
from collector.accounting import BusinessCalendar, parse_period
from collector.report import build_report, fingerprint, keep_days, keep_history, render
from collector.store import Store
from tests.collector.helpers import LONDON, estate_data, make_estate, outage, store_row

NOW = datetime(2026, 1, 1, tzinfo=UTC)
Q = parse_period("FY2019Q2", LONDON)  # July to September 2019, long ended at NOW


def report(store: Store, estate: Estate) -> dict[str, Any]:
    return build_report(store, estate, Q, NOW)


def cached_keys(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT key FROM figures_cache ORDER BY key")]


def email_outage(store: Store) -> str:
    o = outage("email", "2019-07-10T10:00", "2019-07-10T11:00", id="i:email")
    store.import_outages([store_row(o)])
    return o.id


def event(seq: int, frm: State, to: State, at: datetime) -> Event:
    return Event(
        id=f"dc:{seq}",
        seq=seq,
        site="dc",
        agent="dc",
        check="web",
        area="internet_web",
        from_=frm,
        to=to,
        at=at,
        detected_at=at,
    )


def test_an_ended_quarter_is_computed_once_and_read_back_the_same(
    store: Store, estate: Estate
) -> None:
    email_outage(store)
    june = outage("servers", "2019-06-10T10:00", "2019-06-10T10:45", id="i:june")
    store.import_outages([store_row(june)])
    first = report(store, estate)
    assert [h["availability_percent"] for h in first["history"]][2:] == [99.96, 99.95]
    keys = cached_keys(store)
    # The quarter's figures, and the combined figure of each quarter of the history chart.
    assert any(k.startswith("period:") for k in keys)
    assert sum(k.startswith("combined:") for k in keys) >= 1
    again = report(store, estate)
    assert again == first
    for fmt in ("json", "csv", "md"):
        assert render(fmt, again) == render(fmt, first)
    assert cached_keys(store) == keys


def test_a_quarter_still_running_is_not_cached(store: Store, estate: Estate) -> None:
    email_outage(store)
    build_report(store, estate, Q, datetime(2019, 8, 1, tzinfo=UTC))
    assert not [k for k in cached_keys(store) if f":{Q.start_us}:" in k]


def test_a_late_event_in_an_ended_quarter_drops_its_figures(store: Store, estate: Estate) -> None:
    email_outage(store)
    before = report(store, estate)
    # An agent's spool replays an outage of August 2019 today.
    at = datetime(2019, 8, 5, 9, 0, tzinfo=UTC)
    store.ingest(
        [
            event(1, State.UP, State.DOWN, at),
            event(2, State.DOWN, State.UP, at + timedelta(hours=2)),
        ],
        NOW,
    )
    assert not [k for k in cached_keys(store) if k.startswith("period:")]
    after = report(store, estate)
    web = next(a for a in after["areas"] if a["id"] == "internet_web")
    assert web["downtime_minutes"] == 120
    assert after["combined"]["downtime_minutes"] == before["combined"]["downtime_minutes"] + 120


def test_an_annotation_in_an_ended_quarter_drops_its_figures(store: Store, estate: Estate) -> None:
    oid = email_outage(store)
    before = report(store, estate)
    assert before["areas"][1]["planned_minutes"] == 0
    store.annotate(oid, NOW, planned=True, cause="migration", by="test")
    after = report(store, estate)
    assert after["areas"][1]["planned_minutes"] == 60
    assert after["outages"][0]["kind"] == "planned"
    assert after["outages"][0]["cause"] == "migration"


def test_an_import_into_an_ended_quarter_drops_its_figures(store: Store, estate: Estate) -> None:
    email_outage(store)
    report(store, estate)
    late = outage("servers", "2019-09-01T10:00", "2019-09-01T10:30", id="i:late")
    store.import_outages([store_row(late)])
    assert report(store, estate)["areas"][3]["downtime_minutes"] == 30


def test_writes_after_the_quarter_keep_its_figures(store: Store, estate: Estate) -> None:
    email_outage(store)
    report(store, estate)
    keys = cached_keys(store)
    store.ingest([event(1, State.UP, State.DOWN, NOW - timedelta(hours=1))], NOW)
    o = outage("email", "2025-12-01T10:00", "2025-12-01T10:20", id="i:recent")
    store.import_outages([store_row(o)])
    assert cached_keys(store) == keys


def test_figures_computed_across_a_write_into_their_quarter_are_not_kept(
    store: Store, estate: Estate
) -> None:
    """The race the version guards: a reader computes from the data as it was, a writer
    commits into the same quarter meanwhile; what the reader found must not be cached."""
    email_outage(store)
    version = store.figures_version(Q.end_us)
    late = outage("servers", "2019-09-01T10:00", "2019-09-01T10:30", id="i:late")
    store.import_outages([store_row(late)])
    assert not store.cache_figures("period:stale", Q.start_us, Q.end_us, version, "{}")
    assert store.cached_figures("period:stale") is None
    version = store.figures_version(Q.end_us)
    assert store.cache_figures("period:fresh", Q.start_us, Q.end_us, version, "{}")


def test_another_config_computes_its_own_figures(store: Store, estate: Estate) -> None:
    email_outage(store)
    planned = outage("servers", "2019-07-02T10:00", "2019-07-02T12:00", planned=True, id="i:p")
    store.import_outages([store_row(planned)])
    counted = report(store, estate)
    excluded = make_estate(count_planned=False)
    assert fingerprint(excluded) != fingerprint(estate)
    figures = report(store, excluded)
    assert counted["areas"][3]["downtime_minutes"] == 120
    assert figures["areas"][3]["downtime_minutes"] == 0


def day_parts(store: Store) -> dict[int, int]:
    """The days' summaries kept: start -> end (µs)."""
    rows = store.conn.execute("SELECT lo, hi FROM figures_cache WHERE key LIKE 'part:%'")
    return dict(rows.fetchall())


def test_each_ended_day_is_kept_and_a_write_drops_that_day_and_those_after(
    store: Store, estate: Estate
) -> None:
    """The quarter's figures are worked out a day at a time, each day's summary kept: a
    late import into 1 September drops that day's and the later ones, and the report made
    again reads July and August back and works out September (the same figures as a store
    that never kept a day)."""
    email_outage(store)
    report(store, estate)
    kept = {lo: hi for lo, hi in day_parts(store).items() if Q.start_us <= lo < Q.end_us}
    assert len(kept) == 92  # July, August, September
    late = outage("servers", "2019-09-01T10:00", "2019-09-01T10:30", id="i:late")
    store.import_outages([store_row(late)])
    left = {lo: hi for lo, hi in day_parts(store).items() if Q.start_us <= lo < Q.end_us}
    assert left == {lo: hi for lo, hi in kept.items() if hi <= late.start}
    assert len(left) == 62
    again = report(store, estate)
    assert len([lo for lo in day_parts(store) if Q.start_us <= lo < Q.end_us]) == 92
    store.conn.execute("DELETE FROM figures_cache")
    store.conn.commit()
    assert report(store, estate)["areas"] == again["areas"]
    assert again["areas"][3]["downtime_minutes"] == 30


def test_a_running_quarter_keeps_the_days_that_have_ended(store: Store, estate: Estate) -> None:
    email_outage(store)
    now = datetime(2019, 7, 11, 12, 0, tzinfo=UTC)
    first = build_report(store, estate, Q, now)
    kept = sorted(day_parts(store).items())
    assert len(kept) == 10  # 1 to 10 July; the 11th is still running
    assert kept[-1][1] <= Q.start_us + 10 * 86_400_000_000
    assert build_report(store, estate, Q, now) == first


def test_keeping_the_days_in_the_background_leaves_a_report_only_the_day_running(
    store: Store, estate: Estate
) -> None:
    """What the collector runs in the background: each ended day of this quarter and the
    last, one step each, none twice; the report then works out only the day running, and
    its figures are those of a store that kept nothing."""
    email_outage(store)
    june = outage("servers", "2019-06-10T10:00", "2019-06-10T10:45", id="i:june")
    store.import_outages([store_row(june)])
    now = datetime(2019, 8, 15, 12, 0, tzinfo=UTC)
    steps = list(keep_days(store, estate, now))
    assert len(steps) == 91 + 45  # April to June, and 1 July to 14 August
    assert all(cpu >= 0 for cpu in steps)
    assert list(keep_days(store, estate, now)) == []
    kept = len(day_parts(store))
    first = build_report(store, estate, Q, now)
    assert len(day_parts(store)) == kept  # nothing more to keep: 15 August is running
    store.conn.execute("DELETE FROM figures_cache")
    store.conn.commit()
    assert build_report(store, estate, Q, now) == first


def with_check(**settings: Any) -> Estate:
    """The test estate with one configured check; ``settings`` outside the accounting
    rules (how it is probed, the web surface)."""
    data = estate_data()
    web = settings.pop("web", {})
    data["sites"]["dc"]["checks"] = [
        {"name": "c", "type": "tcp", "target": "127.0.0.1:25", "area": "email", **settings}
    ]
    data["web"] = web
    return parse_config(data, "test")


def test_a_change_outside_the_rules_keeps_the_figures(store: Store) -> None:
    """How a check is probed and how the web surface listens change no figure: the days
    and the quarter kept under the old config are read back under the new one, and are
    the figures the new config works out from nothing."""
    estate = with_check()
    email_outage(store)
    first = report(store, estate)
    keys = cached_keys(store)
    changed = with_check(timeout=2.5, interval=10, failures_to_down=5, web={"port": 9999})
    assert fingerprint(changed) == fingerprint(estate)
    assert report(store, changed) == first
    assert cached_keys(store) == keys
    store.conn.execute("DELETE FROM figures_cache")
    store.conn.commit()
    assert report(store, changed) == first
    moved = with_check(area="servers")  # the rules change: its own figures
    assert fingerprint(moved) != fingerprint(estate)
    data = estate_data()
    data["partners"] = dict(reversed(data["partners"].items()))
    reordered = parse_config(data, "test")  # the report lists partners in the config's order
    assert [p["id"] for p in report(store, reordered)["by_partner"]] == list(data["partners"])
    assert fingerprint(reordered) != fingerprint(make_estate())


def test_keeping_the_days_drops_figures_kept_under_other_rules(
    store: Store, estate: Estate
) -> None:
    """After a change of the rules nothing reads the figures kept under the old ones: the
    keeper's pass drops them, or the store would hold a quarter of days for each change."""
    email_outage(store)
    old = make_estate(count_planned=False)
    report(store, old)
    assert any(fingerprint(old) in k for k in cached_keys(store))
    now = datetime(2019, 10, 2, 12, 0, tzinfo=UTC)
    assert len(list(keep_days(store, estate, now))) == 92 + 1  # July to September, 1 October
    keys = cached_keys(store)
    assert len(keys) == 92 + 1 + 1  # the days, and the bank holidays
    assert all(f":{fingerprint(estate)}:" in k for k in keys)


def test_days_the_store_will_not_keep_are_told(store: Store, estate: Estate) -> None:
    """A store that cannot be written keeps no day, and the pass says which it could not
    keep (the collector then tries again on its next pass rather than skip it)."""
    email_outage(store)
    store.conn.execute("PRAGMA query_only = 1")  # SQLite refuses every write from now on
    refused: list[int] = []
    now = datetime(2019, 10, 2, 12, 0, tzinfo=UTC)
    made = list(keep_days(store, estate, now, refused))
    assert len(made) == len(refused) == 92 + 1
    assert refused[0] == Q.start_us
    store.conn.execute("PRAGMA query_only = 0")
    assert day_parts(store) == {}
    again: list[int] = []
    assert len(list(keep_days(store, estate, now, again))) == 92 + 1
    assert again == []


def test_the_history_is_kept_once_and_only_where_the_store_can_keep_it(
    store: Store, estate: Estate
) -> None:
    """The collector's pass keeps the quarters the reports of this quarter and the last
    chart (``keep_history``); a store that cannot be written keeps none, so none is worked
    out for nothing on every pass."""
    email_outage(store)  # July 2019: the history of FY2019Q3's report and FY2019Q4's
    now = datetime(2020, 1, 15, 12, 0, tzinfo=UTC)  # in FY2019Q4 (Jan-Mar 2020)
    store.conn.execute("PRAGMA query_only = 1")
    assert list(keep_history(store, estate, now)) == []
    store.conn.execute("PRAGMA query_only = 0")
    assert len(list(keep_history(store, estate, now))) == 2  # FY2019Q2 and FY2019Q3
    combined = [k for k in cached_keys(store) if k.startswith("combined:")]
    assert len(combined) == 2
    assert list(keep_history(store, estate, now)) == []  # kept: nothing worked out again
    report = build_report(store, estate, parse_period("FY2019Q3", LONDON), NOW)
    assert [h["id"] for h in report["history"] if h["availability_percent"] is not None] == [
        "FY2019Q2",
        "FY2019Q3",
    ]
    assert [k for k in cached_keys(store) if k.startswith("combined:")] == combined


def test_another_release_of_the_bank_holidays_computes_its_own_figures(
    estate: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release of the holidays library can add a bank holiday (a coronation, a jubilee),
    and business hours move with it: figures kept under another release are not read."""
    before = fingerprint(estate)
    monkeypatch.setattr("collector.report.HOLIDAYS_VERSION", "0.0.1")
    assert fingerprint(make_estate()) != before


def test_another_release_of_the_tz_database_computes_its_own_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tz database update can move a clock change, and local midnights (the days kept,
    the quarter's bounds) with it: figures kept under other rules are not read. The same
    rules found elsewhere are the same figures."""
    from zoneinfo import TZPATH, reset_tzpath

    from collector.report import zone_rules

    system = fingerprint(make_estate())
    london = next(Path(p, "Europe/London") for p in TZPATH if Path(p, "Europe/London").is_file())
    same, moved = tmp_path / "same", tmp_path / "moved"
    (same / "Europe").mkdir(parents=True)
    (moved / "Europe").mkdir(parents=True)
    (same / "Europe/London").write_bytes(london.read_bytes())
    paris = london.with_name("Paris")  # other rules under London's name
    (moved / "Europe/London").write_bytes(paris.read_bytes())
    monkeypatch.setattr("collector.report._fingerprinted", None)
    try:
        for root, expected in ((same, True), (moved, False)):
            reset_tzpath(to=[str(root)])
            zone_rules.cache_clear()
            assert (fingerprint(make_estate()) == system) is expected, root
    finally:
        reset_tzpath()
        zone_rules.cache_clear()
    assert fingerprint(make_estate()) == system


#: A report in a process of its own: whether it imported the holidays library, and its
#: figures.
REPORT_ALONE = """
import json, sys
from datetime import UTC, datetime
from collector.accounting import parse_period
from collector.report import build_report
from collector.store import Store
from tests.collector.helpers import LONDON, make_estate
store = Store(sys.argv[1])
data = build_report(
    store, make_estate(), parse_period("FY2019Q2", LONDON), datetime(2026, 1, 1, tzinfo=UTC)
)
print(json.dumps({"imported": "holidays" in sys.modules, "data": data}))
"""


def report_alone(store: Store) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", REPORT_ALONE, str(store.path)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(run.stdout)
    return result


def test_bank_holidays_are_kept_and_a_report_read_back_needs_not_the_library(
    store: Store, estate: Estate
) -> None:
    """Loading the holidays library costs a report read back from kept days a tenth of its
    CPU (it imports every country's module), so the dates it gives are kept in the store
    under the figures' key, and read back by the next report."""
    email_outage(store)
    first = report_alone(store)
    assert first["imported"] is True  # nothing kept yet: the library gives the dates
    key = f"holidays:{fingerprint(estate)}:"
    kept = json.loads(store.cached_figures(key) or "null")
    listed = holidays.country_holidays("GB", subdiv="ENG", years=2019)
    assert kept["2019"] == sorted(d.isoformat() for d in listed)
    assert "2019-08-26" in kept["2019"]  # the summer bank holiday, in business hours' way
    # A late note drops the quarter's figures and its days from the outage's on; they are
    # worked out again (business hours and all) with the kept dates.
    store.annotate("i:email", NOW, cause="power cut", by="test")
    assert not any(k.startswith("period:") for k in cached_keys(store))
    again = report_alone(store)
    assert again["imported"] is False
    assert again["data"]["outages"][0]["cause"] == "power cut"
    for name in ("combined", "areas", "by_partner", "business_hours_minutes"):
        assert again["data"][name] == first["data"][name]
    assert store.cached_figures(key) is not None  # no write of records drops them


def test_kept_holidays_are_learnt_all_or_none() -> None:
    """A kept row that is not what this code writes (a year's date in another year) is not
    half learnt: the dates come from the library, for the whole process."""
    calendar = BusinessCalendar.from_accounting(make_estate().accounting)
    with pytest.raises(ValueError, match="holidays of 2042 outside it"):
        calendar.learn({"2041": ["2041-03-04"], "2042": ["2041-12-25"]})
    assert date(2041, 3, 4) not in calendar.holidays_of(2041)
    assert date(2041, 12, 25) in calendar.holidays_of(2041)
