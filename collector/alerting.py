"""The collector's alerting task (issue 11): engine steps and deliveries.

Ingest hands over which checks' outages a committed batch touched (:meth:`Alerting.touch`);
the engine step runs on the writer thread soon after (and every second, for waits,
repeats and escalations), and what it queues is delivered by the leader of a collector
pair only. Both collectors of a pair run the engine on their own store, so the one that
takes over holds the same queue; the leader publishes a receipt for what its channels took
(``availmon/v1/_collectors/<id>/alerts``) and the other marks those messages sent, so a
hand-over sends nothing twice. A receipt lost with a crash means a resend under the same
key, which the receivers dedupe (Alertmanager by labels, webhooks by ``Idempotency-Key``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import aiohttp
from pydantic import ValidationError

from availmon.clock import utcnow
from availmon.schema import AlertReceipt, Delivered, receipts_topic
from availmon.text import one_line
from collector import channels
from collector.alerts import Context
from collector.outbox import AlertBook, Key, OutboxRow, due_messages, unexpected_error

if TYPE_CHECKING:
    from collector.main import Collector

log = logging.getLogger(__name__)

#: Seconds between engine steps and delivery rounds when nothing wakes them sooner.
TICK = 1.0

#: How one try of one message went: taken; the channel failed (DeliveryError: its later
#: messages wait behind this one); or the channel raised something unexpected (a bug, or a
#: message it cannot compose: only this outage's later messages on it wait).
Outcome = Literal["sent", "failed", "unexpected"]


class Alerting:
    """Owned by the collector; its ``run`` is one task of the collector's TaskGroup."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._configure()
        #: Set by ``reconfigure``: ``run`` rebuilds its channels and looks at every outage.
        self._reconfigured = asyncio.Event()
        self._touched: set[Key] = set()
        self._started = False
        #: Alerts still open after the last step: with none and nothing touched, a step
        #: has nothing to do and takes no write transaction.
        self._open = 0
        self._wake = asyncio.Event()
        self._queued = asyncio.Event()
        self.senders: dict[str, channels.Sender] = {}
        #: Receipts from the other collector of a pair, applied at the next step.
        self._receipts: list[tuple[str, AlertReceipt]] = []
        self._refreshed: dict[str, float] = {}

    def _configure(self) -> None:
        estate = self.collector.estate
        self.ctx = Context.of(estate)
        web = estate.web
        board = estate.alerts.board_url or f"http://{web.listen}:{web.port}"
        self.book = AlertBook(self.collector.store, self.ctx, board)
        self.tz = ZoneInfo(estate.accounting.timezone)

    def reconfigure(self) -> None:
        """The collector's config was reloaded: routes, channels and rules change now; the
        outbox (what was queued and sent) is kept, so nothing is lost or sent twice."""
        self._configure()
        self._started = False  # the next step looks at every outage under the new routes
        self._reconfigured.set()
        self._wake.set()

    @property
    def enabled(self) -> bool:
        return bool(self.ctx.config.routes)

    def touch(self, keys: Iterable[Key]) -> None:
        """Outages of these checks changed in a committed batch: step soon."""
        if not self.enabled:
            return
        self._touched.update(keys)
        self._wake.set()

    def receipt(self, peer: str, payload: bytes) -> None:
        """The other collector of a pair says its channels took these messages."""
        try:
            got = AlertReceipt.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("ignored an alert receipt from %s: %s", peer, one_line(str(exc))[:200])
            return
        if got.collector != peer or not self.enabled:
            return
        self._receipts.append((peer, got))
        self._wake.set()

    async def step(self, now: datetime | None = None) -> int:
        """One engine step (the first one looks at the whole store); messages queued."""
        if not self.enabled:
            return 0
        receipts, self._receipts = self._receipts, []
        for peer, got in receipts:
            items = [d.model_dump() for d in got.delivered]
            await self.collector.write(self.book.peer_sent, peer, items, now or utcnow())
        keys: set[Key] | None = None
        if self._started:
            keys, self._touched = self._touched, set()
            if not keys and not self._open and not receipts:
                return 0
        done: tuple[int, int] = await self.collector.write(self.book.sync, keys, now or utcnow())
        queued, self._open = done
        self._started = True
        if queued:
            self._queued.set()
            await self.collector.notify_changed()
        return queued

    async def deliver(self, now: datetime | None = None) -> int:
        """Send what is due, per channel in order, stopping a channel at its first failure
        (a message that fails unexpectedly stops only its own outage's later messages:
        :func:`collector.outbox.due_messages`); only the leader of a pair sends. Returns the
        number delivered."""
        if not self.collector.is_leader or not self.senders:
            return 0
        # The collector's own read: a flood of page or API requests must not hold it up.
        rows: list[OutboxRow] = await self.collector.internal(
            due_messages, self.collector.internal_store, now or utcnow()
        )
        by_channel: dict[str, list[OutboxRow]] = {}
        for m in rows:
            by_channel.setdefault(m.channel, []).append(m)
        results = await asyncio.gather(
            *(self._drain(name, queue) for name, queue in by_channel.items())
        )
        sent = sum(results)
        if sent:
            await self.collector.notify_changed()
        return sent

    async def _drain(self, name: str, queue: list[OutboxRow]) -> int:
        sender = self.senders.get(name)
        sent = 0
        done: list[Delivered] = []
        held: set[str] = set()  # outages behind a message that failed unexpectedly
        try:
            for m in queue:
                if m.outage_id in held:
                    continue  # an outage's messages keep their order (firing, then resolved)
                outcome = await self._one(name, sender, m)
                if outcome == "sent":
                    sent += 1
                    done.append(
                        Delivered.model_validate(
                            {
                                "key": m.key,
                                "outage_id": m.outage_id,
                                "channel": name,
                                "kind": m.kind,
                            }
                        )
                    )
                elif outcome == "unexpected" and m.outage_id is not None:
                    held.add(m.outage_id)  # not the channel's fault: the others may go
                else:
                    break  # keep this channel's order: the rest wait behind it
        finally:
            self._announce(done)
        return sent

    def _announce(self, done: list[Delivered]) -> None:
        """Tell the other collector of a pair what went (best effort: without it, a
        hand-over resends under the same keys, which receivers dedupe)."""
        client = self.collector.mqtt
        if not done or client is None or len(self.collector.estate.collectors()) < 2:
            return
        me = self.collector.estate.collector.client_id
        with contextlib.suppress(Exception):
            for i in range(0, len(done), 500):
                receipt = AlertReceipt(collector=me, delivered=done[i : i + 500])
                client.send(receipts_topic(me), receipt.to_json())

    async def _one(self, name: str, sender: channels.Sender | None, m: OutboxRow) -> Outcome:
        """One try of one message. Whatever the channel raises (but cancellation) is a
        failed try: recorded, counted and retried with backoff, never left untried at the
        head of the channel's queue."""
        outcome: Outcome = "failed"
        crash: Exception | None = None
        if sender is None:
            error = f"no channel {name!r} in the config"
        else:
            try:
                await sender.send(m.payload)
            except channels.DeliveryError as exc:
                error = str(exc)
            except Exception as exc:
                outcome, crash, error = "unexpected", exc, unexpected_error(exc)
            else:
                await self.collector.write(self.book.delivered, m.id, utcnow())
                self.collector.metrics.alert_messages.labels(name, "sent").inc()
                log.info("alert message %s sent to %s (%s)", m.key, name, m.kind)
                return "sent"
        due = await self.collector.write(self.book.failed, m.id, utcnow(), error)
        self.collector.metrics.alert_messages.labels(name, "failed").inc()
        # A bug's stack, to find it by, but not its text: that may quote what the channel
        # holds (a Slack or Teams URL is the credential), and logs are not for secrets.
        where = "" if crash is None else "\n" + "".join(traceback.format_tb(crash.__traceback__))
        log.log(
            logging.ERROR if crash is not None else logging.WARNING,
            "alert message %s to %s failed (try %d): %s; next try %s%s",
            m.key,
            name,
            m.attempts + 1,
            error,
            due.isoformat(timespec="seconds"),
            where.rstrip("\n"),
        )
        return outcome

    async def refresh(self) -> None:
        """Post the firing alerts again to channels that forget them (Alertmanager)."""
        mono = time.monotonic()
        for name, sender in self.senders.items():
            resend = getattr(sender, "resend", None)
            if resend is None or mono - self._refreshed.get(name, 0.0) < resend:
                continue
            self._refreshed[name] = mono
            payloads = await self.collector.internal(_firing, self.collector.internal_store, name)
            if not payloads:
                continue
            try:
                await sender.refresh(payloads)  # type: ignore[attr-defined]
            except channels.DeliveryError as exc:
                log.warning(
                    "re-posting %d firing alerts to %s failed: %s", len(payloads), name, exc
                )
            except Exception as exc:  # a bug: the other channels still re-post
                where = "".join(traceback.format_tb(exc.__traceback__))
                log.error(
                    "re-posting firing alerts to %s failed: %s\n%s",
                    name,
                    unexpected_error(exc),
                    where.rstrip("\n"),
                )

    async def run(self) -> None:
        """Step and deliver while routes are configured; a reload restarts both loops with
        the new channels (a message cut short is sent again under its idempotency key)."""
        while True:
            self._reconfigured.clear()
            if not self.enabled:
                self.senders = {}
                await self._reconfigured.wait()
                continue
            async with aiohttp.ClientSession() as session:
                self.senders = channels.build(self.ctx.config, channels.Deps(session, self.tz))
                async with asyncio.TaskGroup() as tg:
                    loops = [
                        tg.create_task(self._engine_loop(), name="alert-engine"),
                        tg.create_task(self._delivery_loop(), name="alert-delivery"),
                    ]
                    await self._reconfigured.wait()
                    for task in loops:
                        task.cancel()

    async def _engine_loop(self) -> None:
        while True:
            await _survive("alert engine step", self.step())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):  # the clock-driven work: waits, repeats
                    await self._wake.wait()
            self._wake.clear()

    async def _delivery_loop(self) -> None:
        while True:
            self._queued.clear()
            await _survive("alert delivery", self.deliver())
            if self.collector.is_leader:
                await _survive("Alertmanager refresh", self.refresh())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):  # retries fall due by the clock
                    await self._queued.wait()


async def _survive(what: str, work: Awaitable[Any]) -> None:
    """A bug in alerting is logged and tried again next tick; it never stops ingest (the
    outbox keeps what was queued, so nothing is lost meanwhile)."""
    try:
        await work
    except Exception:
        log.exception("%s failed; trying again", what)


def _firing(store: Any, channel: str) -> list[dict[str, Any]]:
    """The firing messages a channel has taken for alerts still open."""
    rows = store.conn.execute(
        "SELECT o.payload FROM outbox o JOIN alerts a ON a.outage_id = o.outage_id"
        " WHERE a.status='open' AND o.channel=? AND o.kind='firing' AND o.status='sent'"
        " AND o.payload != '{}'",
        (channel,),
    )
    return [json.loads(r[0]) for r in rows]
