"""The check state machine, with no I/O: sequences of probe verdicts in, transitions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.state import CheckState, Thresholds
from availmon.schema import Evidence, State
from probes.base import ProbeResult

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GOOD = ProbeResult(ok=True, latency=0.01)
SLOW = ProbeResult(ok=True, latency=2.0)
FAIL = ProbeResult(ok=False, error="connection refused")
CODES = {"g": GOOD, "s": SLOW, "f": FAIL}


def run(codes: str, thresholds: Thresholds | None = None) -> list[tuple[str, str, int]]:
    """Feed one probe per second; return (from, to, index of the probe it is dated at)."""
    machine = CheckState(thresholds or Thresholds(degraded_latency=1.0))
    out = []
    for i, code in enumerate(codes):
        t = machine.observe(CODES[code], T0 + timedelta(seconds=i))
        if t is not None:
            out.append((t.from_.value, t.to.value, int((t.at - T0).total_seconds())))
    return out


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        # Up after two good probes, dated at the first of them.
        ("gg", [("unknown", "up", 0)]),
        # Three failures make an outage that starts at the first failed probe, not at detection.
        ("ggfff", [("unknown", "up", 0), ("up", "down", 2)]),
        # Two failures are a blip, not an outage.
        ("ggffgg", [("unknown", "up", 0)]),
        # Recovery is dated at the first good probe of the run that cleared it.
        ("ggfffgfgg", [("unknown", "up", 0), ("up", "down", 2), ("down", "up", 7)]),
        # Slow probes: degraded after three, back up after two good.
        ("ggsssgg", [("unknown", "up", 0), ("up", "degraded", 2), ("degraded", "up", 5)]),
        # Degraded then down: the down dates from its own first failure.
        ("ggsssfff", [("unknown", "up", 0), ("up", "degraded", 2), ("degraded", "down", 5)]),
        # A slow answer breaks a failure run.
        ("ggffsff", [("unknown", "up", 0)]),
        # A target that never answers from the start is down from the first probe.
        ("fff", [("unknown", "down", 0)]),
        # Leaving down into a slow service lands in degraded, after as many slow probes as
        # degraded takes from up (three); fewer, and it is up.
        ("gggfffsss", [("unknown", "up", 0), ("up", "down", 3), ("down", "degraded", 6)]),
        ("gggfffgsgg", [("unknown", "up", 0), ("up", "down", 3), ("down", "up", 6)]),
    ],
)
def test_transitions(codes: str, expected: list[tuple[str, str, int]]) -> None:
    assert run(codes) == expected


def test_thresholds_are_configurable() -> None:
    t = Thresholds(failures_to_down=1, successes_to_up=1)
    assert run("gfg", t) == [("unknown", "up", 0), ("up", "down", 1), ("down", "up", 2)]


def test_loss_over_threshold_is_slow() -> None:
    lossy = ProbeResult(ok=True, latency=0.01, loss=50.0)
    m = CheckState(Thresholds(degraded_loss=20.0, slow_to_degraded=1, successes_to_up=1))
    m.observe(GOOD, T0)
    t = m.observe(lossy, T0 + timedelta(seconds=1))
    assert t is not None
    assert t.to is State.DEGRADED


def test_evidence_carries_what_the_probes_saw() -> None:
    m = CheckState(Thresholds(failures_to_down=2, successes_to_up=1))
    m.observe(GOOD, T0)
    m.observe(FAIL, T0 + timedelta(seconds=1))
    t = m.observe(FAIL, T0 + timedelta(seconds=2))
    assert t is not None
    assert t.evidence.error == "connection refused"
    assert t.evidence.probes == 2


def test_a_probe_in_flight_during_a_trap_is_not_dated_before_it() -> None:
    m = CheckState(Thresholds(successes_to_up=1))
    m.observe(GOOD, T0)
    m.force(State.DOWN, T0 + timedelta(seconds=10), Evidence(error="linkDown trap"))
    # The poll started at t9, before the trap, and answers OK after it.
    t = m.observe(GOOD, T0 + timedelta(seconds=9))
    assert t is not None
    assert (t.to, t.at) == (State.UP, T0 + timedelta(seconds=10))


def test_force_changes_state_at_once_and_resets_runs() -> None:
    m = CheckState(Thresholds())
    for i in range(2):
        m.observe(GOOD, T0 + timedelta(seconds=i))
    forced = m.force(State.DOWN, T0 + timedelta(seconds=5), Evidence(error="linkDown trap"))
    assert forced is not None
    assert (forced.from_, forced.to) == (State.UP, State.DOWN)
    assert m.force(State.DOWN, T0 + timedelta(seconds=6), Evidence()) is None
