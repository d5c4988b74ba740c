"""Delivers spooled events to the collectors, end to end (issue 8).

Events go out in seq order, up to ``agent.batch_events`` per MQTT message on ``.../events``
(QoS 1). The broker's PUBACK is flow control only: an event leaves the spool when every
required collector has confirmed on ``.../ack/<collector>`` that it is committed. What stays
unconfirmed is published again (``Outstanding`` decides when); idempotent ingest absorbs the
repeats. Also publishes the heartbeat and the retained online/offline status, and owns the
reconnect loop (capped exponential backoff with jitter, reset after a useful session).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from agent.spool import Spool, Spooled
from availmon.aio import waited
from availmon.config import BrokerConfig
from availmon.mqtt import aiomqtt, client_kwargs, stop_if, wait_disconnected
from availmon.schema import (
    COLLECTORS_ROOT,
    MAX_ACK_BYTES,
    TOPIC_ROOT,
    Ack,
    seq_ranges,
    topic,
)

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 15.0
#: MQTT messages awaiting their PUBACK at once (paho keeps at most 20 in flight): each
#: publish's timeout then starts when it is sent, so a slow link delays instead of failing.
WINDOW = 10
#: A session that lasted this long (or had anything confirmed) earns a fresh backoff.
SETTLED = 30.0
#: Room left in a message for the envelope around the events.
ENVELOPE = 512
#: Republishing backs off per event up to this many ack timeouts.
MAX_BACKOFF_FACTOR = 8


@dataclass(slots=True)
class Sent:
    pubno: int  # which message of this session last carried it (publication order)
    at: float  # when (loop time)
    tries: int  # how many times it was published this session
    #: Frozen, so the usual empty one is Python's one empty frozenset, not a 216-byte set per
    #: event awaiting a collector (an agent with 1,000 checks starts with 1,000: issue 9).
    confirmed: frozenset[str] = frozenset()


@dataclass
class Outstanding:
    """What this session published and no required collector has yet confirmed, and when
    to publish it again. Pure bookkeeping (times are passed in), so it is tested alone.

    A seq is published again for a required collector that has not confirmed it when:
    - that collector has confirmed a message published *after* it: the broker delivers a
      session's messages in order and the collector confirms in order, so this one was lost
      (a broker that crashed before saving it); or
    - it has waited ``ack_timeout`` (doubling with each try, up to 8x) since it was published
      or since the collector came back online, whichever is later, and the collector has
      confirmed nothing for ``ack_timeout``: it is not just busy draining a backlog.
    A collector whose presence says ``offline``, or has said nothing yet (it has never
    connected), is not waited on: its persistent session, or its return, brings what it
    missed (when it comes online the clock starts).
    """

    required: frozenset[str]
    ack_timeout: float
    started: float = 0.0
    sent: dict[int, Sent] = field(default_factory=dict)
    pubno: int = 0
    acked_pubno: dict[str, int] = field(default_factory=dict)
    last_ack: dict[str, float] = field(default_factory=dict)
    #: Collector -> loop time it came online, or None while offline; absent: unknown.
    online_since: dict[str, float | None] = field(default_factory=dict)

    def published(self, seqs: Iterable[tuple[int, Iterable[str]]], now: float) -> None:
        """One MQTT message carried ``seqs``: (seq, collectors that already confirmed it)."""
        self.pubno += 1
        for seq, confirmed in seqs:
            prev = self.sent.pop(seq, None)  # re-inserted: dict order is publication order
            self.sent[seq] = Sent(
                self.pubno,
                now,
                prev.tries + 1 if prev else 1,
                prev.confirmed if prev else frozenset(confirmed),
            )

    def confirmed(
        self, collector: str, seqs: Iterable[int], deleted: Iterable[int], now: float
    ) -> None:
        """``collector`` confirmed ``seqs`` (still held for another) and ``deleted``."""
        self.last_ack[collector] = now
        for seq in deleted:
            s = self.sent.pop(seq, None)
            if s is not None:
                self._acked(collector, s)
        for seq in seqs:
            s = self.sent.get(seq)
            if s is not None:
                s.confirmed |= {collector}
                self._acked(collector, s)

    def _acked(self, collector: str, s: Sent) -> None:
        self.acked_pubno[collector] = max(self.acked_pubno.get(collector, 0), s.pubno)

    def presence(self, collector: str, online: bool, now: float) -> None:
        if online:
            if self.online_since.get(collector) is None:
                self.online_since[collector] = now
        else:
            self.online_since[collector] = None

    def waiting_on(self, seq: int) -> frozenset[str]:
        s = self.sent.get(seq)
        return self.required - s.confirmed if s else self.required

    def due(self, now: float) -> list[int]:
        """Seqs to publish again now, in seq order."""
        out = []
        newest_acked = max(self.acked_pubno.values(), default=0)
        for seq, s in self.sent.items():
            # In publication order: past this point nothing was skipped or has timed out.
            if s.pubno >= newest_acked and now - s.at < self.ack_timeout:
                break
            if any(self._overdue(c, s, now) for c in self.required - s.confirmed):
                out.append(seq)
        return sorted(out)

    def _overdue(self, collector: str, s: Sent, now: float) -> bool:
        since = self.online_since.get(collector)
        if since is None:
            return False
        if self.acked_pubno.get(collector, 0) > s.pubno:
            return True
        wait = self.ack_timeout * min(2 ** (s.tries - 1), MAX_BACKOFF_FACTOR)
        if now - max(s.at, since) < wait:
            return False
        return now - self.last_ack.get(collector, -math.inf) >= self.ack_timeout

    def next_check(self, now: float) -> float:
        """Seconds until ``due`` could next return something (bounded)."""
        return min(max(self.ack_timeout / 4, 0.05), 1.0)


def batches(rows: list[Spooled], max_events: int, max_bytes: int) -> list[list[Spooled]]:
    """Split held seqs into messages of at most ``max_events`` events and ``max_bytes``."""
    out: list[list[Spooled]] = []
    current: list[Spooled] = []
    size = ENVELOPE
    for row in rows:
        n = len(row.payload) + 1 if row.payload is not None else 24
        events = sum(1 for r in current if r.payload is not None)
        if current and (size + n > max_bytes or events >= max_events):
            out.append(current)
            current, size = [], ENVELOPE
        current.append(row)
        size += n
    if current:
        out.append(current)
    return out


def encode(rows: list[Spooled], first_seq: int) -> bytes:
    """The ``.../events`` message: the spooled JSON of each event, as it was committed."""
    events = b",".join(r.payload for r in rows if r.payload is not None)
    dropped = json.dumps(seq_ranges(r.seq for r in rows if r.payload is None)).encode()
    return b'{"schema":1,"first_seq":%d,"events":[%s],"dropped":%s}' % (first_seq, events, dropped)


class Publisher:
    """The agent's MQTT side (see the module). ``heartbeat`` makes the heartbeat's payload,
    JSON bytes (``schema.heartbeat_json``), each time one is due; ``after_heartbeat`` is
    called once it has been sent and let go."""

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        site: str,
        agent: str,
        spool: Spool,
        heartbeat: Callable[[], Awaitable[bytes]],
        heartbeat_interval: float,
        reconnect_max: float,
        password: str | None = None,
        batch_events: int = 100,
        max_bytes: int = 65_536,
        ack_timeout: float = 30.0,
        after_heartbeat: Callable[[], object] | None = None,
    ) -> None:
        self.broker = broker
        self._password = password
        self.site, self.agent = site, agent
        self.spool = spool
        self._heartbeat = heartbeat
        self.after_heartbeat = after_heartbeat
        self._heartbeat_interval = heartbeat_interval
        self._reconnect_max = reconnect_max
        self.batch_events = batch_events
        self.max_bytes = max_bytes
        self.ack_timeout = ack_timeout
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        #: Seqs confirmed by every required collector (deleted from the spool) so far.
        self.delivered = 0
        #: Events published again because a collector had not confirmed them.
        self.republished = 0
        #: The most MQTT messages seen awaiting their PUBACK at once (the window's proof).
        self.max_in_flight = 0
        self._in_flight = 0
        self.status_topic = topic(site, agent, "status")
        #: Collectors whose confirmations were ignored (not required): each said once.
        self._unrequired: set[str] = set()
        self.outstanding: Outstanding | None = None
        #: Set by the agent before it cancels ``run`` (see ``availmon.mqtt.stop_if``).
        self.stopping = False

    def wake(self) -> None:
        """A new event is in the spool (or a confirmation freed the window)."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 1.0
        loop = asyncio.get_running_loop()
        while True:
            started, delivered = loop.time(), self.delivered
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                stop_if(self.stopping, exc)
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
            # Confirmations and collectors' presence first, so none is missed.
            await client.subscribe(
                [
                    (f"{TOPIC_ROOT}/{self.site}/{self.agent}/ack/+", 1),
                    (f"{COLLECTORS_ROOT}/+/status", 1),
                ]
            )
            await client.publish(self.status_topic, b"online", qos=1, retain=True)
            loop = asyncio.get_running_loop()
            self.outstanding = Outstanding(
                frozenset(self.spool.confirmers), self.ack_timeout, started=loop.time()
            )
            self.connected.set()
            log.info("connected to broker %s:%d", self.broker.host, self.broker.port)
            stop_if(self.stopping)  # a stop swallowed while connecting ends the session here
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._drain(client, self.outstanding))
                    tg.create_task(self._confirmations(client, self.outstanding))
                    tg.create_task(self._heartbeats(client))
                    tg.create_task(wait_disconnected(client))
            except BaseExceptionGroup as group:
                mqtt_errors = group.subgroup(aiomqtt.MqttError)
                if mqtt_errors is None:
                    raise
                raise mqtt_errors.exceptions[0] from None

    async def _drain(self, client: aiomqtt.Client, out: Outstanding) -> None:
        """Publish new seqs in order, and again whatever ``out`` says is overdue."""
        topic_ = topic(self.site, self.agent, "events")
        loop = asyncio.get_running_loop()
        cursor = 0  # every held seq up to here has been published this session
        while True:
            stop_if(self.stopping)
            self._wake.clear()
            rows: list[Spooled] = []
            due = out.due(loop.time())
            if due:
                rows = await self.spool.get(due)
                self.republished += sum(1 for r in rows if r.payload is not None)
                if rows:
                    log.info(
                        "publishing again %d seqs not confirmed in time (from %d), awaiting %s",
                        len(rows),
                        rows[0].seq,
                        ", ".join(sorted(out.waiting_on(rows[0].seq))),
                    )
            limit = self.batch_events * WINDOW
            if len(rows) < limit:
                fresh = await self.spool.pending(limit - len(rows), after=cursor)
                if fresh:
                    cursor = fresh[-1].seq
                rows += fresh
            if not rows:
                await waited(self._wake.wait(), out.next_check(loop.time()))
                continue
            messages = batches(rows, self.batch_events, self.max_bytes)
            # Read now: a spool that numbered on from the clock only at its first write (it
            # could not be written at start) has a new first seq from then on.
            first_seq = self.spool.first_seq
            for msg in messages:
                out.published(((r.seq, r.confirmed) for r in msg), loop.time())
            # QoS 1 keeps order on one connection; the gather only overlaps the PUBACK waits,
            # and waits for every publish so none is left running without an owner.
            results = await asyncio.gather(
                *(self._publish(client, topic_, encode(m, first_seq)) for m in messages),
                return_exceptions=True,
            )
            for r in results:
                if isinstance(r, BaseException):
                    raise r

    async def _publish(self, client: aiomqtt.Client, topic_: str, payload: bytes) -> None:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            await client.publish(topic_, payload, qos=1)
        finally:
            self._in_flight -= 1

    async def _confirmations(self, client: aiomqtt.Client, out: Outstanding) -> None:
        loop = asyncio.get_running_loop()
        async for message in client.messages:
            parts = str(message.topic).split("/")
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if str(message.topic).startswith(COLLECTORS_ROOT + "/") and len(parts) == 5:
                online = payload == b"online"
                out.presence(parts[3], online, loop.time())
                log.info("collector %s is %s", parts[3], payload.decode(errors="replace")[:20])
                self.wake()
                continue
            if len(payload) > MAX_ACK_BYTES:
                # Parsed first, an 18 MB one took the agent to 1.1 GB before its ranges were
                # counted (a broker without availmon's packet limit lets it through).
                log.warning(
                    "ignored a confirmation on %s of %d bytes (at most %d)",
                    message.topic,
                    len(payload),
                    MAX_ACK_BYTES,
                )
                continue
            try:
                ack = Ack.model_validate_json(payload)
            except ValidationError as exc:
                log.warning("ignored a malformed confirmation on %s: %s", message.topic, exc)
                continue
            if ack.collector != parts[-1]:
                log.warning("ignored a confirmation from %s on %s", ack.collector, message.topic)
                continue
            if ack.collector not in self.spool.confirmers:
                # Its word deletes nothing (the spool ignores it), and a collector left out of
                # agent.confirm_by by mistake would otherwise hold events in no one's sight.
                if ack.collector not in self._unrequired and len(self._unrequired) < 64:
                    self._unrequired.add(ack.collector)  # bounded: names come off the wire
                    log.warning(
                        "ignoring confirmations from collector %s: this agent deletes an"
                        " event once %s confirmed it (agent.confirm_by)",
                        ack.collector,
                        " and ".join(self.spool.confirmers),
                    )
                continue
            if ack.rejected:
                log.error(
                    "collector %s refused seqs %s for good (invalid events): dropped from "
                    "the spool",
                    ack.collector,
                    ", ".join(f"{lo}-{hi}" for lo, hi in ack.rejected[:20]),
                )
            ranges = [*ack.stored, *ack.rejected]
            result = await self.spool.confirm(ack.collector, ranges)
            out.confirmed(ack.collector, result.held, result.deleted, loop.time())
            self.delivered += len(result.deleted)
            if result.deleted:
                # Deleted only now, on the collectors' word (the netns tests read this line).
                log.debug(
                    "delivered %d events (last seq %d), confirmed by %s",
                    len(result.deleted),
                    result.deleted[-1],
                    ack.collector,
                )
            self.wake()

    async def _heartbeats(self, client: aiomqtt.Client) -> None:
        topic_ = topic(self.site, self.agent, "heartbeat")
        while True:
            # Built, sent and dropped: a heartbeat carries every check's status (1,000 checks:
            # ~200 KB of JSON), which must not stay alive through the sleep (issue 9).
            await client.publish(topic_, await self._heartbeat(), qos=1, retain=True)
            stop_if(self.stopping)
            if self.after_heartbeat is not None:
                self.after_heartbeat()
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
