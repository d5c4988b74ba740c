"""Wire messages (MQTT, JSON, ``schema: 1``) shared by agent and collector.

See docs/protocol.md. The collector validates every message against these
models; anything that fails is rejected and counted by reason, never half-stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
)

from availmon.clock import to_iso
from availmon.limits import MAX_HEARTBEAT_CHECKS

TOPIC_ROOT = "availmon/v1"


def _plausible(dt: datetime) -> datetime:
    """UTC, and within years SQLite text and every later computation can hold."""
    if not 2000 <= dt.year <= 2200:
        raise ValueError(f"time {dt.isoformat()} is outside 2000-2200")
    return dt.astimezone(UTC)


UtcTime = Annotated[
    AwareDatetime, AfterValidator(_plausible), PlainSerializer(to_iso, return_type=str)
]
#: Counters fit SQLite's signed 64-bit integers, or storing them would raise.
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]
#: Finite and non-negative (issue 15): NaN, Infinity or a negative latency once reached
#: ``/api/v1/status`` as ``-Infinity``, which strict JSON parsers reject. A day is beyond any
#: probe's timeout.
Seconds = Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)]
Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
SeqNo = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _ordered(r: tuple[int, int]) -> tuple[int, int]:
    if r[0] > r[1]:
        raise ValueError(f"range {r[0]}-{r[1]} runs backwards")
    return r


#: An inclusive range of seqs, ``[first, last]``.
SeqRange = Annotated[tuple[SeqNo, SeqNo], AfterValidator(_ordered)]


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    UNKNOWN = "unknown"


class Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Evidence(Wire):
    """What the probes saw in the run that caused the transition."""

    error: str | None = Field(default=None, max_length=500)
    latency: Seconds | None = None  # of the last probe in the run
    loss: Percent | None = None
    probes: int = Field(default=0, ge=0, le=2**63 - 1)  # how many probes the run held
    #: Why, when the agent knows: e.g. the check it depends on was down at the time.
    cause: str | None = Field(default=None, max_length=200)


class Event(Wire):
    schema_: Literal[1] = Field(default=1, alias="schema")
    id: Annotated[str, Field(max_length=100)]
    seq: SeqNo
    site: Ident
    agent: Ident
    check: Ident
    area: Ident
    from_: State = Field(alias="from")
    to: State
    at: UtcTime  # first probe of the run that caused the transition
    detected_at: UtcTime
    evidence: Evidence = Evidence()

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


#: A measurement: finite and non-negative (None when it was not taken, never 0).
Measure = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class CheckStatus(Wire):
    check: Ident
    area: Ident
    state: State
    since: UtcTime | None = None
    latency: Seconds | None = None
    error: str | None = Field(default=None, max_length=500)
    # Per-check measurements of the last probe for dashboards (issue 12); optional, so an
    # older agent's heartbeat still validates, and absent when the probe does not measure it.
    #: Echoes lost in the last burst, percent (ICMP).
    loss: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = None
    #: Mean difference between consecutive round trips, seconds (ICMP).
    jitter: Measure | None = None
    #: Seconds from the last probe to the peer certificate's notAfter; negative once expired.
    cert_expires_in: Annotated[float, Field(allow_inf_nan=False)] | None = None
    #: Wall time the last probe took, seconds (a batch's, for checks probed as one batch).
    duration: Measure | None = None


#: The longest ``spool_error`` a heartbeat may carry (the agent cuts its text to it).
MAX_SPOOL_ERROR = 500


def _one_printable_line(text: str) -> str:
    """Printable characters only (``str.isprintable``: no newline, ESC sequence or bidi
    override): the text reaches the board, logs and terminals. The agent escapes the rest
    (``availmon.text.one_line``), so only a foreign sender's heartbeat is refused for it."""
    if not text.isprintable():
        bad = next(ch for ch in text if not ch.isprintable())
        raise ValueError(f"character {bad!r} is not printable (one line of text)")
    return text


#: Text from an agent's system (an OS or SQLite error): bounded, one printable line.
ErrorLine = Annotated[str, Field(max_length=MAX_SPOOL_ERROR), AfterValidator(_one_printable_line)]


