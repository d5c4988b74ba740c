"""Alert channels against real receivers (issue 11): an aiohttp webhook receiver that checks
the HMAC signature and refuses replays, Debian's prometheus-alertmanager, and a receiver
that is down for a while. The engine runs on the collector's real ingest path; delivery is
``Alerting.deliver`` with the collector as leader."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from availmon.clock import to_us, utcnow
from availmon.schema import State
from collector import channels
from collector.channels import webhook
from collector.main import Collector
from tests.alert_peers import alertmanager, hook_receiver
from tests.collector.alert_helpers import alert_estate, outbox
from tests.collector.board_helpers import Feed
from tests.conftest import CANARY

SECRET = f"hook-{CANARY}-key"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", SECRET)


@asynccontextmanager
async def leader(tmp_path: Path, channel: dict[str, Any]) -> AsyncIterator[Collector]:
    """A collector whose one route sends everything to ``channel``, leading its pair."""
    c = Collector(
        alert_estate(
            tmp_path,
            {"routes": [{"name": "all", "channels": ["team"]}]},
            channels={"team": channel},
        )
    )
    c.is_leader = True
    try:
        async with aiohttp.ClientSession() as session:
            c.alerting.senders = channels.build(
                c.estate.alerts, channels.Deps(session, c.alerting.tz)
            )
            yield c
    finally:
        c.close()


@asynccontextmanager
async def webmail_alerting(tmp_path: Path) -> AsyncIterator[tuple[Any, Collector]]:
    """A leading collector whose one route posts to a signed webhook receiver on loopback,
    with webmail down since two minutes ago and its alert's firing message queued (the
    caller sets HOOK_SECRET to ``SECRET``)."""
    async with (
        hook_receiver(SECRET) as rx,
        leader(tmp_path, {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}) as c,
    ):
        await Feed(c).event(
            "dc", "webmail", "email", State.UP, State.DOWN, utcnow() - timedelta(minutes=2)
        )
        await c.alerting.step()
        yield rx, c


async def test_webhook_is_signed_and_a_replay_is_refused(tmp_path: Path) -> None:
    async with (
        hook_receiver(SECRET) as rx,
        leader(tmp_path, {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}) as c,
    ):
        feed = Feed(c)
        start = utcnow() - timedelta(seconds=20)
        oid = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, start, "HTTP 503")
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        (got,) = rx.received
        assert (got["kind"], got["outage_id"], got["site_name"], got["reason"]) == (
            "firing",
            oid,
            "Data centre",
            "HTTP 503",
        )
        assert rx.last is not None
        headers, body = rx.last
        assert headers[webhook.IDEMPOTENCY] == f"{oid}/firing/team"
        # The very same request again: refused, and not counted.
        async with aiohttp.ClientSession() as s:
            async with s.post(rx.url, data=body, headers=headers) as r:
                assert r.status == 401
            tampered = body.replace(b"HTTP 503", b"HTTP 200")
            async with s.post(rx.url, data=tampered, headers=headers) as r:
                assert r.status == 401
            old = int(time.time()) - 3600  # signed, but an hour old: a replay
            stale = {
                webhook.TIMESTAMP: str(old),
                webhook.SIGNATURE: webhook.sign(SECRET, old, body),
            }
            async with s.post(rx.url, data=body, headers=stale) as r:
                assert r.status == 401
        assert rx.refused == [
            "replayed signature",
            "bad signature",
            "timestamp outside the tolerance (a replay?)",
        ]
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, utcnow())
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        assert [m["kind"] for m in rx.received] == ["firing", "resolved"]
        assert rx.received[1]["end"] is not None


async def test_a_receiver_down_for_a_while_gets_each_alert_exactly_once(tmp_path: Path) -> None:
    async with (
        hook_receiver(SECRET) as rx,
        leader(tmp_path, {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}) as c,
    ):
        rx.down = True
        feed = Feed(c)
        t0 = utcnow() - timedelta(minutes=1)
        mail = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, t0)
        web = await feed.event("dc", "council-website", "internet_web", State.UP, State.DOWN, t0)
        await c.alerting.step()
        assert await c.alerting.deliver() == 0  # the first try fails; the second waits behind
        assert [(m["status"], m["attempts"]) for m in outbox(c)] == [("failed", 1), ("pending", 0)]
        assert "HTTP 503" in outbox(c)[0]["last_error"]
        assert await c.alerting.deliver() == 0  # backing off: nothing is tried
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, utcnow())
        await c.alerting.step()
        rx.down = False
        later = utcnow() + timedelta(hours=1)  # past any backoff
        assert await c.alerting.deliver(later) == 3
        assert await c.alerting.deliver(later) == 0
        assert rx.delivered_keys() == [
            f"{mail}/firing/team",
            f"{web}/firing/team",
            f"{mail}/resolved/team",
        ]
        assert set(Counter(rx.delivered_keys()).values()) == {1}
        assert {m["status"] for m in outbox(c)} == {"sent"}
        sent = c.metrics.alert_messages.labels("team", "sent")._value.get()
        assert sent == 3


async def test_a_channel_down_for_a_week_is_still_tried_every_retry_max(
    tmp_path: Path,
) -> None:
    """The backoff doubled the first delay once per failed try; past about a thousand
    tries (a week down, at the default ten minutes between them) the doubling overflowed a
    float, and the outbox could no longer note a failure. It stays at ``retry_max``."""
    async with (
        hook_receiver(SECRET) as rx,
        leader(tmp_path, {"type": "webhook", "url": rx.url, "secret_env": "HOOK_SECRET"}) as c,
    ):
        rx.down = True
        feed = Feed(c)
        await feed.event("dc", "webmail", "email", State.UP, State.DOWN, utcnow())
        await c.alerting.step()
        assert await c.alerting.deliver() == 0
        db = sqlite3.connect(c.estate.collector.database)
        with db:
            db.execute("UPDATE outbox SET attempts = 2000")
        db.close()
        later = utcnow() + timedelta(hours=1)
        before = to_us(utcnow())
        assert await c.alerting.deliver(later) == 0
        after = to_us(utcnow())
        [m] = outbox(c)
        assert (m["status"], m["attempts"]) == ("failed", 2001)
        backoff = int(c.estate.alerts.retry_max * 1_000_000)
        assert before + backoff <= m["due"] <= after + backoff
        rx.down = False
        assert await c.alerting.deliver(later + timedelta(hours=1)) == 1


async def test_alertmanager_shows_the_alert_then_its_resolution(tmp_path: Path) -> None:
    async with (
        hook_receiver(SECRET) as rx,
        alertmanager(tmp_path / "am", f"http://127.0.0.1:{rx.port}/plain") as am,
        leader(tmp_path, {"type": "alertmanager", "url": am.url}) as c,
    ):
        feed = Feed(c)
        start = (utcnow() - timedelta(minutes=1)).replace(microsecond=0)
        oid = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, start, "HTTP 503")
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        (shown,) = await am.alerts(outage_id=oid)
        assert shown["status"]["state"] == "active"
        assert shown["labels"] == {
            "alertname": "AvailmonOutage",
            "outage_id": oid,
            "site": "dc",
            "check": "webmail",
            "area": "email",
            "state": "down",
            "severity": "page",
            "partner": "SHARED",
        }
        assert shown["annotations"]["provider"] == "Microsoft"
        assert shown["annotations"]["summary"].startswith("webmail at Data centre")
        assert shown["startsAt"].startswith(start.strftime("%Y-%m-%dT%H:%M:%S"))
        # Alertmanager routes it on: its own notification says firing.
        await rx.wait_for(lambda: any(n["status"] == "firing" for n in rx.plain))
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, utcnow())
        await c.alerting.step()
        assert await c.alerting.deliver() == 1
        assert await am.alerts(outage_id=oid) == []  # resolved: no longer active
        await rx.wait_for(lambda: any(n["status"] == "resolved" for n in rx.plain))
        resolved = next(n for n in rx.plain if n["status"] == "resolved")
        assert resolved["alerts"][0]["labels"]["outage_id"] == oid
