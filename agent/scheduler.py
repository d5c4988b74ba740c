"""Runs every check of one site on its interval, without drift, and feeds the state machine.

Start times are spread across the interval by a stable hash of the check name, so forty
checks with a 30 s interval do not all fire at second 0. ICMP checks that share interval,
timeout and options are pinged as one batch through one socket; SNMP checks of one device
(same credentials, interval and timeout) share one request. A probe type's session (the HTTP
client and its TLS contexts, the SNMP engine) is built once and shared by all its checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.state import CheckState, Thresholds, Transition
from availmon.clock import utcnow
from availmon.config import Check
from availmon.errors import StartupError
from availmon.logs import Sparse
from availmon.schema import CheckStatus, Evidence, State
from probes.base import Poll, ProbeResult, ProbeSession, ProbeSpec, timeout_text
from probes.registry import REGISTRY

log = logging.getLogger(__name__)

#: At most one traceback this often for each check whose probe crashes (seconds).
CRASH_LOG_INTERVAL = 600.0

#: Called with every transition; the agent spools and publishes it.
TransitionSink = Callable[[Check, Transition, datetime], Awaitable[None]]
#: Called with every probe result (tests and the live board use it).
ResultHook = Callable[[Check, ProbeResult, datetime], None]


@dataclass(slots=True)
class _Slot:
    check: Check
    spec: ProbeSpec[Any]
    options: Any
    state: CheckState
    #: Wall time of the last probe, seconds (the batch's, for batched checks).
    duration: float | None = None


@dataclass(slots=True)
class _Group:
    """Checks probed together, and where their schedule stands (``base + tick * interval``
    is the next due time)."""

    slots: list[_Slot]
    session: ProbeSession | None
    base: float
    seq: int
    name: str
    tick: int = 0


class _Shared:
    """Equal parsed options and thresholds made once and shared by the checks that have
    them (both frozen): of 250 HTTP checks most have the same options, and a parsed model
    each cost about 0.6 KB (issue 9: 1,000 checks in at most 60 MB). Made per config read,
    so a reload parses (and reads secret files) afresh."""

    __slots__ = ("_options", "_thresholds")

    def __init__(self) -> None:
        self._options: dict[tuple[str, str], Any] = {}
        self._thresholds: dict[Thresholds, Thresholds] = {}

    def options(self, check: Check) -> Any:
        key = (check.type, json.dumps(check.options, sort_keys=True, default=repr))
        parsed = self._options.get(key)
        if parsed is None:
            parsed = self._options[key] = check.parsed_options()
        return parsed

    def thresholds(self, thresholds: Thresholds) -> Thresholds:
        return self._thresholds.setdefault(thresholds, thresholds)


def _finite(value: Any) -> float | None:
    """A number fit for the heartbeat's measurements, else None (not measured)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _measures(last: ProbeResult | None, now: datetime) -> dict[str, float | None]:
    """Loss, jitter and certificate expiry from the last result's own fields and details;
    each is None when this probe did not measure it (issue 12: absent, not 0)."""
    if last is None:
        return {"loss": None, "jitter": None, "cert_expires_in": None}
    loss = _finite(last.loss)
    jitter_ms = _finite(last.details.get("jitter_ms"))
    expires_in = None
    not_after = last.details.get("cert_not_after")
    if isinstance(not_after, str):
        try:
            when = datetime.strptime(not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            when = None
        if when is not None:
            expires_in = (when - now).total_seconds()
    return {
        "loss": loss if loss is not None and 0 <= loss <= 100 else None,
        "jitter": jitter_ms / 1000 if jitter_ms is not None and jitter_ms >= 0 else None,
        "cert_expires_in": expires_in,
    }


def offset(name: str, interval: float) -> float:
    """A stable start offset within the interval, spreading checks out."""
    return (zlib.crc32(name.encode()) % 10_000) / 10_000 * interval


def _ended_after_stop(work: asyncio.Task[None]) -> None:
    """The old checks' end, when a stop came while a reload waited for it: logged, where
    asyncio would say only that an exception was never retrieved."""
    if not work.cancelled() and work.exception() is not None:
        log.warning("checks stopped with an error: %s", work.exception())


class Scheduler:
    def __init__(
        self,
        checks: Sequence[Check],
        on_transition: TransitionSink,
        *,
        on_result: ResultHook | None = None,
        site: str = "",
    ) -> None:
        self.site = site
        self._slots: dict[str, _Slot] = {}
        shared = _Shared()
        for check in checks:
            self._slots[check.name] = self._slot(check, shared)
        self._on_transition = on_transition
        self._on_result = on_result
        #: Probes that crashed, by check: a traceback at most every ten minutes each (a
        #: peer's answer that trips a probe's bug does so at every run).
        self._crashes: dict[str, Sparse] = {}
        #: Set by ``reload``: the running ticks stop and start again with the new slots.
        self._restart = asyncio.Event()

    @staticmethod
    def _slot(check: Check, shared: _Shared, state: CheckState | None = None) -> _Slot:
        thresholds = shared.thresholds(
            Thresholds(
                failures_to_down=check.failures_to_down,
                successes_to_up=check.successes_to_up,
                slow_to_degraded=check.slow_to_degraded,
                degraded_latency=check.degraded_latency,
                degraded_loss=check.degraded_loss,
            )
        )
        if state is None:
            state = CheckState(thresholds)
        else:
            state.t = thresholds
        return _Slot(check, REGISTRY[check.type], shared.options(check), state)

    def reload(self, checks: Sequence[Check]) -> tuple[list[str], list[str], list[str]]:
        """Apply a new list of checks (SIGHUP); returns the names added, changed, removed.

        An unchanged check keeps its slot (state, hysteresis counters, last result); a changed
        one with the same type and target keeps its state and counters under its new
        settings; one whose type or target changed is a new check and starts unknown.
        """
        old = self._slots
        new: dict[str, _Slot] = {}
        shared = _Shared()  # options read afresh: a secret file may have changed
        added: list[str] = []
        changed: list[str] = []
        for check in checks:
            prev = old.get(check.name)
            if prev is not None and prev.check == check:
                new[check.name] = prev
            elif prev is not None and (prev.check.type, prev.check.target) == (
                check.type,
                check.target,
            ):
                new[check.name] = self._slot(check, shared, prev.state)
                changed.append(check.name)
            else:
                new[check.name] = self._slot(check, shared)
                (changed if prev is not None else added).append(check.name)
        removed = [name for name in old if name not in new]
        self._slots = new
        if added or changed or removed:
            self._restart.set()
        return added, changed, removed

    def statuses(self) -> Iterator[CheckStatus]:
        """Every check's status, made as it is consumed (``schema.heartbeat_json`` writes
        each before the next is made: a list of 1,000 would be 1.2 MB, issue 9)."""
        now = utcnow()
        for slot in self._slots.values():
            last = slot.state.last
            crashed = slot.state.crashed  # the probe raised since its last result
            yield CheckStatus(
                check=slot.check.name,
                area=slot.check.area,
                state=slot.state.state,
                since=slot.state.since,
                latency=last.latency if last and crashed is None else None,
                error=crashed or ((last.error or "")[:500] or None if last else None),
                **_measures(last if crashed is None else None, now),
                duration=_finite(slot.duration),
            )

    def state_of(self, name: str) -> State:
        return self._slots[name].state.state

    def groups(self) -> list[list[_Slot]]:
        """Checks probed together: an ICMP batch, one SNMP device, or one check alone."""
        groups: dict[Hashable, list[_Slot]] = {}
        for slot in self._slots.values():
            check, spec = slot.check, slot.spec
            key: Hashable
            if spec.group_key is not None:
                key = (check.type, check.interval, check.timeout)
                key += (spec.group_key(check.target, slot.options),)
            elif spec.probe_many is not None:
                key = (check.type, check.interval, check.timeout, slot.options)
            else:
                key = ("check", check.name)
            groups.setdefault(key, []).append(slot)
        return list(groups.values())

    async def run(self) -> None:
        """Probe until cancelled; a reload stops the ticks and starts them again on the new
        slots (the state lives in the slots, so nothing of an unchanged check is lost)."""
        while True:
            self._restart.clear()
            work = asyncio.create_task(self._run_slots(), name="checks")
            restart = asyncio.create_task(self._restart.wait(), name="checks-reload")
            try:
                await asyncio.wait([work, restart], return_when=asyncio.FIRST_COMPLETED)
            finally:
                restart.cancel()
                work.cancel()
                # asyncio.wait, not 'await work' under suppress(CancelledError): a stop that
                # comes meanwhile is this task's own cancellation, and must come out.
                try:
                    await asyncio.wait([work])
                except asyncio.CancelledError:
                    work.add_done_callback(_ended_after_stop)  # its error is not lost
                    raise
            if work.done() and not work.cancelled():
                work.result()  # a StartupError ends the agent with its reason

    async def _run_slots(self) -> None:
        async with AsyncExitStack() as stack:
            sessions: dict[str, ProbeSession] = {}
            for slot in self._slots.values():  # one per probe type, until the next reload
                factory = slot.spec.session
                if factory is not None and slot.spec.name not in sessions:
                    sessions[slot.spec.name] = await stack.enter_async_context(factory())
            async with asyncio.TaskGroup() as tg:
                await self._timeline(tg, sessions)

    async def _timeline(self, tg: asyncio.TaskGroup, sessions: dict[str, ProbeSession]) -> None:
        """Start every group's probes when they are due, from one queue of due times.

        One task waits for the next due time and starts a short-lived task per probe (a
        group never runs twice at once: its next time is queued when its probe ends). A
        long-lived task per group cost about 1.5 KB each, held for the agent's life (issue 9:
        1,000 checks in at most 60 MB); at rest only the probes running have a task.
        """
        loop = asyncio.get_running_loop()
        due: list[tuple[float, int, _Group]] = []
        ready = asyncio.Event()  # a probe ended and queued its next time
        for seq, members in enumerate(self.groups()):
            first = members[0].check
            kind = "check" if len(members) == 1 else "batch"
            group = _Group(
                members,
                sessions.get(members[0].spec.name),
                loop.time() + offset(first.name, first.interval),
                seq,
                f"{kind}:{first.name}" + (f"+{len(members) - 1}" if len(members) > 1 else ""),
            )
            heapq.heappush(due, (group.base, seq, group))

        async def run(group: _Group) -> None:
            await self._probe(group.slots, group.session)
            # Skip slots missed while a slow probe ran, rather than bursting to catch up.
            interval = group.slots[0].check.interval
            group.tick = max(group.tick + 1, int((loop.time() - group.base) // interval) + 1)
            heapq.heappush(due, (group.base + group.tick * interval, group.seq, group))
            ready.set()

        while True:
            now = loop.time()
            while due and due[0][0] <= now:
                group = heapq.heappop(due)[2]
                tg.create_task(run(group), name=group.name)
            ready.clear()
            if not due:
                await ready.wait()  # every group is probing (or none): until one ends
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due[0][0]):
                    await ready.wait()

    async def _probe(self, slots: list[_Slot], session: ProbeSession | None = None) -> None:
        check = slots[0].check
        at = utcnow()
        started = time.perf_counter()
        results: list[ProbeResult] | None = None  # stays None when the probe crashed
        unknown: list[tuple[_Slot, Transition]] = []
        try:
            async with asyncio.timeout(check.timeout + 1.0):
                results = await self._results(slots, session)
        except TimeoutError:
            results = [ProbeResult(ok=False, error=timeout_text(check.timeout)) for _ in slots]
        except StartupError:
            raise  # cannot probe at all: stop the agent with the reason, not a false outage
        except Exception as error:
            # A bug in a probe is not an outage of the target: log it and record no result.
            # Yet a check whose probe crashes at every run is not monitored any more, so the
            # state machine counts the crashes: enough in a row make the check unknown
            # (CheckState.crash), published like any transition, rather than leave it showing
            # its last state for ever. A batch's crash is each of its checks'.
            count = self._crashes.setdefault(check.name, Sparse(CRASH_LOG_INTERVAL)).due()
            if count is not None:
                log.exception(
                    "probe %s crashed %d time(s) since the last such line (at most one"
                    " every %g minutes); no result recorded",
                    check.name,
                    count,
                    CRASH_LOG_INTERVAL / 60,
                )
            for slot in slots:
                transition = slot.state.crash(error, at)
                if transition is not None:
                    unknown.append((slot, transition))
        if results is None:
            # Emitted out of the handler: a spool error then is not one "during" the crash.
            for slot, transition in unknown:
                await self._emit(slot, transition)
            return
        took = time.perf_counter() - started
        for slot, result in zip(slots, results, strict=True):
            slot.duration = took
            await self._observe(slot, result, at)

    @staticmethod
    async def _results(slots: list[_Slot], session: ProbeSession | None) -> list[ProbeResult]:
        first = slots[0]
        target, timeout = first.check.target, first.check.timeout
        if session is not None:
            if len(slots) == 1:
                previous = first.state.last
                return [await session.probe(target, timeout, first.options, previous=previous)]
            polls = [Poll(s.check.target, s.options, s.state.last) for s in slots]
            return await session.probe_group(polls, timeout)
        if len(slots) == 1:
            return [await first.spec.probe(target, timeout, first.options)]
        assert first.spec.probe_many is not None
        return await first.spec.probe_many([s.check.target for s in slots], timeout, first.options)

    async def _observe(self, slot: _Slot, result: ProbeResult, at: datetime) -> None:
        if self._on_result is not None:
            self._on_result(slot.check, result, at)
        transition = slot.state.observe(result, at)
        if transition is not None:
            await self._emit(slot, transition)
        elif result.details.get("rebooted") is True:
            # The device answered throughout, but it restarted: worth an event of its own
            # (from == to, so it changes no outage), as the board asks about reboots.
            state = slot.state.state
            note = Evidence(
                latency=result.latency, cause="device rebooted (sysUpTime went backwards)"
            )
            await self._emit(slot, Transition(state, state, at, note))

    async def _emit(self, slot: _Slot, transition: Transition) -> None:
        dep = slot.check.depends_on
        # A parent at another site (``dc/internet-link``) is the collector's to resolve.
        if dep and dep.startswith(f"{self.site}/"):
            dep = dep.split("/", 1)[1]
        if dep and dep in self._slots and transition.to in (State.DOWN, State.DEGRADED):
            parent = self._slots[dep].state
            dep_state = parent.state
            # An unknown parent holds its dependants' alerts back (at start it may be about
            # to go down), but not one unknown because its probe crashes: that parent is not
            # known to be down, and the report counts the dependant's time as its own.
            if dep_state is State.DOWN or (dep_state is State.UNKNOWN and parent.crashed is None):
                evidence = transition.evidence.model_copy(
                    update={"cause": f"depends on {dep} ({dep_state.value})"}
                )
                transition = Transition(transition.from_, transition.to, transition.at, evidence)
        log.info(
            "check %s/%s: %s -> %s at %s (%s)",
            self.site,
            slot.check.name,
            transition.from_.value,
            transition.to.value,
            transition.at.isoformat(),
            transition.evidence.error or "ok",
        )
        await self._on_transition(slot.check, transition, utcnow())

    async def force(self, name: str, to: State, at: datetime, evidence: Evidence) -> None:
        """Apply an out-of-band fact (an SNMP linkDown trap) to a check at once."""
        slot = self._slots.get(name)
        if slot is None:
            return  # removed by a reload since the trap receiver matched it
        transition = slot.state.force(to, at, evidence)
        if transition is not None:
            await self._emit(slot, transition)
