"""What the report says about its figures, in every format: planned time as each area's
policy counts it, the target as configured, a check's days as the period's, the shorter
lines that are (and are not) in the totals, and a CLI summary that can be worked again."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from availmon.cli import main
from availmon.config import Estate, parse_config
from collector.accounting import parse_period
from collector.report import build_report, render
from collector.store import Store
from tests.collector.helpers import (
    LONDON,
    estate_data,
    make_estate,
    outage,
    store_row,
    write_config,
)
from tests.collector.test_report import NOW, SAMPLE, csv_blocks, parse_html, worked_example

ROOT = Path(__file__).resolve().parents[2]
SERVERS = "Centralised server infrastructure"


def report(store: Store, estate: Estate, period: str = "FY2019Q2") -> dict[str, Any]:
    return build_report(store, estate, parse_period(period, LONDON), NOW)


def md_row(text: str, first_cell: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def bars(html: str) -> list[dict[str, str]]:
    """The downtime chart's series, each as area name -> the value drawn."""
    svg = html[html.index('id="chart-downtime"') :]
    svg = svg[: svg.index("</svg>")]
    bar = re.compile(r'<desc class="value">([^<]*)</desc>.*?<desc class="x_label">([^<]*)<', re.S)
    return [
        {label: value for value, label in bar.findall(series)}
        for series in svg.split('<g class="series serie-')[1:]
        if '<g class="bars">' in series  # not pygal's empty overlays of each series
    ]


def legend(html: str) -> list[str]:
    chart = html[html.index('id="chart-downtime"') :]
    items = chart[chart.index('<ul class="legend">') : chart.index("</ul>")]
    return re.findall(r"</span>([^<]*)</li>", items)


# -- planned time, per area's policy ------------------------------------------------------------

EVERY_AREA = "Network/Telephony, Email, Internet/web site services, " + SERVERS


@pytest.mark.parametrize(
    ("estate", "servers_cell", "email_cell", "note", "labels"),
    [
        pytest.param(
            make_estate(policy={"planned": "up"}),
            "0 (120 not counted)",
            "0 (60 not counted)",
            "Planned maintenance is not counted as downtime.",
            ["Unplanned and degraded", "Planned maintenance (not counted)"],
            id="estate-policy-up",
        ),
        pytest.param(
            make_estate(count_planned=False),
            "0 (120 not counted)",
            "0 (60 not counted)",
            "Planned maintenance is not counted as downtime.",
            ["Unplanned and degraded", "Planned maintenance (not counted)"],
            id="count_planned-false",
        ),
        pytest.param(
            make_estate(areas={"servers": {"policy": {"planned": "excluded"}}}),
            "0 (120 excluded)",
            "60",
            "Planned maintenance is counted as downtime in Network/Telephony, Email,"
            " Internet/web site services; not counted as downtime (taken out of the period)"
            f" in {SERVERS}.",
            [
                "Unplanned and degraded",
                "Planned maintenance",
                "Planned maintenance (not counted)",
            ],
            id="one-area-excluded",
        ),
        pytest.param(
            make_estate(),
            "120",
            "60",
            "Planned maintenance is counted as downtime.",
            ["Unplanned and degraded", "Planned maintenance"],
            id="defaults",
        ),
    ],
)
def test_planned_time_is_described_and_charted_as_each_area_counts_it(
    store: Store,
    estate: Estate,
    servers_cell: str,
    email_cell: str,
    note: str,
    labels: list[str],
) -> None:
    store.import_outages(
        [
            store_row(outage("servers", "2019-08-04T02:00", "2019-08-04T04:00", planned=True)),
            store_row(outage("servers", "2019-08-05T10:00", "2019-08-05T10:30")),
            store_row(outage("email", "2019-08-04T02:00", "2019-08-04T03:00", planned=True)),
        ]
    )
    data = report(store, estate)
    counted = email_cell == "60"  # email counts planned time in this case
    servers_counted = servers_cell == "120"
    assert {a["id"]: a["downtime_minutes"] for a in data["areas"]}["servers"] == (
        150 if servers_counted else 30
    )

    md = render("md", data)
    assert md_row(md, SERVERS)[1:3] == ["150" if servers_counted else "30", servers_cell]
    assert md_row(md, "Email")[1:3] == ["60" if counted else "0", email_cell]
    assert note in md

    html = render("html", data)
    rows = {r[0]: r for r in parse_html(html).tables["areas"][1:]}
    assert rows[SERVERS][2] == servers_cell
    assert rows["Email"][2] == email_cell
    assert note in " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert legend(html) == labels
    drawn = dict(zip(labels, bars(html), strict=True))
    # The bar of counted downtime that is not planned is the area's whole unplanned time.
    assert drawn["Unplanned and degraded"][SERVERS] == "30"
    if servers_counted:
        assert drawn["Planned maintenance"][SERVERS] == "120"
    else:
        assert drawn["Planned maintenance (not counted)"][SERVERS] == "120"
    if "Planned maintenance" in drawn:
        assert drawn["Planned maintenance"]["Email"] == ("60" if counted else "0")


