"""What every probe shares: its result, its options model and its registry entry.

A probe module exposes ``Options`` (a frozen pydantic model of its check options) and
``async def probe(target, timeout, options) -> ProbeResult``. It never raises for a failed
target; it raises :class:`availmon.errors.StartupError` only when it cannot run at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict


class ProbeOptions(BaseModel):
    """Base of every probe's options: frozen, and unknown keys are config errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome. A value that was not measured is ``None``, never 0."""

    ok: bool
    latency: float | None = None  # seconds
    error: str | None = None  # short human reason when not ok (or why it is slow)
    loss: float | None = None  # percent, for probes that send bursts
    degraded: bool = False  # the probe itself judged the answer poor (e.g. cert expiring)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "latency": self.latency,
            "error": self.error,
            "loss": self.loss,
            "degraded": self.degraded,
            "details": self.details,
        }


O = TypeVar("O", bound=ProbeOptions)

ProbeFn = Callable[[str, float, Any], Awaitable[ProbeResult]]
BatchFn = Callable[[Sequence[str], float, Any], Awaitable[list[ProbeResult]]]


@dataclass(frozen=True)
class ProbeSpec(Generic[O]):
    """A registry entry: how to validate a check of this type and how to run it."""

    name: str
    options: type[O]
    probe: ProbeFn
    #: Returns an error message when the target string cannot be right for this type.
    check_target: Callable[[str], str | None] | None = None
    #: Probes many targets sharing one interval and options at once (ICMP through one socket).
    probe_many: BatchFn | None = None

    def parse_options(self, raw: dict[str, Any]) -> O:
        return self.options.model_validate(raw)


def fail(error: str, **details: Any) -> ProbeResult:
    return ProbeResult(ok=False, error=error, details=details)


def timeout_text(timeout: float) -> str:
    return f"timeout after {timeout:g} s"
