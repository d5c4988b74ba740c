"""``availmon collector``: subscribe, validate, store, serve status and metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from functools import partial
from typing import Any, TypeVar

import aiomqtt
from aiohttp import web

from availmon.clock import utcnow
from availmon.config import Estate, load_config
from availmon.embedded import embedded_broker
from availmon.mqtt import client_kwargs, wait_disconnected
from availmon.schema import Event, Heartbeat, State
from availmon.signals import install_stop_handlers
from collector.ingest import SUBSCRIPTIONS, Accepted, AckingClient, Rejected, validate
from collector.metrics import CollectorMetrics, LiveAgent, LiveCheck
from collector.store import Store
from collector.web import make_app

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
        self._load_live()
        self.metrics.watch(lambda: list(self.live.values()), lambda: list(self.agents.values()))
        self.connected = asyncio.Event()
        #: Notified after every committed batch; tests and the live board await it.
        self.changed = asyncio.Condition()
        self.web_port: int | None = None

    def _load_live(self) -> None:
        for row in self.store.check_statuses():
            self.live[(row["site"], row["check_name"])] = LiveCheck(
                row["site"],
                row["agent"],
                row["check_name"],
                row["area"],
                State(row["state"]),
                row["latency"],
            )
        for row in self.store.agents():
            self.agents[row["agent"]] = LiveAgent(row["site"], row["agent"], row["status"] or "")

    async def write(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._writer, partial(fn, *args))

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
            verdict = validate(topic, payload, estate=self.estate, now=now)
            if isinstance(verdict, Rejected):
                self.metrics.rejected.labels(verdict.reason).inc()
                log.warning(
                    "rejected message on %s: %s: %s", topic[:200], verdict.reason, verdict.detail
                )
            elif verdict.event is not None:
                events.append(verdict.event)
            elif verdict.heartbeat is not None:
                heartbeats.append(verdict.heartbeat)
            else:
                statuses.append(verdict)
        if events:
            result = await self.write(self.store.ingest, events, now)
            self.metrics.ingested.inc(result.inserted)
            self.metrics.duplicates.inc(result.duplicates)
            for ev in events:
                self._apply_event(ev)
        for hb in heartbeats:
            await self.write(self.store.record_heartbeat, hb, now)
            self.metrics.heartbeats.inc()
            for c in hb.checks:
                self.live[(hb.site, c.check)] = LiveCheck(
                    hb.site, hb.agent, c.check, c.area, c.state, c.latency
                )
        for st in statuses:
            assert st.status is not None
            await self.write(self.store.record_agent_status, st.site, st.agent, st.status, now)
            self.agents[st.agent] = LiveAgent(st.site, st.agent, st.status)
            log.info("agent %s (site %s) is %s", st.agent, st.site, st.status)
        async with self.changed:
            self.changed.notify_all()

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
            self.connected.set()
            log.info("collector subscribed as %s", cfg.client_id)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._consume(client))
                    tg.create_task(wait_disconnected(client))
            except BaseExceptionGroup as group:
                mqtt_errors = group.subgroup(aiomqtt.MqttError)
                if mqtt_errors is None:
                    raise
                raise mqtt_errors.exceptions[0] from None

    async def _consume(self, client: AckingClient) -> None:
        batch_size = self.estate.collector.batch_size
        messages = client.messages
        async for first in messages:
            batch = [first]
            while len(batch) < batch_size and len(messages) > 0:
                batch.append(await anext(messages))
            await self.handle_batch(
                [(str(m.topic), bytes(m.payload)) for m in batch]  # type: ignore[arg-type]
            )
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
            runner = web.AppRunner(make_app(self), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, self.estate.web.listen, self.estate.web.port)
            await site.start()
            self.web_port = runner.addresses[0][1]
            log.info(
                "status page http://%s:%d/  metrics http://%s:%d/metrics",
                self.estate.web.listen,
                self.web_port,
                self.estate.web.listen,
                self.web_port,
            )
            async with asyncio.TaskGroup() as tg:
                mqtt = tg.create_task(self._mqtt_loop(), name="mqtt")
                await stop.wait()
                mqtt.cancel()
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
