"""The heartbeat carries what the collector cannot see for itself: the spool's depth and
what its cap dropped (the issue asks that drops show in a metric, never silently)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.main import Agent
from availmon.schema import Evidence, State
from tests.peers import estate

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def test_heartbeat_reports_spool_depth_and_drops(tmp_path: Path) -> None:
    check = {"name": "web", "type": "http", "target": "http://127.0.0.1:1/", "area": "internet_web"}
    cfg = estate(tmp_path, 1, [check], extra={"agent": {"spool_max_events": 10}})
    agent = Agent(cfg, "hq")
    try:
        states = [State.DOWN, State.DEGRADED]
        await agent.spool.append("web", "internet_web", State.UP, State.DOWN, T0, T0, Evidence())
        for i in range(1, 13):  # an outage flapping between down and degraded past the cap
            at = T0 + timedelta(minutes=i)
            frm, to = states[(i + 1) % 2], states[i % 2]
            await agent.spool.append("web", "internet_web", frm, to, at, at, Evidence())
        hb = await agent._heartbeat()
        assert (hb.site, hb.agent, hb.spool_depth, hb.spool_dropped) == ("hq", "hq", 10, 3)
        assert [c.check for c in hb.checks] == ["web"]
        assert hb.traps == {}
    finally:
        agent.spool.close()
