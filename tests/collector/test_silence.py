"""An agent is marked offline when its heartbeats stop arriving (issue 8, part 6): judged by
the collector's clock and never while the collector's own store holds heartbeats back; and
a stop with the store unwritable gives its write up rather than hang."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from availmon.clock import utcnow
from availmon.errors import StoreError
from availmon.schema import Heartbeat, topic
from collector.main import Collector
from tests.collector.board_helpers import Feed, board_estate


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    c = Collector(board_estate(tmp_path))
    c._connected_at = utcnow() - timedelta(hours=1)  # listening for an hour
    await c.handle_batch([(topic("dc", "dc", "status"), b"online")])
    yield c
    c.close()


async def test_an_agent_whose_clock_is_slow_is_not_silent(collector: Collector) -> None:
    """Its heartbeats' own times are two minutes behind; they arrive on time."""
    timeout = collector.estate.heartbeat_timeout()
    assert timeout < 120
    now = utcnow()
    await Feed(collector).heartbeat("dc", now - timedelta(seconds=120))
    await collector.check_silence(now + timedelta(seconds=timeout / 2))
    assert collector.liveness.status["dc"] == "online"
    await collector.check_silence(now + timedelta(seconds=timeout + 1))
    assert collector.liveness.status["dc"] == "offline"  # and silence is still noticed


async def test_nobody_is_silent_while_the_store_holds_heartbeats_back(
    collector: Collector,
) -> None:
    timeout = collector.estate.heartbeat_timeout()
    now = utcnow()
    await Feed(collector).heartbeat("dc", now)
    collector.store_error = "disk_full"  # every batch, heartbeats with it, waits on the store
    await collector.check_silence(now + timedelta(seconds=10 * timeout))
    assert collector.liveness.status["dc"] == "online"


async def test_silence_is_counted_afresh_once_the_store_writes_again(
    collector: Collector,
) -> None:
    """The heartbeats that waited behind the failing writes come after the first write
    that succeeds: agents silent only for that wait are not marked offline."""
    timeout = collector.estate.heartbeat_timeout()
    collector.store_error = "disk_full"  # and no heartbeat got through for an hour
    await collector.write(lambda: None)  # the store writes again
    assert collector.store_error is None
    await collector.check_silence(utcnow() + timedelta(seconds=timeout / 2))
    assert collector.liveness.status["dc"] == "online"
    await collector.check_silence(utcnow() + timedelta(seconds=timeout + 1))
    assert collector.liveness.status["dc"] == "offline"


async def test_a_stop_gives_up_a_write_the_store_refuses(
    collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It retried for ever: a stop on a full disk hung until systemd killed the collector.
    The write was never acknowledged, so the broker and the agents still hold it."""
    failing = threading.Event()

    def full(fn: Any, *args: Any) -> Any:
        failing.set()
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(collector, "_committed", full)
    write = asyncio.ensure_future(collector.write(lambda: None))
    await asyncio.to_thread(failing.wait, 60)  # retrying now
    collector.stopping = True
    with pytest.raises(StoreError, match="still cannot be written \\(disk_full\\) at shutdown"):
        await asyncio.wait_for(write, 60)


async def test_a_retained_heartbeat_at_a_subscription_does_not_revive_a_silent_agent(
    collector: Collector,
) -> None:
    """The broker re-sends every agent's last heartbeat, retained, at each subscription: a
    dead agent's old one, counted on arrival, made it online again and dropped its site
    outage. A heartbeat published now does revive it."""
    old = utcnow() - timedelta(minutes=30)
    await collector.check_silence()  # no heartbeat in the hour the collector listened
    assert collector.liveness.status["dc"] == "offline"
    hb = Heartbeat(site="dc", agent="dc", at=old, seq=0, spool_depth=0, checks=[])
    await collector.handle_batch([(topic("dc", "dc", "heartbeat"), hb.to_json())], retained=[0])
    assert collector.liveness.status["dc"] == "offline"
    await collector.handle_batch([(topic("dc", "dc", "heartbeat"), hb.to_json())])
    assert collector.liveness.status["dc"] == "online"
