"""Events and heartbeats are checked against the config (issue 15): no invented checks or
areas, no numbers that are not finite and non-negative, no timestamp past the future limit;
a check just removed from the config still takes its late events."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from availmon.schema import CheckStatus, Event, Heartbeat, State, topic
from collector.ingest import (
    Accepted,
    Known,
    Rejected,
    check_event,
    check_heartbeat,
    configured_area,
    history_from,
    validate,
)
from collector.main import Collector
from collector.web import make_app
from tests.peers import estate, web_check

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WEB = web_check("http://127.0.0.1:9/", area="email")
DNS = {"name": "dns", "type": "dns", "target": "127.0.0.1", "area": "network_telephony",
       "query_name": "example.org"}  # fmt: skip
EST = estate(Path("/nonexistent"), 1883, [WEB, DNS])
E = topic("hq", "hq", "event")
HB = topic("hq", "hq", "heartbeat")


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


def heartbeat(checks: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    return {
        "schema": 1,
        "site": "hq",
        "agent": "hq",
        "at": NOW.isoformat(),
        "seq": 1,
        "spool_depth": 0,
        "checks": checks,
        **over,
    }


def status(check: str = "web", area: str = "email", **over: Any) -> dict[str, Any]:
    return {"check": check, "area": area, "state": "up", "latency": 0.1, **over}


def raw(data: Any) -> bytes:
    # json.dumps writes NaN and Infinity as the bare words Python's json.loads reads back.
    return json.dumps(data).encode()


def later(**kw: float) -> str:
    return (NOW + timedelta(**kw)).isoformat()


@pytest.mark.parametrize(
    ("topic_", "payload", "reason"),
    [
        (E, raw(event(check="made-up")), "unknown_check"),
        (E, raw(event(area="made_up_area")), "unknown_area"),
        (E, raw(event(check="made-up", area="made_up_area")), "unknown_check"),
        (E, raw(event(area="servers")), "area_mismatch"),
        (E, raw(event(detected_at=later(days=1))), "future"),
        (E, raw(event(at=later(days=1), detected_at=later(days=1))), "future"),
        (E, raw(event(evidence={"latency": math.nan})), "invalid"),
        (E, raw(event(evidence={"latency": math.inf})), "invalid"),
        (E, raw(event(evidence={"latency": -math.inf})), "invalid"),
        (E, raw(event(evidence={"latency": -0.5})), "invalid"),
        (E, raw(event(evidence={"latency": 1e308})), "invalid"),
        (E, raw(event(evidence={"loss": 100.5})), "invalid"),
        (E, raw(event(evidence={"loss": -1})), "invalid"),
        (E, b'{"latency": 1e999}', "invalid"),
        (HB, raw(heartbeat([status(latency=-math.inf)])), "invalid"),
        (HB, raw(heartbeat([status(latency=math.nan)])), "invalid"),
        (HB, raw(heartbeat([status(latency=-1)])), "invalid"),
        (HB, raw(heartbeat([{"check": "w", "area": "email", "state": "up"}] * 1001)), "invalid"),
        (HB, raw(heartbeat([], at=later(hours=1))), "future"),
        (HB, raw(heartbeat([status(since=later(hours=1))])), "future"),
    ],
)
def test_rejections(topic_: str, payload: bytes, reason: str) -> None:
    verdict = validate(topic_, payload, estate=EST, now=NOW)
    assert isinstance(verdict, Rejected), verdict
    assert verdict.reason == reason


def test_the_configured_check_and_area_pass() -> None:
    verdict = validate(E, raw(event(evidence={"latency": 0.2, "loss": 0})), estate=EST, now=NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.removed_check == 0


def test_heartbeats_keep_only_the_configured_checks() -> None:
    invented = [status(f"junk-{i}") for i in range(500)]
    payload = raw(heartbeat([status(), status("dns", "email"), *invented]))
    verdict = validate(HB, payload, estate=EST, now=NOW)
    assert isinstance(verdict, Accepted)
    assert verdict.heartbeat is not None
    # "dns" is configured in another area: left out too.
    assert [c.check for c in verdict.heartbeat.checks] == ["web"]
    assert verdict.ignored_checks == 501


def hb_model(checks: list[CheckStatus]) -> Heartbeat:
    return Heartbeat(site="hq", agent="hq", at=NOW, seq=1, spool_depth=0, checks=checks)


def test_check_heartbeat_returns_the_same_heartbeat_when_all_are_configured() -> None:
    hb = hb_model([CheckStatus(check="web", area="email", state=State.UP)])
    assert check_heartbeat(hb, EST, NOW) is hb


def ev(**over: Any) -> Event:
    return Event.model_validate(event(**over))


def test_a_removed_check_takes_late_events_within_its_grace() -> None:
    grace = timedelta(seconds=EST.collector.removed_check_grace)
    recent = {("hq", "old", "email"): Known(NOW - grace + timedelta(seconds=1))}
    stale = {("hq", "old", "email"): Known(NOW - grace - timedelta(seconds=1))}
    open_ = {("hq", "old", "email"): Known(NOW - 10 * grace, open_outage=True)}
    old = ev(check="old")
    assert check_event(old, EST, NOW, recent) is None
    assert check_event(old, EST, NOW, open_) is None  # an outage's end is never refused
    rejected = check_event(old, EST, NOW, stale)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "unknown_check"
    # History is per (site, check, area): it lends nothing to another area.
    other = check_event(ev(check="old", area="servers"), EST, NOW, recent)
    assert isinstance(other, Rejected)
    # A check moved to another area still takes its events in the old one.
    moved = {("hq", "web", "servers"): Known(NOW)}
    assert check_event(ev(area="servers"), EST, NOW, moved) is None
    verdict = validate(E, raw(event(check="old")), estate=EST, now=NOW, history=recent)
    assert isinstance(verdict, Accepted)
    assert verdict.removed_check == 1


def test_history_keeps_only_what_the_config_does_not_list() -> None:
    rows = [
        ("hq", "web", "email", "2026-01-01T00:00:00Z", False),  # configured: not history
        ("hq", "web", "servers", "2026-01-01T00:00:00Z", True),  # moved area
        ("hq", "old", "email", "2026-01-02T00:00:00Z", False),  # removed
        ("gone", "x", "email", "2026-01-02T00:00:00Z", False),  # removed site
    ]
    assert history_from(rows, EST) == {
        ("hq", "web", "servers"): Known(datetime(2026, 1, 1, tzinfo=UTC), True),
        ("hq", "old", "email"): Known(datetime(2026, 1, 2, tzinfo=UTC), False),
        ("gone", "x", "email"): Known(datetime(2026, 1, 2, tzinfo=UTC), False),
    }


def stored_event(seq: int, check: str, to: State, at: datetime) -> Event:
    return Event(
        id=f"hq:{seq}",
        seq=seq,
        site="hq",
        agent="hq",
        check=check,
        area="email",
        from_=State.UP if to is State.DOWN else State.DOWN,
        to=to,
        at=at,
        detected_at=at,
    )


async def test_the_collector_closes_the_outage_of_a_check_removed_from_the_config(
    tmp_path: Path,
) -> None:
    """A check with an open outage is removed from the config; the agent's spool still holds
    the outage's end: the restarted collector takes it (counted apart) and refuses a check
    nobody ever configured."""
    now = datetime.now(UTC)
    old_check = {**WEB, "name": "old"}
    before = Collector(estate(tmp_path, 1, [WEB, old_check]))
    try:
        await before.handle_batch([(E, stored_event(1, "old", State.DOWN, now).to_json())])
        assert len(before.store.outages(open_only=True)) == 1
    finally:
        before.close()
    after = Collector(estate(tmp_path, 1, [WEB]))
    try:
        end = stored_event(2, "old", State.UP, now + timedelta(seconds=5))
        invented = stored_event(3, "invented", State.DOWN, now)
        await after.handle_batch([(E, end.to_json()), (E, invented.to_json())])
        assert after.store.outages(open_only=True) == []
        reg = after.metrics.registry
        assert reg.get_sample_value("availmon_events_removed_check_total") == 1
        assert (
            reg.get_sample_value("availmon_events_rejected_total", {"reason": "unknown_check"}) == 1
        )
    finally:
        after.close()


async def test_heartbeat_floods_add_no_rows_and_no_series(tmp_path: Path) -> None:
    """20 heartbeats of 500 made-up checks each once made 10,000 permanent rows and a
    4.3 MB /metrics."""
    collector = Collector(estate(tmp_path, 1, [WEB]))
    try:
        for n in range(20):
            checks = [status(f"junk-{n}-{i}") for i in range(500)] + [status()]
            await collector.handle_batch([(HB, raw(heartbeat(checks)))])
        assert [r["check_name"] for r in collector.store.check_statuses()] == ["web"]
        text = generate_latest(collector.metrics.registry).decode()
        assert "junk-" not in text
        assert 'availmon_check_up{area="email",check="web",site="hq"} 1.0' in text
        ignored = collector.metrics.registry.get_sample_value(
            "availmon_heartbeat_checks_ignored_total"
        )
        assert ignored == 20 * 500
    finally:
        collector.close()


async def test_status_api_is_strict_json_even_with_old_bad_rows(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """A latency of -Infinity stored before the schema refused it reads as not measured."""
    cfg = estate(tmp_path, 1, [WEB])
    first = Collector(cfg)
    first.store.conn.execute(
        "INSERT INTO check_status VALUES ('hq','hq','web','email','up',NULL,?,NULL,?)",
        (-math.inf, NOW.isoformat()),
    )
    first.close()
    collector = Collector(cfg)
    try:
        client = await aiohttp_client(make_app(collector))
        resp = await client.get("/api/v1/status")
        text = await resp.text()

        def refuse(word: str) -> Any:
            raise AssertionError(f"not strict JSON: {word}")

        data = json.loads(text, parse_constant=refuse)
        assert data["checks"][0]["latency"] is None
    finally:
        collector.close()


def test_the_check_index_follows_a_copy_with_other_sites() -> None:
    assert configured_area(EST, "hq", "web") == "email"
    emptied = EST.model_copy(update={"sites": {}})
    assert configured_area(emptied, "hq", "web") is None
    assert configured_area(EST, "hq", "web") == "email"
    assert emptied != EST
    assert estate(Path("/nonexistent"), 1883, [WEB, DNS]) == EST  # the index is no part of it


async def test_a_refusal_the_config_explains_is_not_final(tmp_path: Path) -> None:
    """An event for a check this collector's config does not have yet (the agent's config is
    newer) is refused and counted, but not confirmed as refused: the agent keeps it and sends
    it again, so a config out of step delays an outage, never destroys it. An event that is
    wrong in itself (its id is not agent:seq) is refused for good."""
    now = datetime.now(UTC)
    batch = json.dumps(
        {
            "schema": 1,
            "events": [
                json.loads(stored_event(1, "web", State.DOWN, now).to_json()),
                json.loads(stored_event(2, "newer", State.DOWN, now).to_json()),
                {**json.loads(stored_event(3, "web", State.UP, now).to_json()), "id": "hq:9"},
            ],
        }
    ).encode()
    collector = Collector(estate(tmp_path, 1, [WEB]))
    try:
        confirm = await collector.handle_batch([(topic("hq", "hq", "events"), batch)])
        assert confirm["hq"].stored == {1}
        assert confirm["hq"].rejected == {3}  # 2 is neither: the agent sends it again
        reg = collector.metrics.registry
        for reason in ("unknown_check", "invalid"):
            assert reg.get_sample_value("availmon_events_rejected_total", {"reason": reason}) == 1
    finally:
        collector.close()
    # Once the collector knows the check, the same event is stored.
    collector = Collector(estate(tmp_path, 1, [WEB, {**WEB, "name": "newer"}]))
    try:
        again = json.dumps(
            {
                "schema": 1,
                "events": [json.loads(stored_event(2, "newer", State.DOWN, now).to_json())],
            }
        ).encode()
        confirm = await collector.handle_batch([(topic("hq", "hq", "events"), again)])
        assert confirm["hq"].stored == {2}
    finally:
        collector.close()
