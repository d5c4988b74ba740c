"""Which of an agent's seqs never arrived (issue 8, part 2). Pure bookkeeping, no I/O.

An agent numbers its events 1, 2, 3 ... from its spool's ``first_seq``, so the collector
knows what to expect: every seq from there up to the highest it has seen (and, once the
agent's spool is empty, up to the last seq its heartbeat names). A seq is accounted for when
it is stored, refused for good, or reported dropped at the agent's spool cap. One that is
still unaccounted for ``grace`` after it was first expected is *missing*: logged, counted
(``availmon_events_missing``) and shown on the board. A missing seq that arrives later
stops counting.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class SeqSet:
    """Disjoint inclusive ranges of seqs, kept sorted; adding in order is O(log n)."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, lo: int, hi: int | None = None) -> None:
        hi = lo if hi is None else hi
        i = bisect.bisect_left(self.ends, lo - 1)  # first range that could touch [lo, hi]
        j = i
        while j < len(self.starts) and self.starts[j] <= hi + 1:
            lo, hi = min(lo, self.starts[j]), max(hi, self.ends[j])
            j += 1
        self.starts[i:j] = [lo]
        self.ends[i:j] = [hi]

    def highest(self) -> int | None:
        return self.ends[-1] if self.ends else None

    def lowest(self) -> int | None:
        return self.starts[0] if self.starts else None

    def holes(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges within ``[lo, hi]`` not covered."""
        out = []
        at = lo
        i = max(bisect.bisect_right(self.starts, lo) - 1, 0)
        while at <= hi and i < len(self.starts):
            if self.ends[i] < at:
                i += 1
                continue
            if self.starts[i] > at:
                out.append((at, min(self.starts[i] - 1, hi)))
            at = max(at, self.ends[i] + 1)
            i += 1
        if at <= hi:
            out.append((at, hi))
        return out


@dataclass
class AgentSeqs:
    seen: SeqSet = field(default_factory=SeqSet)
    first_seq: int | None = None
    #: The last seq the agent says it assigned, from a heartbeat sent with an empty spool.
    settled: int = 0
    #: ``(from_seq, when)``: seqs from ``from_seq`` up were first expected at ``when``.
    expected: list[tuple[int, float]] = field(default_factory=list)
    reported: set[tuple[int, int]] = field(default_factory=set)
    missing: int = 0


@dataclass
class Gaps:
    grace: float
    agents: dict[str, AgentSeqs] = field(default_factory=dict)

    def _agent(self, agent: str) -> AgentSeqs:
        return self.agents.setdefault(agent, AgentSeqs())

    def seen(
        self,
        agent: str,
        ranges: Iterable[tuple[int, int]],
        now: float,
        first_seq: int | None = None,
    ) -> None:
        """Seqs stored (or accounted for), from a batch; at start, what the store already
        holds (gaps in it are expected from ``now``) with where the agent's numbering last
        started, as the store kept it."""
        a = self._agent(agent)
        self._first(a, first_seq)
        for lo, hi in ranges:
            a.seen.add(lo, hi)
        self._expect(a, now)

    def heartbeat(
        self, agent: str, last_seq: int, first_seq: int | None, settled: bool, now: float
    ) -> None:
        """``settled``: the agent's spool held nothing when it sent this heartbeat, so every
        seq up to ``last_seq`` has been delivered (or dropped) for good."""
        a = self._agent(agent)
        self._first(a, first_seq)
        if settled:
            a.settled = max(a.settled, last_seq)
        self._expect(a, now)

    @staticmethod
    def _first(a: AgentSeqs, first_seq: int | None) -> None:
        """An agent numbers afresh from the clock each time its spool opens (or a new spool
        starts): older seqs are moot. Only ever up: a message delivered late, from before
        the agent's restart, carries the older start."""
        if first_seq is not None:
            a.first_seq = max(first_seq, a.first_seq or first_seq)

    def _floor(self, a: AgentSeqs) -> int | None:
        return a.first_seq if a.first_seq is not None else a.seen.lowest()

    def _high(self, a: AgentSeqs) -> int:
        return max(a.seen.highest() or 0, a.settled)

    def _expect(self, a: AgentSeqs, now: float) -> None:
        high = self._high(a)
        top = a.expected[-1][0] if a.expected else None
        if top is None:
            floor = self._floor(a)
            if floor is not None and high >= floor:
                a.expected.append((floor, now))
                a.expected.append((high + 1, -1.0))  # sentinel: the next seq not yet expected
            return
        if high + 1 > top:
            a.expected[-1] = (top, now)
            a.expected.append((high + 1, -1.0))

    def _since(self, a: AgentSeqs, seq: int) -> float:
        i = bisect.bisect_right([s for s, _ in a.expected], seq) - 1
        return a.expected[max(i, 0)][1]

    def evaluate(self, now: float) -> dict[str, int]:
        """Missing seqs per agent (past the grace); logs each newly missing range once."""
        out = {}
        for agent, a in self.agents.items():
            floor = self._floor(a)
            high = self._high(a)
            missing = 0
            if floor is not None and a.expected:
                for lo, hi in a.seen.holes(floor, high):
                    # Split the hole by when each part was first expected.
                    cuts = [s for s, _ in a.expected if lo < s <= hi]
                    for part_lo, part_hi in zip(
                        [lo, *cuts], [*(c - 1 for c in cuts), hi], strict=True
                    ):
                        since = self._since(a, part_lo)
                        if since < 0 or now - since < self.grace:
                            continue
                        missing += part_hi - part_lo + 1
                        if (part_lo, part_hi) not in a.reported:
                            a.reported.add((part_lo, part_hi))
                            log.error(
                                "agent %s: seqs %d-%d (%d events) never arrived within %.0f s:"
                                " lost between the agent and this collector, or stored"
                                " here and lost since (a store restored from a backup)",
                                agent,
                                part_lo,
                                part_hi,
                                part_hi - part_lo + 1,
                                self.grace,
                            )
            if a.missing and not missing:
                if floor is not None and any(lo < floor for lo, _ in a.reported):
                    # An agent numbers afresh from the clock each time its spool opens (a
                    # restart): what it had not delivered before is not waited for any more.
                    log.warning(
                        "agent %s: seqs counted missing are below where its numbering now"
                        " starts (%d; the agent restarted): no longer counted",
                        agent,
                        floor,
                    )
                else:
                    log.info("agent %s: every missing seq has now arrived", agent)
            a.missing = missing
            out[agent] = missing
        return out
