"""Which sites are unreachable, decided from agents' MQTT status (retained, with a last will).

Pure bookkeeping, no I/O: the collector feeds it what it hears and asks it what to do. Rules
(docs/protocol.md, "Liveness"):
- an agent ``offline`` for longer than the grace period gets a provisional "site
  unreachable" outage, dated from when it was last heard;
- when it comes back and has replayed its spool (a heartbeat with an empty spool), its own
  record replaces the provisional one;
- when every agent is offline at once the fault is the broker's or the collector's, so no
  site outage is opened, and none is later dated from before that moment;
- an agent that says ``stopped`` was stopped on purpose: not an outage;
- an agent ``online`` whose heartbeats stop for ``collector.heartbeat_timeout`` (two
  intervals and a margin) is treated as offline at once, as if its last will had come: a
  cut link is noticed in about a minute at most, not only when the broker's keepalive fires
  (issue 8, part 6). Its next heartbeat brings it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

log = logging.getLogger(__name__)


@dataclass
class Liveness:
    grace: timedelta
    status: dict[str, str] = field(default_factory=dict)
    last_seen: dict[str, datetime] = field(default_factory=dict)
    offline_since: dict[str, datetime] = field(default_factory=dict)
    provisional: set[str] = field(default_factory=set)
    awaiting_replay: set[str] = field(default_factory=set)
    #: The end of the last moment when every agent was offline (nothing is dated before it).
    all_offline_until: datetime | None = None
    _all_offline: bool = False
    #: When each agent's latest heartbeat arrived, by the collector's clock: an agent's own
    #: clock may be off by minutes, and silence is the collector's to judge.
    last_heartbeat: dict[str, datetime] = field(default_factory=dict)
    #: Agents marked offline for missed heartbeats, and when.
    silenced: dict[str, datetime] = field(default_factory=dict)

    def heard(self, agent: str, when: datetime) -> None:
        """``when``: the message's own time where it has one (a queued heartbeat delivered
        late must not make a dead agent look alive until the collector's restart)."""
        self.last_seen[agent] = max(when, self.last_seen.get(agent, when))

    def set_status(self, agent: str, status: str, now: datetime) -> None:
        self.status[agent] = status
        if status != "offline":
            self.silenced.pop(agent, None)
        if status == "online":
            self.heard(agent, now)
            self.offline_since.pop(agent, None)
            if agent in self.provisional:
                self.awaiting_replay.add(agent)
        elif status == "offline":
            self.offline_since.setdefault(agent, now)
        else:  # stopped on purpose
            self.offline_since.pop(agent, None)
        # Agents stopped on purpose are out of the picture: they say nothing about a fault.
        watched = [s for s in self.status.values() if s != "stopped"]
        everyone_offline = len(watched) > 0 and all(s == "offline" for s in watched)
        if everyone_offline and not self._all_offline:
            log.warning(
                "every agent is offline: the fault is the broker's or the collector's; "
                "no site outages are opened for it"
            )
        if self._all_offline and not everyone_offline:
            self.all_offline_until = now
        self._all_offline = everyone_offline

    def heartbeat(self, agent: str, spool_depth: int, now: datetime) -> bool:
        """True when the agent's provisional outage should now be dropped."""
        self.heard(agent, now)
        if agent in self.awaiting_replay and spool_depth == 0:
            self.awaiting_replay.discard(agent)
            self.provisional.discard(agent)
            return True
        return False

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Agents whose provisional outage should open now, with its start."""
        if self._all_offline:
            return []
        out = []
        for agent, since in self.offline_since.items():
            if agent in self.provisional or now - since < self.grace:
                continue
            start = self.last_seen.get(agent, since)
            if self.all_offline_until is not None:
                start = max(start, self.all_offline_until)
            out.append((agent, start))
        return out

    def opened(self, agent: str) -> None:
        self.provisional.add(agent)

    def silent(self, now: datetime, timeout: timedelta, listening_since: datetime) -> list[str]:
        """Agents online whose heartbeats stopped ``timeout`` ago, counted from when the
        collector itself started listening (its own outage silences nobody). The caller
        marks each offline; they are remembered so their next heartbeat brings them back."""
        out = []
        for agent, status in self.status.items():
            if status != "online":
                continue
            last = max(self.last_heartbeat.get(agent, listening_since), listening_since)
            if now - last > timeout:
                self.silenced[agent] = now
                out.append(agent)
        return out

    def silent_returned(self, agent: str, received_at: datetime) -> bool:
        """Record a heartbeat; True when it revives an agent marked offline for silence."""
        self.last_heartbeat[agent] = max(received_at, self.last_heartbeat.get(agent, received_at))
        since = self.silenced.get(agent)
        if since is not None and received_at > since - timedelta(seconds=1):
            del self.silenced[agent]
            return True
        return False
