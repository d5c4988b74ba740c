"""The real parsers against generated hostile input (issue 15): each one answers with its
own verdict or its own error, never a crash, and what it lets through is sound."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from availmon.config import parse_config
from availmon.errors import ConfigError
from availmon.limits import FIRST_YEAR, LAST_YEAR, MAX_PERIOD_YEARS
from availmon.schema import topic
from collector.accounting import PeriodError, account, parse_period
from collector.ingest import Accepted, Rejected, validate
from collector.metrics import REJECT_REASONS
from collector.outage_csv import parse_csv
from collector.report import build_report, render
from collector.store import Store
from tests.collector.helpers import make_estate, outage, store_row
from tests.conftest import CANARY
from tests.hostile import strategies as hs
from tests.peers import estate, web_check

#: Moderate: the whole module runs in seconds, and CI reruns find what one run missed.
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONDON = ZoneInfo("Europe/London")
EST = estate(Path("/nonexistent"), 1883, [web_check("http://127.0.0.1:9/")])


def _finite_non_negative(value: float | None) -> bool:
    return value is None or (math.isfinite(value) and value >= 0)


@FAST
@given(message=hs.payloads)
def test_mqtt_payloads_get_a_verdict(message: tuple[str, bytes]) -> None:
    kind, payload = message
    verdict = validate(topic(hs.SITE, hs.SITE, kind), payload, estate=EST, now=hs.NOW)  # type: ignore[arg-type]
    if isinstance(verdict, Rejected):
        assert verdict.reason in REJECT_REASONS
        assert len(verdict.detail) <= 400
        assert verdict.detail.isprintable()
        return
    assert isinstance(verdict, Accepted)
    limit = hs.NOW + timedelta(seconds=EST.collector.max_future_skew)
    if verdict.event is not None:
        ev = verdict.event
        assert (ev.site, ev.check, ev.area) == (hs.SITE, hs.CHECK, hs.AREA)
        assert ev.at <= limit
        assert ev.detected_at <= limit
        assert _finite_non_negative(ev.evidence.latency)
        assert _finite_non_negative(ev.evidence.loss)
    if verdict.heartbeat is not None:
        assert verdict.heartbeat.at <= limit
        for c in verdict.heartbeat.checks:
            assert (c.check, c.area) == (hs.CHECK, hs.AREA)
            assert _finite_non_negative(c.latency)


@FAST
@given(text=hs.periods)
def test_report_periods_are_bounded_or_refused(text: str) -> None:
    try:
        period = parse_period(text, LONDON)
    except PeriodError:
        return  # its own error: a 400 from the API, one line and exit 2 from the CLI
    assert period.start.year >= FIRST_YEAR
    assert period.end.year <= LAST_YEAR + 1
    assert period.end - period.start <= timedelta(days=366 * MAX_PERIOD_YEARS)
    # Whatever is accepted can be accounted for quickly (business hours walk every day).
    account(period, [], make_estate(), period.end)


@FAST
@given(rows=st.lists(hs.csv_rows(), max_size=5), header=st.booleans())
def test_csv_rows_are_parsed_or_reported(rows: list[list[str]], header: bool) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(hs.CSV_COLUMNS)
    w.writerows(rows)
    parsed = parse_csv(buf.getvalue(), CSV_ESTATE)
    for err in parsed.errors:
        assert err.line >= 1
        assert str(err)
    if parsed.errors:
        return
    for row in parsed.rows:
        assert row["site"] in CSV_ESTATE.sites
        assert row["area"] in CSV_ESTATE.areas
        assert row["start"] < row["end"]


CSV_ESTATE = make_estate()


@FAST
@given(data=hs.config_data())
def test_config_values_are_valid_or_explained_without_secrets(data: dict[str, Any]) -> None:
    issues: list[str] = []
    try:
        parse_config(data, "estate.toml")
    except ConfigError as exc:
        issues = [str(issue) for issue in exc.issues] or ["(a ConfigError with no issue)"]
    for issue in issues:
        assert CANARY.lower() not in issue.lower(), issue
        assert issue.startswith("estate.toml: ")


# Fewer: each example renders the HTML report with its charts.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cause=hs.texts, note=hs.texts, name=hs.texts)
def test_reports_render_hostile_text_inert(cause: str, note: str, name: str) -> None:
    estate_ = make_estate(areas={"email": {"name": name or "Email"}})
    store = Store(":memory:")
    try:
        store.import_outages(
            [
                store_row(
                    outage(
                        "email",
                        "2019-07-09T10:00",
                        "2019-07-09T12:00",
                        cause=cause or None,
                        note=note or None,
                    )
                )
            ]
        )
        data = build_report(store, estate_, parse_period("FY2019Q2", LONDON), hs.NOW)
    finally:
        store.close()
    html = render("html", data)
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    md = render("md", data)
    assert "<script" not in md.lower()
    text = render("csv", data)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    for row in rows:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    # No text can add a row: as many rows as the same report with plain text.
    plain = json.loads(json.dumps(data))
    for o in plain["outages"]:
        o.update(cause="c", note="n", area_name="a")
    for a in plain["areas"]:
        a["name"] = "a"
    assert len(rows) == len(list(csv.reader(io.StringIO(render("csv", plain), newline=""))))
