"""From MQTT message to stored fact: validate, reject by reason, commit, confirm, then
acknowledge.

Each event of a batch is validated on its own (``validate_event``): one bad event is
rejected and counted, the rest are stored. After the commit the collector confirms to each
agent, on its ``ack`` topic, which seqs it holds; only then is the PUBACK of each QoS 1
message sent (paho-mqtt's manual ack, which aiomqtt 2.5 does not expose), so a crash
between receipt and commit means redelivery, which idempotent ingest absorbs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from pydantic import Field, ValidationError

from availmon.clock import from_iso
from availmon.config import Estate
from availmon.schema import (
    MAX_BATCH_EVENTS,
    TOPIC_ROOT,
    Event,
    EventBatch,
    Heartbeat,
    parse_topic,
)
from availmon.text import terminal

SUBSCRIPTIONS = [
    (f"{TOPIC_ROOT}/+/+/events", 1),
    (f"{TOPIC_ROOT}/+/+/event", 1),  # the single-event topic of earlier agents (upgrade)
    (f"{TOPIC_ROOT}/+/+/heartbeat", 1),
    # Agents' status, and collectors' presence (availmon/v1/_collectors/<id>/status).
    (f"{TOPIC_ROOT}/+/+/status", 1),
]
#: In a collector pair, also the leader's receipts for alert messages it delivered (issue 11).
PAIR_SUBSCRIPTIONS = [(f"{TOPIC_ROOT}/_collectors/+/alerts", 1)]
STATUSES = ("online", "offline", "stopped")


class AckingClient(aiomqtt.Client):
    """aiomqtt with paho's manual acknowledgement switched on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)

    def ack(self, message: aiomqtt.Message) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def send(self, topic: str, payload: bytes) -> None:
        """Queue a QoS 1 publish without awaiting its PUBACK (paho sends it in order and
        keeps it in flight): confirmations must not hold up the next commit."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish to {topic}")


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of metrics.REJECT_REASONS
    detail: str


#: Refusals that depend on the collector's config or clock, not on the event: the agent keeps
#: such an event and sends it again (a collector whose config is behind the agent's, or an
#: agent whose clock runs fast, must delay an event, never destroy it). Only an event that is
#: wrong in itself is confirmed as refused, which lets the agent drop it.
RETRYABLE = frozenset({"unknown_check", "unknown_area", "area_mismatch", "future", "unknown_site"})


@dataclass(frozen=True)
class RejectedEvent:
    """One event of a batch refused on its own; ``seq`` when it could be read, so the agent
    can be told to stop sending it."""

    seq: int | None
    verdict: Rejected


@dataclass(frozen=True)
class Accepted:
    kind: str  # events | heartbeat | status
    site: str
    agent: str
    events: tuple[Event, ...] = ()
    #: Events of the batch refused one by one (the others are still stored).
    refused: tuple[RejectedEvent, ...] = ()
    #: Seq ranges the agent's spool dropped at its cap (accounted for, not missing).
    dropped: tuple[tuple[int, int], ...] = ()
    first_seq: int | None = None
    heartbeat: Heartbeat | None = None
    status: str | None = None
    #: Events accepted for a check (or area) the config no longer lists, from the history.
    removed_check: int = 0
    #: Check statuses left out of the heartbeat: not in the config.
    ignored_checks: int = 0

    @property
    def event(self) -> Event | None:
        """The one event of a single-event message (tests and the upgrade path)."""
        return self.events[0] if len(self.events) == 1 else None


@dataclass(frozen=True)
class Known:
    """A (site, check, area) the store holds events for although the config does not list it
    (a check removed, or moved to another area): see ``removed_check_grace``."""

    last_received: datetime
    open_outage: bool = False


#: ``(site, check, area)`` -> what the store knew of it when the collector started.
History = Mapping[tuple[str, str, str], Known]
NO_HISTORY: History = {}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return terminal(f"{loc}: {err['msg']}"[:300])


def configured_area(estate: Estate, site: str, check: str) -> str | None:
    """The area the config gives this site's check, or None when it has no such check."""
    return estate.check_areas().get((site, check))


def _future(what: str, at: datetime, now: datetime, estate: Estate) -> Rejected | None:
    if at > now + timedelta(seconds=estate.collector.max_future_skew):
        return Rejected("future", f"{what} {at.isoformat()} is in the future")
    return None


