"""``availmon report``: the figures read back from json, csv, md and html (issue 3)."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from availmon.cli import main
from availmon.config import Estate
from collector.accounting import PeriodError, parse_period
from collector.outage_csv import parse_csv
from collector.report import (
    build_report,
    kpi_snapshot,
    render,
    report_json,
    show_minutes,
)
from collector.store import Store
from tests.collector.helpers import LONDON, make_estate, outage, store_row

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample-outages-FY2019Q2.csv"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

#: FY2019Q2 from the sample file, worked by hand: 92 days, no clock change, 132480 minutes.
#: Network: 45 (Openreach, the part after 1 July) + 12 + 2170 (bank holiday weekend) + 40 +
#: 50 (planned, the part before 1 October); email: 72 and 70 overlapping = 85, + 55;
#: internet: 50 degraded + 8; servers: 240 planned + 25.
SAMPLE_AREAS = {
    # id: (downtime, planned, business-hours downtime, availability %)
    "network_telephony": (2317, 50, 92, 98.25),
    "email": (140, 0, 105, 99.89),
    "internet_web": (58, 0, 58, 99.95),
    "servers": (265, 240, 0, 99.79),
}
SAMPLE_PARTNERS = {"CCC": 123, "HDC": 52, "SCDC": 2170, "SHARED": 492}
SAMPLE_COMBINED = (2780, 97.90)  # 1 - 2780/132480 = 0.979015...
SAMPLE_LISTED = 9  # of 11 incidents, two are under 15 minutes


def sample_report(store: Store, estate: Estate, period: str = "FY2019Q2") -> dict[str, Any]:
    parsed = parse_csv(SAMPLE.read_text(encoding="utf-8"), estate)
    store.import_outages(parsed.rows)
    return build_report(store, estate, parse_period(period, LONDON), NOW)


def worked_example(store: Store, estate: Estate) -> dict[str, Any]:
    """273 minutes across the areas in a 91-day quarter: 1 - 273/131040 = 99.79%."""
    rows = [
        outage("network_telephony", "2019-04-10T09:00", "2019-04-10T10:40", site="dc"),
        outage("email", "2019-05-01T12:00", "2019-05-01T13:13", site="ccc-guildhall"),
        outage("internet_web", "2019-06-03T08:00", "2019-06-03T09:00", site="hdc-pathfinder"),
        outage("servers", "2019-06-29T23:20", "2019-06-30T00:00", site="dc"),
    ]
    store.import_outages([store_row(o) for o in rows])
    return build_report(store, estate, parse_period("FY2019Q1", LONDON), NOW)


# -- reading the formats back ------------------------------------------------------------------


class Tables(HTMLParser):
    """Cell texts of every ``<table id=...>`` and the text of every element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.ids: dict[str, str] = {}
        self.tags: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_ids: list[tuple[str, int]] = []
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if tag in {"meta", "br", "link", "img", "input"}:
            return
        self._depth += 1
        if a.get("id"):
            self._open_ids.append((str(a["id"]), self._depth))
            self.ids[str(a["id"])] = ""
        if tag == "table":
            self._table = str(a.get("id"))
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in {"td", "th"} and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in {"meta", "br", "link", "img", "input"}:
            return
        if tag in {"td", "th"} and self._table and self._cell is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        self._open_ids = [(i, d) for i, d in self._open_ids if d < self._depth]
        self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for i, _ in self._open_ids:
            self.ids[i] += data


def parse_html(text: str) -> Tables:
    t = Tables()
    t.feed(text)
    return t


def csv_blocks(text: str) -> list[list[list[str]]]:
    blocks: list[list[list[str]]] = [[]]
    for row in csv.reader(io.StringIO(text)):
        if row:
            blocks[-1].append(row)
        else:
            blocks.append([])
    return blocks


# -- json ---------------------------------------------------------------------------------------


def test_worked_example_in_json(store: Store, estate: Estate) -> None:
    data = json.loads(render("json", worked_example(store, estate)))
    assert data["period"]["id"] == "FY2019Q1"
    assert data["period"]["start"] == "2019-04-01T00:00:00+01:00"
    assert data["period"]["end"] == "2019-07-01T00:00:00+01:00"
    assert data["period_minutes"] == 131_040
    assert [a["downtime_minutes"] for a in data["areas"]] == [100, 73, 60, 40]
    c = data["combined"]
    assert c["downtime_minutes"] == 273
    assert c["availability_percent"] == 99.79
    assert c["availability_ratio"] == pytest.approx(1 - 273 / 131_040)
    assert c["target_percent"] == 95.0
    assert c["met"] is True


