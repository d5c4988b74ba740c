"""Ingest: what is accepted, what is rejected and why, and that ingest goes on afterwards.
The live test publishes through a real Mosquitto to a running collector."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from availmon.schema import CheckStatus, Event, Heartbeat, State, topic
from collector.ingest import Accepted, Rejected, validate
from collector.main import Collector
from tests.peers import estate, mosquitto, wait_until, web_check

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
#: The events below are the "web" check's, in the email area.
WEB = web_check("http://127.0.0.1:9/", area="email")
EST = estate(Path("/nonexistent"), 1883, [WEB])


def event(seq: int = 1, **over: Any) -> dict[str, Any]:
    data = Event(
        id=f"hq:{seq}",
        seq=seq,
        site="hq",
        agent="hq",
        check="web",
        area="email",
        from_=State.UP,
        to=State.DOWN,
        at=NOW,
        detected_at=NOW,
    ).model_dump(mode="json", by_alias=True)
    data.update(over)
    return data


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


E = "availmon/v1/hq/hq/event"


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (E, b"{not json", "malformed"),
        (E, b"x" * 70_000, "oversized"),
        ("availmon/v1/hq/event", raw(event()), "bad_topic"),
        ("availmon/v1/nowhere/nowhere/event", raw(event()), "unknown_site"),
        ("availmon/v1/hq/impostor/event", raw(event()), "agent_mismatch"),
        (E, raw(event(site="elsewhere")), "site_mismatch"),
        (E, raw(event(agent="other")), "agent_mismatch"),
        (E, raw(event(to="exploded")), "invalid"),
        (E, raw(event(schema=2)), "invalid"),
        (E, raw(event(surprise=1)), "invalid"),
        (E, raw(event(at="2026-01-05T09:00:00")), "invalid"),  # no offset
        (E, raw(event(id="hq:99")), "invalid"),  # id must be agent:seq
        (E, raw(event(at=(NOW + timedelta(days=1)).isoformat())), "future"),
        ("availmon/v1/hq/hq/status", b"sideways", "malformed"),
        # Messages that once validated and then crashed the store, again on every restart:
        (E, raw({**event(), "seq": 2**64, "id": f"hq:{2**64}"}), "invalid"),
        (E, raw(event(detected_at="0001-01-01T00:00:00+14:00")), "invalid"),
        (E, b"[" * 30_000 + b"]" * 30_000, "malformed"),
        (
            "availmon/v1/hq/hq/heartbeat",
            raw(
                {
                    "schema": 1,
                    "site": "hq",
                    "agent": "hq",
                    "at": NOW.isoformat(),
                    "seq": 1,
                    "spool_depth": 2**63,
                    "checks": [],
                }
            ),
            "invalid",
        ),
    ],
)
def test_rejections(topic: str, payload: bytes, reason: str) -> None:
    verdict = validate(topic, payload, estate=EST, now=NOW)
    assert isinstance(verdict, Rejected)
    assert verdict.reason == reason


def test_accepts_a_good_event_and_status() -> None:
    verdict = validate(E, raw(event()), estate=EST, now=NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.event is not None
    assert verdict.event.to is State.DOWN
    status = validate("availmon/v1/hq/hq/status", b"offline", estate=EST, now=NOW)
    assert isinstance(status, Accepted)
    assert status.status == "offline"


def sample(collector: Collector, name: str, **labels: str) -> float:
    value = collector.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


async def test_live_rejections_are_counted_and_ingest_goes_on(tmp_path: Path) -> None:
    async with mosquitto(tmp_path / "mq") as broker:
        cfg = estate(tmp_path, broker.port, [WEB])
        collector = Collector(cfg)
        now = datetime.now(UTC)
        good = event(1, at=now.isoformat(), detected_at=now.isoformat())
        later = event(
            2, at=now.isoformat(), detected_at=now.isoformat(), **{"from": "down", "to": "up"}
        )
        messages = [
            (E, raw(good)),
            (E, raw(good)),  # the same event again: stored once
            (E, b"\x00\xffgarbage"),
            (E, b"{" + b" " * 70_000 + b"}"),
            (E, raw({**good, "site": "elsewhere"})),
            (E, raw(later)),
        ]
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(collector.run(stop))
            await asyncio.wait_for(collector.connected.wait(), 30)  # 30 s: only a hang
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-pub") as pub:
                for topic, payload in messages:
                    await pub.publish(topic, payload, qos=1)
            await wait_until(
                collector.changed,
                lambda: sample(collector, "availmon_mqtt_messages_total") >= len(messages),
            )
            stop.set()

        def rejected(reason: str) -> float:
            return sample(collector, "availmon_events_rejected_total", reason=reason)

        tally = {
            "sent": len(messages),
            "ingested": sample(collector, "availmon_events_ingested_total"),
            "duplicates": sample(collector, "availmon_events_duplicate_total"),
            "malformed": rejected("malformed"),
            "oversized": rejected("oversized"),
            "site_mismatch": rejected("site_mismatch"),
        }
        print("tally:", tally)
        assert tally == {
            "sent": 6,
            "ingested": 2,
            "duplicates": 1,
            "malformed": 1,
            "oversized": 1,
            "site_mismatch": 1,
        }
        from collector.store import Store

        store = Store(cfg.collector.database)
        assert [e["id"] for e in store.events()] == ["hq:1", "hq:2"]
        [outage] = store.outages()
        assert outage["end"] is not None


def heartbeat(site: str, at: datetime, state: State = State.UP) -> tuple[str, bytes]:
    hb = Heartbeat(
        site=site,
        agent=site,
        at=at,
        seq=1,
        spool_depth=0,
        checks=[CheckStatus(check="web", area="internet_web", state=state, latency=0.01)],
    )
    return topic(site, site, "heartbeat"), hb.to_json()


def status(site: str, text: str) -> tuple[str, bytes]:
    return topic(site, site, "status"), text.encode()


async def test_a_status_is_taken_before_the_heartbeat_in_its_batch(tmp_path: Path) -> None:
    """An agent that comes back sends ``online`` and then its first heartbeat, and one batch
    often holds both. Handled heartbeat first, the heartbeat met an agent still offline: its
    checks stayed unknown and its provisional outage stayed open until the next heartbeat."""
    check = {"name": "web", "type": "http", "target": "http://127.0.0.1:1/", "area": "internet_web"}
    site = {"partner": "CCC", "checks": [check]}
    collector = Collector(
        estate(tmp_path, 1, [], extra={"sites": {"a": site, "b": site}}),
    )
    try:
        now = datetime.now(UTC)
        await collector.handle_batch([status("a", "online"), status("b", "online")])
        await collector.handle_batch([status("a", "offline")])  # a's last will
        await collector.check_liveness(now=now + timedelta(hours=1))
        assert [o["site"] for o in collector.store.outages(open_only=True)] == ["a"]
        assert collector.live.get(("a", "web")) is None

        await collector.handle_batch([status("a", "online"), heartbeat("a", now)])
        assert collector.agents["a"].status == "online"
        live = collector.live.get(("a", "web"))
        assert live is not None
        assert (live.state, live.latency) == (State.UP, 0.01)
        # Its spool is empty (spool_depth 0): its own record replaces the provisional outage.
        assert collector.store.outages(open_only=True) == []
    finally:
        collector.close()
