"""From MQTT message to stored fact: validate, reject by reason, commit, then acknowledge.

The PUBACK of a QoS 1 message is sent only after its batch is committed (paho-mqtt's manual
ack, which aiomqtt 2.5 does not expose), so a crash between receipt and commit means
redelivery, which idempotent ingest absorbs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from pydantic import ValidationError

from availmon.config import Estate
from availmon.schema import TOPIC_ROOT, Event, Heartbeat, parse_topic

SUBSCRIPTIONS = [
    (f"{TOPIC_ROOT}/+/+/event", 1),
    (f"{TOPIC_ROOT}/+/+/heartbeat", 1),
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


@dataclass(frozen=True)
class Rejected:
    reason: str  # one of metrics.REJECT_REASONS
    detail: str


@dataclass(frozen=True)
class Accepted:
    kind: str  # event | heartbeat | status
    site: str
    agent: str
    event: Event | None = None
    heartbeat: Heartbeat | None = None
    status: str | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return f"{loc}: {err['msg']}"


def validate(topic: str, payload: bytes, *, estate: Estate, now: datetime) -> Accepted | Rejected:
    """Pure: decide what a message is, or why it is refused. Never raises."""
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
    model: type[Event] | type[Heartbeat] = Event if kind == "event" else Heartbeat
    try:
        message = model.model_validate(data)
    except ValidationError as exc:
        return Rejected("invalid", _first_error(exc))
    if message.site != site:
        return Rejected("site_mismatch", f"payload site {message.site!r} on topic of {site!r}")
    if message.agent != agent:
        return Rejected("agent_mismatch", f"payload agent {message.agent!r} on topic of {agent!r}")
    if isinstance(message, Event):
        if message.at > now + timedelta(seconds=cfg.max_future_skew):
            return Rejected("future", f"event at {message.at.isoformat()} is in the future")
        if message.id != f"{message.agent}:{message.seq}":
            return Rejected("invalid", f"id {message.id!r} is not agent:seq")
        return Accepted("event", site, agent, event=message)
    return Accepted("heartbeat", site, agent, heartbeat=message)
