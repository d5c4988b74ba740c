"""Wire messages (MQTT, JSON, ``schema: 1``) shared by agent and collector.

See "Wire format" in shared/DESIGN.md. The collector validates every message against these
models; anything that fails is rejected and counted by reason, never half-stored.
"""

from __future__ import annotations

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
    seq: Annotated[int, Field(ge=1, le=2**63 - 1)]
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


class CheckStatus(Wire):
    check: Ident
    area: Ident
    state: State
    since: UtcTime | None = None
    latency: Seconds | None = None
    error: str | None = Field(default=None, max_length=500)


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

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


Kind = Literal["event", "heartbeat", "status"]


def topic(site: str, agent: str, kind: Kind) -> str:
    return f"{TOPIC_ROOT}/{site}/{agent}/{kind}"


def parse_topic(text: str) -> tuple[str, str, str] | None:
    """``(site, agent, kind)`` for one of our topics, else None."""
    parts = text.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT:
        return None
    site, agent, kind = parts[2], parts[3], parts[4]
    if kind not in ("event", "heartbeat", "status"):
        return None
    return site, agent, kind


def event_id(agent: str, seq: int) -> str:
    return f"{agent}:{seq}"
