"""The publisher (issue 8): an event leaves the spool only when the collectors confirm it,
what stays unconfirmed is published again, the PUBACK window is bounded, and the rules that
decide a republish (``Outstanding``) hold on their own.

End-to-end cases run against a real Mosquitto; the "collector" that confirms (or does not)
is a plain MQTT client where the test must choose what it confirms, else the real one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import aiomqtt
import pytest

from agent.publisher import WINDOW, Outstanding, Publisher, batches, encode
from agent.spool import Spool, Spooled
from availmon.clock import utcnow
from availmon.config import Estate
from availmon.schema import (
    MAX_ACK_BYTES,
    Ack,
    Evidence,
    Heartbeat,
    State,
    ack_topic,
    collector_topic,
)
from collector.main import Collector
from tests.e2e import procs
from tests.peers import LostBroker, Mosquitto, estate, mosquitto, wait_until, web_check

T = 100.0  # a loop time for the pure tests


# -- the rules, without I/O ------------------------------------------------------------------


def outstanding(*required: str, timeout: float = 10.0) -> Outstanding:
    out = Outstanding(frozenset(required or ("c",)), timeout, started=0.0)
    for c in out.required:
        out.presence(c, True, 0.0)
    return out


def test_nothing_is_due_before_the_timeout() -> None:
    out = outstanding()
    out.published([(1, ()), (2, ())], T)
    assert out.due(T + 9.9) == []
    assert out.due(T + 10) == [1, 2]


def test_a_collector_busy_confirming_others_is_not_stalled() -> None:
    """While the collector confirms messages published earlier (it is draining a backlog),
    a later one is not due, however long it waits."""
    out = outstanding()
    out.published([(1, ())], T)
    out.published([(2, ())], T + 1)
    out.confirmed("c", [], [1], T + 30)
    assert out.due(T + 35) == []
    assert out.due(T + 41) == [2]  # then silence for a full timeout: published again


def test_a_seq_skipped_by_the_collector_is_published_again_at_once() -> None:
    """The collector confirmed a later message: the broker lost this one (a crash)."""
    out = outstanding()
    out.published([(1, ()), (2, ())], T)
    out.published([(3, ())], T + 0.1)
    out.confirmed("c", [], [3], T + 0.2)
    assert out.due(T + 0.3) == [1, 2]


def test_republishing_backs_off_per_event() -> None:
    out = outstanding()
    out.published([(1, ())], T)
    assert out.due(T + 10) == [1]
    out.published([(1, ())], T + 10)
    assert out.due(T + 29) == []  # second try waits twice as long
    assert out.due(T + 30) == [1]


def test_a_collector_never_seen_is_not_waited_on() -> None:
    out = Outstanding(frozenset({"c"}), 10.0)
    out.published([(1, ())], T)
    assert out.due(T + 1000) == []
    out.presence("c", True, T + 1000)
    assert out.due(T + 1010) == [1]


def test_an_offline_collector_is_not_waited_on_and_its_return_restarts_the_clock() -> None:
    out = outstanding("a", "b")
    out.published([(1, ())], T)
    out.confirmed("a", [1], [], T + 1)
    out.presence("b", False, T + 2)
    assert out.due(T + 100) == []  # b is away: its session (or its return) brings it
    out.presence("b", True, T + 100)
    assert out.due(T + 105) == []
    assert out.due(T + 110) == [1]
    assert out.waiting_on(1) == {"b"}


def test_batches_respect_count_and_bytes() -> None:
    rows = [Spooled(i, b'{"pad":"%s"}' % (b"x" * 90)) for i in range(1, 11)]
    rows.append(Spooled(11, None))
    by_count = batches(rows, 4, 65_536)
    assert [len(b) for b in by_count] == [4, 4, 3]
    by_bytes = batches(rows, 100, 512 + 3 * 101)
    assert len(by_bytes) > 1
    assert all(sum(len(r.payload or b"") + 1 for r in b) <= 303 for b in by_bytes)
    message = json.loads(encode(by_count[-1], 1))
    assert message["first_seq"] == 1
    assert message["dropped"] == [[11, 11]]
    assert len(message["events"]) == 2


# -- end to end --------------------------------------------------------------------------------


def spool(tmp: Path, confirmers: tuple[str, ...] = ("availmon-collector",)) -> Spool:
    return Spool(
        tmp / "hq.spool.db",
        site="hq",
        agent="hq",
        max_events=100_000,
        clock=lambda: 0.0,
        confirmers=confirmers,
    )


def publisher(cfg: Estate, s: Spool, **over: float) -> Publisher:
    async def heartbeat() -> bytes:
        stats = await s.stats()
        return Heartbeat(
            site="hq",
            agent="hq",
            at=utcnow(),
            seq=stats.last_seq,
            spool_depth=stats.depth,
            checks=[],
        ).to_json()

    kwargs: dict[str, float] = {"ack_timeout": 30.0, **over}
    return Publisher(
        cfg.broker,
        site="hq",
        agent="hq",
        spool=s,
        heartbeat=heartbeat,
        heartbeat_interval=3600,
        reconnect_max=1,
        batch_events=int(kwargs.pop("batch_events", 100)),
        ack_timeout=kwargs["ack_timeout"],
    )


async def fill(s: Spool, n: int) -> list[int]:
    at = utcnow()
    seqs = []
    for _ in range(n):
        event = await s.append("web", "internet_web", State.UP, State.DOWN, at, at, Evidence())
        assert event is not None  # stored, not held in memory
        seqs.append(event.seq)
    return seqs


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    async with mosquitto(tmp_path / "mq") as b:
        yield b


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll the publisher's own state (it offers nothing to await), with a deadline."""
    await procs.poll_until(predicate, what=what)