def test_sample_quarter_in_json(store: Store, estate: Estate) -> None:
    data = json.loads(render("json", sample_report(store, estate)))
    assert data["period_minutes"] == 132_480
    # 66 weekdays less the late summer bank holiday, 8.5 hours each.
    assert data["business_hours_minutes"] == 65 * 510
    got = {
        a["id"]: (
            a["downtime_minutes"],
            a["planned_minutes"],
            a["business_hours_downtime_minutes"],
            a["availability_percent"],
        )
        for a in data["areas"]
    }
    assert got == SAMPLE_AREAS
    assert [a["name"] for a in data["areas"]] == [
        "Network/Telephony",
        "Email",
        "Internet/web site services",
        "Centralised server infrastructure",
    ]
    c = data["combined"]
    assert (c["downtime_minutes"], c["availability_percent"], c["met"]) == (
        *SAMPLE_COMBINED,
        True,
    )
    assert {p["id"]: p["downtime_minutes"] for p in data["by_partner"]} == SAMPLE_PARTNERS
    assert data["by_partner"][0]["areas"] == {
        "network_telephony": 45,
        "email": 70,
        "internet_web": 8,
        "servers": 0,
    }
    outages = data["outages"]
    assert len(outages) == 11
    bank_holiday = next(o for o in outages if o["sites"] == ["scdc-cambourne"])
    assert bank_holiday["minutes"] == 2170
    assert bank_holiday["business_hours_minutes"] == 40
    assert bank_holiday["provider"] == "UK Power Networks"
    email = next(o for o in outages if o["area"] == "email" and len(o["sites"]) == 2)
    assert (email["minutes"], email["sites"]) == (85, ["ccc-guildhall", "dc"])
    first = outages[0]
    assert first["start"] == "2019-06-30T23:30:00+01:00"  # the whole outage is described
    assert first["minutes"] == 45  # but only its part in the quarter is counted
    assert (first["kind"], first["provider"]) == ("unplanned", "BT Openreach")
    assert {o["kind"] for o in outages} == {"unplanned", "planned", "degraded"}
    history = [(h["id"], h["availability_percent"]) for h in data["history"]]
    # Before the first record there is no figure; FY2019Q1 holds 30 minutes of the outage
    # that spans 1 July.
    assert history == [
        ("FY2018Q3", None),
        ("FY2018Q4", None),
        ("FY2019Q1", 99.97),
        ("FY2019Q2", 97.90),
    ]


def test_next_quarter_gets_the_rest_of_the_spanning_outage(store: Store, estate: Estate) -> None:
    data = sample_report(store, estate, "FY2019Q3")
    assert data["period_minutes"] == 92 * 1440 + 60  # clocks went back on 27 October
    assert data["combined"]["downtime_minutes"] == 20
    assert data["areas"][0]["planned_minutes"] == 20


def test_planned_excluded_by_setting(store: Store) -> None:
    data = sample_report(store, make_estate(count_planned=False))
    assert data["areas"][3]["downtime_minutes"] == 25
    assert data["areas"][3]["planned_minutes"] == 240
    assert data["combined"]["downtime_minutes"] == 2780 - 240 - 50


def test_report_json_for_the_api(store: Store, estate: Estate) -> None:
    sample_report(store, estate)
    data = report_json(store, estate, "2019Q3", NOW)
    assert data["period"]["id"] == "2019Q3"
    assert data["combined"]["availability_percent"] == 97.90
    assert [h["id"] for h in data["history"]] == ["2018Q4", "2019Q1", "2019Q2", "2019Q3"]
    with pytest.raises(PeriodError):
        report_json(store, estate, "last quarter", NOW)


def test_one_minute_down_is_not_rounded_up_to_100(store: Store, estate: Estate) -> None:
    store.import_outages([store_row(outage("email", "2019-07-01T10:00", "2019-07-01T10:01"))])
    data = build_report(store, estate, parse_period("FY2019Q2", LONDON), NOW)
    assert data["combined"]["availability_percent"] == 99.99
    assert data["areas"][1]["availability_percent"] == 99.99
    assert data["areas"][0]["availability_percent"] == 100.0


# -- csv, md, html ------------------------------------------------------------------------------


def test_worked_example_in_csv_md_and_html(store: Store, estate: Estate) -> None:
    data = worked_example(store, estate)
    blocks = csv_blocks(render("csv", data))
    assert blocks[0][1][0] == "FY2019Q1"
    assert blocks[0][1][3] == "131040"
    combined = next(r for r in blocks[1] if r[0] == "combined")
    assert (combined[2], combined[6]) == ("273", "99.79")
    assert blocks[2] == [["Target %", "Met"], ["95.00", "yes"]]
    assert "**Combined service availability: 99.79%** against a target of 95.00%: **met**" in (
        render("md", data)
    )
    page = parse_html(render("html", data))
    assert page.ids["combined-availability"].strip() == "99.79%"
    assert page.ids["target"].strip() == "95.00%"
    assert page.ids["target-met"].strip() == "Met"
    assert page.ids["combined-downtime"].strip() == "273 min"


