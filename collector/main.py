"""``availmon collector``: subscribe, validate, store, serve status and metrics."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import aiomqtt

from availmon.clock import utcnow
from availmon.config import Estate, load_config
from availmon.embedded import embedded_broker
from availmon.mqtt import client_kwargs, wait_disconnected
from availmon.schema import Event, Heartbeat, State
from availmon.signals import install_stop_handlers
from availmon.text import terminal
from collector.ingest import (
    SUBSCRIPTIONS,
    Accepted,
    AckingClient,
    Rejected,
    configured_area,
    history_from,
    validate,
)
from collector.liveness import Liveness
from collector.metrics import CollectorMetrics, LiveAgent, LiveCheck, kpi_families
from collector.report import kpi_snapshot
from collector.store import Store
from collector.web import start_web

log = logging.getLogger(__name__)
T = TypeVar("T")


class Collector:
    """Owns the store (one writer thread, one reader thread), the MQTT session and the web app."""

    def __init__(self, estate: Estate, *, metrics: CollectorMetrics | None = None) -> None:
        self.estate = estate
        self.metrics = metrics or CollectorMetrics()
        path = estate.collector.database
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")
        self.store = Store(path)
        self.read_store = Store(path)
        self.live: dict[tuple[str, str], LiveCheck] = {}
        self.agents: dict[str, LiveAgent] = {}
        self.liveness = Liveness(timedelta(seconds=estate.collector.offline_grace))
        self._load_live()
        self.metrics.watch(
            lambda: list(self.live.values()),
            lambda: list(self.agents.values()),
            # Scrapes run on the reader thread (web.metrics), so the store read is off-loop.
            lambda: kpi_families(kpi_snapshot(self.read_store, self.estate, utcnow())),
        )
        self.connected = asyncio.Event()
        #: Set the moment a live session is seen to drop (before its teardown finishes).
        self.disconnected = asyncio.Event()
        #: Notified after every committed batch; tests and the live board await it.
        self.changed = asyncio.Condition()
        self.web_port: int | None = None
        #: Set once the web server listens (``web_port`` is then the real port).
        self.web_ready = asyncio.Event()

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
            )
        for row in self.store.agents():
            self.agents[row["agent"]] = LiveAgent(
                row["site"],
                row["agent"],
                row["status"] or "",
                row["spool_depth"],
            )
        for row in self.store.outages(open_only=True):
            if row["source"] == "provisional":
                self.liveness.opened(row["agent"])

    async def write(self, fn: Any, *args: Any) -> Any:
        """Run a store write on the writer thread; a locked or busy database is waited out.

        The batch stays unacknowledged meanwhile, so the broker keeps it: waiting loses
        nothing, whereas giving up would crash the collector into a restart loop.
        """
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:
            try:
                return await loop.run_in_executor(self._writer, partial(fn, *args))
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                self.metrics.store_busy.inc()
                log.warning(
                    "database %s is locked by another process (%s); retrying in %.1f s",
                    self.estate.collector.database,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def read(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader, partial(fn, *args))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self.store.close()
        self.read_store.close()

    # -- ingest ---------------------------------------------------------------------------

    async def handle_batch(self, messages: list[tuple[str, bytes]]) -> None:
        """Validate, commit and update the live view; returns once the batch is durable."""
        now = utcnow()
        events: list[Event] = []
        heartbeats: list[Heartbeat] = []
        statuses: list[Accepted] = []
        for topic, payload in messages:
            self.metrics.messages.inc()
            verdict = validate(topic, payload, estate=self.estate, now=now, history=self.history)
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
            if verdict.heartbeat is not None:
                self.liveness.heard(verdict.agent, min(now, verdict.heartbeat.at))
            elif verdict.event is not None:
                self.liveness.heard(verdict.agent, min(now, verdict.event.detected_at))
            if verdict.event is not None:
                events.append(verdict.event)
            elif verdict.heartbeat is not None:
                heartbeats.append(verdict.heartbeat)
            else:
                statuses.append(verdict)
        if events:
            try:
                await self._ingest_events(events, now)
            except Exception:
                # A message that validated but that the store refuses must not take the
                # collector down (and, unacknowledged, again after every restart): find it.
                log.exception(
                    "store refused a batch of %d events; retrying one by one", len(events)
                )
                for ev in events:
                    await self._guarded(self._ingest_events([ev], now), f"event {ev.id}")
        # Statuses first: an agent's "online" and its first heartbeat often share a batch.
        for st in statuses:
            await self._status(st, now)
        for hb in heartbeats:
            await self._guarded(self._heartbeat(hb, now), f"heartbeat of {hb.agent}")
        await self._notify()

    async def _guarded(self, work: Awaitable[None], what: str) -> None:
        try:
            await work
        except Exception:
            self.metrics.rejected.labels("invalid").inc()
            log.exception("rejected %s: the store refused it", what)

    async def _ingest_events(self, events: list[Event], now: datetime) -> None:
        result = await self.write(self.store.ingest, events, now)
        self.metrics.ingested.inc(result.inserted)
        self.metrics.duplicates.inc(result.duplicates)
        if result.conflicts:
            self.metrics.rejected.labels("seq_conflict").inc(len(result.conflicts))
            log.error(
                "events reuse stored ids with other content (agent reset?); quarantined in "
                "the conflicts table: %s",
                ", ".join(result.conflicts),
            )
        for ev in events:
            self._apply_event(ev)

    async def _heartbeat(self, hb: Heartbeat, now: datetime) -> None:
        await self.write(self.store.record_heartbeat, hb, now)
        self.metrics.heartbeats.inc()
        prev = self.agents.get(hb.agent)
        status = prev.status if prev else "online"
        self.agents[hb.agent] = LiveAgent(
            hb.site,
            hb.agent,
            status,
            hb.spool_depth,
            hb.spool_dropped,
            tuple(sorted(hb.traps.items())),
        )
        if status == "online":
            for c in hb.checks:
                self.live[(hb.site, c.check)] = LiveCheck(
                    hb.site, hb.agent, c.check, c.area, c.state, c.latency
                )
        if self.liveness.heartbeat(hb.agent, hb.spool_depth, now):
            dropped = await self.write(self.store.drop_provisional, hb.agent)
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
        log.info("agent %s (site %s) is %s", st.agent, st.site, st.status)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def _mark_unknown(self, agent: str) -> None:
        """An agent we cannot hear from tells us nothing about its checks."""
        for key, c in self.live.items():
            if c.agent == agent:
                self.live[key] = LiveCheck(c.site, c.agent, c.check, c.area, State.UNKNOWN, None)

    async def check_liveness(self, now: datetime | None = None) -> None:
        """Open the provisional outages that are due (``now``: evaluate at another time)."""
        now = now or utcnow()
        for agent, start in self.liveness.due(now):
            site = self.agents[agent].site if agent in self.agents else agent
            self.liveness.opened(agent)  # before the await: a status arriving meanwhile sees it
            oid = await self.write(self.store.open_provisional, site, agent, start)
            log.warning(
                "agent %s (site %s) offline for over %.0f s: provisional outage %s from %s",
                agent,
                site,
                self.estate.collector.offline_grace,
                oid,
                start.isoformat(),
            )
            await self._notify()

    async def _liveness_loop(self) -> None:
        tick = min(self.estate.collector.offline_grace / 4, 5.0)
        while True:
            await asyncio.sleep(tick)  # a supervision period, not a synchronisation
            await self.check_liveness()

    def _apply_event(self, ev: Event) -> None:
        prev = self.live.get((ev.site, ev.check))
        self.live[(ev.site, ev.check)] = LiveCheck(
            ev.site,
            ev.agent,
            ev.check,
            ev.area,
            ev.to,
            ev.evidence.latency
            if ev.evidence.latency is not None
            else (prev.latency if prev else None),
        )

    async def _session(self) -> None:
        cfg = self.estate.collector
        async with AckingClient(
            **client_kwargs(self.estate.broker),
            identifier=cfg.client_id,
            clean_session=False,  # the broker keeps our backlog while we are away
        ) as client:
            await client.subscribe(SUBSCRIPTIONS)
            self.disconnected.clear()
            self.connected.set()
            log.info("collector subscribed as %s", cfg.client_id)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._consume(client))
                    tg.create_task(self._watch(client))
            except BaseExceptionGroup as group:
                mqtt_errors = group.subgroup(aiomqtt.MqttError)
                if mqtt_errors is None:
                    raise
                raise mqtt_errors.exceptions[0] from None

    async def _watch(self, client: AckingClient) -> None:
        try:
            await wait_disconnected(client)
        finally:
            self.connected.clear()
            self.disconnected.set()

    async def _consume(self, client: AckingClient) -> None:
        batch_size = self.estate.collector.batch_size
        messages = client.messages
        async for first in messages:
            batch = [first]
            while len(batch) < batch_size and len(messages) > 0:
                batch.append(await anext(messages))
            work = asyncio.ensure_future(
                self.handle_batch(
                    [(str(m.topic), bytes(m.payload)) for m in batch]  # type: ignore[arg-type]
                )
            )
            try:
                # A session that drops mid-commit must not cut the batch's bookkeeping short:
                # the commit completes on the writer thread either way.
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await work
                raise
            for m in batch:
                client.ack(m)

    async def _mqtt_loop(self) -> None:
        backoff = 1.0
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                log.warning(
                    "broker %s:%d: %s; retrying in %.0f s",
                    self.estate.broker.host,
                    self.estate.broker.port,
                    exc,
                    backoff,
                )
                if self.connected.is_set():
                    backoff = 1.0
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def run(self, stop: asyncio.Event) -> None:
        async with AsyncExitStack() as stack:
            broker = self.estate.broker
            if broker.embedded:
                await stack.enter_async_context(embedded_broker(broker.host, broker.port))
            runner = await start_web(self)
            stack.push_async_callback(runner.cleanup)
            self.web_port = runner.addresses[0][1]
            self.web_ready.set()
            log.info(
                "status page http://%s:%d/  metrics http://%s:%d/metrics",
                self.estate.web.listen,
                self.web_port,
                self.estate.web.listen,
                self.web_port,
            )
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._mqtt_loop(), name="mqtt"),
                    tg.create_task(self._liveness_loop(), name="liveness"),
                ]
                await stop.wait()
                for task in tasks:
                    task.cancel()
        self.close()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("collector", help="run the collector (ingest, store, web, metrics)")
    p.add_argument("--config", required=True, help="estate config (TOML)")
    p.set_defaults(func=cmd_collector)


async def cmd_collector(args: argparse.Namespace) -> int:
    estate = load_config(args.config)
    collector = Collector(estate)
    stop = asyncio.Event()
    remove = install_stop_handlers(stop)
    try:
        await collector.run(stop)
    finally:
        remove()
    return 0
