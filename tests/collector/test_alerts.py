"""The alert engine on a fixed clock (issue 11): outages in through the collector's real
ingest, messages out into the outbox. Delivery to real receivers is in test_alert_channels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from availmon.schema import State
from collector.main import Collector
from collector.outbox import list_alerts
from tests.collector.alert_helpers import MONDAY_10, MONDAY_22, alert_estate, outbox, said
from tests.collector.board_helpers import Feed

M = timedelta(minutes=1)
Make = Callable[..., Any]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[Collector] = []

    def build(routes: list[dict[str, Any]], **alerts: Any) -> Collector:
        c = Collector(alert_estate(tmp_path, {"routes": routes, **alerts}))
        made.append(c)
        return c

    yield build
    for c in made:
        c.close()


async def webmail_down(feed: Feed, at: datetime, error: str = "HTTP 503") -> str:
    return await feed.event("dc", "webmail", "email", State.UP, State.DOWN, at, error=error)


async def webmail_up(feed: Feed, at: datetime) -> None:
    await feed.event("dc", "webmail", "email", State.DOWN, State.UP, at)


async def test_one_alert_per_outage_and_its_resolution(make: Make) -> None:
    c = make([{"name": "all", "channels": ["team", "oncall"]}])
    feed = Feed(c)
    t0 = MONDAY_10
    oid = await webmail_down(feed, t0)
    assert await c.alerting.step(t0 + timedelta(seconds=20)) == 2
    # The same outage restated (an agent restarted mid-outage) and more steps: nothing new.
    await feed.event("dc", "webmail", "email", State.UNKNOWN, State.DOWN, t0 + M)
    for minutes in (2, 3):
        assert await c.alerting.step(t0 + minutes * M) == 0
    await webmail_up(feed, t0 + 12 * M)
    assert await c.alerting.step(t0 + 13 * M) == 2
    assert said(c) == [
        ("firing", "team", oid),
        ("firing", "oncall", oid),
        ("resolved", "team", oid),
        ("resolved", "oncall", oid),
    ]
    firing, resolved = outbox(c)[0]["payload"], outbox(c)[2]["payload"]
    # What is down, where (site and partner), since when, what the probes saw, provider, link.
    assert firing["title"] == (
        "webmail at Data centre (Shared service (data centre)) down since Mon 12 Jan 10:00 GMT:"
        " HTTP 503"
    )
    assert (firing["provider"], firing["reason"], firing["evidence"]["probes"]) == (
        "Microsoft",
        "HTTP 503",
        3,
    )
    assert firing["url"] == f"http://board.example:9810/board/outages/{oid}"
    assert firing["key"] == f"{oid}/firing/team"
    assert resolved["duration_seconds"] == 12 * 60
    assert resolved["title"].startswith(
        "RESOLVED: webmail at Data centre (Shared service (data centre)) was down for 12m 0s"
    )
    assert [a["status"] for a in list_alerts(c.store)] == ["resolved"]


async def test_wait_before_the_first_message_and_short_outages_never_told(make: Make) -> None:
    c = make([{"name": "all", "channels": ["team"], "wait": "2m"}])
    feed = Feed(c)
    t0 = MONDAY_10
    short = await webmail_down(feed, t0)
    assert await c.alerting.step(t0 + 1 * M) == 0
    await webmail_up(feed, t0 + 90 * timedelta(seconds=1))
    assert await c.alerting.step(t0 + 5 * M) == 0  # over before the wait: no alert, no "resolved"
    long = await webmail_down(feed, t0 + 10 * M)
    assert await c.alerting.step(t0 + 11 * M) == 0
    assert await c.alerting.step(t0 + 12 * M) == 1
    assert said(c) == [("firing", "team", long)]
    assert {a["id"]: a["delivery"] for a in list_alerts(c.store)} == {
        long: "pending",
        short: "none",
    }


async def test_repeats_stop_when_acknowledged_and_the_resolution_still_goes(make: Make) -> None:
    c = make([{"name": "all", "channels": ["team"], "repeat": "10m"}])
    feed = Feed(c)
    t0 = MONDAY_10
    oid = await webmail_down(feed, t0)
    await c.alerting.step(t0)
    assert await c.alerting.step(t0 + 10 * M) == 1
    assert outbox(c)[-1]["payload"]["title"].startswith("STILL webmail at Data centre")
    done = await c.write(c.alerting.book.acknowledge, oid, "Alice", t0 + 11 * M)
    assert (done["delivery"], done["acknowledged_by"]) == ("acknowledged", "Alice")
    assert await c.alerting.step(t0 + 20 * M) == 0
    assert await c.alerting.step(t0 + 40 * M) == 0
    await webmail_up(feed, t0 + 45 * M)
    await c.alerting.step(t0 + 46 * M)
    assert [k for k, _, _ in said(c)] == ["firing", "repeat", "resolved"]


async def test_escalation_after_n_minutes_unacknowledged(make: Make) -> None:
    c = make(
        [
            {
                "name": "first",
                "channels": ["oncall"],
                "escalate_after": "30m",
                "escalate_to": "bosses",
            },
            {"name": "bosses", "channels": ["managers"], "areas": ["servers"]},
        ]
    )
    feed = Feed(c)
    t0 = MONDAY_10
    oid = await webmail_down(feed, t0)
    await c.alerting.step(t0)
    assert await c.alerting.step(t0 + 29 * M) == 0
    assert await c.alerting.step(t0 + 30 * M) == 1
    assert await c.alerting.step(t0 + 90 * M) == 0  # once
    await webmail_up(feed, t0 + 95 * M)
    await c.alerting.step(t0 + 96 * M)
    assert said(c) == [
        ("firing", "oncall", oid),
        ("escalation", "managers", oid),
        ("resolved", "oncall", oid),
        ("resolved", "managers", oid),
    ]
    escalation = outbox(c)[1]["payload"]
    assert escalation["title"].startswith("ESCALATED: webmail at Data centre")
    assert escalation["escalation_level"] == 1


async def test_acknowledged_alert_does_not_escalate(make: Make) -> None:
    c = make(
        [
            {"name": "first", "channels": ["oncall"], "escalate_after": "30m", "escalate_to": "b"},
            {"name": "b", "channels": ["managers"], "sites": ["ccc-guildhall"]},
        ]
    )
    feed = Feed(c)
    oid = await webmail_down(feed, MONDAY_10)
    await c.alerting.step(MONDAY_10)
    await c.write(c.alerting.book.acknowledge, oid, "Bob", MONDAY_10 + 5 * M)
    assert await c.alerting.step(MONDAY_10 + 60 * M) == 0
    assert said(c) == [("firing", "oncall", oid)]


@pytest.mark.parametrize(
    ("at", "channel"), [(MONDAY_10, "team"), (MONDAY_22, "oncall")], ids=["day", "night"]
)
async def test_business_hours_and_out_of_hours_routes(
    make: Make, at: datetime, channel: str
) -> None:
    c = make(
        [
            {"name": "night", "hours": "out_of_hours", "states": ["down"], "channels": ["oncall"]},
            {"name": "day", "hours": "business", "channels": ["team"]},
        ]
    )
    feed = Feed(c)
    oid = await webmail_down(feed, at)
    await c.alerting.step(at + M)
    assert said(c) == [("firing", channel, oid)]


async def test_routes_match_on_severity_state_partner_and_check(make: Make) -> None:
    c = make(
        [
            {
                "name": "pages",
                "severities": ["page"],
                "partners": ["SHARED"],
                "channels": ["oncall"],
            },
            {"name": "tickets", "channels": ["team"]},
        ]
    )
    feed = Feed(c)
    t0 = MONDAY_22
    page = await webmail_down(feed, t0)
    printer = await feed.event("dc", "printer", "servers", State.UP, State.DOWN, t0)
    slow = await feed.event("dc", "council-website", "internet_web", State.UP, State.DEGRADED, t0)
    await c.alerting.step(t0 + M)
    assert sorted(said(c)) == sorted(
        [("firing", "oncall", page), ("firing", "team", printer), ("firing", "team", slow)]
    )
    degraded = next(m for m in outbox(c) if m["outage_id"] == slow)["payload"]
    assert (degraded["state"], degraded["severity"]) == ("degraded", "ticket")


async def test_flapping_check_is_held_back(make: Make) -> None:
    c = make(
        [{"name": "all", "channels": ["team"]}],
        flap_count=3,
        flap_window="30m",
        flap_hold="10m",
    )
    feed = Feed(c)
    t0 = MONDAY_10
    told = []
    for i in range(4):  # down for 2 minutes every 5
        start = t0 + 5 * i * M
        oid = await webmail_down(feed, start)
        await c.alerting.step(start + timedelta(seconds=10))
        await webmail_up(feed, start + 2 * M)
        await c.alerting.step(start + 3 * M)
        told.append(oid)
    # The first two are told (and resolved); from the third it is flapping and held.
    assert [(k, o) for k, _, o in said(c)] == [
        ("firing", told[0]),
        ("resolved", told[0]),
        ("firing", told[1]),
        ("resolved", told[1]),
    ]
    # A flapping check that stays down past the hold is told after all.
    last = await webmail_down(feed, t0 + 30 * M)
    assert await c.alerting.step(t0 + 35 * M) == 0
    assert await c.alerting.step(t0 + 40 * M) == 1
    assert said(c)[-1] == ("firing", "team", last)
    assert {a["id"]: a["flapping"] for a in list_alerts(c.store)}[last] is True


async def webmail_window(c: Collector, start: datetime, end: datetime) -> None:
    """A maintenance window for the webmail, declared a minute before it starts."""
    await c.write(
        lambda: c.store.declare_window(
            start, end, {"sites": ["dc"], "checks": ["webmail"]}, "mail upgrade", "Dana", start - M
        )
    )


@pytest.mark.parametrize(
    "cause",
    [
        "depends on wan-link (down)",
        # The intranet's own agent reported a plain timeout: the collector's rules still put
        # it behind the Guildhall's down WAN link, as the report will.
        None,
    ],
)
async def test_a_check_behind_a_down_link_is_named_by_the_links_alert(
    make: Make, cause: str | None
) -> None:
    c = make([{"name": "all", "channels": ["oncall"], "wait": "1m"}])
    feed = Feed(c)
    t0 = MONDAY_22
    link = await feed.event(
        "ccc-guildhall", "wan-link", "network_telephony", State.UP, State.DOWN, t0, error="timeout"
    )
    child = await feed.event(
        "ccc-guildhall",
        "intranet",
        "internet_web",
        State.UP,
        State.DOWN,
        t0 + timedelta(seconds=10),
        error="connection timed out",
        cause=cause,
    )
    await c.alerting.step(t0 + 2 * M)
    assert said(c) == [("firing", "oncall", link)]
    message = outbox(c)[0]["payload"]
    assert message["dependents"] == ["intranet"]
    assert message["provider"] == "BT Openreach"
    alerts = {a["id"]: a for a in list_alerts(c.store)}
    assert alerts[child]["suppressed"] == "depends on wan-link, which is down at ccc-guildhall"
    assert alerts[child]["delivery"] == "held"


async def test_planned_work_is_silenced(make: Make) -> None:
    c = make([{"name": "all", "channels": ["team"], "wait": "5m"}])
    feed = Feed(c)
    oid = await webmail_down(feed, MONDAY_10)
    await c.alerting.step(MONDAY_10 + M)
    await c.write(
        lambda: c.store.annotate(oid, MONDAY_10, planned=True, cause="mail upgrade", by="Al")
    )
    assert await c.alerting.step(MONDAY_10 + 10 * M) == 0
    (alert,) = list_alerts(c.store)
    assert alert["suppressed"] == "planned maintenance: mail upgrade"


async def test_a_declared_maintenance_window_silences_and_says_which(
    make: Make,
) -> None:
    c = make([{"name": "all", "channels": ["team"], "wait": "1m"}])
    await webmail_window(c, MONDAY_10 - M, MONDAY_10 + 60 * M)
    oid = await webmail_down(Feed(c), MONDAY_10)
    assert await c.alerting.step(MONDAY_10 + 5 * M) == 0
    (alert,) = list_alerts(c.store)
    assert alert["id"] == oid
    assert alert["suppressed"] == "planned maintenance: in maintenance window m:1"
    assert alert["delivery"] == "held"
    assert said(c) == []


async def test_outside_its_window_the_same_outage_alerts(make: Make) -> None:
    c = make([{"name": "all", "channels": ["team"], "wait": "1m"}])
    await webmail_window(c, MONDAY_10 - 120 * M, MONDAY_10 - 60 * M)
    oid = await webmail_down(Feed(c), MONDAY_10)
    await c.alerting.step(MONDAY_10 + 5 * M)
    assert said(c) == [("firing", "team", oid)]


async def test_a_restart_between_outage_and_alert_forgets_nothing(
    make: Make, tmp_path: Path
) -> None:
    routes = [{"name": "all", "channels": ["team"]}]
    first = make(routes)
    feed = Feed(first)
    oid = await webmail_down(feed, MONDAY_10)  # committed; the engine never ran
    late = await feed.event(
        "dc", "printer", "servers", State.UP, State.DOWN, MONDAY_10 - 3 * 60 * M
    )
    await feed.event("dc", "printer", "servers", State.DOWN, State.UP, MONDAY_10 - 2 * 60 * M)
    first.close()
    second = make(routes)
    assert await second.alerting.step(MONDAY_10 + M) == 1
    assert said(second) == [("firing", "team", oid)]
    # An outage that ended more than late_limit ago is recorded, not sent.
    assert {a["id"]: a["status"] for a in list_alerts(second.store)}[late] == "late"
    third = make(routes)
    assert await third.alerting.step(MONDAY_10 + 2 * M) == 0  # keyed: nothing twice


async def test_only_the_leader_delivers(make: Make) -> None:
    c = make([{"name": "all", "channels": ["team"]}])
    await webmail_down(Feed(c), MONDAY_10)
    await c.alerting.step(MONDAY_10)
    assert not c.is_leader
    assert await c.alerting.deliver(MONDAY_10) == 0
    assert [m["status"] for m in outbox(c)] == ["pending"]
