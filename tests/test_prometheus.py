"""The shipped Prometheus config and alert rules: promtool validates them and runs their unit
tests, and a real Prometheus scrapes a live collector and sees the per-check series."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from availmon.schema import CheckStatus, Heartbeat, State, topic
from collector.main import Collector
from tests.peers import estate, free_port, web_check

CONFIG = Path(__file__).resolve().parent.parent / "config" / "prometheus"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs = pytest.mark.skipif(
    PROMTOOL is None or PROMETHEUS is None,
    reason="needs Prometheus and promtool (Debian package prometheus)",
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=CONFIG, capture_output=True, text=True, timeout=120, check=False
    )


@needs
def test_config_and_rules_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in promtool("check", "rules", "availmon-rules.yml").stdout


@needs
def test_alert_rules_unit_tests() -> None:
    result = promtool("test", "rules", "availmon-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    # No broker: the collector retries MQTT in the background while its web server answers.
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    hb = Heartbeat(
        site="hq",
        agent="hq",
        at=datetime.now(UTC),
        seq=1,
        spool_depth=3,
        spool_unwritten=3,
        spool_error="database or disk is full (SQLITE_FULL)",
        checks=[CheckStatus(check="web", area="internet_web", state=State.DOWN, latency=0.25)],
    )
    await c.handle_batch([(topic("hq", "hq", "heartbeat"), hb.to_json())])
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await asyncio.wait_for(c.web_ready.wait(), 30)
    yield c
    stop.set()
    await task


@needs
async def test_prometheus_scrapes_the_collector(tmp_path: Path, collector: Collector) -> None:
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
        *[
            PROMETHEUS,
            f"--config.file={conf}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        result = await asyncio.wait_for(first_result(port, "availmon_check_up"), 60)
        # The same scrape carried the agent's series: the rule's own expression finds the
        # spool that cannot be written.
        spool = await asyncio.wait_for(
            first_result(port, rule_expr("AvailmonAgentSpoolNotWritable")), 60
        )
        unwritten = await asyncio.wait_for(first_result(port, "availmon_agent_spool_unwritten"), 60)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    [series] = result
    assert series["metric"]["site"] == "hq"
    assert series["metric"]["check"] == "web"
    assert series["metric"]["area"] == "internet_web"
    assert series["value"][1] == "0"
    assert [(s["metric"]["site"], s["metric"]["agent"], s["value"][1]) for s in spool] == [
        ("hq", "hq", "0")
    ]
    assert [s["value"][1] for s in unwritten] == ["3"]


def rule_expr(alert: str) -> str:
    """The PromQL of one of the shipped alert rules."""
    rules = yaml.safe_load((CONFIG / "availmon-rules.yml").read_text())
    [expr] = [r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert]
    return str(expr)


async def first_result(port: int, query: str) -> list[dict[str, Any]]:
    """Poll Prometheus's query API until the series appears: Prometheus offers nothing to
    await, so this polls (bounded by the caller's timeout)."""
    url = f"http://127.0.0.1:{port}/api/v1/query"
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url, params={"query": query}) as response:
                    if response.status == 200:
                        data = json.loads(await response.text())
                        if data["data"]["result"]:
                            return list(data["data"]["result"])
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            await asyncio.sleep(0.5)
