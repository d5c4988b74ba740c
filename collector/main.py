"""``availmon collector``: subscribe, validate, store, serve status and metrics."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import multiprocessing.process
import sqlite3
import sys
import time
from collections.abc import Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiomqtt
from aiohttp import web

from availmon.aio import cancel_all
from availmon.clock import from_iso, utcnow
from availmon.config import Estate, load_config
from availmon.configpath import describe as describe_config
from availmon.configpath import find_config
from availmon.embedded import embedded_broker
from availmon.errors import AvailmonError, StoreError
from availmon.mqtt import client_kwargs, stop_if, wait_disconnected
from availmon.reload import read_new
from availmon.schema import (
    COLLECTORS_ROOT,
    Ack,
    Event,
    Heartbeat,
    State,
    ack_topic,
    collector_topic,
    seq_ranges,
)
from availmon.signals import install_reload_handler, install_stop_handlers
from availmon.text import one_line, terminal
from collector import auth, keeper
from collector.accounting import BusinessCalendar, quarter_containing
from collector.alerting import Alerting
from collector.board import kpi_view as board_kpi_view
from collector.costly import Costly
from collector.gaps import Gaps
from collector.ingest import (
    PAIR_SUBSCRIPTIONS,
    RETRYABLE,
    SUBSCRIPTIONS,
    Accepted,
    AckingClient,
    Rejected,
    configured_area,
    history_from,
    validate,
)
from collector.live import LiveOutages
from collector.liveness import Liveness
from collector.metrics import (
    CollectorMetrics,
    LiveAgent,
    LiveCheck,
    delivery_families,
    kpi_families,
)
from collector.report import fingerprint, kpi_snapshot
from collector.rules import record as record_rules
from collector.store import SITE_UNREACHABLE, Store, store_fault
from collector.web import start_web

log = logging.getLogger(__name__)
T = TypeVar("T")

#: SQLite page cache of the writer's connection, MiB (a ceiling: it grows as pages are used).
WRITER_CACHE_MIB = 64
#: Keeping the days' summaries (``Collector.keep_days``): the first pass this long after
#: start, then one pass every ``KEEP_EVERY`` seconds; after each day it rests ``KEEP_REST``
#: times the CPU time the day took.
KEEP_FIRST = 60.0
KEEP_EVERY = 600.0
KEEP_REST = 9.0
#: The keeper's process runs this much below the collector's priority.
KEEP_NICE = 10
#: After these, the writer's connection is reopened: it may have been opened read-only.
_REOPEN = ("readonly", "cant_open", "io_error")


@dataclasses.dataclass(frozen=True)
class _Judged:
    """A batch validated (``None``: another collector's own message), not yet committed."""

    now: datetime
    verdicts: list[tuple[str, bytes, Accepted | Rejected | None]]
    #: Indices of the messages the broker re-sent as retained (at a subscription): an old
    #: heartbeat so re-sent says nothing of whether its agent is alive now.
    retained: frozenset[int] = frozenset()


@dataclasses.dataclass
class Confirmation:
    """What one agent is told after a commit: seqs stored (duplicates and dropped included)
    and seqs refused for good."""

    site: str
    stored: set[int] = dataclasses.field(default_factory=set)
    rejected: set[int] = dataclasses.field(default_factory=set)


def _answer(receive: Any) -> Any:
    """What the day keeper's process sent back (the days made and refused, or what
    stopped it)."""
    try:
        return receive.recv()
    except EOFError:
        return "the day keeper's process ended without an answer"


class Collector:
    """Owns the store (one writer thread; reader threads for pages and the API, for its own
    reads and alert delivery, for the KPI, and for reports), the MQTT session and the web app.

    Outages as the live pages show them (open, recent, the quarter-to-date KPI) are kept in
    ``view`` (collector/live.py), brought up to date on the writer thread after every write
    commits (issue 9): a page view or a scrape reads memory, never the history."""

    def __init__(self, estate: Estate, *, metrics: CollectorMetrics | None = None) -> None:
        self.estate = estate
        self.metrics = metrics or CollectorMetrics()
        path = estate.collector.database
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        #: Reads for the board's pages and the API: any reader on the network may ask.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        #: The collector's own reads (alert delivery, the KPI, the keeper's state), on a
        #: connection of their own: a flood of page or API requests queues on ``_reader``
        #: and must not hold up an alert (``internal``).
        self._internal = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-internal")
        #: The quarter's KPI by the full rules (``_kpi_store``, ``_kpi_board``): seconds of
        #: work on a busy store, so neither pages nor alert delivery wait behind it.
        self._figures = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpi")
        #: Builds /metrics (no store reads): never queued behind a long report.
        self._scraper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrape")
        #: Makes the reports asked for through the API, on a connection of its own: a
        #: quarter worked out from its records (after an import, or a change of the rules)
        #: takes seconds, and the board's reads must not queue behind it.
        self._reporter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")
        #: Waits for the day keeper's process (``keep_days``).
        self._keeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="day-keeper")
        self._keeping: multiprocessing.process.BaseProcess | None = None
        #: What the last pass that finished kept the days for (``_keeping_state``), and
        #: how many passes started a process.
        self._kept_for: tuple[int | None, str, str] | None = None
        self.keeper_passes = 0
        self.view = LiveOutages(estate)
        #: The quarter's KPI by issue 10's rules, when the live view's is not the
        #: accounting's: worked out from the store, and costly at a busy store's size.
        self._kpi_store: Costly[dict[str, tuple[float, float]]] = Costly(
            self._figures, lambda now: kpi_snapshot(self.figures_store, self.estate, now)
        )
        self._kpi_board: Costly[dict[str, Any]] = Costly(
            self._figures, lambda now: board_kpi_view(self.figures_store, self.estate, now)
        )
        #: Bumped by each config reload: figures of the old config are never served.
        self._config_generation = 0
        #: True while ``write`` runs a write and its view update (writer thread).
        self._writing = False
        #: The last update of the view asked for by a reader (``catch_up``).
        self._catching_up: Future[None] | None = None
        # The writer's page cache holds the index pages every batch inserts into (a thousand
        # checks' worth): at SQLite's default 2 MiB a store of a million events re-read them
        # from the file system on every commit (issue 8's throughput).
        self.store = Store(path, tolerant=True, cache_mib=WRITER_CACHE_MIB)
        self.read_store = Store(path, tolerant=True)
        self.internal_store = Store(path, tolerant=True)
        self.figures_store = Store(path, tolerant=True)
        self.report_store = Store(path, tolerant=True)
        self.live: dict[tuple[str, str], LiveCheck] = {}
        self.agents: dict[str, LiveAgent] = {}
        self.liveness = Liveness(timedelta(seconds=estate.collector.offline_grace))
        self.gaps = Gaps(estate.collector.gap_grace)
        self.missing: dict[str, int] = {}
        #: Why the store cannot write right now (a STORE_ERROR_REASONS value), else None.
        self.store_error: str | None = None
        #: Other collectors' presence (client id -> online), from their retained status.
        self.presence: dict[str, bool] = {}
        self.is_leader = False
        #: Set by ``run`` before it cancels its tasks (see ``availmon.mqtt.stop_if``).
        self.stopping = False
        #: The live MQTT session, while there is one (the alerts publish receipts on it).
        self.mqtt: AckingClient | None = None
        #: Sessions established with the broker (subscribed), since start.
        self.connects = 0
        self._connected_at: datetime | None = None
        #: When the store last became writable again (silence is counted from then too).
        self._silence_from: datetime | None = None
        self._live_loaded = False
        try:
            self._load_live()
        except sqlite3.Error as exc:
            if store_fault(exc) is None:
                raise
            log.error("database %s cannot be read yet (%s); waiting for it", path, exc)
        self.metrics.watch(
            lambda: list(self.live.values()),
            lambda: list(self.agents.values()),
            # The quarter-to-date KPI from the live view: no store read per scrape.
            lambda: [
                *kpi_families(self.kpi(utcnow()), self.estate.accounting.target_percent / 100),
                *delivery_families(self._missing_by_site(), self.is_leader, not self.store_error),
            ],
        )
        self.connected = asyncio.Event()
        #: Set the moment a live session is seen to drop (before its teardown finishes).
        self.disconnected = asyncio.Event()
        #: Notified after every committed batch; tests and the live board await it.
        self.changed = asyncio.Condition()
        #: Counts those notifications (the web's cached bodies are keyed on it).
        self.notifications = 0
        #: Alerts (issue 11): fed the outages each commit touched; sends when leader.
        self.alerting = Alerting(self)
        #: Held from a batch's bookkeeping through its commit: one batch at a time, in order.
        self._committing = asyncio.Lock()
        self.web_port: int | None = None
        self._web_app: web.Application | None = None
        #: Set once the web server listens (``web_port`` is then the real port).
        self.web_ready = asyncio.Event()

    #: What a running collector cannot change: its MQTT session (broker, client id, pair),
    #: its database and its listening socket with the limits set on it.
    RESTART_ONLY = (
        "broker",
        "collector.database",
        "collector.client_id",
        "collector.members",
        "collector.max_payload_bytes",
        "web.listen",
        "web.port",
        "web.max_connections",
        "web.idle_timeout",
        "web.body_timeout",
        "web.max_body_bytes",
    )

    async def reload(self, path: Path) -> bool:
        """Re-read ``path`` (SIGHUP) and apply it: the estate (sites, checks, areas,
        services), alert routes and channels, maintenance, accounting and the web's tokens.
        A bad config, or one changing a :data:`RESTART_ONLY` setting, is refused with every
        reason logged, and the running config stays. The MQTT session is kept."""
        log.info("config reload: reading %s", path)
        new = read_new(path, self.estate, self.RESTART_ONLY, log)
        tokens = None
        if new is not None:
            try:
                tokens = auth.Tokens.from_config(new.web)
            except AvailmonError as exc:
                log.error("config reload refused: %s: %s", path, one_line(exc))
                new = None
        if new is None or tokens is None:
            self.metrics.config_reloads.labels("failed").inc()
            return False
        old, self.estate = self.estate, new
        self._config_generation += 1
        if self._web_app is not None:
            self._web_app[auth.TOKENS].update(tokens)
        self.liveness.grace = timedelta(seconds=new.collector.offline_grace)
        self.gaps.grace = new.collector.gap_grace
        # What the store holds is judged against the new estate: removed checks leave the
        # live view, and events of checks no longer configured get their history back.
        self.history = await self.internal(
            lambda: history_from(self.internal_store.event_history(), new)
        )
        for key, c in list(self.live.items()):
            if configured_area(new, c.site, c.check) != c.area:
                del self.live[key]
        # The live view's areas, timezone and whether the plain rules hold come from the
        # estate: a new view, loaded on the writer thread, replaces it whole.
        view = LiveOutages(new)

        def load_view() -> None:
            self.sync_view()  # what the old view has not applied yet is in the store anyway
            view.load(self.store, utcnow())
            view.load_records(self.store, utcnow())
            self.view = view  # here, so no commit's changes fall between load and swap

        await self.write(load_view)
        await self._relead()
        self.alerting.reconfigure()
        try:
            await self.write(record_rules, self.store, new, utcnow())
        except Exception as exc:
            log.warning("could not record the accounting rules in force: %s", exc)
        before = sum(len(s.checks) for s in old.sites.values())
        after = sum(len(s.checks) for s in new.sites.values())
        log.info(
            "config reload ok: %s: %d sites, %d checks (was %d sites, %d checks)",
            path,
            len(new.sites),
            after,
            len(old.sites),
            before,
        )
        self.metrics.config_reloads.labels("ok").inc()
        self.metrics.config_last_success.set_to_current_time()
        await self._notify()
        return True

    async def _reloads(self, reload: asyncio.Event, path: Path) -> None:
        while True:
            await reload.wait()
            reload.clear()
            await self.reload(path)

    def _load_live(self) -> None:
        self.history = history_from(self.store.event_history(), self.estate)
        for row in self.store.check_statuses():
            if configured_area(self.estate, row["site"], row["check_name"]) != row["area"]:
                continue  # a check removed from the config, or one an agent made up
            self.live[(row["site"], row["check_name"])] = LiveCheck(
                row["site"],
                row["agent"],
                row["check_name"],
                row["area"],
                State(row["state"]),
                row["latency"],
                since=from_iso(row["since"]) if row["since"] else None,
                error=row["error"],
            )
        for row in self.store.agents():
            self.agents[row["agent"]] = LiveAgent(
                row["site"],
                row["agent"],
                row["status"] or "",
                row["spool_depth"],
            )
        self.view.load(self.store, utcnow())
        self.view.load_records(self.store, utcnow())
        for row in self.view.open_rows():
            if row["source"] == "provisional":
                self.liveness.opened(row["agent"])
        started = time.monotonic()
        firsts = self.store.first_seqs()
        for agent, ranges in self.store.seen_seqs().items():
            self.gaps.seen(agent, ranges, started, first_seq=firsts.get(agent))
        self._live_loaded = True

    async def write(self, fn: Any, *args: Any) -> Any:
        """Run a store write on the writer thread. A fault of the environment (disk full,
        I/O error, read-only or locked database) is waited out, with a capped backoff: the
        batch stays unacknowledged meanwhile, so the broker and the agents keep it; waiting
        loses nothing, whereas giving up would lose it or crash into a restart loop. An error
        that is the data's own fault is raised to the caller."""
        loop = asyncio.get_running_loop()
        delay = 0.2
        while True:
            try:
                result = await loop.run_in_executor(
                    self._writer, partial(self._committed, fn, *args)
                )
            except Exception as exc:
                reason = store_fault(exc)
                if reason is None:
                    raise
                self.metrics.store_errors.labels(reason).inc()
                if reason == "locked":
                    self.metrics.store_busy.inc()
                if self.store_error is None:
                    log.error(
                        "database %s cannot be written (%s: %s): nothing is acknowledged until"
                        " it can; retrying",
                        self.estate.collector.database,
                        reason,
                        exc,
                    )
                else:
                    log.warning("database still cannot be written (%s: %s)", reason, exc)
                self.store_error = reason
                if self.stopping:
                    # Stopping with the store unwritable: give the write up rather than hold
                    # the stop until systemd kills us. Nothing of it was acknowledged, so
                    # the broker and the agents keep it for the next start.
                    raise StoreError(
                        f"database {self.estate.collector.database} still cannot be written"
                        f" ({reason}) at shutdown: left to the next start"
                    ) from exc
                if reason in _REOPEN:
                    await loop.run_in_executor(self._writer, self._reopen_store)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.estate.collector.store_retry_max)
                continue
            if self.store_error is not None:
                log.warning(
                    "database %s writable again (was %s)",
                    self.estate.collector.database,
                    self.store_error,
                )
                self.store_error = None
                # Heartbeats waited behind the failing writes: count silence afresh.
                self._silence_from = utcnow()
            return result

    def _committed(self, fn: Any, *args: Any) -> Any:
        """Writer thread: the write, then the live view brought up to date with it."""
        self._writing = True
        try:
            result = fn(*args)
            self.sync_view()
            self.load_records()
            return result
        finally:
            self._writing = False

    def sync_view(self) -> None:
        """Writer thread: apply to the live view what the store has committed since. A
        failure to read it back leaves the view to be loaded again (``refresh_view``)."""
        changes = self.store.take_changes()
        if changes.since is None and not (changes.opened or changes.closed):
            return
        try:
            self.view.apply(self.store, changes, utcnow())
        except Exception:
            log.exception("the live view could not read back a commit; reloading it")
            self.view.loaded = False

    def refresh_view(self) -> None:
        """Writer thread: load the view again when it is due (a new quarter, another
        process wrote outages, a failed update)."""
        self.sync_view()
        try:
            if not self.view.loaded or self.view.stale(self.store, utcnow()):
                self.view.load(self.store, utcnow())
        except sqlite3.Error as exc:
            log.warning("the live view could not be loaded (%s); retrying", exc)
        self.load_records()

    async def refresh(self) -> None:
        """``refresh_view`` on the writer thread (the supervision loop's tick)."""
        await asyncio.get_running_loop().run_in_executor(self._writer, self.refresh_view)

    def _catch_up_due(self) -> bool:
        """Commits made without ``write`` (a test, a tool holding ``store``) wait to reach
        the view, or another reader is bringing them there. A write in flight is not
        waited for: ``write`` returns once the view has it."""
        pending = self.store.has_changes() and not self._writing
        running = self._catching_up is not None and not self._catching_up.done()
        return pending or running

    def catch_up(self) -> None:
        """Before a read of the live view from a thread other than the writer."""
        if self._catch_up_due():
            with contextlib.suppress(RuntimeError):  # the writer is shut down: closing
                self._catching_up = self._writer.submit(self.sync_view)
                self._catching_up.result()

    async def catch_up_async(self) -> None:
        """``catch_up`` from the event loop, without blocking it."""
        if self._catch_up_due():
            with contextlib.suppress(RuntimeError):
                self._catching_up = self._writer.submit(self.sync_view)
                await asyncio.wrap_future(self._catching_up)

    def kpi(self, now: datetime) -> dict[str, tuple[float, float]]:
        """The quarter-to-date KPI for /metrics: from the live view while that is the
        accounting's figure (``LiveOutages.plain``), else by issue 10's full rules from the
        store, on its own thread (``_figures``)."""
        self.catch_up()
        if self.view.plain:
            return self.view.kpi(now)
        # A scrape never waits for a costly figure (absent meanwhile, as any value not
        # measured): Prometheus would time out.
        return self._kpi_store.get_or_none(*self._kpi_key(now), now) or {}

    def _kpi_key(self, now: datetime) -> tuple[Hashable, Hashable]:
        """What a store-made KPI depends on (``Costly``): the config and the quarter, and
        the data (the collector's own writes of outages, declared windows and not-monitored
        records, and the live view's version, which moves when another process's writes are
        read in)."""
        tz = ZoneInfo(self.estate.accounting.timezone)
        scope = (self._config_generation, quarter_containing(now, tz).id)
        store = self.store
        data = (store.own_writes, store.window_writes, store.not_monitored_writes)
        return scope, (*data, self.view.version)

    def kpi_view(self, now: datetime) -> dict[str, Any] | None:
        """The board's KPI when the live view's is not the accounting's (None: use the
        view's), worked out on its own thread (``_figures``); called off the event loop."""
        if self.view.plain:
            return None
        return self._kpi_board.get(*self._kpi_key(now), now)

    def kpi_view_costing(self, now: datetime) -> tuple[dict[str, Any] | None, float]:
        """``kpi_view``, and the CPU-seconds of working it out that the caller waited for
        on its thread (the board counts them in its rate limit)."""
        if self.view.plain:
            return None, 0.0
        return self._kpi_board.get_costing(*self._kpi_key(now), now)

    async def kpi_view_async(self, now: datetime) -> dict[str, Any] | None:
        """``kpi_view`` from the event loop, without blocking it."""
        if self.view.plain:
            return None
        return await self._kpi_board.get_async(*self._kpi_key(now), now)

    def load_records(self) -> None:
        """Writer thread: issue 10's records the view holds (``LiveOutages.load_records``);
        a failure to read them makes the KPI come from the store until the next try."""
        try:
            self.view.load_records(self.store, utcnow())
        except Exception:
            log.exception("the live view could not read the maintenance windows")
            self.view.records_unknown()

    async def scrape(self, fn: Any, *args: Any) -> Any:
        """Run a /metrics build on its own thread (reads memory only)."""
        return await asyncio.get_running_loop().run_in_executor(self._scraper, partial(fn, *args))

    def _reopen_store(self) -> None:
        try:
            self.store.reopen()
        except Exception as exc:  # still unavailable: the next write says why
            log.debug("reopening the store failed: %s", exc)

    async def read(self, fn: Any, *args: Any) -> Any:
        """A read for a page or the API, with ``read_store``."""
        return await asyncio.get_running_loop().run_in_executor(self._reader, partial(fn, *args))

    async def internal(self, fn: Any, *args: Any) -> Any:
        """One of the collector's own reads, with ``internal_store`` (see ``_internal``)."""
        return await asyncio.get_running_loop().run_in_executor(self._internal, partial(fn, *args))

    async def report(self, fn: Any, *args: Any) -> Any:
        """Run a report on its own thread, with ``report_store`` (see ``_reporter``)."""
        return await asyncio.get_running_loop().run_in_executor(self._reporter, partial(fn, *args))

    async def _store_ready(self, stop: asyncio.Event) -> bool:
        """Wait until the store can write (or ``stop``); False when stopped first."""

        async def ready() -> None:
            await self.write(self.store.ready)
            if not self._live_loaded:
                await self.write(self._load_live)

        waiting = asyncio.ensure_future(ready())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, stopping):
                task.cancel()
            await asyncio.gather(waiting, stopping, return_exceptions=True)
        if waiting.cancelled():
            return False
        waiting.result()  # an error that is not the environment's ends the collector
        return True

    def close(self) -> None:
        if self._keeping is not None and self._keeping.is_alive():
            self._keeping.terminate()
        self._scraper.shutdown(wait=True)
        self._keeper.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._internal.shutdown(wait=True)
        self._figures.shutdown(wait=True)
        self._reporter.shutdown(wait=True, cancel_futures=True)  # a report asked for is moot
        self.store.close()
        self.read_store.close()
        self.internal_store.close()
        self.figures_store.close()
        self.report_store.close()

    # -- ingest ---------------------------------------------------------------------------

    async def handle_batch(
        self, messages: list[tuple[str, bytes]], retained: Iterable[int] = ()
    ) -> dict[str, Confirmation]:
        """Validate, commit and update the live view; returns once the batch is durable,
        with what to confirm to each agent. A store fault keeps it waiting here.

        Validation is pure and runs at once, on the event loop, while an earlier batch may
        still be committing on the writer thread; everything after it (counts, logs, the
        commit, the live view) runs one batch at a time, in the order the batches came
        (``_committing`` is a fair lock), as if the batches had been handled one by one."""
        judged = dataclasses.replace(self._judge(messages), retained=frozenset(retained))
        async with self._committing:
            return await self._commit(judged)

    def _judge(self, messages: list[tuple[str, bytes]]) -> _Judged:
        """Every message's verdict, and nothing else: no count, no log, no state changes, so
        it may run before the batch ahead has committed."""
        now = utcnow()
        verdicts: list[tuple[str, bytes, Accepted | Rejected | None]] = []
        for topic, payload in messages:
            if topic.startswith(COLLECTORS_ROOT + "/"):
                verdicts.append((topic, payload, None))  # collectors' own traffic
                continue
            verdict = validate(topic, payload, estate=self.estate, now=now, history=self.history)
            verdicts.append((topic, payload, verdict))
        return _Judged(now, verdicts)

    async def _commit(self, judged: _Judged) -> dict[str, Confirmation]:
        """Count and log the verdicts, commit the events, then bring the live view, liveness
        and gaps up to date; what to confirm to each agent."""
        now = judged.now
        events: list[Event] = []
        heartbeats: list[tuple[Heartbeat, bool]] = []  # and whether it came retained
        statuses: list[Accepted] = []
        accounted: list[tuple[str, int, int, str]] = []
        confirm: dict[str, Confirmation] = {}
        firsts: dict[str, int] = {}
        with_events: list[Accepted] = []
        for index, (topic, payload, verdict) in enumerate(judged.verdicts):
            if verdict is None:
                self._presence(topic, payload)
                continue
            self.metrics.messages.inc()
            if isinstance(verdict, Rejected):
                self.metrics.rejected.labels(verdict.reason).inc()
                log.warning(
                    "rejected message on %s: %s: %s",
                    terminal(topic[:200]),
                    verdict.reason,
                    verdict.detail,
                )
                continue
            self.metrics.removed_check.inc(verdict.removed_check)
            self.metrics.heartbeat_checks_ignored.inc(verdict.ignored_checks)
            if verdict.kind == "events":
                c = confirm.setdefault(verdict.agent, Confirmation(verdict.site))
                if verdict.events:
                    with_events.append(verdict)
                    events.extend(verdict.events)
                    # One call for the batch: ``heard`` keeps the latest time it is given.
                    latest = max(ev.detected_at for ev in verdict.events)
                    self.liveness.heard(verdict.agent, min(now, latest))
                for refused in verdict.refused:
                    self.metrics.rejected.labels(refused.verdict.reason).inc()
                    log.warning(
                        "rejected event seq %s of agent %s: %s: %s",
                        refused.seq,
                        verdict.agent,
                        refused.verdict.reason,
                        refused.verdict.detail,
                    )
                    if refused.seq is not None and refused.verdict.reason not in RETRYABLE:
                        c.rejected.add(refused.seq)
                        accounted.append((verdict.agent, refused.seq, refused.seq, "rejected"))
                for lo, hi in verdict.dropped:
                    accounted.append((verdict.agent, lo, hi, "dropped"))
                    c.stored.update(range(lo, hi + 1))
                if verdict.first_seq is not None:
                    firsts[verdict.agent] = verdict.first_seq
            elif verdict.heartbeat is not None:
                self.liveness.heard(verdict.agent, min(now, verdict.heartbeat.at))
                heartbeats.append((verdict.heartbeat, index in judged.retained))
            else:
                statuses.append(verdict)
        if events or accounted:
            stored = await self._ingest_events(events, accounted, now)
            if self.alerting.enabled:  # else the set would be a pass over the batch for nothing
                self.alerting.touch({(ev.site, ev.agent, ev.check) for ev in stored})
            if stored is events:
                for verdict in with_events:
                    confirm[verdict.agent].stored.update(ev.seq for ev in verdict.events)
            else:  # some refused by the store itself, one by one
                for ev in stored:
                    confirm[ev.agent].stored.add(ev.seq)
                kept = {ev.id for ev in stored}
                for ev in events:
                    if ev.id not in kept:
                        confirm[ev.agent].rejected.add(ev.seq)
        mono = time.monotonic()
        for agent, c in confirm.items():
            self.gaps.seen(
                agent, seq_ranges(c.stored | c.rejected), mono, first_seq=firsts.get(agent)
            )
        # Statuses first: an agent's "online" and its first heartbeat often share a batch.
        for st in statuses:
            await self._status(st, now)
        for hb, was_retained in heartbeats:
            await self._heartbeat(hb, now, was_retained)
        await self._notify()
        return confirm

    async def _ingest_events(
        self, events: list[Event], accounted: list[tuple[str, int, int, str]], now: datetime
    ) -> list[Event]:
        """Commit the batch; the events stored (or already held). Environment faults are
        waited out in ``write``; an event the store refuses for its own sake is found by
        retrying one at a time, rejected and counted, and the rest are stored."""
        try:
            result = await self.write(self.store.ingest, events, now, accounted)
        except Exception:
            log.exception("store refused a batch of %d events; finding the culprit", len(events))
            kept: list[Event] = []
            for ev in events:
                try:
                    result = await self.write(self.store.ingest, [ev], now)
                except Exception:
                    self.metrics.rejected.labels("store_refused").inc()
                    log.exception("rejected event %s: the store refuses it", ev.id)
                    continue
                self._count(result)
                kept.append(ev)
                self._apply_events([ev])
            await self.write(self.store.ingest, [], now, accounted)
            return kept
        self._count(result)
        self._apply_events(events)
        return events

    def _count(self, result: Any) -> None:
        self.metrics.ingested.inc(result.inserted)
        self.metrics.duplicates.inc(result.duplicates)
        if result.conflicts:
            self.metrics.rejected.labels("seq_conflict").inc(len(result.conflicts))
            log.error(
                "events reuse stored ids with other content (agent reset?); quarantined in "
                "the conflicts table: %s",
                ", ".join(result.conflicts),
            )

    def _presence(self, topic: str, payload: bytes) -> None:
        """Another collector's retained status (or our own): who sends alerts."""
        parts = topic.split("/")
        if len(parts) != 5 or parts[4] not in ("status", "alerts"):
            return
        name, online = parts[3], payload == b"online"
        if name == self.estate.collector.client_id:
            return
        if parts[4] == "alerts":
            self.alerting.receipt(name, payload)  # the other of the pair sent these
            return
        if self.presence.get(name) != online:
            log.info("collector %s is %s", name, "online" if online else "offline")
        self.presence[name] = online
        self._lead()

    def _lead(self) -> bool:
        """The first collector of collector.members that is online sends alerts. Whether
        that changed here: outside a batch (which ends with a notification anyway) the
        caller tells the board, else it would learn of a hand-over only with the next one."""
        me = self.estate.collector.client_id
        leader = None
        if self.connected.is_set():
            for name in self.estate.collectors():
                if name == me or self.presence.get(name, False):
                    leader = name
                    break
        is_leader = leader == me
        if is_leader != self.is_leader:
            log.warning(
                "collector %s %s sending alerts%s",
                me,
                "is now" if is_leader else "stops",
                f" ({leader} leads)" if leader and not is_leader else "",
            )
        changed, self.is_leader = is_leader != self.is_leader, is_leader
        return changed

    async def _relead(self) -> None:
        """``_lead`` outside a batch, telling the board when it changed."""
        if self._lead():
            await self._notify()

    async def _heartbeat(self, hb: Heartbeat, now: datetime, retained: bool = False) -> None:
        try:
            await self.write(self.store.record_heartbeat, hb, now)
        except Exception:
            self.metrics.rejected.labels("store_refused").inc()
            log.exception("rejected heartbeat of %s: the store refuses it", hb.agent)
            return
        self.metrics.heartbeats.inc()
        self.gaps.heartbeat(
            hb.agent,
            hb.seq,
            hb.first_seq,
            hb.spool_depth == 0 and not any(hb.unconfirmed.values()),
            time.monotonic(),
        )
        # Silence is judged on when heartbeats arrive, by this clock: an agent whose clock is
        # a minute slow was marked offline at every heartbeat timeout. Not one the broker
        # re-sent as retained at a subscription: it may be a dead agent's last.
        if not retained and self.liveness.silent_returned(hb.agent, now):
            # Marked offline for missed heartbeats, and heard again: the link is back.
            await self._status(Accepted("status", hb.site, hb.agent, status="online"), now)
        prev = self.agents.get(hb.agent)
        status = prev.status if prev else "online"
        self.agents[hb.agent] = LiveAgent(
            hb.site,
            hb.agent,
            status,
            hb.spool_depth,
            hb.spool_dropped,
            tuple(sorted(hb.traps.items())),
            tuple(sorted(hb.unconfirmed.items())),
            # An older agent's heartbeat says nothing of it: unknown, not "writable".
            spool_unwritten=hb.spool_unwritten
            if {"spool_unwritten", "spool_error"} & hb.model_fields_set
            else None,
            spool_error=hb.spool_error,
        )
        if status == "online":
            for c in hb.checks:
                self.live[(hb.site, c.check)] = LiveCheck(
                    hb.site,
                    hb.agent,
                    c.check,
                    c.area,
                    c.state,
                    c.latency,
                    since=c.since,
                    error=c.error,
                    loss=c.loss,
                    jitter=c.jitter,
                    cert_not_after=hb.at + timedelta(seconds=c.cert_expires_in)
                    if c.cert_expires_in is not None
                    else None,
                    duration=c.duration,
                )
        if self.liveness.heartbeat(hb.agent, hb.spool_depth, now):
            dropped = await self.write(self.store.drop_provisional, hb.agent)
            await self.write(self.store.provisional_dropped, hb.agent, now)
            log.info(
                "agent %s replayed its spool: its record replaces %d provisional outage(s)",
                hb.agent,
                dropped,
            )

    async def _status(self, st: Accepted, now: datetime) -> None:
        assert st.status is not None
        # Bookkeeping first: a provisional outage being opened meanwhile must see this.
        self.liveness.set_status(st.agent, st.status, now)
        await self.write(self.store.record_agent_status, st.site, st.agent, st.status, now)
        prev = self.agents.get(st.agent)
        self.agents[st.agent] = (
            dataclasses.replace(prev, site=st.site, status=st.status)
            if prev
            else LiveAgent(st.site, st.agent, st.status)
        )
        if st.status != "online":
            self._mark_unknown(st.agent)
        if st.status == "stopped":
            # Stopped on purpose: not an outage, but not monitored either (issue 10).
            await self.write(self.store.open_not_monitored, st.site, st.agent, now, now, "stopped")
        elif st.status == "online":
            await self.write(self.store.close_not_monitored, st.agent, now, now)
        log.info("agent %s (site %s) is %s", st.agent, st.site, st.status)

    async def _notify(self) -> None:
        self.notifications += 1
        async with self.changed:
            self.changed.notify_all()

    async def notify_changed(self) -> None:
        """Tell the board (and tests) about a change made outside ingest: a web write."""
        await self._notify()

    def _mark_unknown(self, agent: str) -> None:
        """An agent we cannot hear from tells us nothing about its checks."""
        for key, c in self.live.items():
            if c.agent == agent:
                self.live[key] = LiveCheck(
                    c.site, c.agent, c.check, c.area, State.UNKNOWN, None, since=utcnow()
                )

    async def check_liveness(self, now: datetime | None = None) -> None:
        """Open the provisional outages that are due (``now``: evaluate at another time)."""
        now = now or utcnow()
        for agent, start in self.liveness.due(now):
            site = self.agents[agent].site if agent in self.agents else agent
            self.liveness.opened(agent)  # before the await: a status arriving meanwhile sees it
            oid = await self.write(self.store.open_provisional, site, agent, start)
            # Not monitored from when it was last heard (issue 10): kept after the replay.
            await self.write(self.store.open_not_monitored, site, agent, start, now, "offline")
            self.alerting.touch({(site, agent, SITE_UNREACHABLE)})
            log.warning(
                "agent %s (site %s) offline for over %.0f s: provisional outage %s from %s",
                agent,
                site,
                self.estate.collector.offline_grace,
                oid,
                start.isoformat(),
            )
            await self._notify()

    async def check_silence(self, now: datetime | None = None) -> None:
        """Mark offline the agents online whose heartbeats stopped (issue 8, part 6)."""
        now = now or utcnow()
        if self._connected_at is None or self.store_error is not None:
            # The collector's own outage silences nobody; nor does its store's, behind
            # which every agent's heartbeats wait.
            return
        since = max(self._connected_at, self._silence_from or self._connected_at)
        timeout = self.estate.heartbeat_timeout()
        for agent in self.liveness.silent(now, timedelta(seconds=timeout), since):
            site = self.agents[agent].site if agent in self.agents else agent
            log.warning(
                "agent %s (site %s): no heartbeat for over %.0f s: offline", agent, site, timeout
            )
            await self._status(Accepted("status", site, agent, status="offline"), now)
            await self._notify()

    async def keep_days(self, now: datetime | None = None) -> int:
        """Work out and keep the summary of every day of this quarter and the last that has
        ended and is not kept (``collector.report.keep_days``), so that a report reads
        them back rather than the quarter's records: in a process of its own
        (``collector.keeper``), below the collector's priority, a day at a time, resting
        nine times as long as each day took (at most a tenth of a core). Returns how many
        days it made; raises what stopped it. Starts no process when nothing can be
        missing since the last pass: no write dropped a kept day, no day ended, the rules
        are the same. ``now``: the clock's (tests give one, so that no midnight comes
        between two passes)."""
        loop = asyncio.get_running_loop()
        now = now or utcnow()
        state = await self.internal(self._keeping_state, now)
        if state[0] is not None and state == self._kept_for:
            return 0
        ctx = multiprocessing.get_context("spawn")
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=keeper.run,
            args=(
                send,
                str(self.estate.collector.database),
                self.estate,
                now,
                KEEP_REST,
                KEEP_NICE,
                state[2],
            ),
            name="availmon-day-keeper",
            daemon=True,
        )
        proc.start()
        self.keeper_passes += 1
        send.close()
        self._keeping = proc
        try:
            answer = await loop.run_in_executor(self._keeper, _answer, receive)
        finally:
            if proc.is_alive():
                proc.terminate()  # stopped, or cancelled: nothing half-written is kept
            await loop.run_in_executor(self._keeper, proc.join)
            receive.close()
            self._keeping = None
        if isinstance(answer, str):
            raise RuntimeError(answer)
        made, refused, quarters = answer
        if quarters:
            log.info("kept the figures of %d quarters the report's history charts", quarters)
        if refused:
            # Not kept (the store could not be written, or a write came meanwhile): the
            # next pass tries again, whatever else has changed by then.
            log.info("the store did not keep %d of the %d days worked out", refused, made)
        else:
            self._kept_for = state
        return int(made)

    def _keeping_state(self, now: datetime) -> tuple[int | None, str, str]:
        """What the kept days can change with: the store's figures version (bumped by a
        write into a kept day), today's date where the quarters are counted, the rules."""
        tz = ZoneInfo(self.estate.accounting.timezone)
        today = now.astimezone(tz).date().isoformat()
        return self.internal_store.figures_generation(), today, fingerprint(self.estate)

    async def _days_loop(self) -> None:
        await asyncio.sleep(KEEP_FIRST)  # the live view and the backlog come first
        while True:
            try:
                made = await self.keep_days()
                if made:
                    log.info("kept the summaries of %d days for the report", made)
            except Exception as exc:  # the next pass tries again; reports work it out
                log.warning("could not keep the report's figures: %s", one_line(exc))
            await asyncio.sleep(KEEP_EVERY)  # a supervision period, not a synchronisation

    async def _liveness_loop(self) -> None:
        cfg = self.estate.collector
        tick = min(cfg.offline_grace / 4, self.estate.heartbeat_timeout() / 4, 5.0)
        while True:
            await asyncio.sleep(tick)  # a supervision period, not a synchronisation
            await self.check_silence()
            await self.check_liveness()
            self.check_gaps()
            await self.refresh()

    def _missing_by_site(self) -> dict[tuple[str, str], int]:
        sites = {self.estate.agent_id(s): s for s in self.estate.sites}
        return {(sites.get(a, a), a): n for a, n in self.missing.items()}

    def check_gaps(self, now: float | None = None) -> dict[str, int]:
        """Count the seqs still missing past the grace (``now``: monotonic seconds)."""
        self.missing = self.gaps.evaluate(time.monotonic() if now is None else now)
        return self.missing

    def _apply_events(self, events: list[Event]) -> None:
        """The live view after these events, applied in order. A batch holds thousands of
        events for far fewer checks, so each check gets one new ``LiveCheck``: the state,
        agent, area and error of its last event, the latency of its last event that measured
        one, and the time its current state began."""
        by_check: dict[tuple[str, str], list[Event]] = {}
        for ev in events:
            key = (ev.site, ev.check)
            same = by_check.get(key)
            if same is None:
                by_check[key] = [ev]
            else:
                same.append(ev)
        for key, evs in by_check.items():
            prev = self.live.get(key)
            first, last = evs[0], evs[-1]
            base = prev or LiveCheck(
                first.site, first.agent, first.check, first.area, first.to, None
            )
            state = None if prev is None else prev.state
            since = None if prev is None else prev.since
            latency = base.latency
            for ev in evs:
                if ev.to is not state:  # the state changes here (or the check is new)
                    state, since = ev.to, ev.at
                if ev.evidence.latency is not None:
                    latency = ev.evidence.latency
            self.live[key] = dataclasses.replace(
                base,
                agent=last.agent,
                area=last.area,
                state=last.to,
                latency=latency,
                since=since,
                error=last.evidence.error,
            )

    async def _session(self) -> None:
        cfg = self.estate.collector
        presence = collector_topic(cfg.client_id)
        async with AckingClient(
            **client_kwargs(self.estate.broker),
            identifier=cfg.client_id,
            clean_session=False,  # the broker keeps our backlog while we are away
            will=aiomqtt.Will(presence, b"offline", qos=1, retain=True),
        ) as client:
            pair = len(self.estate.collectors()) > 1
            await client.subscribe(SUBSCRIPTIONS + (PAIR_SUBSCRIPTIONS if pair else []))
            await client.publish(presence, b"online", qos=1, retain=True)
            self.disconnected.clear()
            self.connected.set()
            self.connects += 1
            self.metrics.connects.inc()
            self.mqtt = client
            self._connected_at = utcnow()
            await self._relead()
            log.info("collector subscribed as %s", cfg.client_id)
            try:
                stop_if(self.stopping)  # a stop swallowed while connecting ends it here
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._consume(client))
                    tg.create_task(self._watch(client))
            except asyncio.CancelledError:
                # A clean stop sends no last will: say it, so the agents stop waiting on us
                # and the other collector of a pair takes over the alerts.
                with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                    await client.publish(presence, b"offline", qos=1, retain=True, timeout=2)
                raise
            except BaseExceptionGroup as group:
                mqtt_errors = group.subgroup(aiomqtt.MqttError)
                if mqtt_errors is None:
                    raise
                raise mqtt_errors.exceptions[0] from None

    async def _watch(self, client: AckingClient) -> None:
        try:
            await wait_disconnected(client)
        finally:
            self.mqtt = None
            self.connected.clear()
            self._connected_at = None
            self.disconnected.set()
            await self._relead()

    async def _consume(self, client: AckingClient) -> None:
        """Take the messages waiting as one batch, up to ``collector.batch_size``; while it
        commits on the writer thread, validate the next (issue 8's throughput). A batch is
        confirmed and acknowledged only after its commit, and before the next one is."""
        batch_size = self.estate.collector.batch_size
        messages = client.messages
        inflight: collections.deque[tuple[asyncio.Future[Any], list[aiomqtt.Message]]] = (
            collections.deque()
        )
        try:
            while True:
                if inflight and len(messages) == 0:
                    # Nothing to validate meanwhile: the batch in flight is confirmed now,
                    # not when the next message comes.
                    await self._confirm(client, *inflight[0])
                    inflight.popleft()
                    continue
                first = await anext(messages)
                batch = [first]
                while len(batch) < batch_size and len(messages) > 0:
                    batch.append(await anext(messages))
                work = asyncio.ensure_future(
                    self.handle_batch(
                        [(str(m.topic), bytes(m.payload)) for m in batch],  # type: ignore[arg-type]
                        [i for i, m in enumerate(batch) if m.retain],
                    )
                )
                inflight.append((work, batch))
                if len(inflight) > 1:
                    await self._confirm(client, *inflight[0])
                    inflight.popleft()
        finally:
            # A session that drops mid-commit must not cut the batches' bookkeeping short: the
            # commits complete on the writer thread either way. Nothing more is acknowledged:
            # the broker hands the batches over again and idempotent ingest absorbs them.
            raising = sys.exception()
            outcomes = await asyncio.gather(*(w for w, _ in inflight), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception) and outcome is not raising:
                    log.error("a batch in flight failed", exc_info=outcome)

    async def _confirm(
        self,
        client: AckingClient,
        work: asyncio.Future[dict[str, Confirmation]],
        batch: list[aiomqtt.Message],
    ) -> None:
        """Once ``work`` has committed: tell each agent what is stored, then release the
        broker's copies (PUBACK)."""
        confirm = await asyncio.shield(work)
        me = self.estate.collector.client_id
        for agent, c in confirm.items():
            if not (c.stored or c.rejected):
                continue
            ack = Ack(collector=me, stored=seq_ranges(c.stored), rejected=seq_ranges(c.rejected))
            client.send(ack_topic(c.site, agent, me), ack.to_json())
            self.metrics.confirmations.inc()
        for m in batch:
            client.ack(m)

    async def _mqtt_loop(self) -> None:
        backoff = 0.5
        while True:
            connects = self.connects
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                stop_if(self.stopping, exc)
                # A session that was established (subscribed) was useful: the next attempt
                # starts from the shortest delay, so a restarted broker is back within seconds.
                if self.connects > connects:
                    backoff = 0.5
                log.warning(
                    "broker %s:%d: %s; retrying in %.1f s",
                    self.estate.broker.host,
                    self.estate.broker.port,
                    exc,
                    backoff,
                )
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def run(
        self, stop: asyncio.Event, *, reload: asyncio.Event | None = None, path: Path | None = None
    ) -> None:
        """Run until ``stop``; each time ``reload`` is set, re-read ``path``."""
        self.stopping = False
        async with AsyncExitStack() as stack:
            broker = self.estate.broker
            if broker.embedded:
                await stack.enter_async_context(embedded_broker(broker.host, broker.port))
            try:  # once, not waited out: a store that cannot be written must not stop start-up
                await asyncio.get_running_loop().run_in_executor(
                    self._writer, partial(record_rules, self.store, self.estate, utcnow())
                )
            except Exception as exc:
                log.warning("could not record the accounting rules in force: %s", exc)
            runner = await start_web(self)
            stack.push_async_callback(runner.cleanup)
            self._web_app = runner.app
            self.web_port = runner.addresses[0][1]
            self.web_ready.set()
            log.info(
                "board http://%s:%d/  metrics http://%s:%d/metrics",
                self.estate.web.listen,
                self.web_port,
                self.estate.web.listen,
                self.web_port,
            )
            # Subscribe only once the store can write: until then the broker keeps the
            # backlog and the agents their spools (issue 8: a store fault is never an ack).
            if not await self._store_ready(stop):
                self.close()
                return
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._mqtt_loop(), name="mqtt"),
                    tg.create_task(self._liveness_loop(), name="liveness"),
                    tg.create_task(self.alerting.run(), name="alerts"),
                    tg.create_task(self._days_loop(), name="days"),
                ]
                if reload is not None and path is not None:
                    tasks.append(tg.create_task(self._reloads(reload, path), name="reload"))
                await stop.wait()
                self.stopping = True
                await cancel_all(tasks)
        self.close()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("collector", help="run the collector (ingest, store, web, metrics)")
    p.add_argument(
        "--config",
        help="estate config (TOML; default: $AVAILMON_CONFIG, else /etc/availmon/availmon.toml)",
    )
    p.set_defaults(func=cmd_collector)


