"""The Grafana dashboard (config/grafana): generated from code and up to date, provisioned
by file, and every panel's PromQL returns data from a real Prometheus scraping a live
collector; its live state table agrees with the board's API."""

from __future__ import annotations

import asyncio
import json
import runpy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from availmon.schema import CheckStatus, State
from collector.main import Collector
from tests.collector.board_helpers import Feed, board_estate
from tests.peers import free_port
from tests.test_prometheus import PROMETHEUS, first_result, needs

GRAFANA = Path(__file__).resolve().parent.parent / "config" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "availmon.json"


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL with the dashboard's variables set to "all sites")."""
    return [(p["title"], t["expr"].replace("$site", ".*")) for p in panels() for t in p["targets"]]


def test_committed_dashboard_is_what_the_generator_makes() -> None:
    module = runpy.run_path(str(GRAFANA / "generate.py"))
    assert module["render"]() == DASHBOARD.read_text(), "run config/grafana/generate.py"


def test_dashboard_shape_and_provisioning() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert data["uid"] == "availmon"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    titles = [p["title"] for p in panels()]
    for wanted in ("Combined availability", "Downtime by area", "Live state", "Latency", "loss"):
        assert any(wanted in t for t in titles), wanted
    for p in panels():
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/availmon.yaml").read_text())
    assert provider["apiVersion"] == 1
    assert provider["providers"][0]["type"] == "file"
    source = yaml.safe_load(
        (GRAFANA / "provisioning/datasources/availmon-prometheus.yaml").read_text()
    )
    assert source["datasources"][0]["type"] == "prometheus"


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    """A collector whose heartbeats carry every measure a panel shows (no broker: it
    retries MQTT in the background while its web server answers)."""
    c = Collector(board_estate(tmp_path, broker_port=free_port()))
    feed = Feed(c)
    now = datetime.now(UTC)
    await feed.heartbeat(
        "dc",
        now,
        CheckStatus(
            check="webmail",
            area="email",
            state=State.DOWN,
            latency=0.02,
            error="HTTP 503",
            cert_expires_in=86400 * 30,
            duration=0.03,
        ),
        CheckStatus(
            check="council-website", area="internet_web", state=State.DEGRADED, latency=1.2
        ),
    )
    await feed.heartbeat(
        "ccc-guildhall",
        now,
        CheckStatus(
            check="intranet",
            area="internet_web",
            state=State.UP,
            latency=0.004,
            loss=20.0,
            jitter=0.001,
            duration=0.5,
        ),
    )
    await feed.event("dc", "webmail", "email", State.UP, State.DOWN, now, "HTTP 503")
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await asyncio.wait_for(c.web_ready.wait(), 30)
    yield c
    stop.set()
    await task


@needs
async def test_every_panel_query_returns_data(tmp_path: Path, collector: Collector) -> None:
    port = free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: availmon\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{collector.web_port}']}}]\n"
    )
    assert PROMETHEUS is not None
    proc = await asyncio.create_subprocess_exec(
        PROMETHEUS,
        f"--config.file={conf}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        # Wait for the first scrape (a series every later query needs), then ask each panel.
        await asyncio.wait_for(first_result(port, "availmon_check_state"), 60)
        for title, expr in exprs():
            results[expr] = await asyncio.wait_for(first_result(port, expr), 30)
            assert results[expr], title
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{collector.web_port}/api/v1/checks"
            board = (await (await session.get(url)).json())["checks"]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    # The Grafana table and the board say the same about every check that reports.
    table = next(e for _, e in exprs() if e.startswith("max by (site, check, area, state)"))
    grafana = {
        (r["metric"]["site"], r["metric"]["check"]): r["metric"]["state"] for r in results[table]
    }
    assert grafana == {(c["site"], c["check"]): c["state"] for c in board if c["agent"]}
    assert grafana[("dc", "council-website")] == "degraded"
    down = next(e for _, e in exprs() if e.startswith("count(availmon_check_up"))
    assert results[down][0]["value"][1] == "1"  # the degraded check is not counted as down
