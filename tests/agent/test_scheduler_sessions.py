"""How the scheduler groups checks and shares sessions (issue 9), against real peers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.scheduler import Scheduler, offset
from agent.state import Transition
from availmon.clock import from_iso
from availmon.config import Check, parse_config
from availmon.errors import StartupError
from availmon.schema import State
from probes.base import ProbeResult
from tests.peers import free_port


def site_checks(checks: list[dict[str, Any]]) -> list[Check]:
    for i, check in enumerate(checks):
        check.setdefault("name", f"c{i}")
        check.setdefault("area", "servers")
    estate = parse_config({"sites": {"s": {"partner": "p", "checks": checks}}}, "test")
    return estate.sites["s"].checks


async def no_transitions(check: Check, transition: Transition, at: datetime) -> None:
    return None


@contextlib.asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[None]:
    """The scheduler running for the block, which has 20 s; stopped after it."""
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(20):
            yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_groups_icmp_batches_snmp_devices_and_lone_checks() -> None:
    snmp = {"type": "snmp", "community_env": "AVM_TEST_COMMUNITY", "interval": 60}
    checks = site_checks(
        [
            {"type": "icmp", "target": "127.0.0.1"},
            {"type": "icmp", "target": "127.0.0.2"},
            {"type": "icmp", "target": "127.0.0.3", "interval": 10},  # another schedule
            {**snmp, "target": "127.0.0.1:1161", "interface": "eth0"},
            {**snmp, "target": "127.0.0.1:1161", "oid": "1.3.6.1.2.1.1.3.0"},
            {**snmp, "target": "127.0.0.2:1161"},  # another device
            {"type": "http", "target": "http://127.0.0.1:1/"},
            {"type": "http", "target": "http://127.0.0.1:1/"},
        ]
    )
    scheduler = Scheduler(checks, no_transitions)
    groups = sorted(sorted(s.check.name for s in g) for g in scheduler.groups())
    assert groups == [["c0", "c1"], ["c2"], ["c3", "c4"], ["c5"], ["c6"], ["c7"]]


async def test_http_checks_share_one_client_and_still_connect_each_time() -> None:
    connections: list[tuple[str, int]] = []

    async def hello(request: web.Request) -> web.Response:
        assert request.transport is not None
        connections.append(request.transport.get_extra_info("peername"))  # client's port
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    seen: list[tuple[str, ProbeResult]] = []
    done = asyncio.Event()
    async with TestServer(app, host="127.0.0.1") as server:
        url = f"http://127.0.0.1:{server.port}/"
        checks = site_checks(
            [{"type": "http", "target": url, "interval": 0.2, "timeout": 0.2} for _ in range(3)]
        )

        def on_result(check: Check, result: ProbeResult, at: datetime) -> None:
            seen.append((check.name, result))
            if len(seen) >= 9:
                done.set()

        async with running(Scheduler(checks, no_transitions, on_result=on_result)):
            await done.wait()
    assert all(result.ok for _, result in seen), [r.error for _, r in seen if not r.ok]
    assert {name for name, _ in seen} == {"c0", "c1", "c2"}
    assert len(set(connections)) == len(connections)  # a new connection for every probe


async def test_unusable_ca_file_stops_the_agent_with_its_reason(tmp_path: Path) -> None:
    """A StartupError naming ca_file ends the checks at the first probe, as a missing secret
    does; an OSError from OpenSSL was logged as a probe crash every interval, for ever."""
    missing = tmp_path / "private-ca.pem"
    check = {"type": "http", "target": f"https://127.0.0.1:{free_port()}/",
             "ca_file": str(missing), "interval": 0.5, "timeout": 0.2}  # fmt: skip
    scheduler = Scheduler(site_checks([check]), no_transitions)
    with pytest.raises(ExceptionGroup) as err:  # from the checks' task group
        async with asyncio.timeout(10):
            await scheduler.run()
    startup = err.value.subgroup(StartupError)  # what Agent.run raises
    assert startup is not None
    assert [str(e) for e in startup.exceptions] == [
        f"ca_file: cannot read {missing}: No such file or directory"
    ]


async def test_checks_waiting_for_their_time_hold_no_task_each() -> None:
    """One queue of due times, not a sleeping task per check (issue 9: an agent's RSS with
    1,000 checks): while one quick check keeps probing, twenty hourly checks whose time is
    far off have no task."""
    closed = free_port()  # nothing listens: each probe fails at once
    names = [n for n in (f"h{i}" for i in range(200)) if offset(n, 3600) > 600][:20]
    hourly = [
        {"type": "tcp", "target": f"127.0.0.1:{closed}", "interval": 3600, "name": n} for n in names
    ]
    quick = {"type": "tcp", "target": f"127.0.0.1:{closed}", "interval": 0.05, "timeout": 0.05,
             "name": "q"}  # fmt: skip
    checks = site_checks([quick, *hourly])
    seen: list[str] = []
    done = asyncio.Event()

    def on_result(check: Check, result: ProbeResult, at: datetime) -> None:
        seen.append(check.name)
        if len(seen) >= 3:
            done.set()

    async with running(Scheduler(checks, no_transitions, on_result=on_result)):
        await done.wait()
        probing = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("check:")]
    assert set(seen) == {"q"}
    assert len(names) == 20
    assert probing in ([], ["check:q"]), probing  # the quick one may be mid-probe


def test_checks_with_equal_options_and_thresholds_share_them() -> None:
    """Parsed options and thresholds are made once per distinct value (issue 9: memory);
    a reload parses afresh."""
    checks = site_checks(
        [
            {"type": "http", "target": "http://127.0.0.1:1/a"},
            {"type": "http", "target": "http://127.0.0.1:1/b"},
            {"type": "http", "target": "http://127.0.0.1:1/c", "method": "HEAD"},
            {"type": "http", "target": "http://127.0.0.1:1/d", "failures_to_down": 5},
        ]
    )
    scheduler = Scheduler(checks, no_transitions)
    a, b, c, d = scheduler._slots.values()
    assert a.options is b.options is d.options
    assert c.options is not a.options
    assert c.options.method == "HEAD"
    assert a.state.t is b.state.t is c.state.t
    assert d.state.t is not a.state.t
    assert d.state.t.failures_to_down == 5
    scheduler.reload([*checks[:3], checks[3].model_copy(update={"failures_to_down": 6})])
    assert scheduler._slots["c3"].state.t.failures_to_down == 6


async def test_a_stop_while_a_reload_waits_for_the_old_sessions_ends_the_scheduler() -> None:
    """A reload stops the old checks and waits for their sessions to close; an agent told to
    stop meanwhile must stop once they have, not start the new checks and run on (the stop
    was this task's own cancellation, swallowed with the old checks' one)."""
    checks = site_checks([{"type": "http", "target": "http://127.0.0.1:1/", "interval": 60}])
    scheduler = Scheduler(checks, no_transitions)
    [slot] = scheduler._slots.values()
    real = slot.spec.session
    assert real is not None
    open_, closing, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    opened = 0

    @contextlib.asynccontextmanager
    async def slow_to_close() -> AsyncIterator[Any]:
        nonlocal opened
        opened += 1
        open_.set()
        async with real() as session:
            try:
                yield session
            finally:
                closing.set()
                await closed.wait()  # the reload waits here for the old session

    slot.spec = dataclasses.replace(slot.spec, session=slow_to_close)
    task = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(20):  # a hang guard, not a measure
            await open_.wait()
            more = site_checks(
                [
                    {"type": "http", "target": "http://127.0.0.1:1/", "interval": 60},
                    {"type": "http", "target": "http://127.0.0.1:2/", "interval": 60},
                ]
            )
            assert scheduler.reload(more) == (["c1"], [], [])
            await closing.wait()
            task.cancel()  # the stop, while the reload waits
            closed.set()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert opened == 1  # the new checks never started


async def test_a_probe_that_crashes_at_every_run_logs_one_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer's answer that trips a probe's bug does so at every run: a traceback per run
    (every 10 s for a ping) buried the log. One at most every ten minutes per check, with
    how many crashes it stands for; no probe result is recorded for a crash (a bug is not
    an outage; the crashes only make the check unknown, as the next test shows)."""
    from probes.registry import REGISTRY

    closed = free_port()
    calls = 0
    crashed = asyncio.Event()

    async def crash(target: str, timeout: float, options: Any) -> ProbeResult:
        nonlocal calls
        calls += 1
        if calls >= 3:
            crashed.set()
        raise RuntimeError(f"probe bug #{calls}")

    monkeypatch.setitem(REGISTRY, "tcp", dataclasses.replace(REGISTRY["tcp"], probe=crash))
    checks = site_checks(
        [{"type": "tcp", "target": f"127.0.0.1:{closed}", "interval": 0.05, "timeout": 0.05}]
    )
    results: list[ProbeResult] = []
    async with running(
        Scheduler(checks, no_transitions, on_result=lambda c, r, a: results.append(r))
    ):
        await crashed.wait()
    lines = [r for r in caplog.records if "crashed" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "probe c0 crashed 1 time(s) since the last such line (at most one every 10 minutes);"
        " no result recorded"
    ]
    assert lines[0].exc_info is not None
    assert "probe bug #1" in str(lines[0].exc_info[1])
    assert results == []


