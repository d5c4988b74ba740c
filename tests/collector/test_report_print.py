"""The board paper prints (issue 10): the HTML report through headless Chromium to an A4 PDF,
read back with ``pdftotext -layout``: page count, whole start dates, a legend that does not
run over its swatches, the as-of time and the policy on the page."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from availmon.config import Estate
from collector.accounting import parse_period
from collector.outage_csv import parse_csv
from collector.report import build_report, render
from collector.store import Store
from tests.collector.helpers import LONDON

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample-outages-FY2019Q2.csv"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOOLS = ("chromium", "pdftotext", "pdfinfo")

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs Debian's chromium and poppler-utils (make test installs them)",
)


def print_to_pdf(html: Path, pdf: Path, profile: Path) -> None:
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",  # the test may run as root
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def pages(pdf: Path) -> int:
    info = subprocess.run(
        ["pdfinfo", str(pdf)], check=True, capture_output=True, text=True, timeout=30
    )
    m = re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE)
    assert m, info.stdout
    return int(m.group(1))


def layout(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def test_the_board_paper_prints_on_a4(tmp_path: Path, store: Store, estate: Estate) -> None:
    store.import_outages(parse_csv(SAMPLE.read_text(encoding="utf-8"), estate).rows)
    data = build_report(store, estate, parse_period("FY2019Q2", LONDON), NOW)
    html = tmp_path / "report.html"
    html.write_text(render("html", data), encoding="utf-8")
    pdf = tmp_path / "report.pdf"
    print_to_pdf(html, pdf, tmp_path / "profile")
    assert 1 <= pages(pdf) <= 4  # the sample quarter: figures, charts, 9 outages, notes
    text = layout(pdf)
    lines = text.splitlines()
    # Every listed outage's start date and time sits whole on one line (it used to wrap
    # to five lines in a narrow column).
    starts = [o["start"] for o in data["outages"] if o["minutes"] >= 15]
    assert len(starts) == 9
    for start in starts:
        shown = datetime.fromisoformat(start).strftime("%a %d %b %Y %H:%M")
        assert any(shown in line for line in lines), shown
    # The legend reads as two labels, each whole, on one line: nothing drawn over them.
    legend = [ln for ln in lines if "Unplanned and degraded" in ln]
    assert legend
    assert "Planned maintenance" in legend[0]
    assert any("Combined availability" in ln and "Target 95.00%" in ln for ln in lines)
    # The page says what it is as of, and by which rules.
    assert "data as of Thu 01 Jan 2026 00:00" in " ".join(text.split())
    assert "Accounting policy" in text
    assert "Without third-party causes".upper() in text.upper()
