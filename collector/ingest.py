"""From MQTT message to stored fact: validate, reject by reason, commit, then acknowledge.

The PUBACK of a QoS 1 message is sent only after its batch is committed (paho-mqtt's manual
ack, which aiomqtt 2.5 does not expose), so a crash between receipt and commit means
redelivery, which idempotent ingest absorbs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
from pydantic import ValidationError

from availmon.clock import from_iso
from availmon.config import Estate
from availmon.schema import TOPIC_ROOT, Event, Heartbeat, parse_topic
from availmon.text import terminal

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
    #: An event for a check (or area) the config no longer lists, accepted from the history.
    removed_check: bool = False
    #: Check statuses left out of the heartbeat: not in the config.
    ignored_checks: int = 0


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
    return f"{loc}: {err['msg']}"


def configured_area(estate: Estate, site: str, check: str) -> str | None:
    """The area the config gives this site's check, or None when it has no such check."""
    return estate.check_areas().get((site, check))


def _future(what: str, at: datetime, now: datetime, estate: Estate) -> Rejected | None:
    if at > now + timedelta(seconds=estate.collector.max_future_skew):
        return Rejected("future", f"{what} {at.isoformat()} is in the future")
    return None


def check_event(
    event: Event, estate: Estate, now: datetime, history: History = NO_HISTORY
) -> Rejected | None:
    """Pure: whether one event (already a valid ``Event``) may be stored, checked against the
    config; None when it may. Every rule on a single event lives here, so a batch of events
    is checked one by one (issue 15).

    The event's check and area must be the config's, or a (site, check, area) the store
    already holds events for, within ``removed_check_grace`` of the last one or while its
    outage is open: an agent's login cannot invent checks or areas (an invented area used to
    join the combined KPI), and a check just removed still gets its late, spooled events.
    """
    if event.id != f"{event.agent}:{event.seq}":
        return Rejected("invalid", f"id {event.id!r} is not agent:seq")
    for what, at in (("at", event.at), ("detected_at", event.detected_at)):
        if (late := _future(f"event {what}", at, now, estate)) is not None:
            return late
    if event.site not in estate.sites:
        return Rejected("unknown_site", f"site {event.site!r} is not in the estate config")
    area = configured_area(estate, event.site, event.check)
    if area == event.area:
        return None
    known = history.get((event.site, event.check, event.area))
    grace = timedelta(seconds=estate.collector.removed_check_grace)
    if known is not None and (known.open_outage or now - known.last_received <= grace):
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
    """Pure: decide what a message is, or why it is refused. Never raises."""
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
        return Rejected("invalid", terminal(_first_error(exc)[:300]))
    if message.site != site:
        return Rejected("site_mismatch", f"payload site {message.site!r} on topic of {site!r}")
    if message.agent != agent:
        return Rejected("agent_mismatch", f"payload agent {message.agent!r} on topic of {agent!r}")
    if isinstance(message, Event):
        rejected = check_event(message, estate, now, history)
        if rejected is not None:
            return rejected
        removed = configured_area(estate, site, message.check) != message.area
        return Accepted("event", site, agent, event=message, removed_check=removed)
    checked = check_heartbeat(message, estate, now)
    if isinstance(checked, Rejected):
        return checked
    ignored = len(message.checks) - len(checked.checks)
    return Accepted("heartbeat", site, agent, heartbeat=checked, ignored_checks=ignored)


def history_from(rows: list[tuple[str, str, str, str, bool]], estate: Estate) -> History:
    """``Store.event_history()`` rows, keeping only what the config does not list."""
    return {
        (site, check, area): Known(from_iso(last), open_outage)
        for site, check, area, last, open_outage in rows
        if configured_area(estate, site, check) != area
    }