async def test_a_probe_that_keeps_crashing_makes_its_check_unknown_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A check whose probe crashed at every run (its library broken by an upgrade) kept
    showing its last state, up, for ever. Three crashes in a row (failures_to_down) make it
    unknown, dated at the first, in the spool like any transition; more crashes add nothing."""
    from agent.spool import Spool
    from probes.registry import REGISTRY

    closed = free_port()
    calls = 0
    seen_enough = asyncio.Event()
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    # The scheduler's clock says which probe it is: probe n (from 1) is dated t0 + n - 1 s.
    monkeypatch.setattr("agent.scheduler.utcnow", lambda: t0 + timedelta(seconds=calls))

    async def good_then_crash(target: str, timeout: float, options: Any) -> ProbeResult:
        nonlocal calls
        calls += 1
        # Call 9 starts only once the eighth probe was handled (a check's probes run one
        # at a time): two good ones, then six crashes.
        if calls >= 9:
            seen_enough.set()
        if calls <= 2:
            return ProbeResult(ok=True, latency=0.001)
        raise KeyError("x")

    monkeypatch.setitem(
        REGISTRY, "tcp", dataclasses.replace(REGISTRY["tcp"], probe=good_then_crash)
    )
    checks = site_checks(
        [{"type": "tcp", "target": f"127.0.0.1:{closed}", "interval": 0.05, "timeout": 0.05}]
    )
    spool = Spool(tmp_path / "a.spool.db", site="s", agent="s", max_events=100, mergeable=[])
    transitions: list[Transition] = []

    async def to_spool(check: Check, transition: Transition, detected: datetime) -> None:
        transitions.append(transition)
        await spool.append(
            check.name,
            check.area,
            transition.from_,
            transition.to,
            transition.at,
            detected,
            transition.evidence,
        )

    results: list[ProbeResult] = []
    scheduler = Scheduler(checks, to_spool, on_result=lambda c, r, at: results.append(r), site="s")
    try:
        async with running(scheduler):
            await seen_enough.wait()
        events = [json.loads(p.payload) for p in await spool.pending() if p.payload is not None]
    finally:
        spool.close()
    assert [(t.from_, t.to, t.at) for t in transitions] == [
        (State.UNKNOWN, State.UP, t0),  # the first good probe
        (State.UP, State.UNKNOWN, t0 + timedelta(seconds=2)),  # the first crash, probe 3
    ]
    assert [(e["from"], e["to"]) for e in events] == [("unknown", "up"), ("up", "unknown")]
    assert from_iso(events[1]["at"]) == t0 + timedelta(seconds=2)
    assert events[1]["evidence"] == {
        "error": "probe crashed: KeyError: 'x'",
        "latency": None,
        "loss": None,
        "probes": 3,
        "cause": None,
    }
    assert [r.ok for r in results] == [True, True]  # no result for a crash
    [status] = scheduler.statuses()
    assert (status.state, status.since) == (State.UNKNOWN, t0 + timedelta(seconds=2))
    # The heartbeat says why, not the last good result's latency.
    assert (status.latency, status.error) == (None, "probe crashed: KeyError: 'x'")


async def test_a_parent_whose_probe_crashes_does_not_hold_back_its_dependants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dependant's down event named its unknown parent as the cause, which holds its alert
    back; a parent unknown because its probe crashes is not known to be down, so the
    dependant's outage (counted in full by the report) must page as its own."""
    from probes.registry import REGISTRY

    parent_calls = 0
    parent_unknown, child_down = asyncio.Event(), asyncio.Event()
    parent_port, child_port = free_port(), free_port()

    async def probe(target: str, timeout: float, options: Any) -> ProbeResult:
        nonlocal parent_calls
        if target.endswith(f":{parent_port}"):
            parent_calls += 1
            if parent_calls <= 2:
                return ProbeResult(ok=True, latency=0.001)
            raise KeyError("x")  # the parent's probe breaks after two good runs
        if not parent_unknown.is_set():
            return ProbeResult(ok=True, latency=0.001)
        return ProbeResult(ok=False, error="connection refused")  # then the child fails

    monkeypatch.setitem(REGISTRY, "tcp", dataclasses.replace(REGISTRY["tcp"], probe=probe))
    quick = {"type": "tcp", "interval": 0.05, "timeout": 0.05}
    checks = site_checks(
        [
            {**quick, "name": "uplink", "target": f"127.0.0.1:{parent_port}"},
            {**quick, "name": "web", "target": f"127.0.0.1:{child_port}", "depends_on": "uplink"},
        ]
    )
    seen: list[tuple[str, Transition]] = []

    async def sink(check: Check, transition: Transition, at: datetime) -> None:
        seen.append((check.name, transition))
        if (check.name, transition.to) == ("uplink", State.UNKNOWN):
            parent_unknown.set()
        if (check.name, transition.to) == ("web", State.DOWN):
            child_down.set()

    async with running(Scheduler(checks, sink, site="s")):
        await child_down.wait()
    [(_, down)] = [(n, t) for n, t in seen if (n, t.to) == ("web", State.DOWN)]
    assert down.evidence.cause is None
    assert down.evidence.error == "connection refused"