def test_planned_time_of_an_area_the_config_no_longer_has_takes_the_estate_policy(
    store: Store,
) -> None:
    store.import_outages(
        [store_row(outage("legacy", "2019-08-04T02:00", "2019-08-04T04:00", planned=True))]
    )
    data = report(store, make_estate(policy={"planned": "up"}))
    assert data["policy"]["legacy"]["planned"] == "up"
    assert md_row(render("md", data), "legacy")[1:3] == ["0", "0 (120 not counted)"]


# -- the target ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "shown"),
    [(95.0, "95.00"), (99.5, "99.50"), (99.995, "99.995"), (99.9999, "99.9999"), (100, "100.00")],
)
def test_the_target_is_printed_as_configured(store: Store, target: float, shown: str) -> None:
    data = worked_example(store, make_estate(target_percent=target))
    assert f"against a target of {shown}%:" in render("md", data)
    page = parse_html(render("html", data))
    assert page.ids["target"].strip() == f"{shown}%"
    assert f"Target {shown}%" in page.ids["chart-history"]
    assert csv_blocks(render("csv", data))[2][1][0] == shown


def test_the_cli_prints_the_target_as_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "estate.toml", tmp_path / "cli.db", "\n[accounting]\ntarget_percent = 99.995\n"
    )
    assert main(["outages", "import", str(SAMPLE), "--config", str(config)]) == 0
    out = tmp_path / "report.md"
    argv = ["report", "--period", "FY2019Q2", "--format", "md", "--out", str(out)]
    assert main([*argv, "--config", str(config)]) == 0
    assert "combined availability 97.90% against 99.995% target: not met" in (
        capsys.readouterr().out
    )


# -- a check's days -----------------------------------------------------------------------------


def _estate_with_checks() -> Estate:
    data = estate_data()

    def check(name: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "type": "tcp", "target": "127.0.0.1:9", "area": "servers", **kw}

    data["sites"]["dc"]["checks"] = [
        check("files", added="2019-08-15"),
        check("old", retired="2019-08-20"),
        check("brief", added="2019-08-01", retired="2019-08-02"),
    ]
    return parse_config(data, "test")


def test_a_checks_days_are_printed_as_the_periods_are(store: Store) -> None:
    """The end of a check's time is exclusive, as the period's is: a check retired on
    20 August existed until 19 August, and one that lasts to the end of the period ends
    on its last day, 30 September, as the period is printed."""
    data = report(store, _estate_with_checks())
    assert [(p["check"], p["to"]) for p in data["partial_checks"]] == [
        ("dc/brief", "2019-08-02T00:00:00+01:00"),  # the JSON keeps the exclusive end
        ("dc/files", "2019-10-01T00:00:00+01:00"),
        ("dc/old", "2019-08-20T00:00:00+01:00"),
    ]
    said = (
        "dc/brief (1 August 2019 to 1 August 2019), dc/files (15 August 2019 to 30 September"
        " 2019), dc/old (1 July 2019 to 19 August 2019)."
    )
    md = render("md", data)
    assert "1 July 2019 to 30 September 2019" in md
    assert f"counted only then: {said}" in md
    page = parse_html(render("html", data))
    assert said in " ".join(page.ids["partial"].split())


# -- shorter lines ------------------------------------------------------------------------------


