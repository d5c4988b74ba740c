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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from pydantic import ValidationError

from availmon.config import Estate
from availmon.schema import TOPIC_ROOT, Event, EventBatch, Heartbeat, parse_topic

SUBSCRIPTIONS = [
    (f"{TOPIC_ROOT}/+/+/events", 1),
    (f"{TOPIC_ROOT}/+/+/event", 1),  # the single-event topic of earlier agents (upgrade)
    (f"{TOPIC_ROOT}/+/+/heartbeat", 1),
    # Agents' status, and collectors' presence (availmon/v1/_collectors/<id>/status).
    (f"{TOPIC_ROOT}/+/+/status", 1),
]
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

    @property
    def event(self) -> Event | None:
        """The one event of a single-event message (tests and the upgrade path)."""
        return self.events[0] if len(self.events) == 1 else None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return f"{loc}: {err['msg']}"


def validate(topic: str, payload: bytes, *, estate: Estate, now: datetime) -> Accepted | Rejected:
    """Pure: decide what a message is, or why it is refused. Never raises. A batch is
    accepted as a whole when its envelope is sound; each event in it is then judged alone."""
    cfg = estate.collector
    if len(payload) > cfg.max_payload_bytes:
        return Rejected("oversized", f"{len(payload)} bytes > {cfg.max_payload_bytes}")
    parsed = parse_topic(topic)
    if parsed is None:
        return Rejected("bad_topic", topic[:200])
    site, agent, kind = parsed
    if site not in estate.sites:
        return Rejected("unknown_site", f"site {site!r} is not in the estate config")
    if estate.agent_id(site) != agent:
        return Rejected("agent_mismatch", f"agent {agent!r} is not site {site!r}'s agent")
    if kind == "status":
        text = payload.decode("utf-8", "replace").strip()
        if text not in STATUSES:
            return Rejected("malformed", f"status {text[:50]!r}")
        return Accepted("status", site, agent, status=text)
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        return Rejected("malformed", f"not JSON: {exc}"[:200])
    if kind == "events":
        return _batch(data, site, agent, estate, now)
    if kind == "event":
        verdict = validate_event(data, site=site, agent=agent, estate=estate, now=now)
        if isinstance(verdict, Rejected):
            return verdict
        return Accepted("events", site, agent, events=(verdict,))
    try:
        hb = Heartbeat.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    if hb.site != site:
        return Rejected("site_mismatch", f"payload site {hb.site!r} on topic of {site!r}")
    if hb.agent != agent:
        return Rejected("agent_mismatch", f"payload agent {hb.agent!r} on topic of {agent!r}")
    return Accepted("heartbeat", site, agent, heartbeat=hb)


def _batch(
    data: object, site: str, agent: str, estate: Estate, now: datetime
) -> Accepted | Rejected:
    try:
        batch = EventBatch.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    events: list[Event] = []
    refused: list[RejectedEvent] = []
    for raw in batch.events:
        verdict = validate_event(raw, site=site, agent=agent, estate=estate, now=now)
        if isinstance(verdict, Rejected):
            seq = raw.get("seq")
            ok = isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < 2**63
            refused.append(RejectedEvent(seq if ok else None, verdict))  # type: ignore[arg-type]
        else:
            events.append(verdict)
    return Accepted(
        "events",
        site,
        agent,
        events=tuple(events),
        refused=tuple(refused),
        dropped=tuple(batch.dropped),
        first_seq=batch.first_seq,
    )


def validate_event(
    data: object, *, site: str, agent: str, estate: Estate, now: datetime
) -> Event | Rejected:
    """One event, judged on its own: its shape, that it is the topic's agent's, then
    ``check_event``. Never raises."""
    try:
        event = Event.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    if event.site != site:
        return Rejected("site_mismatch", f"payload site {event.site!r} on topic of {site!r}")
    if event.agent != agent:
        return Rejected("agent_mismatch", f"payload agent {event.agent!r} on topic of {agent!r}")
    return check_event(event, estate, now) or event


def check_event(event: Event, estate: Estate, now: datetime) -> Rejected | None:
    """Pure: why a well-formed event of a known agent is still refused, else None."""
    if event.at > now + timedelta(seconds=estate.collector.max_future_skew):
        return Rejected("future", f"event at {event.at.isoformat()} is in the future")
    if event.id != f"{event.agent}:{event.seq}":
        return Rejected("invalid", f"id {event.id!r} is not agent:seq")
    return None
