"""A figure too costly to work out on every request: the quarter-to-date KPI by issue 10's
rules, read from the store (seconds at a million outages), which /metrics and the board
would otherwise recompute on every scrape and page view.

While working it out is cheap (under ``wait_under`` seconds, as on any store of ordinary
size) every caller gets a fresh figure, as before. Once it is costly, callers get the last
figure at once, and a new one is worked out on the store's reader thread in the background
when the data has changed or the last one is older than ``max_age``; never more often than
``duty`` of that thread's time (a figure that took 20 s is worked out at most every 200 s
at the default 0.1), so a busy quarter cannot starve the board's other reads. The last
figure is never served across a change of ``scope`` (a new quarter, a reloaded config).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Figure(Generic[T]):
    scope: Hashable
    data: Hashable
    value: T
    #: When it was finished (the clock's seconds), and what it cost (seconds).
    at: float
    cost: float
    #: The CPU-seconds it took on the thread that worked it out.
    cpu: float = 0.0


class Costly(Generic[T]):
    """``compute(now)`` through the rules above (see the module)."""

    def __init__(
        self,
        executor: Executor,
        compute: Callable[[datetime], T],
        *,
        wait_under: float = 1.0,
        max_age: float = 60.0,
        duty: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._executor = executor
        self._compute = compute
        self.wait_under = wait_under
        self.max_age = max_age
        self.duty = duty
        self._clock = clock
        self._lock = threading.Lock()
        self._last: _Figure[T] | None = None
        self._pending: Future[tuple[T, float]] | None = None
        #: The scope and data the pending work was started for.
        self._pending_key: tuple[Hashable, Hashable] | None = None

    def _run(self, scope: Hashable, data: Hashable, now: datetime) -> tuple[T, float]:
        """The figure and the CPU-seconds it took, together: ``_last`` may be another's by
        the time a waiter reads it."""
        started, cpu = self._clock(), time.thread_time()
        try:
            value = self._compute(now)
        except BaseException:
            with self._lock:
                if self._pending_key == (scope, data):
                    self._pending = None
            raise
        finished, cpu = self._clock(), time.thread_time() - cpu
        with self._lock:
            self._last = _Figure(scope, data, value, finished, finished - started, cpu)
            if self._pending_key == (scope, data):
                self._pending = None
        return value, cpu

    def _plan(
        self, scope: Hashable, data: Hashable, now: datetime
    ) -> tuple[_Figure[T] | None, Future[tuple[T, float]] | None]:
        """The last figure, to serve at once (and the work started, if any), or the work to
        wait for."""
        with self._lock:
            last = self._last
            if last is not None and last.scope == scope and last.cost >= self.wait_under:
                since = self._clock() - last.at
                due = last.data != data or since >= self.max_age
                if due and self._pending is None and since >= last.cost / self.duty:
                    self._pending = self._executor.submit(self._run, scope, data, now)
                    self._pending_key = (scope, data)
                return last, self._pending
            if self._pending is not None and self._pending_key == (scope, data):
                return None, self._pending  # the same figure is being worked out: share it
            work = self._executor.submit(self._run, scope, data, now)
            self._pending, self._pending_key = work, (scope, data)
            return None, work

    def get(self, scope: Hashable, data: Hashable, now: datetime) -> T:
        """From any thread but the executor's own."""
        last, work = self._plan(scope, data, now)
        if last is not None:
            return last.value
        assert work is not None
        return work.result()[0]

    def get_costing(self, scope: Hashable, data: Hashable, now: datetime) -> tuple[T, float]:
        """``get``, and the CPU-seconds of the work the caller waited for (0 when it was
        served the last figure): what a rate-limited caller must count as its own."""
        last, work = self._plan(scope, data, now)
        if last is not None:
            return last.value, 0.0
        assert work is not None
        return work.result()

    def get_or_none(self, scope: Hashable, data: Hashable, now: datetime) -> T | None:
        """``get``, but None where it would wait for a figure that is costly: at once when
        the last one made (of any scope) was, and after ``wait_under`` seconds when none has
        been made yet (the first scrape after a start on a busy store). A scrape then shows
        no figure for a while rather than timing out (a value not measured is absent); the
        work goes on, and a later scrape gets its figure."""
        last, work = self._plan(scope, data, now)
        if last is not None:
            return last.value
        assert work is not None
        with self._lock:
            known = self._last
        if known is not None:
            return None if known.cost >= self.wait_under and not work.done() else work.result()[0]
        try:
            return work.result(timeout=self.wait_under)[0]
        except TimeoutError:
            return None

    async def get_async(self, scope: Hashable, data: Hashable, now: datetime) -> T:
        """From the event loop, without blocking it."""
        last, work = self._plan(scope, data, now)
        if last is not None:
            return last.value
        assert work is not None
        return (await asyncio.wrap_future(work))[0]