def test_sample_quarter_in_csv(store: Store, estate: Estate) -> None:
    blocks = csv_blocks(render("csv", sample_report(store, estate)))
    period, areas, target, partners, outages = blocks[:5]
    assert period[1][:4] == [
        "FY2019Q2",
        "2019-07-01T00:00:00+01:00",
        "2019-10-01T00:00:00+01:00",
        "132480",
    ]
    assert areas[0][6] == "Availability %"
    got = {r[0]: (int(r[2]), int(r[3]), int(r[4]), float(r[6])) for r in areas[1:-1]}
    assert got == SAMPLE_AREAS
    assert areas[-1][0] == "combined"
    assert (int(areas[-1][2]), areas[-1][6]) == (2780, "97.90")
    assert target[1] == ["95.00", "yes"]
    assert {r[0]: int(r[-2]) for r in partners[1:]} == SAMPLE_PARTNERS
    assert len(outages) == 1 + 11
    by_provider = {r[10]: int(r[2]) for r in outages[1:] if r[10]}
    assert by_provider == {
        "BT Openreach": 45,
        "UK Power Networks": 2170,
        "Gamma": 40,
        "Mimecast": 55,
    }


def test_sample_quarter_in_markdown(store: Store, estate: Estate) -> None:
    md = render("md", sample_report(store, estate))
    assert "**Combined service availability: 97.90%** against a target of 95.00%: **met**" in md
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith("| ")
    ]
    areas = {r[0]: r for r in rows if r[0] in {"Network/Telephony", "Email"}}
    assert areas["Network/Telephony"][1] == "2317"
    assert areas["Network/Telephony"][5] == "98.25%"
    assert areas["Email"][3] == "105"
    assert "| **Combined** | **2780** |" in md
    listed = [r for r in rows if re.match(r"\w{3} \d\d \w{3} 2019", r[0])]
    assert len(listed) == SAMPLE_LISTED


def test_sample_quarter_in_html(store: Store, estate: Estate) -> None:
    page = parse_html(render("html", sample_report(store, estate)))
    assert page.ids["combined-availability"].strip() == "97.90%"
    assert page.ids["target-met"].strip() == "Met"
    areas = page.tables["areas"]
    assert areas[0][0] == "Area"
    got = {r[0]: (int(r[1]), int(r[2]), int(r[3]), float(r[5].rstrip("%"))) for r in areas[1:-1]}
    assert got == {
        name: SAMPLE_AREAS[aid]
        for aid, name in [
            ("network_telephony", "Network/Telephony"),
            ("email", "Email"),
            ("internet_web", "Internet/web site services"),
            ("servers", "Centralised server infrastructure"),
        ]
    }
    assert areas[-1][0] == "Combined service"
    assert (areas[-1][1], areas[-1][5]) == ("2780", "97.90%")
    partners = {r[0]: int(r[-2]) for r in page.tables["partners"][1:]}
    assert partners == {
        "Cambridge City Council": 123,
        "Huntingdonshire District Council": 52,
        "South Cambridgeshire District Council": 2170,
        "Shared service (data centre)": 492,
    }
    outages = page.tables["outages"]
    assert outages[0] == [
        "Start",
        "Duration (min)",
        "Area",
        "Sites",
        "Cause",
        "Provider",
        "Planned",
        "Business-hours (min)",
    ]
    assert len(outages) - 1 == SAMPLE_LISTED
    assert all(int(r[1]) >= 15 for r in outages[1:])
    power = next(r for r in outages[1:] if r[5] == "UK Power Networks")
    assert (power[0], power[1], power[3], power[6], power[7]) == (
        "Sun 25 Aug 2019 21:00",
        "2170",
        "scdc-cambourne",
        "Unplanned",
        "40",
    )
    planned = [r for r in outages[1:] if r[6] == "Planned"]
    assert [(r[2], r[1]) for r in planned] == [
        ("Centralised server infrastructure", "240"),
        ("Network/Telephony", "50"),
    ]


