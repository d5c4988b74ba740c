"""Delivers spooled events to the broker (QoS 1), in seq order, deleting each only after its
PUBACK; publishes the heartbeat and the retained online/offline status. Owns the reconnect
loop, with capped exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import aiomqtt

from agent.spool import Spool
from availmon.config import BrokerConfig
from availmon.mqtt import client_kwargs, wait_disconnected
from availmon.schema import Heartbeat, topic

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 15.0
#: No more than paho keeps in flight (20): each publish's timeout then starts when it is sent,
#: so a slow link delays a batch instead of failing it forever.
BATCH = 20
#: A session that lasted this long (or delivered anything) earns a fresh backoff.
SETTLED = 30.0


class Publisher:
    def __init__(
        self,
        broker: BrokerConfig,
        *,
        site: str,
        agent: str,
        spool: Spool,
        heartbeat: Callable[[], Awaitable[Heartbeat]],
        heartbeat_interval: float,
        reconnect_max: float,
        password: str | None = None,
    ) -> None:
        self.broker = broker
        self._password = password
        self.site, self.agent = site, agent
        self.spool = spool
        self._heartbeat = heartbeat
        self._heartbeat_interval = heartbeat_interval
        self._reconnect_max = reconnect_max
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.delivered = 0
        self.status_topic = topic(site, agent, "status")

    def wake(self) -> None:
        """A new event is in the spool."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 1.0
        loop = asyncio.get_running_loop()
        while True:
            started, delivered = loop.time(), self.delivered
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                # Reset only after a session that was useful: one that connects and is at once
                # kicked out (a duplicate agent id, an ACL refusal) must not retry every second.
                if self.delivered > delivered or loop.time() - started >= SETTLED:
                    backoff = 1.0
                log.warning(
                    "broker %s:%d: %s; retrying in %.0f s",
                    self.broker.host,
                    self.broker.port,
                    exc,
                    backoff,
                )
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self._reconnect_max)

    async def _session(self) -> None:
        will = aiomqtt.Will(self.status_topic, b"offline", qos=1, retain=True)
        async with aiomqtt.Client(
            **client_kwargs(self.broker, username=self.agent, password=self._password),
            identifier=f"availmon-agent-{self.agent}",
            will=will,
            timeout=PUBLISH_TIMEOUT,
        ) as client:
            await client.publish(self.status_topic, b"online", qos=1, retain=True)
            self.connected.set()
            log.info("connected to broker %s:%d", self.broker.host, self.broker.port)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._drain(client))
                    tg.create_task(self._heartbeats(client))
                    tg.create_task(wait_disconnected(client))
            except BaseExceptionGroup as group:
                mqtt_errors = group.subgroup(aiomqtt.MqttError)
                if mqtt_errors is None:
                    raise
                raise mqtt_errors.exceptions[0] from None

    async def _drain(self, client: aiomqtt.Client) -> None:
        topic_ = topic(self.site, self.agent, "event")
        while True:
            batch = await self.spool.pending(BATCH)
            if not batch:
                self._wake.clear()
                batch = await self.spool.pending(BATCH)  # an append may have raced the clear
                if not batch:
                    await self._wake.wait()
                    continue
            # QoS 1 keeps order on one connection; the gather only overlaps the PUBACK waits,
            # and waits for every publish so none is left running without an owner.
            results = await asyncio.gather(
                *(client.publish(topic_, s.payload, qos=1) for s in batch), return_exceptions=True
            )
            acked = [s.seq for s, r in zip(batch, results, strict=True) if r is None]
            if acked:  # keep what the broker has, even when the rest of the batch failed
                await self.spool.ack(acked)
                self.delivered += len(acked)
                log.debug("delivered %d events (last seq %d)", len(acked), acked[-1])
            for r in results:
                if isinstance(r, BaseException):
                    raise r

    async def _heartbeats(self, client: aiomqtt.Client) -> None:
        topic_ = topic(self.site, self.agent, "heartbeat")
        while True:
            hb = await self._heartbeat()
            await client.publish(topic_, hb.to_json(), qos=1, retain=True)
            await asyncio.sleep(self._heartbeat_interval)

    async def publish_stopped(self) -> None:
        """On a clean stop, say so: a stopped agent is not an unreachable site."""
        try:
            async with aiomqtt.Client(
                **client_kwargs(self.broker, username=self.agent, password=self._password),
                identifier=f"availmon-agent-{self.agent}",
                timeout=5.0,
            ) as client:
                await client.publish(self.status_topic, b"stopped", qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            log.warning("could not publish stopped status: %s", exc)
