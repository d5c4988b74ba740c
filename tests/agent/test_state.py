"""The check state machine, with no I/O: sequences of probe verdicts in, transitions out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from agent.state import CheckState, Thresholds, Transition
from availmon.schema import Evidence, State
from probes.base import ERROR_MAX_CHARS, ProbeResult

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GOOD = ProbeResult(ok=True, latency=0.01)
SLOW = ProbeResult(ok=True, latency=2.0)
FAIL = ProbeResult(ok=False, error="connection refused")
CODES = {"g": GOOD, "s": SLOW, "f": FAIL}
#: What a crashing probe raises (code "c": the probe raised, no result).
CRASH = KeyError("x")


def step(machine: CheckState, code: str, at: datetime) -> Transition | None:
    if code == "c":
        return machine.crash(CRASH, at)
    return machine.observe(CODES[code], at)


def run(codes: str, thresholds: Thresholds | None = None) -> list[tuple[str, str, int]]:
    """Feed one probe per second; return (from, to, index of the probe it is dated at)."""
    machine = CheckState(thresholds or Thresholds(degraded_latency=1.0))
    out = []
    for i, code in enumerate(codes):
        t = step(machine, code, T0 + timedelta(seconds=i))
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


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        # Three crashes in a row (failures_to_down) make an up check unknown, dated at the
        # first of them; fewer change nothing.
        ("ggccc", [("unknown", "up", 0), ("up", "unknown", 2)]),
        ("ggcc", [("unknown", "up", 0)]),
        # Any result ends a run of crashes, a failure included.
        ("ggccgcc", [("unknown", "up", 0)]),
        ("ggccfcc", [("unknown", "up", 0)]),
        # Crashes never make a check down, however many.
        ("gg" + "c" * 10, [("unknown", "up", 0), ("up", "unknown", 2)]),
        # Further crashes of an unknown check emit nothing; a check never probed yet is
        # unknown already.
        ("ccccccc", []),
        # Out of unknown by the usual counts, dated at the first probe of the run: up after
        # two good probes, down after three failures.
        ("ggcccgg", [("unknown", "up", 0), ("up", "unknown", 2), ("unknown", "up", 5)]),
        ("ggcccfff", [("unknown", "up", 0), ("up", "unknown", 2), ("unknown", "down", 5)]),
        ("ggcccsss", [("unknown", "up", 0), ("up", "unknown", 2), ("unknown", "degraded", 5)]),
        # ... and from fresh probes only: the good run before the crashes does not count, so
        # one good probe after them is not enough.
        ("ggcccg", [("unknown", "up", 0), ("up", "unknown", 2)]),
        # A down or degraded check stays so however long its probe crashes: an outage ends
        # at the first good probe of the run that clears it, dated as without the crashes.
        ("ggfffcccccc", [("unknown", "up", 0), ("up", "down", 2)]),
        ("ggfffccccccgg", [("unknown", "up", 0), ("up", "down", 2), ("down", "up", 11)]),
        ("ggsssccccccgg", [("unknown", "up", 0), ("up", "degraded", 2), ("degraded", "up", 11)]),
    ],
)
def test_crashes(codes: str, expected: list[tuple[str, str, int]]) -> None:
    assert run(codes) == expected


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        # A crash between failures neither resets the failure run nor counts in it: down on
        # the third failure, dated at the first, exactly as "ggfff".
        ("ggfcff", [("unknown", "up", 0), ("up", "down", 2)]),
        ("ggfccfccf", [("unknown", "up", 0), ("up", "down", 2)]),
        # Two failures and crashes are not three failures.
        ("ggffcc", [("unknown", "up", 0)]),
        ("ggfcfcc", [("unknown", "up", 0)]),
        # Crashes between an outage's failures keep it whole: no transition until it clears,
        # and the recovery is where it would be without them.
        ("ggfffcfccfcgg", [("unknown", "up", 0), ("up", "down", 2), ("down", "up", 11)]),
        # Nor do they break the good run that clears it, or the slow run that degrades.
        ("ggfffgcg", [("unknown", "up", 0), ("up", "down", 2), ("down", "up", 5)]),
        ("ggscsccs", [("unknown", "up", 0), ("up", "degraded", 2)]),
    ],
)
def test_a_crash_is_not_a_result(codes: str, expected: list[tuple[str, str, int]]) -> None:
    assert run(codes) == expected
    assert run(codes.replace("c", "")) == [
        (frm, to, at - codes[:at].count("c")) for frm, to, at in expected
    ]


def test_crash_evidence_names_the_exception_made_safe_and_bounded() -> None:
    m = CheckState(Thresholds(successes_to_up=1))
    m.observe(GOOD, T0)
    assert m.crash(ValueError("first"), T0 + timedelta(seconds=1)) is None
    assert m.crash(ValueError("second"), T0 + timedelta(seconds=2)) is None
    t = m.crash(KeyError("x"), T0 + timedelta(seconds=3))
    assert t is not None
    assert (t.from_, t.to, t.at) == (State.UP, State.UNKNOWN, T0 + timedelta(seconds=1))
    assert t.evidence == Evidence(error="probe crashed: KeyError: 'x'", probes=3)
    assert (m.state, m.since) == (State.UNKNOWN, T0 + timedelta(seconds=1))
    assert m.last is GOOD  # no result was made up for the crashes
    assert m.crashed == "probe crashed: KeyError: 'x'"  # what the heartbeat shows
    m.observe(GOOD, T0 + timedelta(seconds=4))
    assert m.crashed is None  # a result since: the heartbeat shows it again

    m = CheckState(Thresholds(failures_to_down=1, successes_to_up=1))
    m.observe(GOOD, T0)
    t = m.crash(RuntimeError("\x1b[2J" + "y" * 1000), T0 + timedelta(seconds=1))
    assert t is not None
    assert t.evidence.error is not None
    assert t.evidence.error.startswith("probe crashed: RuntimeError: \\x1b[2Jyyy")
    assert len(t.evidence.error) == ERROR_MAX_CHARS
    assert t.evidence.error.endswith("…")


def test_crash_evidence_of_a_library_exception_names_its_module() -> None:
    m = CheckState(Thresholds(failures_to_down=1))
    m.observe(GOOD, T0)
    m.observe(GOOD, T0 + timedelta(seconds=1))
    t = m.crash(json.JSONDecodeError("Expecting value", "", 0), T0 + timedelta(seconds=2))
    assert t is not None
    assert t.evidence.error == (
        "probe crashed: json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)"
    )


def test_a_trap_ends_a_run_of_crashes() -> None:
    """A forced state is fresh knowledge: crashes before it do not count towards undoing it."""
    m = CheckState(Thresholds())
    m.observe(GOOD, T0)
    m.observe(GOOD, T0 + timedelta(seconds=1))
    m.crash(CRASH, T0 + timedelta(seconds=2))
    m.crash(CRASH, T0 + timedelta(seconds=3))
    m.force(State.UP, T0 + timedelta(seconds=4), Evidence(error="linkUp trap"))
    assert m.crash(CRASH, T0 + timedelta(seconds=5)) is None
    assert m.crash(CRASH, T0 + timedelta(seconds=6)) is None
    t = m.crash(CRASH, T0 + timedelta(seconds=7))
    assert t is not None
    assert (t.from_, t.to, t.at) == (State.UP, State.UNKNOWN, T0 + timedelta(seconds=5))


def test_a_crashed_probe_in_flight_during_a_trap_is_not_dated_before_it() -> None:
    m = CheckState(Thresholds(failures_to_down=1))
    m.observe(FAIL, T0)
    m.force(State.UP, T0 + timedelta(seconds=10), Evidence(error="linkUp trap"))
    t = m.crash(CRASH, T0 + timedelta(seconds=9))  # started before the trap
    assert t is not None
    assert (t.from_, t.to, t.at) == (State.UP, State.UNKNOWN, T0 + timedelta(seconds=10))
