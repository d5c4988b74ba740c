"""``/api/v1/outages`` filters in SQL: what a filter returns is what the board's own words
for each outage say (``board.outage_view``), and no more rows are read than asked for."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from availmon.clock import utcnow
from collector import board
from collector.api import KINDS, _outages
from collector.main import Collector
from tests.collector.board_helpers import SITES, board_estate

STATES = ("down", "degraded", "unknown")


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    """Every state, planned by the record or by an annotation (either way, or neither), open
    and closed, at each site: the combinations a filter must tell apart."""
    c = Collector(board_estate(tmp_path))
    t0 = utcnow().replace(microsecond=0) - timedelta(days=3)
    rows, annotate = [], []
    combos = itertools.product(SITES, STATES, (0, 1), (None, False, True), (True, False))
    for n, (site, state, planned, marked, closed) in enumerate(combos):
        start = t0 + timedelta(minutes=n)
        rows.append(
            {
                "id": f"o{n}",
                "site": site,
                "check_name": "c",
                "area": "servers",
                "state": state,
                "start": start.isoformat(),
                "end": (start + timedelta(seconds=30)).isoformat() if closed else None,
                "planned": planned,
            }
        )
        if marked is not None:
            annotate.append((f"o{n}", marked))
    c.store.import_outages(rows)
    for oid, marked in annotate:
        c.store.annotate(oid, utcnow(), planned=marked, by="test")
    yield c
    c.close()


def everything(c: Collector, start: datetime, end: datetime) -> list[dict[str, Any]]:
    names, now = board.Names(c.estate), utcnow()
    rows = c.read_store.board_outages(start=start, end=end, limit=100_000)
    return [board.outage_view(row, names, None, now) for row in rows]


FILTERS = [
    {},
    *({"kind": k} for k in KINDS),
    {"open": "true"},
    {"open": "false"},
    *({"partner": p} for p in ("SHARED", "CCC", "HDC", "NOBODY")),
    {"kind": "maintenance", "open": "true", "partner": "CCC"},
    # No site at all, open only: SQLite had no plan for "0" beside INDEXED BY (a 500).
    {"open": "true", "partner": "NOBODY"},
    {"open": "true", "partner": "NOBODY", "site": "dc"},
    {"kind": "unplanned", "open": "false", "site": "dc"},
]


@pytest.mark.parametrize(
    "filters", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "none"
)
def test_each_filter_keeps_what_the_board_calls_so(
    collector: Collector, filters: dict[str, str]
) -> None:
    start, end = utcnow() - timedelta(days=30), utcnow() + timedelta(days=1)
    rows = everything(collector, start, end)
    assert len(rows) == 3 * 3 * 2 * 3 * 2  # every combination is there

    def keeps(view: dict[str, Any]) -> bool:
        return (
            ("site" not in filters or view["site"] == filters["site"])
            and ("partner" not in filters or view["partner"] == filters["partner"])
            and ("kind" not in filters or filters["kind"] in (view["kind"], view["shown"]))
            and ("open" not in filters or view["open"] == (filters["open"] == "true"))
        )

    expected = [v["id"] for v in rows if keeps(v)]
    got = [v["id"] for v in _outages(collector, start, end, filters, 10_000)]
    assert got == expected
    assert expected or filters.get("partner") == "NOBODY"  # a filter that keeps something


def test_the_limit_is_the_rows_read(collector: Collector) -> None:
    """The list read up to 100,000 rows of the period, then filtered, for any reader."""
    start, end = utcnow() - timedelta(days=30), utcnow() + timedelta(days=1)
    asked: list[int] = []
    real = collector.read_store.board_outages

    def counting(**kw: Any) -> list[dict[str, Any]]:
        rows = real(**kw)
        asked.append(len(rows))
        return rows

    collector.read_store.board_outages = counting  # type: ignore[method-assign]
    got = _outages(collector, start, end, {"kind": "maintenance"}, 3)
    assert len(got) == 3
    assert asked == [3]


async def test_alerts_go_while_page_readers_hold_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alert delivery read its queue on the thread that serves the board and the API, and
    works out the KPI: a loop of costly reads by anyone on the network, or a KPI worked out
    afresh (seconds on a busy store), held alerts back as long as it ran."""
    from tests.collector.test_alert_channels import SECRET, webmail_alerting

    monkeypatch.setenv("HOOK_SECRET", SECRET)
    async with webmail_alerting(tmp_path) as (rx, c):
        held = [threading.Event(), threading.Event()]
        release = threading.Event()

        def slow(n: int) -> None:  # a costly read for a page, or the KPI worked out
            held[n].set()
            release.wait(120)

        loop = asyncio.get_running_loop()
        busy = [
            asyncio.ensure_future(c.read(slow, 0)),
            loop.run_in_executor(c._figures, slow, 1),  # the KPI's thread
        ]
        try:
            for h in held:
                await asyncio.to_thread(h.wait, 60)
            assert await asyncio.wait_for(c.alerting.deliver(), 60) == 1
            assert not any(b.done() for b in busy)  # both were held all along
        finally:
            release.set()
            await asyncio.gather(*busy)
        assert [m["kind"] for m in rx.received] == ["firing"]  # taken before deliver returned


async def test_the_checks_list_is_not_a_snapshot_per_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any
) -> None:
    """/api/v1/checks took a snapshot of every check on the event loop per request: open to
    any reader, it held ingest and every page up for as long as a loop of it ran."""
    from collector.web import make_app
    from tests.collector.test_board import down_webmail

    on_loop: list[bool] = []
    snapshot = board.board_snapshot

    def counted(*args: Any, **kw: Any) -> dict[str, Any]:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return snapshot(*args, **kw)

    monkeypatch.setattr(board, "board_snapshot", counted)
    c = Collector(board_estate(tmp_path))
    try:
        client = await aiohttp_client(make_app(c))
        await down_webmail(c)
        replies = await asyncio.gather(*(client.get("/api/v1/checks") for _ in range(10)))
        bodies = [await r.json() for r in replies]
        assert all(b == bodies[0] for b in bodies)
        [webmail] = [x for x in bodies[0]["checks"] if x["check"] == "webmail"]
        assert (webmail["state"], webmail["reason"]) == ("down", "HTTP 503")
        assert not any(on_loop), "a snapshot was taken on the event loop"
        assert len(on_loop) <= 2  # the feed's build (and one more if that was stale)
    finally:
        c.close()