def test_shorter_lines_not_counted_are_not_said_to_be_in_the_totals(store: Store) -> None:
    estate = make_estate(areas={"email": {"degraded_counts_as_down": False}})
    store.import_outages(
        [
            store_row(outage("email", "2019-08-01T10:00", "2019-08-01T10:05", state="degraded")),
            store_row(outage("network_telephony", "2019-08-02T10:00", "2019-08-02T10:05")),
            store_row(outage("servers", "2019-08-03T10:00", "2019-08-03T11:00")),
        ]
    )
    data = report(store, estate)
    assert [(o["kind"], o["counted"]) for o in data["outages"]] == [
        ("degraded", False),
        ("unplanned", True),
        ("unplanned", True),
    ]
    html = render("html", data)
    text = " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert (
        "3 outage(s) in all; 1 shorter one(s) are included in the totals above but not listed."
        " 1 shorter one(s) that the accounting policy below does not count are not listed"
        " either." in text
    )


def test_shorter_lines_all_counted_say_nothing_more(store: Store, estate: Estate) -> None:
    store.import_outages(
        [store_row(outage("network_telephony", "2019-08-02T10:00", "2019-08-02T10:05"))]
    )
    html = render("html", report(store, estate))
    assert (
        "<p>1 outage(s) in all; 1 shorter one(s) are included in the totals above but not"
        " listed.</p>" in html
    )


# -- the combined formula -----------------------------------------------------------------------

SUMMARY = re.compile(
    r"minutes of downtime, each area's over its measured minutes \(the period's (\d+) less"
    r" the time its policy excludes\): (.*); combined availability ([\d.]+)%"
)


def test_the_cli_summary_can_be_worked_again_when_time_is_excluded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thirty days of Servers' planned time excluded: its 600 minutes down are over the
    rest of the quarter, and the combined figure is not 1 - 600/132480 (99.54%)."""
    config = write_config(
        tmp_path / "estate.toml",
        tmp_path / "cli.db",
        '\n[areas.servers]\nname = "Servers"\n[areas.servers.policy]\nplanned = "excluded"\n',
    )
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "site,area,check,start,end,kind,cause,provider,note\n"
        "dc,servers,files,2019-08-01T00:00,2019-08-31T00:00,planned,,,\n"
        "dc,servers,files,2019-09-02T10:00,2019-09-02T20:00,unplanned,,,\n",
        encoding="utf-8",
    )
    assert main(["outages", "import", str(rows), "--config", str(config)]) == 0
    capsys.readouterr()
    out = tmp_path / "report.csv"
    argv = ["report", "--period", "FY2019Q2", "--format", "csv", "--out", str(out)]
    assert main([*argv, "--config", str(config)]) == 0
    said = capsys.readouterr().out
    m = SUMMARY.search(said)
    assert m, said
    assert m.group(1) == "132480"
    each = {
        aid: (float(d), float(p))
        for aid, d, p in re.findall(r"(\w+) ([\d.]+)/([\d.]+)", m.group(2))
    }
    assert each["servers"] == (600, 132480 - 30 * 1440)
    worked = 1 - sum(d / p for d, p in each.values())
    assert m.group(3) == f"{math.floor(worked * 10000) / 100:.2f}" == "99.32"


def test_the_cli_summary_with_nothing_excluded_is_over_the_period(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outages", "import", str(SAMPLE), "--config", str(config_file)]) == 0
    out = tmp_path / "report.md"
    argv = ["report", "--period", "FY2019Q2", "--format", "md", "--out", str(out)]
    assert main([*argv, "--config", str(config_file)]) == 0
    assert f"wrote {out}: FY2019Q2, 2780 minutes of downtime in 132480;" in capsys.readouterr().out


def test_the_readme_states_the_combined_formula_the_code_uses() -> None:
    """The README and docs/accounting.md give the formula of ``accounting._combined``."""
    formula = "1 − Σ (area downtime / area measured minutes)"
    for doc in ("README.md", "docs/accounting.md"):
        text = " ".join((ROOT / doc).read_text(encoding="utf-8").split())
        assert formula in text, doc
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "combined availability is 1 − (sum of area downtime) / (period minutes)" not in readme
