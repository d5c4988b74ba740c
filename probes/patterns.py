"""A user's regular expression (an HTTP ``body_regex``, a TCP ``expect``), matched so that a
pattern which backtracks without end cannot stall the agent.

Python's ``re`` cannot be stopped once a search starts, and it runs on the event loop, so
``(a|aa)+$`` against a long reply would hold every check of the agent until it finished
(minutes, or never). The ``regex`` module takes the same syntax, stops a search at a timeout,
and lets other threads run while it searches: a search gets a few milliseconds on the loop
(where nearly every pattern ends), then the rest of the probe's time on a worker thread.
The syntax is Python's ``re`` syntax (``regex`` version 0, its default).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

if TYPE_CHECKING:
    import regex

#: How long a search may hold the event loop before it moves to a worker thread.
ON_LOOP_SECONDS = 0.005
#: The least time a search gets off the loop, however little of the probe's time is left.
LEAST_SECONDS = 0.05


class PatternTimeout(Exception):
    """The search did not end within the probe's time."""


@functools.lru_cache(maxsize=512)
def compiled(text: str) -> regex.Pattern[str]:
    """The pattern, compiled once per text (configs repeat one pattern over many checks)."""
    import regex  # only where a check has a pattern (issue 9: start-up)

    return regex.compile(text)


def _valid(value: str) -> str:
    """Compile at config load so that a bad pattern is a config error, not a probe error."""
    import regex

    try:
        compiled(value)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


#: A pattern in a check's options: kept as its text, checked when the config is read.
Pattern = Annotated[str, AfterValidator(_valid)]


async def search(pattern: str, text: str, seconds: float) -> bool:
    """True when ``pattern`` is found in ``text``; PatternTimeout when it was still searching
    after ``seconds`` (at least ``LEAST_SECONDS``)."""
    import asyncio  # not at import: reading a config loads no asyncio (nor its ssl)

    p = compiled(pattern)
    try:
        return p.search(text, timeout=ON_LOOP_SECONDS) is not None
    except TimeoutError:
        pass
    left = max(seconds - ON_LOOP_SECONDS, LEAST_SECONDS)
    try:
        found = await asyncio.to_thread(p.search, text, concurrent=True, timeout=left)
    except TimeoutError:
        raise PatternTimeout(pattern) from None
    return found is not None


def too_slow(pattern: str, what: str) -> str:
    """The probe's error for a pattern that outran it."""
    return (
        f"pattern {pattern!r} still searching {what} when the probe's time ran out"
        " (it backtracks too much: simplify it)"
    )
