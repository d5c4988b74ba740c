"""A user's regular expression (an HTTP ``body_regex``, a TCP ``expect``), matched so that a
pattern which backtracks without end cannot stall the agent.

Python's ``re`` cannot be stopped once a search starts, and it runs on the event loop, so
``(a|aa)+$`` against a long reply would hold every check of the agent until it finished
(minutes, or never). The ``regex`` module takes the same syntax, stops a search at a timeout,
and lets other threads run while it searches: a search gets a few milliseconds on the loop
(where nearly every pattern ends), then the rest of the probe's time on a worker thread.
The syntax is the ``regex`` module's default (version 0): Python's ``re`` syntax with a few
additions and differences, which the README lists.
"""

from __future__ import annotations

import functools
import importlib
import re
import time
import warnings
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import regex

#: How long a search may hold the event loop before it moves to a worker thread.
ON_LOOP_SECONDS = 0.005
#: The least time a search gets off the loop, however little of the probe's time is left.
LEAST_SECONDS = 0.05
#: The most time one search gets, whatever the probe's timeout: a stopping agent waits for
#: the searches under way (their threads cannot be stopped), well within systemd's 30 s.
MOST_SECONDS = 10.0
#: Threads for searches that outlast their time on the loop. Their own, not asyncio's
#: default pool, which resolves names and reads secrets for every check: slow patterns
#: must not hold those up. Two: a search holds a core while it runs.
SEARCH_THREADS = 2
#: The most a pattern may grow to when compiled: ``regex`` writes ``x{100000}`` out in full
#: (26 MB and 30 ms; ``x{100000000}`` took 2.9 GB), where ``re`` keeps a count.
MOST_ITEMS = 20_000

_threads: ThreadPoolExecutor | None = None


class PatternTimeout(Exception):
    """The search did not end within the probe's time."""


@functools.lru_cache(maxsize=512)
def compiled(text: str) -> regex.Pattern[str]:
    """The pattern, compiled once per text (configs repeat one pattern over many checks)."""
    import regex  # only where a check has a pattern (issue 9: start-up)

    return regex.compile(text)


def _size(items: Any) -> int:
    """How many items a parsed pattern writes out when compiled: each repeat's minimum
    times its body, nested repeats multiplied."""
    c = importlib.import_module("re._constants")  # re's own parse tree (no stubs for it)

    total = 0
    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            total += max(arg[0], 1) * _size(arg[2])
        elif op is c.SUBPATTERN:
            total += _size(arg[3])
        elif op is c.ATOMIC_GROUP:
            total += _size(arg)
        elif op is c.BRANCH:
            total += sum(_size(branch) for branch in arg[1])
        elif op in (c.ASSERT, c.ASSERT_NOT):
            total += _size(arg[1])
        elif op is c.GROUPREF_EXISTS:
            total += _size(arg[1]) + (_size(arg[2]) if arg[2] else 0)
        else:
            total += 1
        if total > MOST_ITEMS:
            break
    return total


#: A counted repeat's minimum, in the text: ``{n}``, ``{n,}``, ``{n,m}``.
_COUNT = re.compile(r"(?<!\\)\{\s*(\d+)\s*(?:,[^}]*)?\}")


def _too_large(value: str) -> bool:
    """True when compiling ``value`` would write out more than MOST_ITEMS items."""
    parser = importlib.import_module("re._parser")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # re's FutureWarnings about nested sets
            parsed = parser.parse(value)
    except Exception:  # syntax only ``regex`` has (\p{L}, \K): judged by its counts alone
        return any(int(m[1]) > MOST_ITEMS for m in _COUNT.finditer(value))
    return _size(parsed) > MOST_ITEMS


def _valid(value: str) -> str:
    """Compile at config load so that a bad pattern is a config error, not a probe error."""
    import regex

    if _too_large(value):
        raise ValueError(
            "regular expression too large: its repeat counts write it out to more than"
            f" {MOST_ITEMS:,} items when compiled (write x{{0,N}} or x+ rather than x{{N}})"
        )
    try:
        compiled(value)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    except MemoryError:
        raise ValueError("regular expression too large to compile") from None
    return value


#: A pattern in a check's options: kept as its text, checked when the config is read.
Pattern = Annotated[str, AfterValidator(_valid)]


def is_pattern(metadata: tuple[Any, ...]) -> bool:
    """Whether an ``Annotated`` type's metadata is :data:`Pattern`'s (for help texts)."""
    return any(getattr(m, "func", None) is _valid for m in metadata)


async def search(pattern: str, text: str, seconds: float) -> bool:
    """True when ``pattern`` is found in ``text``; PatternTimeout when it was still searching
    after ``seconds`` (at least ``LEAST_SECONDS``)."""
    import asyncio  # not at import: reading a config loads no asyncio (nor its ssl)

    p = compiled(pattern)
    try:
        return p.search(text, timeout=ON_LOOP_SECONDS) is not None
    except TimeoutError:
        pass
    deadline = time.monotonic() + max(seconds - ON_LOOP_SECONDS, LEAST_SECONDS)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_search_threads(), _search_by, p, text, deadline)
    except TimeoutError:
        raise PatternTimeout(pattern) from None


def _search_threads() -> ThreadPoolExecutor:
    global _threads
    if _threads is None:
        from concurrent.futures import ThreadPoolExecutor

        _threads = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="availmon-pattern")
    return _threads


def _search_by(p: regex.Pattern[str], text: str, deadline: float) -> bool:
    """On a search thread: the time spent waiting for the thread counts against the probe."""
    left = min(deadline - time.monotonic(), MOST_SECONDS)
    if left <= 0:
        raise TimeoutError("no time left")
    return p.search(text, concurrent=True, timeout=left) is not None


def too_slow(pattern: str, what: str) -> str:
    """The probe's error for a pattern that outran it."""
    return (
        f"pattern {pattern!r} still searching {what} when the probe's time ran out"
        " (it backtracks too much: simplify it)"
    )