def test_html_is_self_contained_with_two_charts(store: Store, estate: Estate) -> None:
    text = render("html", sample_report(store, estate))
    page = parse_html(text)
    assert page.tags.count("svg") == 2
    assert "script" not in page.tags
    assert "link" not in page.tags
    assert not re.search(r'(src|href)="https?:', text)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", text)
    # The same data gives the same bytes on any day: pygal's dated banner is left out.
    assert not re.search(r"\b20\d\d-\d\d-\d\d-->", text)
    assert "<style>" in text
    history = page.ids["chart-history"]
    for label in ("FY2018Q3 (no data)", "FY2019Q1", "FY2019Q2", "Target 95.00%", "97.90"):
        assert label in history
    downtime = page.ids["chart-downtime"]
    assert "Centralised server infrastructure" in downtime  # not truncated
    assert "Planned maintenance" in downtime


def test_threshold_is_configurable(store: Store) -> None:
    data = sample_report(store, make_estate(report_min_outage_minutes=60))
    page = parse_html(render("html", data))
    assert [r[1] for r in page.tables["outages"][1:]] == ["85", "240", "2170"]


def test_missed_target_says_so(store: Store) -> None:
    data = sample_report(store, make_estate(target_percent=99.5))
    assert data["combined"]["met"] is False
    page = parse_html(render("html", data))
    assert page.ids["target-met"].strip() == "Not met"
    assert page.ids["target"].strip() == "99.50%"


@pytest.mark.parametrize(
    ("value", "shown"), [(12, "12"), (12.0, "12"), (12.01, "12.1"), (12.1, "12.1"), (0, "0")]
)
def test_minutes_are_shown_rounded_up(value: float, shown: str) -> None:
    assert show_minutes(value) == shown


# -- the live figures -------------------------------------------------------------------------


def test_kpi_snapshot_is_quarter_to_date(store: Store, estate: Estate) -> None:
    store.import_outages(
        [
            store_row(outage("email", "2019-07-01T10:00", "2019-07-01T10:30")),
            store_row(outage("email", "2019-06-30T10:00", "2019-06-30T12:00")),  # last quarter
            store_row(outage("servers", "2019-07-01T23:00", None)),  # still open
        ]
    )
    now = datetime(2019, 7, 2, 11, 0, tzinfo=UTC)  # 12:00 in London, 36 hours in
    kpi = kpi_snapshot(store, estate, now)
    elapsed = 36 * 3600
    assert kpi["email"] == (1800.0, pytest.approx(1 - 1800 / elapsed))
    assert kpi["servers"] == (13 * 3600.0, pytest.approx(1 - 13 * 3600 / elapsed))
    assert kpi["network_telephony"] == (0.0, 1.0)
    assert kpi["combined"] == (1800.0 + 13 * 3600, pytest.approx(1 - (1800 + 13 * 3600) / elapsed))


# -- as a new user runs it ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv", "md", "html"])
def test_cli_import_then_report(
    fmt: str, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outages", "import", str(SAMPLE), "--config", str(config_file)]) == 0
    out = tmp_path / f"report.{fmt}"
    argv = ["report", "--period", "FY2019Q2", "--format", fmt, "--out", str(out)]
    assert main([*argv, "--config", str(config_file)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {out}: FY2019Q2, 2780 minutes of downtime in 132480" in said
    assert "combined availability 97.90% against 95.00% target: met" in said
    text = out.read_text(encoding="utf-8")
    if fmt == "json":
        assert json.loads(text)["combined"]["availability_percent"] == 97.90
    elif fmt == "html":
        assert parse_html(text).ids["combined-availability"].strip() == "97.90%"
    else:
        assert "97.90" in text


def test_cli_report_from_to_and_stdout(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outages", "import", str(SAMPLE), "--config", str(config_file)]) == 0
    capsys.readouterr()
    argv = ["report", "--from", "2019-07-01", "--to", "2019-09-30", "--format", "json"]
    assert main([*argv, "--config", str(config_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["period"]["id"] == "2019-07-01..2019-09-30"
    assert data["combined"]["downtime_minutes"] == 2780


def test_cli_report_without_a_database_explains(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bad path is a runtime failure (exit 3), in one line.
    assert main(["report", "--period", "FY2019Q2", "--config", str(config_file)]) == 3
    err = capsys.readouterr().err
    assert "no database at" in err
    assert len(err.splitlines()) == 1


def test_a_quarter_not_yet_begun_has_no_figures(store: Store, estate: Estate) -> None:
    data = build_report(store, estate, parse_period("FY2030Q1", LONDON), NOW)
    assert data["period_minutes"] == 0
    assert data["combined"]["availability_percent"] is None
    assert data["combined"]["met"] is None
    page = parse_html(render("html", data))
    assert page.ids["combined-availability"].strip() == "—"
    assert page.ids["target-met"].strip() == "No figure"
    assert "**Combined service availability: —** against a target of 95.00%: **no figure yet**" in (
        render("md", data)
    )
