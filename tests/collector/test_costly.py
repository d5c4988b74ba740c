"""The store-made KPI's cache (collector/costly.py): fresh while cheap; once costly, the
last figure at once and a new one in the background, at most ``duty`` of the reader's time,
never across a change of scope. A fake clock that the computation itself advances stands
for its cost; the executor is a real thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from availmon.clock import utcnow
from collector.costly import Costly
from collector.main import Collector
from tests.peers import estate, free_port, web_check

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


class Work:
    """Counts computations; each costs ``cost`` seconds of the fake clock, and can be held
    until released (to see what callers get meanwhile)."""

    def __init__(self, clock: Clock, cost: float) -> None:
        self.clock = clock
        self.cost = cost
        self.runs = 0
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def __call__(self, now: datetime) -> int:
        self.started.set()
        assert self.hold.wait(30)
        self.clock.t += self.cost
        self.runs += 1
        return self.runs


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as p:
        yield p


def test_a_cheap_figure_is_worked_out_for_every_caller(pool: ThreadPoolExecutor) -> None:
    clock = Clock()
    work = Work(clock, cost=0.01)
    kpi = Costly(pool, work, clock=clock)
    assert [kpi.get("q", 1, NOW) for _ in range(3)] == [1, 2, 3]


def test_a_costly_figure_is_served_at_once_and_refreshed_behind(
    pool: ThreadPoolExecutor,
) -> None:
    clock = Clock()
    work = Work(clock, cost=5.0)  # past wait_under: costly
    kpi = Costly(pool, work, clock=clock, max_age=60, duty=0.1)
    assert kpi.get("q", 1, NOW) == 1  # nothing to serve yet: the first caller waits
    # Same data, young: the last figure, no work.
    assert kpi.get("q", 1, NOW) == 1
    assert work.runs == 1
    # New data, but the last figure cost 5 s and was made 0 s ago: at 10 % duty, not yet.
    assert kpi.get("q", 2, NOW) == 1
    assert work.runs == 1
    clock.t += 50  # 50 s later: due (5 s / 0.1)
    work.hold.clear()
    work.started.clear()
    assert kpi.get("q", 2, NOW) == 1  # served at once while the new one is worked out
    assert work.started.wait(30)
    assert kpi.get("q", 3, NOW) == 1  # one refresh at a time
    work.hold.set()
    pool.submit(lambda: None).result()  # the refresh has finished
    assert work.runs == 2
    assert kpi.get("q", 2, NOW) == 2


def test_an_old_costly_figure_is_refreshed_even_without_new_data(
    pool: ThreadPoolExecutor,
) -> None:
    clock = Clock()
    work = Work(clock, cost=2.0)
    kpi = Costly(pool, work, clock=clock, max_age=60, duty=0.1)
    kpi.get("q", 1, NOW)
    clock.t += 59
    kpi.get("q", 1, NOW)
    pool.submit(lambda: None).result()
    assert work.runs == 1  # younger than max_age
    clock.t += 2
    kpi.get("q", 1, NOW)
    pool.submit(lambda: None).result()
    assert work.runs == 2


def test_a_new_scope_never_gets_the_old_figure(pool: ThreadPoolExecutor) -> None:
    clock = Clock()
    work = Work(clock, cost=5.0)
    kpi = Costly(pool, work, clock=clock)
    assert kpi.get(("config 0", "FY2026Q3"), 1, NOW) == 1
    assert kpi.get(("config 1", "FY2026Q3"), 1, NOW) == 2  # waited for its own


def test_a_failed_computation_is_raised_and_tried_again(pool: ThreadPoolExecutor) -> None:
    clock = Clock()
    calls = []

    def flaky(now: datetime) -> int:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return 7

    kpi = Costly(pool, flaky, clock=clock)
    with pytest.raises(RuntimeError):
        kpi.get("q", 1, NOW)
    assert kpi.get("q", 1, NOW) == 7


def test_callers_asking_for_the_same_figure_share_one_computation(
    pool: ThreadPoolExecutor,
) -> None:
    """(Through ``_plan``, what ``get`` waits on: callers in threads of their own could
    arrive after the work finished, and the test would not say what it means to.)"""
    clock = Clock()
    work = Work(clock, cost=0.01)
    kpi = Costly(pool, work, clock=clock)
    work.hold.clear()
    _, first = kpi._plan("q", 1, NOW)
    assert work.started.wait(30)
    _, same = kpi._plan("q", 1, NOW)
    _, newer = kpi._plan("q", 2, NOW)  # new data: its own computation
    assert same is first
    assert newer is not first
    work.hold.set()
    assert first is not None
    assert newer is not None
    assert (first.result(30)[0], newer.result(30)[0]) == (1, 2)
    assert work.runs == 2


def test_a_scrape_does_not_wait_for_a_costly_figure_of_a_new_scope(
    pool: ThreadPoolExecutor,
) -> None:
    clock = Clock()
    work = Work(clock, cost=5.0)
    kpi = Costly(pool, work, clock=clock)
    assert kpi.get_or_none("config 0", 1, NOW) == 1  # cost unknown yet: waited
    work.hold.clear()
    assert kpi.get_or_none("config 1", 1, NOW) is None  # costly before: not waited for
    assert work.started.wait(30)
    work.hold.set()
    pool.submit(lambda: None).result()
    assert kpi.get_or_none("config 1", 1, NOW) == 2


def test_the_first_scrape_after_a_start_waits_no_longer_than_a_cheap_figure_takes(
    pool: ThreadPoolExecutor,
) -> None:
    """With no figure made yet its cost is unknown: a scrape waits ``wait_under`` for it
    (what a cheap one takes) and then goes without it, while the work goes on (a busy
    store's first figure took half a minute: Prometheus would time out)."""
    clock = Clock()
    work = Work(clock, cost=5.0)
    kpi = Costly(pool, work, clock=clock, wait_under=0.05)
    work.hold.clear()
    assert kpi.get_or_none("config 0", 1, NOW) is None
    assert work.started.wait(30)
    assert work.runs == 0
    work.hold.set()
    pool.submit(lambda: None).result()
    assert work.runs == 1
    assert kpi.get_or_none("config 0", 1, NOW) == 1  # the figure the first scrape began


def test_a_cheap_figure_is_always_waited_for(pool: ThreadPoolExecutor) -> None:
    clock = Clock()
    work = Work(clock, cost=0.01)
    kpi = Costly(pool, work, clock=clock)
    assert kpi.get_or_none("config 0", 1, NOW) == 1
    assert kpi.get_or_none("config 1", 1, NOW) == 2


def test_the_collector_keys_its_figures_on_every_record_they_come_from(
    tmp_path: Path,
) -> None:
    """A store-made figure depends on outages, declared windows and not-monitored records:
    writing any of them through the collector moves the data its figures are keyed on (else
    a costly figure stays as it was until the next outage write, or for up to a minute)."""
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    now = utcnow()
    keys = [c._kpi_key(now)]
    c.store.open_not_monitored("hq", "hq", now - timedelta(minutes=5), now, "offline")
    keys.append(c._kpi_key(now))
    c.store.close_not_monitored("hq", now, now)
    keys.append(c._kpi_key(now))
    c.store.close_not_monitored("hq", now, now)  # nothing open: nothing written
    keys.append(c._kpi_key(now))
    c.close()
    assert len({scope for scope, _ in keys}) == 1
    assert len({data for _, data in keys[:3]}) == 3
    assert keys[3] == keys[2]


def test_a_caller_is_told_the_cpu_of_the_work_it_waited_for(pool: ThreadPoolExecutor) -> None:
    """The board counts the KPI worked out for it in its own rate limit: the CPU the reader
    thread spent while the board waited, and nothing when it was served the last figure."""
    clock = Clock()

    def busy(now: datetime) -> int:
        started = time.thread_time()
        while time.thread_time() - started < 0.2:  # a fifth of a CPU-second of rules
            pass
        clock.t += 2.0  # and costly by the clock: the next caller gets this figure
        return 1

    costly: Costly[int] = Costly(pool, busy, clock=clock)
    value, cpu = costly.get_costing("q", "data", NOW)
    assert value == 1
    assert cpu >= 0.2
    assert costly.get_costing("q", "data", NOW) == (1, 0.0)


class _ThenAnother(Executor):
    """A thread per job; after the first job, another caller's figure is made before the
    first caller's future is told its result: the reader thread finishing a second figure
    while the first one's caller has not woken yet."""

    def __init__(self) -> None:
        self.then: Callable[[], object] | None = None
        self.threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        then, self.then = self.then, None

        def run() -> None:
            value = fn(*args, **kwargs)
            if then is not None:
                then()
            done.set_result(value)

        self.threads.append(threading.Thread(target=run))
        self.threads[-1].start()
        return done


def test_the_cpu_told_is_of_the_callers_own_figure() -> None:
    """Not of the last one made: another figure finished in between was read as the
    caller's, so a costly one counted nothing."""
    executor = _ThenAnother()

    def busy(now: datetime) -> int:
        started = time.thread_time()
        while time.thread_time() - started < 0.05:  # a twentieth of a CPU-second
            pass
        return now.hour

    costly: Costly[int] = Costly(executor, busy)
    executor.then = lambda: costly.get("other scope", "data", NOW + timedelta(hours=1))
    value, cpu = costly.get_costing("q", "data", NOW)
    for t in executor.threads:
        t.join(timeout=30)
    assert value == NOW.hour
    assert cpu >= 0.05
