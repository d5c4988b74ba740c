"""A collector pair sends each alert once (issue 11 with issue 8's pair): both queue it, the
leader delivers it and publishes a receipt, the other marks it sent; when the leader stops,
the other takes over and sends the resolution, and not the alert again. Real Mosquitto,
real collectors, a real signed-webhook receiver. And who leads: a collector that loses the
broker says it no longer leads, and still stops when told to."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest

from availmon.clock import utcnow
from availmon.config import Estate
from availmon.schema import Event, Evidence, State
from collector.main import Collector
from tests.alert_peers import hook_receiver
from tests.collector.alert_helpers import outbox
from tests.conftest import CANARY
from tests.e2e.procs import poll_until
from tests.peers import LostBroker, estate, event_messages, free_port, mosquitto, web_check

SECRET = f"hook-{CANARY}"


def member(tmp: Path, port: int, name: str, hook: str) -> Estate:
    return estate(
        tmp / name,
        port,
        [web_check("http://127.0.0.1:9/")],
        extra={
            "collector": {
                "database": str(tmp / name / "collector.db"),
                "client_id": name,
                "members": ["a", "b"],
            },
            "alerts": {
                "channels": {"team": {"type": "webhook", "url": hook, "secret_env": "HOOK"}},
                "routes": [{"name": "all", "channels": ["team"]}],
            },
        },
    )


def event(seq: int, frm: State, to: State, minutes_ago: float) -> Event:
    at = utcnow() - timedelta(minutes=minutes_ago)
    return Event(
        id=f"hq:{seq}",
        seq=seq,
        site="hq",
        agent="hq",
        check="web",
        area="internet_web",
        from_=frm,
        to=to,
        at=at,
        detected_at=at,
        evidence=Evidence(error="HTTP 503" if to is State.DOWN else None, probes=3),
    )


async def publish(port: int, ev: Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-agent-hq") as client:
        for topic, payload in event_messages("hq", "hq", [ev]):
            await client.publish(topic, payload, qos=1)


async def test_a_pair_sends_each_alert_once_across_a_hand_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK", SECRET)
    async with mosquitto(tmp_path / "mosquitto") as broker, hook_receiver(SECRET) as rx:
        a = Collector(member(tmp_path, broker.port, "a", rx.url))
        b = Collector(member(tmp_path, broker.port, "b", rx.url))
        stop_a, stop_b = asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(a.run(stop_a))
            tg.create_task(b.run(stop_b))
            # Leadership is decided on presence messages and announced nowhere (``changed``
            # is for ingest): polled, with a deadline. Waiting on b.changed missed a taking
            # the lead after b's last announcement (a 60 s timeout, about 1 run in 8).
            await poll_until(
                lambda: a.is_leader and not b.is_leader and b.connected.is_set(),
                what="a to lead and b to stand by",
            )

            await publish(broker.port, event(1, State.UP, State.DOWN, 2))
            await rx.wait_for(lambda: len(rx.received) == 1)
            (firing,) = rx.delivered_keys()
            # b queued it too, and marks it sent on a's receipt: nothing of its own to send.
            await poll_until(
                lambda: {m["key"]: m["status"] for m in outbox(b)},
                lambda got: got.get(firing) == "sent",
                what="b to mark the firing sent on a's receipt",
            )
            assert [m["last_error"] for m in outbox(b)] == ["sent by a"]

            stop_a.set()  # a clean stop says "offline": b takes over
            await poll_until(lambda: b.is_leader, what="b to take the lead")
            await publish(broker.port, event(2, State.DOWN, State.UP, 0))
            await rx.wait_for(lambda: len(rx.received) == 2)
            await poll_until(
                lambda: [m["status"] for m in outbox(b)],
                lambda got: got == ["sent", "sent"],
                what="b to deliver the resolution",
            )
            stop_b.set()
    assert [m["kind"] for m in rx.received] == ["firing", "resolved"]
    assert set(Counter(rx.delivered_keys()).values()) == {1}
    assert outbox(b)[0]["payload"]["kind"] == "firing"  # b's own content filled in


async def test_losing_the_lead_is_announced(tmp_path: Path) -> None:
    """A collector that loses the broker stops leading (nobody can hear its alerts' receipts)
    and says so on ``changed``, what the board waits on: no batch comes to announce it."""
    async with mosquitto(tmp_path / "mosquitto") as broker:
        c = Collector(estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")]))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(c.run(stop))
            await poll_until(lambda: c.is_leader, what="the lone collector to lead")
            async with c.changed:
                # Waiting before the broker goes: the lead is lost while this waits, so only
                # a notification wakes it.
                stopping = tg.create_task(broker.stop())
                await asyncio.wait_for(c.changed.wait_for(lambda: not c.is_leader), 60)
            await stopping
            assert not c.connected.is_set()
            stop.set()


async def test_a_failed_session_is_retried_and_a_stop_still_stops_the_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker lost over and over, the collector tries it again each time; then told to
    stop, it stops (it used to go on retrying for ever when the stop came as a session
    failed)."""
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    lost = LostBroker(failures=2)
    monkeypatch.setattr(c, "_session", lost)
    stop = asyncio.Event()
    async with asyncio.timeout(60), asyncio.TaskGroup() as tg:
        tg.create_task(c.run(stop))
        await lost.running.wait()  # two failed sessions retried: the third is running
        stop.set()
    assert lost.sessions == 3