@dataclass(frozen=True)
class Rules:
    """What ``check_event`` checks an event against, worked out once per message rather
    than once per event (a batch holds hundreds; issue 8's throughput)."""

    estate: Estate
    now: datetime
    history: History
    #: ``(site, check)`` -> area, from the config.
    areas: Mapping[tuple[str, str], str]
    #: The latest time an event may carry (``now`` plus the allowed clock skew).
    latest: datetime
    grace: timedelta

    @classmethod
    def of(cls, estate: Estate, now: datetime, history: History = NO_HISTORY) -> Rules:
        cfg = estate.collector
        return cls(
            estate,
            now,
            history,
            estate.check_areas(),
            now + timedelta(seconds=cfg.max_future_skew),
            timedelta(seconds=cfg.removed_check_grace),
        )


def check_event(
    event: Event, estate: Estate, now: datetime, history: History = NO_HISTORY
) -> Rejected | None:
    """Pure: whether one event (already a valid ``Event``) may be stored, checked against the
    config; None when it may. Every rule on a single event lives here (``judge``), so each
    event of a batch is checked on its own (issue 15)."""
    return judge(event, Rules.of(estate, now, history))


def judge(event: Event, rules: Rules) -> Rejected | None:
    """``check_event`` with its inputs worked out beforehand.

    The event's check and area must be the config's, or a (site, check, area) the store
    already holds events for, within ``removed_check_grace`` of the last one or while its
    outage is open: an agent's login cannot invent checks or areas (an invented area used to
    join the combined KPI), and a check just removed still gets its late, spooled events.
    """
    if event.id != f"{event.agent}:{event.seq}":
        return Rejected("invalid", f"id {event.id!r} is not agent:seq")
    if event.at > rules.latest or event.detected_at > rules.latest:
        what, at = (
            ("at", event.at) if event.at > rules.latest else ("detected_at", event.detected_at)
        )
        return Rejected("future", f"event {what} {at.isoformat()} is in the future")
    estate = rules.estate
    if event.site not in estate.sites:
        return Rejected("unknown_site", f"site {event.site!r} is not in the estate config")
    area = rules.areas.get((event.site, event.check))
    if area == event.area:
        return None
    known = rules.history.get((event.site, event.check, event.area))
    if known is not None and (known.open_outage or rules.now - known.last_received <= rules.grace):
        return None
    if area is None:
        return Rejected("unknown_check", f"site {event.site!r} has no check {event.check!r}")
    if event.area not in estate.areas:
        return Rejected("unknown_area", f"no area {event.area!r} in the estate config")
    return Rejected(
        "area_mismatch", f"check {event.check!r} is in area {area!r}, not {event.area!r}"
    )


def check_heartbeat(hb: Heartbeat, estate: Estate, now: datetime) -> Rejected | Heartbeat:
    """Pure: the heartbeat with only the check statuses the config lists (check and area), or
    why it is refused. Statuses of other checks are left out: they once made permanent rows
    and per-check metrics by the thousand (issue 15)."""
    if (late := _future("heartbeat at", hb.at, now, estate)) is not None:
        return late
    for c in hb.checks:
        if c.since is not None and (late := _future("since", c.since, now, estate)) is not None:
            return late
    kept = [c for c in hb.checks if configured_area(estate, hb.site, c.check) == c.area]
    if len(kept) == len(hb.checks):
        return hb
    return hb.model_copy(update={"checks": kept})


def validate(
    topic: str,
    payload: bytes,
    *,
    estate: Estate,
    now: datetime,
    history: History = NO_HISTORY,
) -> Accepted | Rejected:
    """Pure: decide what a message is, or why it is refused. Never raises. A batch is
    accepted as a whole when its envelope is sound; each event in it is then judged alone."""
    cfg = estate.collector
    if len(payload) > cfg.max_payload_bytes:
        return Rejected("oversized", f"{len(payload)} bytes > {cfg.max_payload_bytes}")
    parsed = parse_topic(topic)
    if parsed is None:
        return Rejected("bad_topic", terminal(topic[:200]))
    site, agent, kind = parsed
    if site not in estate.sites:
        return Rejected("unknown_site", f"site {site!r} is not in the estate config")
    if estate.agent_id(site) != agent:
        return Rejected("agent_mismatch", f"agent {agent!r} is not site {site!r}'s agent")
    if kind == "status":
        text = payload.decode("utf-8", "replace").strip()
        if text not in STATUSES:
            return Rejected("malformed", f"status {terminal(text[:50])!r}")
        return Accepted("status", site, agent, status=text)
    rules = Rules.of(estate, now, history)
    if kind == "events" and (sound := _sound_batch(payload, site, agent, rules)) is not None:
        return sound
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        return Rejected("malformed", terminal(f"not JSON: {exc}"[:200]))
    if kind == "events":
        return judge_each(data, site, agent, rules)
    if kind == "event":
        verdict = _validate_event(data, site, agent, rules)
        if isinstance(verdict, Rejected):
            return verdict
        removed = int(rules.areas.get((site, verdict.check)) != verdict.area)
        return Accepted("events", site, agent, events=(verdict,), removed_check=removed)
    try:
        hb = Heartbeat.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    if hb.site != site:
        return Rejected("site_mismatch", f"payload site {hb.site!r} on topic of {site!r}")
    if hb.agent != agent:
        return Rejected("agent_mismatch", f"payload agent {hb.agent!r} on topic of {agent!r}")
    checked = check_heartbeat(hb, estate, now)
    if isinstance(checked, Rejected):
        return checked
    ignored = len(hb.checks) - len(checked.checks)
    return Accepted("heartbeat", site, agent, heartbeat=checked, ignored_checks=ignored)