#: The interpreter's thread switch interval in the collector process (Python's default is
#: 5 ms). The writer thread's SQLite calls release the GIL and take it back many times per
#: batch; while the event loop serves a burst of web requests, each taking back waited a
#: whole interval and ingest fell to a few events a second (bench/README.md, reads).
SWITCH_INTERVAL = 0.0005


#: Net allocations of tracked objects between two young collections (CPython's default is
#: 700). A batch makes tens of thousands of objects (two models an event) and frees them at
#: once, so at the default the collector traced each batch several times over and swept its
#: whole heap every few batches: a fifth of its CPU while draining a backlog (issue 8).
GC_THRESHOLD = (50_000, 20, 10)


def tune_gc() -> None:
    """For a process whose work is the collector, once it has loaded: what exists now lives
    as long as the process (config, templates, live state), so the collector leaves it out
    of every later collection (``gc.freeze``), and collects less often. Ingest makes few
    reference cycles (a handful a batch, measured); they are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def cmd_collector(args: argparse.Namespace) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)
    path, source = find_config(args.config)
    if source != "--config":  # from the environment or /etc: say which file it is
        log.info("%s", describe_config(path, source))
    estate = load_config(path)
    collector = Collector(estate)
    # The bank holidays are loaded on first use (the library imports every country's rules,
    # 0.2 CPU-s): here, rather than on the writer thread at the first alert in a year.
    calendar = BusinessCalendar.from_accounting(estate.accounting)
    try:
        calendar.holidays_of(utcnow().astimezone(calendar.tz).year)
    except Exception as exc:  # e.g. a country the library does not know: reports say so
        log.warning("bank holidays for %s: %s", calendar.describe(), one_line(exc))
    tune_gc()
    stop, reload = asyncio.Event(), asyncio.Event()
    remove = install_stop_handlers(stop)
    remove_reload = install_reload_handler(reload)
    try:
        await collector.run(stop, reload=reload, path=path)
    finally:
        remove_reload()
        remove()
    return 0
