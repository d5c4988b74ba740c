"""Time helpers: every timestamp on the wire and in the store is aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(dt: datetime) -> str:
    """Fixed-width UTC text, so that string order in SQLite is time order."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: availmon only stores aware times")
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return dt.astimezone(UTC)
