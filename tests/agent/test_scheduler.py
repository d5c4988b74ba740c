"""The scheduler pings ICMP checks that share interval, timeout and options as one batch (one
``probe_many`` call, one socket) and every other check on its own. Real pings to loopback
addresses; the registry's icmp entry is wrapped to record the calls and pass them through."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.scheduler import Scheduler
from agent.state import Transition
from availmon.config import Check
from probes import icmp
from probes.base import ProbeResult
from probes.registry import REGISTRY
from tests.peers import estate, web_check

DEADLINE = 30.0  # only guards a hung test

pytestmark = pytest.mark.skipif(
    icmp.icmp_mode() is icmp.Mode.NONE, reason=icmp.describe_mode(icmp.Mode.NONE)
)


def ping(name: str, target: str, **over: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "icmp",
        "target": target,
        "area": "network_telephony",
        "interval": 0.3,
        "timeout": 0.2,
        "count": 1,
        **over,
    }


async def test_icmp_checks_sharing_an_interval_are_pinged_as_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = [
        ping("a", "127.0.0.1"),
        ping("b", "127.0.0.2"),
        ping("c", "127.0.0.3", interval=0.4),  # another interval
        ping("d", "127.0.0.4", count=2, echo_interval=0.01),  # other options
        ping("e", "127.0.0.5"),  # same as a and b
    ]
    batches: list[list[str]] = []
    singles: list[str] = []
    spec = REGISTRY["icmp"]
    assert spec.probe_many is not None
    real_many, real_one = spec.probe_many, spec.probe

    async def probe_many(targets: list[str], timeout: float, options: Any) -> list[ProbeResult]:
        batches.append(list(targets))
        return await real_many(targets, timeout, options)

    async def probe(target: str, timeout: float, options: Any) -> ProbeResult:
        singles.append(target)
        return await real_one(target, timeout, options)

    monkeypatch.setitem(
        REGISTRY, "icmp", dataclasses.replace(spec, probe=probe, probe_many=probe_many)
    )

    results: dict[str, list[tuple[datetime, bool]]] = defaultdict(list)
    enough = asyncio.Event()

    def on_result(check: Check, result: ProbeResult, at: datetime) -> None:
        results[check.name].append((at, result.ok))
        if len(results) == len(checks) and all(len(r) >= 3 for r in results.values()):
            enough.set()

    async def on_transition(_: Check, __: Transition, ___: datetime) -> None:
        return None

    cfg = estate(tmp_path, 1, checks)
    scheduler = Scheduler(cfg.sites["hq"].checks, on_transition, on_result=on_result)
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(enough.wait(), DEADLINE)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    assert all(ok for r in results.values() for _, ok in r), dict(results)
    # a, b and e: one call per round with all three targets, in config order.
    assert len(batches) >= 3
    assert all(b == ["127.0.0.1", "127.0.0.2", "127.0.0.5"] for b in batches), batches
    # ... so each round's results share one probe time.
    rounds = min(len(results[n]) for n in "abe")
    for i in range(rounds):
        assert results["a"][i][0] == results["b"][i][0] == results["e"][i][0]
    # c (another interval) and d (other options) are probed on their own.
    assert set(singles) == {"127.0.0.3", "127.0.0.4"}


async def _sink(check: Check, transition: Transition, detected: datetime) -> None:
    """Transitions are not what these tests look at."""


def test_reload_keeps_the_state_of_checks_it_carries_over() -> None:
    """Issue 13: a reload keeps an unchanged check's slot, a changed check's state (under its
    new thresholds), and starts afresh a check whose type or target changed."""
    old = [
        Check.model_validate(web_check("http://127.0.0.1:1/a", name="same")),
        Check.model_validate(web_check("http://127.0.0.1:1/b", name="tuned")),
        Check.model_validate(web_check("http://127.0.0.1:1/c", name="moved")),
        Check.model_validate(web_check("http://127.0.0.1:1/d", name="gone")),
    ]
    scheduler = Scheduler(old, _sink, site="hq")
    before = dict(scheduler._slots)
    new = [
        old[0],
        old[1].model_copy(update={"failures_to_down": 5}),
        old[2].model_copy(update={"target": "http://127.0.0.1:1/elsewhere"}),
        Check.model_validate(web_check("http://127.0.0.1:1/e", name="added")),
    ]
    assert scheduler.reload(new) == (["added"], ["tuned", "moved"], ["gone"])
    after = scheduler._slots
    assert after["same"] is before["same"]
    assert after["tuned"].state is before["tuned"].state
    assert after["tuned"].state.t.failures_to_down == 5
    assert after["moved"].state is not before["moved"].state
    assert [s.check.name for s in after.values()] == ["same", "tuned", "moved", "added"]
    assert scheduler.reload(new) == ([], [], [])  # the same again: nothing to restart
