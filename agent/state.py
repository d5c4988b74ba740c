"""The check state machine: probe results in, transitions out. Pure: no I/O, no clock.

An outage starts at the time of the *first* failed probe of the run that tripped it and ends
at the time of the first good probe of the run that cleared it (docs/architecture.md,
"The flow"); that is what makes the minutes right, whatever the detection delay.

A probe that crashes (raises: a bug in it or its library) is not a failure of the target and
moves no run of probes; but ``failures_to_down`` crashes in a row make an up check unknown, so
a check whose probe no longer runs stops showing "up" for ever (``CheckState.crash``). A down
or degraded check stays so until a good probe, as the design dates an outage's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from availmon.schema import Evidence, State
from probes.base import ERROR_MAX_CHARS, ProbeResult, peer_text


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


#: A run's time before its first probe (never read: a run is read only while it counts).
_NEVER = datetime.min


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


def crash_text(error: BaseException) -> str:
    """What a crashed probe's evidence says: the exception's type (with its module unless a
    built-in one, as a traceback names it) and its message. Made safe and bounded by the
    caller, as a probe's own error is."""
    kind = type(error)
    name = kind.__qualname__
    if kind.__module__ != "builtins":
        name = f"{kind.__module__}.{name}"
    try:
        message = str(error)
    except Exception:  # a broken __str__ must not crash the crash handling
        message = "(message unreadable)"
    return f"probe crashed: {name}: {message}" if message else f"probe crashed: {name}"


class CheckState:
    """Hysteresis for one check. ``observe`` returns a Transition when the state changes.

    Four runs of probes are counted, each as a count and the time of its first probe: the
    failures, the slow answers, the good answers, and the answers (good or slow: the run
    that can clear a down state). Kept as plain slots, not an object per run: an agent holds
    a state per check, a thousand of them (issue 9: in at most 60 MB). A run's time is read
    only while its count is above 0.

    A fifth run counts the probes that crashed in a row (``crash``): no result, so it moves
    none of the four; any result ends it.
    """

    __slots__ = (
        "_answering",
        "_answering_at",
        "_crash",
        "_crash_at",
        "_fail",
        "_fail_at",
        "_good",
        "_good_at",
        "_slow",
        "_slow_at",
        "crashed",
        "last",
        "since",
        "state",
        "t",
    )

    def __init__(self, thresholds: Thresholds, state: State = State.UNKNOWN) -> None:
        self.t = thresholds
        self.state = state
        self.since: datetime | None = None
        self.last: ProbeResult | None = None
        self._fail = self._slow = self._good = self._answering = self._crash = 0
        self._fail_at = self._slow_at = self._good_at = self._answering_at = _NEVER
        self._crash_at = _NEVER
        #: What the last probe's crash said, while no result has come since (the heartbeat
        #: shows it rather than the last result's stale latency and error).
        self.crashed: str | None = None

    def observe(self, result: ProbeResult, at: datetime) -> Transition | None:
        self.last = result
        self._crash = 0
        self.crashed = None
        verdict = classify(result, self.t)
        if verdict is Verdict.FAIL:
            if self._fail == 0:
                self._fail_at = at
            self._fail += 1
            self._slow = self._good = self._answering = 0
        else:
            self._fail = 0
            if self._answering == 0:
                self._answering_at = at
            self._answering += 1
            if verdict is Verdict.SLOW:
                if self._slow == 0:
                    self._slow_at = at
                self._slow += 1
                self._good = 0
            else:
                if self._good == 0:
                    self._good_at = at
                self._good += 1
                self._slow = 0
        return self._decide(verdict)

    def force(self, to: State, at: datetime, evidence: Evidence) -> Transition | None:
        """An out-of-band fact (a linkDown trap) changes state at once, without hysteresis."""
        self._fail = self._slow = self._good = self._answering = self._crash = 0
        self.crashed = None
        if to is self.state:
            return None
        return self._move(to, at, evidence)

    def crash(self, error: BaseException, at: datetime) -> Transition | None:
        """The probe started at ``at`` raised instead of giving a result.

        A bug in a probe is not an outage of the target: a crash is no failure and leaves
        the failure, slow, good and answering runs as they are (neither reset nor advanced),
        so a crash between the failures of an outage neither splits nor shortens it, and
        it never brings a check nearer down. But a check whose probe no longer runs is not
        monitored any more: left alone it would show "up" for ever. So ``failures_to_down``
        crashes in a row, with no result between them, make an up check unknown, dated at
        the first of them, as any other run is; what the runs held before is stale by then,
        so they start afresh and the usual counts take it out of unknown.

        A down or degraded check stays so: an outage ends at the first good probe of the run
        that clears it (docs/architecture.md), and crashes are no such probe. Ending it at
        the crash would stop its minutes and tell on-call "resolved" because a probe broke,
        and bugs live in error paths, which a down target exercises. Crashes of an unknown
        check change nothing. Of the exception only its text is kept, in the transition's
        evidence (its traceback would hold the probe's frames).
        """
        if self._crash == 0:
            self._crash_at = at
        self._crash += 1
        self.crashed = peer_text(crash_text(error), ERROR_MAX_CHARS)
        if self._crash < self.t.failures_to_down or self.state is not State.UP:
            return None
        self._fail = self._slow = self._good = self._answering = 0
        evidence = Evidence(error=self.crashed, probes=self._crash)
        return self._move(State.UNKNOWN, self._crash_at, evidence)

    def _decide(self, verdict: Verdict) -> Transition | None:
        t = self.t
        if self.state is not State.DOWN and self._fail >= t.failures_to_down:
            return self._move(State.DOWN, self._fail_at, self._evidence(self._fail))
        if self.state in (State.DOWN, State.UNKNOWN):
            if self._answering >= t.successes_to_up:
                # Answering again. Slow answers must reach the same count that makes an up
                # check degraded before they make a down one degraded; until then (or a good
                # probe) it is not yet known whether the service is slow or recovering.
                if verdict is Verdict.SLOW and self._slow < t.slow_to_degraded:
                    return None
                to = State.DEGRADED if verdict is Verdict.SLOW else State.UP
                return self._move(to, self._answering_at, self._evidence(self._answering))
            return None
        if self.state is State.UP and self._slow >= t.slow_to_degraded:
            return self._move(State.DEGRADED, self._slow_at, self._evidence(self._slow))
        if self.state is State.DEGRADED and self._good >= t.successes_to_up:
            return self._move(State.UP, self._good_at, self._evidence(self._good))
        return None

    def _evidence(self, probes: int) -> Evidence:
        last = self.last
        return Evidence(
            error=peer_text(last.error, ERROR_MAX_CHARS) if last and last.error else None,
            latency=last.latency if last else None,
            loss=last.loss if last else None,
            probes=probes,
        )

    def _move(self, to: State, at: datetime, evidence: Evidence) -> Transition:
        if self.since is not None and at < self.since:
            # A probe that was in flight when a trap forced the state is dated before it;
            # transitions must stay in time order or the collector pairs them wrongly.
            at = self.since
        transition = Transition(self.state, to, at, evidence)
        self.state = to
        self.since = at
        return transition
