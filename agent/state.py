"""The check state machine: probe results in, transitions out. Pure: no I/O, no clock.

An outage starts at the time of the *first* failed probe of the run that tripped it and ends
at the time of the first good probe of the run that cleared it (shared/DESIGN.md, "Check
state"); that is what makes the minutes right, whatever the detection delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from availmon.schema import Evidence, State
from probes.base import ProbeResult


class Verdict(Enum):
    GOOD = "good"
    SLOW = "slow"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Thresholds:
    failures_to_down: int = 3
    successes_to_up: int = 2
    slow_to_degraded: int = 3
    degraded_latency: float | None = None  # seconds
    degraded_loss: float | None = None  # percent


@dataclass(frozen=True)
class Transition:
    from_: State
    to: State
    at: datetime  # first probe of the run that caused it
    evidence: Evidence


def classify(result: ProbeResult, t: Thresholds) -> Verdict:
    if not result.ok:
        return Verdict.FAIL
    if result.degraded:
        return Verdict.SLOW
    latency = result.latency
    if t.degraded_latency is not None and latency is not None and latency > t.degraded_latency:
        return Verdict.SLOW
    if t.degraded_loss is not None and result.loss is not None and result.loss > t.degraded_loss:
        return Verdict.SLOW
    return Verdict.GOOD


@dataclass(slots=True)
class _Run:
    count: int = 0
    start: datetime | None = None

    def extend(self, at: datetime) -> None:
        if self.count == 0:
            self.start = at
        self.count += 1

    def reset(self) -> None:
        self.count, self.start = 0, None


class CheckState:
    """Hysteresis for one check. ``observe`` returns a Transition when the state changes."""

    __slots__ = ("_answering", "_fail", "_good", "_slow", "last", "since", "state", "t")

    def __init__(self, thresholds: Thresholds, state: State = State.UNKNOWN) -> None:
        self.t = thresholds
        self.state = state
        self.since: datetime | None = None
        self.last: ProbeResult | None = None
        self._fail = _Run()
        self._slow = _Run()
        self._good = _Run()
        self._answering = _Run()  # good or slow: the run that can clear a down state

    def observe(self, result: ProbeResult, at: datetime) -> Transition | None:
        self.last = result
        verdict = classify(result, self.t)
        if verdict is Verdict.FAIL:
            self._fail.extend(at)
            self._slow.reset()
            self._good.reset()
            self._answering.reset()
        else:
            self._fail.reset()
            self._answering.extend(at)
            if verdict is Verdict.SLOW:
                self._slow.extend(at)
                self._good.reset()
            else:
                self._good.extend(at)
                self._slow.reset()
        return self._decide(verdict)

    def force(self, to: State, at: datetime, evidence: Evidence) -> Transition | None:
        """An out-of-band fact (a linkDown trap) changes state at once, without hysteresis."""
        for run in (self._fail, self._slow, self._good, self._answering):
            run.reset()
        if to is self.state:
            return None
        return self._move(to, at, evidence)

    def _decide(self, verdict: Verdict) -> Transition | None:
        t = self.t
        if self.state is not State.DOWN and self._fail.count >= t.failures_to_down:
            return self._move(State.DOWN, self._fail.start, self._evidence(self._fail))
        if self.state in (State.DOWN, State.UNKNOWN):
            if self._answering.count >= t.successes_to_up:
                # Answering again. Slow answers must reach the same count that makes an up
                # check degraded before they make a down one degraded; until then (or a good
                # probe) it is not yet known whether the service is slow or recovering.
                if verdict is Verdict.SLOW and self._slow.count < t.slow_to_degraded:
                    return None
                to = State.DEGRADED if verdict is Verdict.SLOW else State.UP
                return self._move(to, self._answering.start, self._evidence(self._answering))
            return None
        if self.state is State.UP and self._slow.count >= t.slow_to_degraded:
            return self._move(State.DEGRADED, self._slow.start, self._evidence(self._slow))
        if self.state is State.DEGRADED and self._good.count >= t.successes_to_up:
            return self._move(State.UP, self._good.start, self._evidence(self._good))
        return None

    def _evidence(self, run: _Run) -> Evidence:
        last = self.last
        return Evidence(
            error=last.error[:500] if last and last.error else None,
            latency=last.latency if last else None,
            loss=last.loss if last else None,
            probes=run.count,
        )

    def _move(self, to: State, at: datetime | None, evidence: Evidence) -> Transition:
        assert at is not None, "a run that trips a transition has a start"
        if self.since is not None and at < self.since:
            # A probe that was in flight when a trap forced the state is dated before it;
            # transitions must stay in time order or the collector pairs them wrongly.
            at = self.since
        transition = Transition(self.state, to, at, evidence)
        self.state = to
        self.since = at
        return transition
