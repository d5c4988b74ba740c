"""The board and the API under issue 10's rules: declared maintenance, windows that make an
outage maintenance, checks behind a down dependency, which agents see a quorum service, and
the pure ``suppression`` query the alerts call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from availmon.clock import utcnow
from availmon.config import Estate, parse_config
from availmon.schema import CheckStatus, State, topic
from collector.accounting import Outage, to_us
from collector.attribution import suppression
from collector.main import Collector
from collector.maintenance import Window
from collector.web import make_app
from tests.collector.board_helpers import Feed

TOKEN = "s3cret-write-token"
WRITE = {"Authorization": f"Bearer {TOKEN}", "X-Availmon-User": "Dana"}


def check(name: str, area: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "http", "target": "http://127.0.0.1:1/", "area": area, **kw}


def estate(tmp: Path, token_file: Path) -> Estate:
    return parse_config(
        {
            "name": "test council ICT",
            "broker": {"host": "127.0.0.1", "port": 1},
            "collector": {"database": str(tmp / "collector.db")},
            "web": {"listen": "127.0.0.1", "port": 0, "token_file": str(token_file)},
            "partners": {"CCC": {"name": "Cambridge"}, "SHARED": {"name": "Shared"}},
            "sites": {
                "dc": {
                    "partner": "SHARED",
                    "checks": [
                        check("internet-link", "network_telephony"),
                        check("webmail", "email"),
                    ],
                },
                "ccc-guildhall": {
                    "partner": "CCC",
                    "checks": [
                        check("webmail", "email"),
                        check("website", "internet_web", depends_on="dc/internet-link"),
                    ],
                },
                "hdc-pathfinder": {"partner": "CCC", "checks": [check("webmail", "email")]},
            },
            "services": {
                "email": {
                    "name": "Email",
                    "checks": ["dc/webmail", "ccc-guildhall/webmail", "hdc-pathfinder/webmail"],
                    "quorum": 2,
                }
            },
        },
        "test",
    )


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[Collector]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    c = Collector(estate(tmp_path, token))
    yield c
    c.close()


async def test_a_check_behind_a_down_link_is_unreachable_not_down(
    collector: Collector, aiohttp_client: Any
) -> None:
    feed = Feed(collector)
    start = utcnow() - timedelta(minutes=10)
    await feed.event("dc", "internet-link", "network_telephony", State.UP, State.DOWN, start)
    oid = await feed.event(
        "ccc-guildhall",
        "website",
        "internet_web",
        State.UP,
        State.DOWN,
        start + timedelta(minutes=1),
    )
    client = await aiohttp_client(make_app(collector))
    html = await (await client.get("/")).text()
    outage = html.split(f'data-outage="{oid}"', 1)[1].split("</li>", 1)[0]
    assert 'data-state="unreachable"' in outage
    assert "behind dc/internet-link" in outage
    tile = html.split('data-check="ccc-guildhall/website"', 1)[1].split("</a>", 1)[0]
    assert 'data-state="unreachable"' in tile
    link = html.split('data-check="dc/internet-link"', 1)[1].split("</a>", 1)[0]
    assert 'data-state="down"' in link


async def test_which_agents_see_a_quorum_service(collector: Collector, aiohttp_client: Any) -> None:
    feed = Feed(collector)
    now = utcnow()
    await feed.heartbeat("dc", now, CheckStatus(check="webmail", area="email", state=State.DOWN))
    await feed.heartbeat(
        "ccc-guildhall", now, CheckStatus(check="webmail", area="email", state=State.UP)
    )
    await feed.heartbeat(
        "hdc-pathfinder", now, CheckStatus(check="webmail", area="email", state=State.UP)
    )
    client = await aiohttp_client(make_app(collector))
    html = await (await client.get("/")).text()
    service = html.split('data-service="email"', 1)[1].split("</li>", 1)[0]
    assert "down when 2 agree" in service
    assert "dc down, ccc-guildhall up, hdc-pathfinder up" in service


async def test_declared_maintenance_makes_an_outage_maintenance_and_is_recorded(
    collector: Collector, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(make_app(collector))
    now = utcnow()
    body = {
        "start": (now - timedelta(minutes=1)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
        "sites": ["dc"],
        "checks": ["internet-link"],
        "reason": "router firmware",
    }
    refused = await client.post("/api/v1/maintenance", json=body)
    assert refused.status == 401
    bad = await client.post(
        "/api/v1/maintenance", json={**body, "sites": ["nowhere"]}, headers=WRITE
    )
    assert bad.status == 400
    assert "unknown site 'nowhere'" in (await bad.json())["error"]
    made = await client.post("/api/v1/maintenance", json=body, headers=WRITE)
    assert made.status == 201, await made.text()
    window = await made.json()
    assert (window["id"], window["by"]) == ("m:1", "Dana")
    # The link fails after the declaration: planned, shown as maintenance, never red.
    feed = Feed(collector)
    oid = await feed.event(
        "dc", "internet-link", "network_telephony", State.UP, State.DOWN, utcnow()
    )
    html = await (await client.get("/")).text()
    outage = html.split(f'data-outage="{oid}"', 1)[1].split("</li>", 1)[0]
    assert 'data-state="maintenance"' in outage
    assert "in maintenance window m:1" in outage
    listed = await (await client.get("/api/v1/maintenance")).json()
    assert [w["id"] for w in listed["windows"]] == ["m:1"]
    page = await (await client.get("/board/maintenance")).text()
    assert "router firmware" in page


async def test_the_maintenance_form_declares_with_name_and_token(
    collector: Collector, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(make_app(collector))
    form = {
        "start": "2099-03-01T22:00",
        "end": "2099-03-02T02:00",
        "areas": "servers",
        "reason": "SAN firmware",
        "by": "Erin",
    }
    refused = await client.post("/board/maintenance", data={**form, "token": "guess"})
    assert refused.status == 401
    saved = await client.post("/board/maintenance", data={**form, "token": TOKEN})
    assert saved.status == 200
    assert "Declared m:1." in await saved.text()
    row = collector.store.window("m:1")
    assert row is not None
    assert (row["by"], row["scope"]["areas"]) == ("Erin", ["servers"])


def test_suppression_is_a_pure_query_for_the_alerts(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    est = estate(tmp_path, token)
    now = utcnow()
    t = to_us(now)
    link = Outage("o:l", "dc", "internet-link", "network_telephony", "down", t - 600_000_000, None)
    site = Outage("o:w", "ccc-guildhall", "website", "internet_web", "down", t - 500_000_000, None)
    mail = Outage("o:m", "dc", "webmail", "email", "down", t - 60_000_000, None)
    assert suppression(est, link, t, open_outages=[link, site, mail]) is None
    behind = suppression(est, site, t, open_outages=[link, site, mail])
    assert behind is not None
    assert (behind.kind, behind.ref) == ("unreachable", "dc/internet-link")
    alone = suppression(est, mail, t, open_outages=[link, site, mail])
    assert alone is not None
    assert (alone.kind, alone.ref) == ("path", "email")
    win = Window("m:9", t - 3_600_000_000, t + 3_600_000_000, recorded_at=t - 7_200_000_000)
    planned = suppression(est, link, t, open_outages=[link], windows=[win])
    assert planned is not None
    assert (planned.kind, planned.ref) == ("maintenance", "m:9")
    # Once the link is back, the site's own failure stands on its own.
    assert suppression(est, site, t, open_outages=[site]) is None


async def test_the_collector_records_time_not_monitored(collector: Collector) -> None:
    """An agent offline past its grace: a not-monitored record from when it was last heard
    to when it came back, kept after its replay replaced the provisional outage."""
    feed = Feed(collector)
    now = utcnow()
    for site in ("dc", "ccc-guildhall", "hdc-pathfinder"):
        await collector.handle_batch([(topic(site, site, "status"), b"online")])
        await feed.heartbeat(site, now, CheckStatus(check="webmail", area="email", state=State.UP))
    await collector.handle_batch([(topic("ccc-guildhall", "ccc-guildhall", "status"), b"offline")])
    grace = timedelta(seconds=collector.estate.collector.offline_grace)
    await collector.check_liveness(utcnow() + grace + timedelta(seconds=1))
    [row] = collector.store.not_monitored(now - timedelta(hours=1), now + timedelta(hours=1))
    assert (row["site"], row["why"], row["end"]) == ("ccc-guildhall", "offline", None)
    await collector.handle_batch([(topic("ccc-guildhall", "ccc-guildhall", "status"), b"online")])
    await feed.heartbeat(
        "ccc-guildhall", utcnow(), CheckStatus(check="webmail", area="email", state=State.UP)
    )
    [row] = collector.store.not_monitored(now - timedelta(hours=1), now + timedelta(hours=1))
    assert row["end"] is not None
    assert row["dropped_at"] is not None  # the replay replaced the provisional outage
    assert [o for o in collector.store.outages() if o["source"] == "provisional"] == []
