"""The status page and JSON API, served by the collector's real aiohttp app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from availmon.schema import Event, State
from collector.main import Collector
from collector.web import make_app
from tests.peers import estate

T0 = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)  # 10:00 in London (BST)


def event(seq: int, frm: State, to: State, minutes: int) -> Event:
    at = T0 + timedelta(minutes=minutes)
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
    )


async def test_status_page_and_api_show_open_outages(tmp_path: Path, aiohttp_client: Any) -> None:
    collector = Collector(estate(tmp_path, 1, []))
    collector.store.ingest([event(1, State.UP, State.DOWN, 0)], T0)
    client = await aiohttp_client(make_app(collector))

    status = await (await client.get("/api/v1/status")).json()
    [outage] = status["open_outages"]
    assert (outage["site"], outage["check_name"], outage["state"]) == ("hq", "web", "down")

    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    assert 'Ongoing outages <span class="count">(1)</span>' in html
    assert "1 Jul" in html  # the start, in the councils' local time
    assert "10:00" in html

    health = await client.get("/healthz")
    assert health.status == 503  # no MQTT session: not healthy
    collector.close()