class _SoundBatch(EventBatch):
    """An events message parsed in one pass, every event as an ``Event`` (the envelope's
    rules are ``EventBatch``'s own, inherited)."""

    events: list[Event] = Field(  # type: ignore[assignment]
        default_factory=list, max_length=MAX_BATCH_EVENTS
    )


def _sound_batch(payload: bytes, site: str, agent: str, rules: Rules) -> Accepted | None:
    """The verdict on a batch whose every event is valid and may be stored, parsed from JSON
    in one pass; None for any other batch, which ``judge_each`` then judges event by event
    (so a refusal keeps its own reason and seq, and the others are still stored).

    The common case costs a third of judging each event alone (issue 8's throughput); it
    accepts exactly what ``judge_each`` would accept whole, since each event passes the same
    ``Event`` model and the same ``judge``."""
    try:
        batch = _SoundBatch.model_validate_json(payload)
    except (ValueError, RecursionError):  # ValidationError is a ValueError
        return None
    removed = 0
    areas = rules.areas
    for ev in batch.events:
        if ev.site != site or ev.agent != agent or judge(ev, rules) is not None:
            return None
        removed += areas.get((site, ev.check)) != ev.area
    return Accepted(
        "events",
        site,
        agent,
        events=tuple(batch.events),
        dropped=tuple(batch.dropped),
        first_seq=batch.first_seq,
        removed_check=removed,
    )


def judge_each(data: object, site: str, agent: str, rules: Rules) -> Accepted | Rejected:
    """An events message (parsed JSON): its envelope, then each event judged on its own."""
    try:
        batch = EventBatch.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    events: list[Event] = []
    refused: list[RejectedEvent] = []
    removed = 0
    for raw in batch.events:
        verdict = _validate_event(raw, site, agent, rules)
        if isinstance(verdict, Rejected):
            seq = raw.get("seq")
            ok = isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < 2**63
            refused.append(RejectedEvent(seq if ok else None, verdict))  # type: ignore[arg-type]
        else:
            events.append(verdict)
            removed += rules.areas.get((site, verdict.check)) != verdict.area
    return Accepted(
        "events",
        site,
        agent,
        events=tuple(events),
        refused=tuple(refused),
        dropped=tuple(batch.dropped),
        first_seq=batch.first_seq,
        removed_check=removed,
    )


def validate_event(
    data: object,
    *,
    site: str,
    agent: str,
    estate: Estate,
    now: datetime,
    history: History = NO_HISTORY,
) -> Event | Rejected:
    """One event, judged on its own: its shape, that it is the topic's agent's, then
    ``check_event``. Never raises."""
    return _validate_event(data, site, agent, Rules.of(estate, now, history))


def _validate_event(data: object, site: str, agent: str, rules: Rules) -> Event | Rejected:
    try:
        event = Event.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    if event.site != site:
        return Rejected("site_mismatch", f"payload site {event.site!r} on topic of {site!r}")
    if event.agent != agent:
        return Rejected("agent_mismatch", f"payload agent {event.agent!r} on topic of {agent!r}")
    return judge(event, rules) or event


def history_from(rows: list[tuple[str, str, str, str, bool]], estate: Estate) -> History:
    """``Store.event_history()`` rows, keeping only what the config does not list."""
    return {
        (site, check, area): Known(from_iso(last), open_outage)
        for site, check, area, last, open_outage in rows
        if configured_area(estate, site, check) != area
    }