class Heartbeat(Wire):
    schema_: Literal[1] = Field(default=1, alias="schema")
    site: Ident
    agent: Ident
    at: UtcTime
    seq: Count  # last event seq assigned
    spool_depth: Count
    #: Superseded intermediate states dropped at the spool's cap, since the spool was made.
    spool_dropped: Count = 0
    #: The site's SNMP trap receiver, by outcome (accepted, dropped_unknown_source, ...).
    traps: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")], Count] = Field(
        default_factory=dict, max_length=10
    )
    checks: list[CheckStatus] = Field(max_length=MAX_HEARTBEAT_CHECKS)
    #: The first seq this spool assigned: the collector expects every seq from here on.
    first_seq: SeqNo | None = None
    #: Spooled events each required collector has not confirmed yet, by collector id: a
    #: collector that is away shows here (and on the board) while the spool holds for it.
    unconfirmed: dict[Ident, Count] = Field(default_factory=dict, max_length=16)
    # Optional, so an older agent's heartbeat still validates (it says nothing of them).
    #: Transitions held in memory because the spool could not take them (counted in
    #: ``spool_depth`` too): lost if the agent stops before its spool can be written.
    spool_unwritten: Count = 0
    #: Why the spool's last write failed, e.g. "database or disk is full (SQLITE_FULL)";
    #: None once it can be written again.
    spool_error: ErrorLine | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def heartbeat_json(envelope: Heartbeat, checks: Iterable[CheckStatus]) -> bytes:
    """``envelope`` (made with ``checks=[]``) carrying ``checks``, as JSON: the same bytes as
    ``Heartbeat(..., checks=list(checks)).to_json()``, written one status at a time.

    Issue 9: a list of 1,000 statuses is about 1.2 MB of objects for an instant every
    heartbeat, and Python's allocator keeps the pages they used. One status alive at a time
    needs a few hundred bytes: measured with 1,000 checks, the agent's RSS 0.8 MB lower.
    """
    if envelope.checks:
        raise ValueError("heartbeat_json: the envelope must have no checks")
    head, marker, tail = envelope.to_json().partition(b'"checks":[]')
    if not marker:  # not reachable: the key is the field's, and no value contains it
        raise ValueError("heartbeat_json: no checks field in the envelope's JSON")
    out = bytearray(head)
    out += b'"checks":['
    for n, status in enumerate(checks):
        if n == MAX_HEARTBEAT_CHECKS:  # the limit the list field would have enforced
            raise ValueError(f"a heartbeat carries at most {MAX_HEARTBEAT_CHECKS} checks")
        if n:
            out += b","
        out += status.model_dump_json(by_alias=True).encode()
    out += b"]"
    out += tail
    return bytes(out)


#: The most events one ``events`` message may carry (the agent also keeps it under
#: ``collector.max_payload_bytes``).
MAX_BATCH_EVENTS = 500
#: The most seq ranges one message may list (drops reported, seqs confirmed).
MAX_RANGES = 10_000
#: The largest confirmation: two lists of MAX_RANGES ranges of two 19-digit seqs each, with
#: room to spare (``[123...,123...],`` is 43 bytes).
MAX_ACK_BYTES = 2 * MAX_RANGES * 48 + 1024


class EventBatch(Wire):
    """What an agent publishes on ``.../events``: up to ``MAX_BATCH_EVENTS`` events, each
    validated on its own by the collector (one bad event never costs the others), and the
    seqs its spool dropped at its cap, so the collector does not count them as missing.

    ``events`` stays raw here on purpose: the collector validates each one separately."""

    schema_: Literal[1] = Field(default=1, alias="schema")
    first_seq: SeqNo | None = None
    events: list[dict[str, object]] = Field(default_factory=list, max_length=MAX_BATCH_EVENTS)
    dropped: list[SeqRange] = Field(default_factory=list, max_length=MAX_RANGES)


class Ack(Wire):
    """A collector's confirmation on ``.../ack/<collector>``, sent only after its commit:
    the seqs it has stored (duplicates included) or recorded as dropped (``stored``), and
    those it refused for good because the event itself is invalid (``rejected``)."""

    schema_: Literal[1] = Field(default=1, alias="schema")
    collector: Ident
    stored: list[SeqRange] = Field(default_factory=list, max_length=MAX_RANGES)
    rejected: list[SeqRange] = Field(default_factory=list, max_length=MAX_RANGES)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """``[1, 2, 3, 7]`` -> ``[(1, 3), (7, 7)]``: how seqs travel in acks and drop reports."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def expand(ranges: Iterable[tuple[int, int]]) -> Iterator[int]:
    for lo, hi in ranges:
        yield from range(lo, hi + 1)


#: ``event`` is the single-event topic of earlier agents, still accepted during an upgrade.
Kind = Literal["events", "event", "heartbeat", "status"]
KINDS = ("events", "event", "heartbeat", "status")
#: Where collectors announce themselves (retained, last will ``offline``): agents read it to
#: know whose confirmation can come, and a pair uses it to pick the one that sends alerts.
COLLECTORS_ROOT = f"{TOPIC_ROOT}/_collectors"


def topic(site: str, agent: str, kind: Kind) -> str:
    return f"{TOPIC_ROOT}/{site}/{agent}/{kind}"


def ack_topic(site: str, agent: str, collector: str) -> str:
    """Written only by that collector, read only by that agent (the broker's ACL)."""
    return f"{TOPIC_ROOT}/{site}/{agent}/ack/{collector}"


def collector_topic(collector: str) -> str:
    return f"{COLLECTORS_ROOT}/{collector}/status"


def receipts_topic(collector: str) -> str:
    """Where a collector that sends alerts says which messages it delivered (issue 11)."""
    return f"{COLLECTORS_ROOT}/{collector}/alerts"


class Delivered(Wire):
    """One alert message a channel took: its outbox key and what the key stands for."""

    key: Annotated[str, Field(max_length=400)]
    outage_id: Annotated[str, Field(max_length=200)] | None = None
    channel: Ident
    kind: Literal["firing", "repeat", "escalation", "resolved", "test"]


class AlertReceipt(Wire):
    """Sent by the collector that leads a pair after its channels took messages, so that
    the other marks them sent and, if it takes over, does not send them again."""

    schema_: Literal[1] = Field(default=1, alias="schema")
    collector: Ident
    delivered: list[Delivered] = Field(max_length=500)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


def parse_topic(text: str) -> tuple[str, str, str] | None:
    """``(site, agent, kind)`` for one of the topics agents publish, else None."""
    parts = text.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        return None
    site, agent, kind = parts[2], parts[3], parts[4]
    if kind not in KINDS:
        return None
    return site, agent, kind


def event_id(agent: str, seq: int) -> str:
    return f"{agent}:{seq}"
