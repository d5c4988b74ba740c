"""The same figures live: ``/api/v1/report`` and the quarter-to-date gauges on /metrics."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from availmon.clock import utcnow
from availmon.config import Estate, parse_config
from collector.accounting import quarter_containing
from collector.main import Collector
from collector.outage_csv import parse_csv
from collector.web import make_app
from tests.collector.helpers import LONDON, estate_data, outage, store_row

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample-outages-FY2019Q2.csv"


@pytest.fixture
def live_estate(tmp_path: Path) -> Estate:
    data = estate_data()
    data["collector"] = {"database": str(tmp_path / "live.db")}
    return parse_config(data, "test")


@pytest.fixture
def collector(live_estate: Estate) -> Iterator[Collector]:
    c = Collector(live_estate)
    try:
        yield c
    finally:
        c.close()


def gauges(collector: Collector) -> dict[tuple[str, str], float]:
    text = generate_latest(collector.metrics.registry).decode()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in {"availmon_area_downtime_seconds", "availmon_availability_ratio"}:
                out[(s.name, s.labels["area"])] = s.value
    return out


def test_metrics_carry_the_quarter_to_date_kpi(collector: Collector) -> None:
    now = utcnow()
    quarter = quarter_containing(now, LONDON)
    # A 30-minute email outage from the first minute of the quarter.
    end = quarter.start + timedelta(minutes=30)
    collector.store.import_outages(
        [store_row(outage("email", quarter.start.isoformat(), end.isoformat()))]
    )
    g = gauges(collector)
    elapsed = (utcnow() - quarter.start).total_seconds()
    down = min(1800.0, elapsed)  # clipped at now in the first half hour of a quarter
    assert g[("availmon_area_downtime_seconds", "email")] == pytest.approx(down, abs=1)
    assert g[("availmon_area_downtime_seconds", "combined")] == pytest.approx(down, abs=1)
    assert g[("availmon_area_downtime_seconds", "servers")] == 0.0
    assert g[("availmon_availability_ratio", "servers")] == 1.0
    assert g[("availmon_availability_ratio", "combined")] == pytest.approx(
        1 - down / elapsed, abs=1e-4
    )
    assert {a for _, a in g} == {
        "network_telephony",
        "email",
        "internet_web",
        "servers",
        "combined",
    }


async def test_api_report_serves_the_report_json(
    collector: Collector, live_estate: Estate, aiohttp_client: Any
) -> None:
    parsed = parse_csv(SAMPLE.read_text(encoding="utf-8"), live_estate)
    collector.store.import_outages(parsed.rows)
    client = await aiohttp_client(make_app(collector))
    resp = await client.get("/api/v1/report", params={"period": "FY2019Q2"})
    assert resp.status == 200
    data = await resp.json()
    assert data["period"]["id"] == "FY2019Q2"
    assert data["period_minutes"] == 132_480
    assert data["combined"]["downtime_minutes"] == 2780
    assert data["combined"]["availability_percent"] == 97.90
    assert data["combined"]["met"] is True
    assert [a["downtime_minutes"] for a in data["areas"]] == [2317, 140, 58, 265]

    resp = await client.get("/api/v1/report", params={"period": "last quarter"})
    assert resp.status == 400
    assert "unknown period 'last quarter'" in (await resp.json())["error"]

    resp = await client.get("/api/v1/report")
    assert resp.status == 200
    data = await resp.json()
    assert data["period"]["id"] == quarter_containing(utcnow(), LONDON).id
    assert data["period"]["complete"] is False


async def test_a_long_report_leaves_the_boards_reads_alone(
    collector: Collector, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quarter worked out from its records (after an import, or a change of the rules)
    takes seconds at a busy store's size: on the board's reader thread, every page that
    reads the store waited for it. The report runs on a thread and connection of its own."""
    from collector import web

    started, release = threading.Event(), threading.Event()
    real = web.report_json
    stores: list[Any] = []

    def held(store: Any, *args: Any) -> Any:
        stores.append(store)
        started.set()
        release.wait(60)  # released below, once the board has read meanwhile
        return real(store, *args)

    monkeypatch.setattr(web, "report_json", held)
    client = await aiohttp_client(make_app(collector))
    report = asyncio.ensure_future(client.get("/api/v1/report", params={"period": "FY2019Q2"}))
    try:
        assert await asyncio.to_thread(started.wait, 60)
        board = await asyncio.wait_for(client.get("/api/v1/maintenance"), 60)
        assert board.status == 200
        assert not report.done()  # the board read while the report was still being made
    finally:
        release.set()
    resp = await report
    assert resp.status == 200
    assert (await resp.json())["period"]["id"] == "FY2019Q2"
    assert stores == [collector.report_store]
