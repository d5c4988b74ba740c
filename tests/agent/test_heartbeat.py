"""The heartbeat carries what the collector cannot see for itself: the spool's depth, what
its cap dropped (the issue asks that drops show in a metric, never silently), and whether
the spool can be written (what it holds in memory meanwhile a stop would lose).

It is written one check status at a time (issue 9: a list of 1,000 statuses kept 1.2 MB of
an agent's RSS); the tests below fail if a list comes back."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.main import Agent
from agent.memory import trim_heap
from agent.spool import _error_text
from availmon.limits import MAX_HEARTBEAT_CHECKS
from availmon.schema import MAX_SPOOL_ERROR, CheckStatus, Evidence, Heartbeat, State, heartbeat_json
from tests.agent.test_spool_faults import fill, may_grow, on_spool_thread
from tests.peers import estate

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def live_statuses() -> int:
    return sum(isinstance(o, CheckStatus) for o in gc.get_objects())


def envelope() -> Heartbeat:
    return Heartbeat(site="hq", agent="hq", at=T0, seq=7, spool_depth=0, checks=[])


def status(i: int) -> CheckStatus:
    return CheckStatus(
        check=f"c{i}", area="servers", state=State.UP, since=T0, latency=0.01 * i, duration=0.5
    )


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
        hb = Heartbeat.model_validate_json(await agent._heartbeat())
        assert (hb.site, hb.agent, hb.spool_depth, hb.spool_dropped) == ("hq", "hq", 10, 3)
        assert [c.check for c in hb.checks] == ["web"]
        assert hb.traps == {}
    finally:
        agent.spool.close()


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("disk full", "database or disk is full (SQLITE_FULL)"),
        ("read-only", "attempt to write a readonly database (SQLITE_READONLY)"),
    ],
)
async def test_heartbeat_says_the_spool_cannot_be_written_until_it_can(
    tmp_path: Path, how: str, error: str
) -> None:
    """A spool that cannot be written showed only as a deeper spool: nothing told the
    collector that what it held was in memory, one stop away from being lost."""
    check = {"name": "web", "type": "http", "target": "http://127.0.0.1:1/", "area": "internet_web"}
    agent = Agent(estate(tmp_path, 1, [check]), "hq")
    spool = agent.spool
    try:
        hb = Heartbeat.model_validate_json(await agent._heartbeat())
        assert (hb.spool_unwritten, hb.spool_error) == (0, None)
        if how == "disk full":
            held = 1  # the transition that found the file full
            on_disk = len(await fill(spool))
        else:
            held, on_disk = 0, 0
            await on_spool_thread(spool, "PRAGMA query_only=1")
        for i in range(2):
            at = T0 + timedelta(minutes=i)
            frm, to = (State.UP, State.DOWN) if i % 2 == 0 else (State.DOWN, State.UP)
            assert await spool.append("web", "internet_web", frm, to, at, at, Evidence()) is None
            held += 1
        hb = Heartbeat.model_validate_json(await agent._heartbeat())
        assert (hb.spool_unwritten, hb.spool_error) == (held, error)
        assert hb.spool_depth == on_disk + held

        if how == "disk full":
            await may_grow(spool, True)
        else:
            await on_spool_thread(spool, "PRAGMA query_only=0")
        assert await spool.flush() == 0
        hb = Heartbeat.model_validate_json(await agent._heartbeat())
        assert (hb.spool_unwritten, hb.spool_error) == (0, None)
        assert hb.spool_depth == on_disk + held  # written, not yet delivered
    finally:
        spool.close()


def test_the_spool_error_is_one_bounded_printable_line() -> None:
    """SQLite's message may carry a path, and a path may hold anything: what the heartbeat
    says is escaped, cut to the schema's bound, and validates."""
    exc = sqlite3.OperationalError("disk I/O error at /srv/a\n\x1b[2J\u202e/" + "x" * 600)
    text = _error_text(exc)
    assert text.startswith("disk I/O error at /srv/a; \\x1b[2J\\u202e/x")
    assert len(text) == MAX_SPOOL_ERROR
    assert text.isprintable()
    hb = envelope().model_copy(update={"spool_error": text})
    assert Heartbeat.model_validate_json(hb.to_json()).spool_error == text


def test_heartbeat_json_is_the_bytes_of_the_whole_model_made_one_status_at_a_time() -> None:
    gc.collect()
    before = live_statuses()
    most = 0

    def statuses() -> Iterator[CheckStatus]:
        nonlocal most
        for i in range(50):
            made = status(i)
            most = max(most, live_statuses() - before)
            yield made

    got = heartbeat_json(envelope(), statuses())
    whole = envelope().model_copy(update={"checks": [status(i) for i in range(50)]})
    assert got == whole.to_json()
    assert Heartbeat.model_validate_json(got) == whole
    assert most <= 2  # the one being written and the next; a list would hold all 50


def test_heartbeat_json_keeps_the_models_rules() -> None:
    assert heartbeat_json(envelope(), []) == envelope().to_json()
    with pytest.raises(ValueError, match="at most"):
        heartbeat_json(envelope(), (status(i) for i in range(MAX_HEARTBEAT_CHECKS + 1)))
    with pytest.raises(ValueError, match="no checks"):
        heartbeat_json(envelope().model_copy(update={"checks": [status(1)]}), [])


def test_the_scheduler_makes_each_status_when_it_is_consumed(tmp_path: Path) -> None:
    checks = [
        {"name": f"tcp{i}", "type": "tcp", "target": f"127.0.0.1:{i + 1}", "area": "servers"}
        for i in range(3)
    ]
    agent = Agent(estate(tmp_path, 1, checks), "hq")
    try:
        gc.collect()
        before = live_statuses()
        statuses = agent.scheduler.statuses()
        first = next(statuses)
        assert first.check == "tcp0"
        assert live_statuses() - before == 1  # a list would have made all three
        assert [s.check for s in statuses] == ["tcp1", "tcp2"]
    finally:
        agent.spool.close()


def test_the_agent_gives_its_heap_back_after_each_heartbeat(tmp_path: Path) -> None:
    """Trimmed just before the next heartbeat instead, a 1,000-check agent kept the last
    one's JSON: 0.5 MB of its RSS (issue 9)."""
    check = {"name": "tcp", "type": "tcp", "target": "127.0.0.1:1", "area": "servers"}
    agent = Agent(estate(tmp_path, 1, [check]), "hq")
    try:
        assert agent.publisher.after_heartbeat is trim_heap
    finally:
        agent.spool.close()
