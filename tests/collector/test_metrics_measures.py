"""Per-check measurements for dashboards (issue 12): loss, jitter, certificate expiry and
probe duration travel in the heartbeat and reach /metrics; one not measured is absent, not
0; and degraded is told apart from down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from agent.scheduler import _measures
from availmon.schema import CheckStatus, State
from collector.main import Collector
from collector.web import make_app
from probes.base import ProbeResult
from tests.collector.board_helpers import Feed, board_estate


def samples(text: str) -> dict[tuple[str, str], float]:
    """(metric name, check) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "check" in s.labels and "state" not in s.labels:
                out[(s.name, s.labels["check"])] = s.value
    return out


async def test_measures_reach_metrics_and_absent_stays_absent(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    collector = Collector(board_estate(tmp_path))
    try:
        now = datetime.now(UTC)
        await Feed(collector).heartbeat(
            "dc",
            now,
            CheckStatus(
                check="webmail",
                area="email",
                state=State.DEGRADED,
                latency=0.8,
                cert_expires_in=86400 * 10,
                duration=0.81,
            ),
            CheckStatus(check="council-website", area="internet_web", state=State.DOWN),
        )
        await Feed(collector).heartbeat(
            "ccc-guildhall",
            now,
            CheckStatus(
                check="intranet",
                area="internet_web",
                state=State.UP,
                latency=0.004,
                loss=40.0,
                jitter=0.0015,
                duration=0.6,
            ),
        )
        client = await aiohttp_client(make_app(collector))
        got = samples(await (await client.get("/metrics")).text())
    finally:
        collector.close()
    # degraded answers (up=1) and says so; down is up=0, degraded=0
    assert got[("availmon_check_up", "webmail")] == 1
    assert got[("availmon_check_degraded", "webmail")] == 1
    assert got[("availmon_check_up", "council-website")] == 0
    assert got[("availmon_check_degraded", "council-website")] == 0
    assert got[("availmon_check_loss_ratio", "intranet")] == pytest.approx(0.4)
    assert got[("availmon_check_jitter_seconds", "intranet")] == pytest.approx(0.0015)
    assert got[("availmon_check_probe_duration_seconds", "webmail")] == pytest.approx(0.81)
    expiry = got[("availmon_check_cert_expiry_seconds", "webmail")]
    assert 86400 * 10 - 120 < expiry <= 86400 * 10  # counted down from the heartbeat
    # not measured: absent, never 0
    for name in ("loss_ratio", "jitter_seconds", "cert_expiry_seconds", "latency_seconds"):
        assert (f"availmon_check_{name}", "council-website") not in got
    assert ("availmon_check_loss_ratio", "webmail") not in got
    assert ("availmon_check_cert_expiry_seconds", "intranet") not in got


def test_agent_takes_measures_from_the_last_result() -> None:
    now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    icmp = ProbeResult(ok=True, latency=0.002, loss=25.0, details={"jitter_ms": 1.5})
    assert _measures(icmp, now) == {"loss": 25.0, "jitter": 0.0015, "cert_expires_in": None}
    http = ProbeResult(ok=True, latency=0.1, details={"cert_not_after": "2026-01-15T09:00:00Z"})
    assert _measures(http, now)["cert_expires_in"] == timedelta(days=10).total_seconds()
    expired = ProbeResult(ok=False, details={"cert_not_after": "2026-01-02T09:00:00Z"})
    assert _measures(expired, now)["cert_expires_in"] == -timedelta(days=3).total_seconds()
    odd = ProbeResult(ok=True, loss=float("nan"), details={"jitter_ms": "x", "cert_not_after": 5})
    assert _measures(odd, now) == {"loss": None, "jitter": None, "cert_expires_in": None}
    assert _measures(None, now) == {"loss": None, "jitter": None, "cert_expires_in": None}


@pytest.mark.parametrize(
    "field",
    [
        {"loss": -1},
        {"loss": 101},
        {"jitter": -0.1},
        {"duration": float("inf")},
        {"cert_expires_in": float("nan")},
    ],
)
def test_heartbeat_refuses_impossible_measures(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        CheckStatus(check="c", area="email", state=State.UP, **field)  # type: ignore[arg-type]
