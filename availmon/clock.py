"""Time helpers: every timestamp on the wire and in the store is aware UTC.

Two representations: ISO 8601 text (the wire, the JSON API, people) and integer
microseconds since the Unix epoch, UTC (the store's event and outage times, the accounting).
Both are exact: a microsecond is the finest step either holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_SECOND = 1_000_000
ONE_US = timedelta(microseconds=1)


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


def to_us(dt: datetime) -> int:
    """Exact microseconds since the epoch; timedelta arithmetic is exact, floats are not."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}")
    # Aware minus aware is exact whatever the offset; one floor division (ingest calls this
    # twice an event: issue 8's throughput).
    return (dt - EPOCH) // ONE_US


def from_us(us: int) -> datetime:
    """The aware UTC datetime of ``us`` microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


def iso_to_us(text: str) -> int:
    """ISO text with an offset to microseconds since the epoch."""
    return to_us(from_iso(text))


def us_to_iso(us: int) -> str:
    """Microseconds since the epoch as ``to_iso`` writes them (the same text, byte for byte)."""
    return (EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")