class FakeCollector:
    """A plain MQTT client in the collector's place, which confirms only when told to."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: list[int] = []
        self.new = asyncio.Event()

    async def listen(self) -> None:
        async for m in self.client.messages:
            assert isinstance(m.payload, bytes)
            self.received += [e["seq"] for e in json.loads(m.payload)["events"]]
            self.new.set()

    async def confirm(self, lo: int, hi: int) -> None:
        ack = Ack(collector="availmon-collector", stored=[(lo, hi)])
        await self.client.publish(ack_topic("hq", "hq", "availmon-collector"), ack.to_json(), qos=1)


@pytest.fixture
async def fake_collector(broker: Mosquitto) -> AsyncIterator[FakeCollector]:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="fake-collector") as client:
        await client.subscribe("availmon/v1/hq/hq/events", qos=1)
        # Present and online, as a real collector announces itself.
        await client.publish(collector_topic("availmon-collector"), b"online", qos=1, retain=True)
        fake = FakeCollector(client)
        task = asyncio.create_task(fake.listen())
        try:
            yield fake
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_puback_alone_deletes_nothing_only_a_confirmation_does(
    broker: Mosquitto, fake_collector: FakeCollector, tmp_path: Path
) -> None:
    cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
    s = spool(tmp_path)
    pub = publisher(cfg, s)
    seqs = await fill(s, 250)
    task = asyncio.create_task(pub.run())
    try:
        await until(lambda: len(fake_collector.received) >= 250, "250 received")
        # Every message was PUBACKed (the fake received them all), none confirmed.
        assert (await s.stats()).depth == 250
        await fake_collector.confirm(seqs[0], seqs[99])
        await until(lambda: pub.delivered == 100, "100 confirmed")
        held = [p.seq for p in await s.pending(1000)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        s.close()
    print(f"tally: sent=250 confirmed=100 held={len(held)} lost=0")
    assert held == seqs[100:]
    assert fake_collector.received[:250] == seqs  # in seq order


async def depth_after_ignored(
    broker: Mosquitto,
    fake_collector: FakeCollector,
    tmp_path: Path,
    ignored: Callable[[list[int]], list[tuple[str, bytes]]],
) -> int:
    """50 events published; the messages ``ignored(seqs)`` gives (topic, payload), each
    confirming all 50, then the collector's own confirmation of the first 10, from the same
    client (so after them): the spool's depth once those 10 are delivered. 40 when the
    ignored ones deleted nothing."""
    cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
    s = spool(tmp_path)
    pub = publisher(cfg, s)
    seqs = await fill(s, 50)
    task = asyncio.create_task(pub.run())
    try:
        await until(lambda: len(fake_collector.received) >= 50, "50 received")
        for topic_, payload in ignored(seqs):
            await fake_collector.client.publish(topic_, payload, qos=1)
        await fake_collector.confirm(seqs[0], seqs[9])
        await until(lambda: pub.delivered == 10, "10 confirmed")
        return (await s.stats()).depth
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        s.close()


async def test_a_confirmation_larger_than_any_collector_sends_is_ignored_unread(
    broker: Mosquitto, fake_collector: FakeCollector, tmp_path: Path
) -> None:
    """Parsed before its ranges were counted, an 18 MB one took the agent to 1.1 GB (a
    broker without availmon's packet limit passes it): it is dropped by its size, and
    deletes nothing, however valid it would read."""

    def padded(seqs: list[int]) -> list[tuple[str, bytes]]:
        everything = Ack(collector="availmon-collector", stored=[(seqs[0], seqs[-1])])
        body = everything.to_json()[:-1] + b" " * MAX_ACK_BYTES + b"}"
        return [(ack_topic("hq", "hq", "availmon-collector"), body)]

    assert await depth_after_ignored(broker, fake_collector, tmp_path, padded) == 40


async def test_a_confirmation_from_a_collector_not_waited_for_is_ignored_and_said_once(
    broker: Mosquitto,
    fake_collector: FakeCollector,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another collector's word deletes nothing; it was ignored without a word, so a
    collector left out of ``agent.confirm_by`` by mistake held every event unseen."""

    def others(seqs: list[int]) -> list[tuple[str, bytes]]:
        other = Ack(collector="availmon-other", stored=[(seqs[0], seqs[-1])]).to_json()
        return [(ack_topic("hq", "hq", "availmon-other"), other)] * 3

    assert await depth_after_ignored(broker, fake_collector, tmp_path, others) == 40
    said = [r.getMessage() for r in caplog.records if "availmon-other" in r.getMessage()]
    assert said == [
        "ignoring confirmations from collector availmon-other: this agent deletes an event"
        " once availmon-collector confirmed it (agent.confirm_by)"
    ]


async def test_unconfirmed_events_are_published_again_after_the_timeout(
    broker: Mosquitto, fake_collector: FakeCollector, tmp_path: Path
) -> None:
    cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
    s = spool(tmp_path)
    pub = publisher(cfg, s, ack_timeout=0.3)
    seqs = await fill(s, 5)
    task = asyncio.create_task(pub.run())
    try:
        await until(lambda: fake_collector.received.count(seqs[0]) >= 2, "a second copy")
        await fake_collector.confirm(seqs[0], seqs[-1])
        await until(lambda: pub.delivered == 5, "all confirmed")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        s.close()
    copies = {seq: fake_collector.received.count(seq) for seq in seqs}
    print(f"tally: sent=5 republished={pub.republished} copies={copies} lost=0")
    assert pub.republished >= 5
    assert all(n >= 2 for n in copies.values())


async def test_after_heartbeat_runs_once_the_heartbeat_is_sent(
    broker: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent gives its heap back there (issue 9): the heartbeat's JSON is its largest
    garbage, so the hook must come after the publish, every heartbeat."""
    cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
    s = spool(tmp_path)
    pub = publisher(cfg, s)
    sent = asyncio.Event()
    # What happened, in order: each publish once the broker has it (QoS 1: PUBACK), the hook.
    order: list[str] = []
    publish = aiomqtt.Client.publish

    async def noted(self: aiomqtt.Client, topic: str, *args: Any, **kwargs: Any) -> None:
        await publish(self, topic, *args, **kwargs)
        order.append(topic)

    def hook() -> None:
        order.append("hook")
        sent.set()

    monkeypatch.setattr(aiomqtt.Client, "publish", noted)
    pub.after_heartbeat = hook
    task = asyncio.create_task(pub.run())
    try:
        async with asyncio.timeout(30):
            await sent.wait()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reader") as reader:
            await reader.subscribe("availmon/v1/hq/hq/heartbeat", qos=1)
            async with asyncio.timeout(30):
                message = await anext(aiter(reader.messages))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        s.close()
    assert isinstance(message.payload, bytes)
    assert Heartbeat.model_validate_json(message.payload).site == "hq"
    first = order.index("hook")
    assert order[first - 1] == "availmon/v1/hq/hq/heartbeat"  # sent, then the hook


class Announced(asyncio.Event):
    """An event that says when someone first waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = asyncio.Event()

    async def wait(self) -> Literal[True]:
        self.awaited.set()
        return await super().wait()


async def test_a_stop_as_an_event_wakes_the_publisher_stops_it(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Python 3.11's ``asyncio.wait_for`` swallowed a cancellation that came as the wait it
    wrapped ended: a publisher told to stop just as a new event woke it went on for ever
    (the demo's Ctrl-C hung, one run in several under load). Here the wake and the stop
    come in the same turn of the event loop, every time."""
    cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
    s = spool(tmp_path)
    pub = publisher(cfg, s)
    pub._wake = wake = Announced()
    task = asyncio.create_task(pub.run())
    try:
        async with asyncio.timeout(30):
            await wake.awaited.wait()  # the drain has nothing to send: it waits to be woken
        pub.wake()
        pub.stopping = True
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=20)
        assert task in done, "the publisher did not stop"
        assert task.cancelled()
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=5)
        s.close()


async def test_the_puback_window_is_bounded(broker: Mosquitto, tmp_path: Path) -> None:
    """5,000 events, 20 per message, to the real collector: never more than WINDOW messages
    await their PUBACK, and all are confirmed and deleted."""
    cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])
    collector = Collector(cfg)
    s = spool(tmp_path)
    pub = publisher(cfg, s, batch_events=20)
    seqs = await fill(s, 5000)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(collector.run(stop))
        await collector.connected.wait()
        task = tg.create_task(pub.run())
        await wait_until(collector.changed, lambda: collector.store.event_count() >= 5000)
        await until(lambda: pub.delivered == 5000, "all confirmed")
        stored = collector.store.event_count()
        task.cancel()
        stop.set()
    depth = (await s.stats()).depth
    s.close()
    print(f"tally: sent=5000 stored={stored} lost={5000 - stored} depth={depth}")
    print(f"max messages in flight {pub.max_in_flight} (window {WINDOW})")
    assert 1 < pub.max_in_flight <= WINDOW
    assert depth == 0
    assert seqs == list(range(1, 5001))


async def test_a_failed_session_is_retried_and_a_stop_still_stops_the_publisher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker lost over and over, the publisher tries it again each time; then stopped
    by its agent, it stops (it used to go on retrying for ever when the stop came as a
    session failed)."""
    cfg = estate(tmp_path, 9, [web_check("http://127.0.0.1:9/")])
    s = spool(tmp_path)
    pub = publisher(cfg, s)
    lost = LostBroker(failures=2)
    monkeypatch.setattr(pub, "_session", lost)
    task = asyncio.create_task(pub.run())
    async with asyncio.timeout(60):
        await lost.running.wait()  # two failed sessions retried: the third is running
        pub.stopping = True  # as the agent does before it cancels its tasks
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    s.close()
    assert lost.sessions == 3
