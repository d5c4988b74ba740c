"""The collector's live outage view (collector/live.py, issue 9): kept in memory from the
store's committed changes, it reads exactly what the store reads, after any mix of writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from availmon.clock import to_iso, utcnow
from availmon.config import Estate, parse_config
from availmon.schema import CheckStatus, Event, State
from collector.accounting import quarter_containing
from collector.board import board_snapshot, kpi_view
from collector.live import WINDOWS_AHEAD, LiveOutages
from collector.main import Collector
from collector.metrics import LiveCheck, _CheckLines, _Families, _LiveCollector, check_lines
from collector.report import kpi_snapshot
from collector.store import CancelOutcome, Store
from collector.web import BodyCache, StatusBody, make_app, status_snapshot
from tests.collector.board_helpers import Feed, board_estate
from tests.collector.helpers import estate_data, make_estate, outage, store_row
from tests.e2e import procs

NOW = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)  # FY2025Q4: January to March 2026
Q_START = datetime(2026, 1, 1, tzinfo=UTC)


@contextlib.contextmanager
def loaded(path: Path, est: Estate) -> Iterator[tuple[Store, LiveOutages]]:
    """A store at ``path`` and a live view loaded from it, closed after the block."""
    store = Store(path)
    view = LiveOutages(est)
    view.load(store, NOW)
    try:
        yield store, view
    finally:
        store.close()


AREAS = {
    "network_telephony": {"name": "Network"},
    "email": {"name": "Email", "degraded_counts_as_down": False},
    "servers": {"name": "Servers"},
}


def estate() -> Estate:
    return make_estate(areas=AREAS, count_planned=False)


def moved_estate() -> Estate:
    """``estate`` with ``CHECKS`` configured, three of them in another area than their
    events give (the config moved them after their outages were stored): ``mail`` to an area
    that counts degraded time, ``files`` to one that does not, ``old`` out of an area the
    config no longer has. The report books their time in the configured areas."""
    data = estate_data(count_planned=False)
    data["areas"] = AREAS
    homes = {"wan": "network_telephony", "mail": "servers", "files": "email", "old": "servers"}
    for site, check, _ in CHECKS:
        data["sites"][site]["checks"] = [
            {"name": check, "type": "tcp", "target": "127.0.0.1:9", "area": homes[check]}
        ]
    return parse_config(data, "test")


CHECKS = [
    ("dc", "wan", "network_telephony"),
    ("dc", "mail", "email"),
    ("ccc-guildhall", "files", "servers"),
    ("hdc-pathfinder", "old", "retired_area"),
]


def reads(store: Store, view: LiveOutages, est: Estate, now: datetime) -> tuple[Any, Any]:
    """What the store says, and what the view says, in comparable form."""
    from_store = {
        "open": sorted(store.outages(open_only=True), key=lambda r: r["id"]),
        "board_open": sorted(store.board_outages(open_only=True), key=lambda r: r["id"]),
        "recent": sorted(store.outages(limit=50), key=lambda r: r["id"]),
        "closed": sorted(store.recent_outages(10), key=lambda r: r["id"]),
        "kpi": kpi_snapshot(store, est, now),
        "kpi_view": kpi_view(store, est, now),
    }
    from_view = {
        "open": sorted(view.status_open(), key=lambda r: r["id"]),
        "board_open": sorted(view.open_rows(), key=lambda r: r["id"]),
        "recent": sorted(view.status_recent(), key=lambda r: r["id"]),
        "closed": sorted(view.recent_closed(), key=lambda r: r["id"]),
        "kpi": view.kpi(now),
        "kpi_view": view.kpi_view(now),
    }
    return from_store, from_view


steps = st.lists(
    st.one_of(
        # A batch of events of one check: (check, minutes after the last, to-state) ...
        st.tuples(
            st.just("events"),
            st.integers(0, len(CHECKS) - 1),
            st.lists(
                st.tuples(st.integers(-3000, 600), st.sampled_from(list(State))),
                min_size=1,
                max_size=4,
            ),
        ),
        st.tuples(st.just("annotate"), st.integers(0, 50), st.sampled_from([True, False, None])),
        st.tuples(st.just("import"), st.integers(-200_000, 70_000), st.integers(1, 600)),
        st.tuples(st.just("provisional"), st.integers(0, 2), st.booleans()),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
# An outage of no time in an area outside the config: issue 10's accounting lists no such
# area, nor may the view; then the same made of two batches (opened, then closed at once).
@example(steps=[("events", 3, [(0, State.DEGRADED), (0, State.UP)])])
@example(steps=[("events", 3, [(0, State.DEGRADED)]), ("events", 3, [(0, State.UP)])])
def test_the_view_reads_what_the_store_reads(steps: list[Any]) -> None:
    follow(estate(), steps)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
# Degraded time of a check stored in an area that does not count it, configured in one that
# does (and the other way); an open outage moved; history in an area the config dropped.
@example(steps=[("events", 1, [(0, State.DEGRADED), (30, State.UP)])])
@example(steps=[("events", 2, [(0, State.DEGRADED), (30, State.UP)])])
@example(steps=[("events", 1, [(0, State.DOWN)]), ("events", 1, [(30, State.UP)])])
@example(steps=[("events", 3, [(0, State.DOWN), (30, State.UP)])])
def test_the_view_books_a_moved_check_where_the_report_does(steps: list[Any]) -> None:
    """A configured check's outages count in its configured area, whatever area they were
    stored with, in the view (``/metrics``, the board) as in the report."""
    follow(moved_estate(), steps)


def follow(est: Estate, steps: list[Any]) -> None:
    """Apply ``steps`` to a store and a view of it; after each, they read the same."""
    seqs = dict.fromkeys(range(len(CHECKS)), 0)
    last: dict[int, State] = {}
    imported = 0
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "c.db")
        view = LiveOutages(est)
        view.load(store, NOW)
        try:
            for step in steps:
                kind = step[0]
                if kind == "events":
                    _, n, moves = step
                    batch = []
                    for minutes, to in moves:
                        seqs[n] += 1
                        at = NOW - timedelta(minutes=600) + timedelta(minutes=minutes)
                        batch.append(check_event(n, seqs[n], last.get(n, State.UNKNOWN), to, at))
                        last[n] = to
                    store.ingest(batch, NOW)
                elif kind == "annotate":
                    ids = sorted(o["id"] for o in store.outages())
                    if ids:
                        store.annotate(ids[step[1] % len(ids)], NOW, planned=step[2], note="n")
                elif kind == "import":
                    _, minutes, length = step
                    start = (NOW + timedelta(minutes=minutes)).isoformat()
                    end = (NOW + timedelta(minutes=minutes + length)).isoformat()
                    imported += 1
                    o = outage("servers", start, end, id=f"i:{imported}", planned=length % 2 == 0)
                    store.import_outages([store_row(o)])
                else:
                    _, n, drop = step
                    agent = CHECKS[n][0]
                    if drop:
                        store.drop_provisional(agent)
                        store.close_not_monitored(agent, NOW, NOW)
                    else:
                        since = NOW - timedelta(minutes=30 * n)
                        store.open_provisional(agent, agent, since)
                        # Not-monitored time (issue 10) is "unknown": as up by default.
                        store.open_not_monitored(agent, agent, since, NOW, "offline")
                view.apply(store, store.take_changes(), NOW)
                view.load_records(store, NOW)
                assert view.plain
                want, got = reads(store, view, est, NOW)
                assert got == want
            # Later on, without a write: open outages keep counting.
            later = NOW + timedelta(hours=5)
            want, got = reads(store, view, est, later)
            assert got["kpi"] == want["kpi"]
            # A view loaded from the store (the collector's start) reads the same.
            fresh = LiveOutages(est)
            fresh.load(store, NOW)
            want, got = reads(store, fresh, est, NOW)
            assert got == want
        finally:
            store.close()


def check_event(n: int, seq: int, frm: State, to: State, at: datetime) -> Event:
    """Event ``seq`` of ``CHECKS[n]``."""
    site, check, area = CHECKS[n]
    agent = f"{site}-{check}"
    return Event(
        id=f"{agent}:{seq}",
        seq=seq,
        site=site,
        agent=agent,
        check=check,
        area=area,
        from_=frm,
        to=to,
        at=at,
        detected_at=at,
    )


class Checks:
    """Events in order for ``CHECKS``: each one's seq and last state."""

    def __init__(self) -> None:
        self.seqs = dict.fromkeys(range(len(CHECKS)), 0)
        self.last: dict[int, State] = {}

    def event(self, n: int, to: State, at: datetime) -> Event:
        self.seqs[n] += 1
        frm = self.last.get(n, State.UNKNOWN)
        self.last[n] = to
        return check_event(n, self.seqs[n], frm, to, at)


def ingest_in_order(store: Store, batch: list[Event]) -> None:
    """``Store.ingest`` of events that all come after what is stored: the commit's changes
    carry every outage it opened, so the view reads none of them back (issue 8)."""
    store.ingest(batch, NOW)
    pending = store._pending  # what the next ``take_changes`` hands over
    assert pending.replaced_since is None
    assert set(pending.opened) <= pending.rows.keys()


# Batches of events of several checks, each event a few minutes (or none) after the last
# of any check, and whether the view takes the changes after that commit or leaves them to
# pile up with the next (``Changes.merge``). At most 48 events: fewer than 50 outages, so
# no two tie for the last place of the status list (which the store orders arbitrarily).
in_order = st.lists(
    st.tuples(
        st.lists(
            st.tuples(
                st.integers(0, len(CHECKS) - 1), st.integers(0, 90), st.sampled_from(list(State))
            ),
            min_size=1,
            max_size=8,
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=in_order, moved=st.booleans())
# Opened in one commit, closed in the next, both taken at once; and an outage of no time.
@example(batches=[([(0, 1, State.DOWN)], False), ([(0, 5, State.UP)], True)], moved=False)
@example(batches=[([(3, 1, State.DEGRADED), (3, 0, State.UP)], True)], moved=False)
# A moved check's outage opened in one commit, closed in the next.
@example(batches=[([(1, 1, State.DEGRADED)], True), ([(1, 5, State.UP)], True)], moved=True)
def test_the_view_fed_by_the_ingest_is_the_view_loaded_from_the_store(
    batches: list[tuple[list[tuple[int, int, State]], bool]], moved: bool
) -> None:
    """The view takes the outages events in order wrote from the commit (``Changes.rows``
    and ``ends``), not from the store: after each batch it holds what the store reads and
    what a view loaded from the store holds, whether it took each commit's changes or
    several commits' at once (and with checks the config moved to other areas)."""
    est = moved_estate() if moved else estate()
    checks = Checks()
    at = NOW - timedelta(hours=12)
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "c.db")
        view = LiveOutages(est)
        view.load(store, NOW)
        try:
            for moves, take in batches:
                batch = []
                for n, minutes, to in moves:
                    at += timedelta(minutes=minutes)
                    batch.append(checks.event(n, to, at))
                ingest_in_order(store, batch)
                if not take:
                    continue
                view.apply(store, store.take_changes(), NOW)
                loaded = LiveOutages(est)
                loaded.load(store, NOW)
                want, got = reads(store, view, est, NOW)
                assert got == want
                assert got == reads(store, loaded, est, NOW)[1]
                assert [view.evidence(r["start_event"]) for r in view.open_rows()] == [
                    loaded.evidence(r["start_event"]) for r in loaded.open_rows()
                ]
        finally:
            store.close()


def test_a_late_event_in_a_batch_keeps_the_outages_others_closed_in_order(
    tmp_path: Path,
) -> None:
    """One commit: a check's outage opened and closed by events in order, and a late event
    of another check that re-derives its outages from a later time. The first outage's
    downtime is in the view's KPI too (it once was lost: the view reread only from the
    re-derivation on)."""
    est = estate()
    checks = Checks()
    with loaded(tmp_path / "c.db", est) as (store, view):
        t = NOW - timedelta(hours=10)
        store.ingest(
            [
                checks.event(0, State.UP, t),
                checks.event(2, State.DOWN, t + timedelta(hours=5)),
                checks.event(2, State.UP, t + timedelta(hours=6)),
            ],
            NOW,
        )
        view.apply(store, store.take_changes(), NOW)
        store.ingest(
            [
                checks.event(0, State.DOWN, t + timedelta(hours=1)),
                checks.event(0, State.UP, t + timedelta(hours=2)),
                checks.event(2, State.DEGRADED, t + timedelta(hours=5, minutes=30)),  # late
            ],
            NOW,
        )
        changes = store.take_changes()
        assert changes.replaced_since is not None
        view.apply(store, changes, NOW)
        want, got = reads(store, view, est, NOW)
        assert got == want
        assert got["kpi"]["network_telephony"][0] == 3600.0


def test_many_outages_in_a_few_batches(tmp_path: Path) -> None:
    """Hundreds of outages a commit, opened and closed in it or in the next: only the
    latest fifty starts and ten ends are kept as rows, the rest counted in the KPI."""
    est = estate()
    checks = Checks()
    with loaded(tmp_path / "c.db", est) as (store, view):
        at = NOW - timedelta(days=30)
        for size in (400, 3, 250, 1):
            batch = []
            for i in range(size):
                n = i % len(CHECKS)
                at += timedelta(minutes=7)
                to = State.UP if checks.last.get(n) in (State.DOWN, State.DEGRADED) else State.DOWN
                batch.append(checks.event(n, to, at))
            ingest_in_order(store, batch)
            view.apply(store, store.take_changes(), NOW)
            want, got = reads(store, view, est, NOW)
            assert got == want
        assert len(got["recent"]) == 50
        assert len(got["closed"]) == 10
        assert got["kpi"]["network_telephony"][0] > 0


def test_an_outage_annotated_by_another_process_is_read_back_when_it_closes(
    tmp_path: Path,
) -> None:
    """The view closes an outage it holds open with the end the commit wrote; after another
    process (the CLI) wrote outages, it reads the rows back instead, so the annotation made
    meanwhile is in the closed row, as in the store."""
    est = estate()
    checks = Checks()
    with loaded(tmp_path / "c.db", est) as (store, view):
        start = NOW - timedelta(hours=2)
        ingest_in_order(store, [checks.event(1, State.DOWN, start)])
        view.apply(store, store.take_changes(), NOW)
        [row] = view.open_rows()
        cli = Store(tmp_path / "c.db")
        cli.annotate(row["id"], NOW, cause="power cut", planned=True, by="ops")
        cli.close()
        ingest_in_order(store, [checks.event(1, State.UP, start + timedelta(minutes=30))])
        view.apply(store, store.take_changes(), NOW)
        want, got = reads(store, view, est, NOW)
        assert got == want
        [closed] = view.recent_closed()
        assert (closed["id"], closed["cause"], closed["planned"]) == (row["id"], "power cut", 1)
        assert view.kpi(NOW)["email"][0] == 0.0  # planned does not count here


def test_recent_lists_keep_the_latest(tmp_path: Path) -> None:
    """Over fifty outages: the status list keeps the fifty latest starts, the board's the
    ten latest ends, however the writes arrive."""
    est = estate()
    with loaded(tmp_path / "c.db", est) as (store, view):
        rows = []
        for n in range(70):
            start = NOW - timedelta(hours=n, minutes=n)
            end = start + timedelta(minutes=10 + (n * 37) % 300)
            rows.append(store_row(outage("email", start.isoformat(), end.isoformat(), id=f"i:{n}")))
        for chunk in (rows[30:], rows[:30]):  # the older ones first
            store.import_outages(chunk)
            view.apply(store, store.take_changes(), NOW)
        want, got = reads(store, view, est, NOW)
        assert got == want
        assert len(got["recent"]) == 50
        assert len(got["closed"]) == 10


def test_the_declared_windows_follow_writes_and_time(tmp_path: Path) -> None:
    """After every commit the view's windows are ``Store.windows`` from the quarter's start
    to a week ahead; the store is read for them only when a window was declared or
    cancelled (here or by another process) or that week reaches past what was read."""
    est = estate()
    store = Store(tmp_path / "c.db")
    view = LiveOutages(est)
    view.load(store, NOW)
    reads_of_windows: list[str] = []
    store.conn.set_trace_callback(
        lambda sql: reads_of_windows.append(sql) if "FROM maintenance_windows" in sql else None
    )

    def records(now: datetime, read: bool) -> None:
        del reads_of_windows[:]
        view.load_records(store, now)
        assert bool(reads_of_windows) is read
        want = store.windows(quarter_containing(now, view.tz).start, now + WINDOWS_AHEAD)
        assert view.windows() == want
        assert view.plain is (not want)

    try:
        scope = {"areas": ["email"]}
        records(NOW, read=True)
        records(NOW + timedelta(hours=1), read=False)
        here = store.declare_window(NOW, NOW + timedelta(hours=1), scope, "swap", "ops", NOW)
        records(NOW, read=True)
        records(NOW + timedelta(minutes=5), read=False)
        cli = Store(tmp_path / "c.db")  # another process
        far = cli.declare_window(
            NOW + timedelta(days=7, hours=12), NOW + timedelta(days=8), scope, "far", "ops", NOW
        )
        records(NOW, read=True)
        assert [w["id"] for w in view.windows()] == [here["id"]]  # not in the week ahead
        records(NOW + timedelta(hours=6), read=False)
        records(NOW + timedelta(days=2), read=True)  # the week ahead passed what was read
        assert [w["id"] for w in view.windows()] == [here["id"], far["id"]]
        cancelled = cli.cancel_window(far["id"], "ops", NOW, "postponed")
        assert cancelled.outcome is CancelOutcome.CANCELLED
        records(NOW + timedelta(days=2), read=True)
        cli.close()
        cancelled = store.cancel_window(here["id"], "ops", NOW, None)
        assert cancelled.outcome is CancelOutcome.CANCELLED
        records(NOW + timedelta(days=2), read=True)
        assert view.windows() == []
        assert view.plain
        april = datetime(2026, 4, 2, tzinfo=UTC)  # a new quarter
        store.declare_window(NOW - timedelta(hours=1), NOW, scope, "done", "ops", NOW)
        store.declare_window(NOW, april, scope, "long", "ops", NOW)
        records(datetime(2026, 3, 31, 22, tzinfo=UTC), read=True)  # 23:00 in London
        assert len(view.windows()) == 2
        records(datetime(2026, 3, 31, 23, 30, tzinfo=UTC), read=True)  # 00:30, 1 April
        assert [w["reason"] for w in view.windows()] == ["long"]
    finally:
        store.close()


def test_another_process_writing_makes_the_view_stale(tmp_path: Path) -> None:
    est = estate()
    with loaded(tmp_path / "c.db", est) as (store, view):
        store.import_outages([store_row(outage("email", "2026-02-01T10:00", "2026-02-01T11:00"))])
        view.apply(store, store.take_changes(), NOW)
        assert not view.stale(store, NOW)
        other = Store(tmp_path / "c.db")  # the CLI, say
        other.import_outages([store_row(outage("servers", "2026-02-02T10:00", "2026-02-02T12:00"))])
        other.close()
        assert view.stale(store, NOW)
        view.load(store, NOW)
        assert not view.stale(store, NOW)
        assert view.kpi(NOW)["servers"][0] == 7200.0
        # A new quarter makes it stale too.
        assert view.stale(store, datetime(2026, 4, 2, tzinfo=UTC))


async def test_status_and_metrics_follow_commits_and_a_restart(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    """Through the collector's own path (a committed batch, then the pages): the view is
    up to date after every commit, and loaded the same from the store after a restart."""
    collector = Collector(board_estate(tmp_path))
    try:
        feed = Feed(collector)
        client = await aiohttp_client(make_app(collector))
        start = utcnow().replace(microsecond=0) - timedelta(minutes=20)
        oid = await feed.event("dc", "webmail", "email", State.UP, State.DOWN, start, "HTTP 503")
        status = await (await client.get("/api/v1/status")).json()
        assert [o["id"] for o in status["open_outages"]] == [oid]
        board = await (await client.get("/")).text()
        assert "HTTP 503" in board
        down = gauge(await (await client.get("/metrics")).text(), "email")
        assert down >= 20 * 60
        await feed.event(
            "dc", "webmail", "email", State.DOWN, State.UP, start + timedelta(minutes=5)
        )
        status = await (await client.get("/api/v1/status")).json()
        assert status["open_outages"] == []
        [closed] = [o for o in status["recent_outages"] if o["id"] == oid]
        assert closed["end"] == to_iso(start + timedelta(minutes=5))
        before = collector.view.kpi(utcnow())
    finally:
        collector.close()
    again = Collector(board_estate(tmp_path))
    try:
        client = await aiohttp_client(make_app(again))
        status = await (await client.get("/api/v1/status")).json()
        assert status["open_outages"] == []
        assert [o["id"] for o in status["recent_outages"]] == [oid]
        after = again.view.kpi(utcnow())
        assert after["email"][0] == before["email"][0] == 300.0
    finally:
        again.close()


async def test_a_write_by_another_process_reaches_the_view(tmp_path: Path) -> None:
    collector = Collector(board_estate(tmp_path))
    try:
        assert collector.view.kpi(utcnow())["servers"][0] == 0.0
        cli = Store(collector.estate.collector.database)
        start = utcnow() - timedelta(minutes=50)
        cli.import_outages(
            [
                store_row(
                    outage(
                        "servers",
                        start.isoformat(),
                        (start + timedelta(minutes=30)).isoformat(),
                        site="hdc-pathfinder",
                    )
                )
            ]
        )
        cli.close()
        await collector.refresh()
        assert collector.view.kpi(utcnow())["servers"][0] == 1800.0
    finally:
        collector.close()


def gauge(text: str, area: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "availmon_area_downtime_seconds" and s.labels["area"] == area:
                return float(s.value)
    raise AssertionError(f"no downtime gauge for {area}")


async def test_clients_asking_at_once_share_a_build_never_older_than_their_request() -> None:
    cache = BodyCache()
    builds: list[int] = []
    gate, building = asyncio.Event(), asyncio.Event()

    async def build() -> bytes:
        builds.append(len(builds) + 1)
        n = len(builds)
        if n == 1:
            building.set()
            await gate.wait()  # the first build is slow: others arrive meanwhile
        return str(n).encode()

    first = asyncio.ensure_future(cache.get(None, build))
    await asyncio.wait_for(building.wait(), 5)
    late = [asyncio.ensure_future(cache.get(None, build)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == b"1"
    # Those that arrived during build 1 get build 2, which began after them: one build.
    assert [await f for f in late] == [b"2"] * 5
    assert builds == [1, 2]
    # With a key, an unchanged body is reused; a new key builds again.
    assert await cache.get(("k",), build) == b"3"
    assert await cache.get(("k",), build) == b"3"
    assert await cache.get(("k2",), build) == b"4"


def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name != "availmon_check_cert_expiry_seconds"  # moves with the clock
    }


async def test_the_metrics_body_is_the_registry_and_follows_changes(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    collector = Collector(board_estate(tmp_path))
    try:
        feed = Feed(collector)
        client = await aiohttp_client(make_app(collector))
        now = utcnow()
        await feed.heartbeat(
            "dc",
            now,
            CheckStatus(check="webmail", area="email", state=State.UP, latency=0.02),
            CheckStatus(
                check="council-website", area="internet_web", state=State.DEGRADED, latency=1.5
            ),
        )
        body = await (await client.get("/metrics")).text()
        assert samples(body) == samples(generate_latest(collector.metrics.registry).decode())
        assert (
            "availmon_check_up",
            (("area", "email"), ("check", "webmail"), ("site", "dc")),
            1.0,
        ) in samples(body)
        await feed.heartbeat(
            "dc",
            now + timedelta(seconds=30),
            CheckStatus(check="webmail", area="email", state=State.DOWN, error="HTTP 503"),
            CheckStatus(
                check="council-website", area="internet_web", state=State.DEGRADED, latency=1.5
            ),
        )
        body = await (await client.get("/metrics")).text()
        assert samples(body) == samples(generate_latest(collector.metrics.registry).decode())
        assert (
            "availmon_check_up",
            (("area", "email"), ("check", "webmail"), ("site", "dc")),
            0.0,
        ) in samples(body)
    finally:
        collector.close()


async def test_the_status_body_is_the_status_snapshot(tmp_path: Path) -> None:
    """Assembled from cached pieces, byte for byte what json.dumps of the snapshot gives."""
    collector = Collector(board_estate(tmp_path))
    try:
        feed = Feed(collector)
        now = utcnow()
        await feed.heartbeat(
            "dc", now, CheckStatus(check="council-website", area="internet_web", state=State.UP)
        )
        oid = await feed.event(
            "dc", "webmail", "email", State.UP, State.DOWN, now - timedelta(minutes=5), "HTTP 503"
        )
        body = StatusBody()
        for _ in range(2):  # built from scratch, then from what it kept
            data = body.build(collector)
            parsed = json.loads(data)
            assert data == json.dumps(parsed).encode()
            want = status_snapshot(collector)
            assert {**parsed, "generated_at": None} == {**want, "generated_at": None}
            assert [o["id"] for o in parsed["open_outages"]] == [oid]
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, now, latency=0.02)
        parsed = json.loads(body.build(collector))
        assert parsed["open_outages"] == []
        assert {**parsed, "generated_at": None} == {
            **status_snapshot(collector),
            "generated_at": None,
        }
    finally:
        collector.close()


@given(
    st.builds(
        LiveCheck,
        site=st.text(min_size=1, max_size=8),
        agent=st.just("a"),
        check=st.text(min_size=1, max_size=8),
        area=st.sampled_from(["email", 'we"ird\\area\n']),
        state=st.sampled_from(list(State)),
        latency=st.one_of(st.none(), st.floats(0, 1e9)),
        loss=st.one_of(st.none(), st.floats(0, 100)),
        jitter=st.one_of(st.none(), st.floats(0, 10)),
        duration=st.one_of(st.none(), st.floats(0, 1e7)),
    )
)
def test_a_checks_lines_are_what_prometheus_client_writes(c: LiveCheck) -> None:
    live = _LiveCollector(lambda: [c], lambda: [], lambda: [])
    want = generate_latest(_Families(lambda: live.check_families([c])))
    assert _CheckLines(live).render() == want
    assert all(line in want for line in check_lines(c))


async def test_the_kpi_comes_from_the_store_while_issue_10s_rules_have_a_say(
    tmp_path: Path,
) -> None:
    """The memory KPI does not know maintenance windows (issue 10). While one is declared
    in the quarter, /metrics' KPI and the board's are the full rules' figures read from the
    store; without one they are the view's, and the same (not-monitored time included)."""
    base = board_estate(tmp_path)
    est = base.model_copy(
        update={"accounting": base.accounting.model_copy(update={"count_planned": False})}
    )
    collector = Collector(est)
    try:
        feed = Feed(collector)
        start = utcnow().replace(microsecond=0) - timedelta(minutes=20)
        await feed.event("dc", "webmail", "email", State.UP, State.DOWN, start, "HTTP 503")
        await feed.event(
            "dc", "webmail", "email", State.DOWN, State.UP, start + timedelta(minutes=10)
        )
        assert collector.view.plain
        now = utcnow()
        assert (
            collector.kpi(now)
            == collector.view.kpi(now)
            == kpi_snapshot(collector.read_store, est, now)
        )
        assert collector.kpi(now)["email"][0] == 600.0
        assert collector.kpi_view(now) is None  # the board takes the view's
        # Not-monitored time over the site's checks is "unknown": up, by default. The view
        # stays the accounting's figure.
        await collector.write(
            collector.store.open_not_monitored, "dc", "dc", start - timedelta(minutes=5), now, "x"
        )
        assert collector.view.plain
        now = utcnow()
        assert collector.view.kpi(now) == kpi_snapshot(collector.read_store, est, now)
        await collector.write(
            collector.store.declare_window,
            start - timedelta(minutes=1),
            start + timedelta(minutes=30),
            {"checks": ["dc/webmail"]},
            "mail upgrade",
            "ops",
            start - timedelta(minutes=2),  # declared before the work (as recorded)
        )
        assert not collector.view.plain
        assert [w["reason"] for w in collector.view.windows()] == ["mail upgrade"]
        now = utcnow()
        assert collector.kpi(now) == kpi_snapshot(collector.read_store, est, now)
        assert collector.kpi(now)["email"][0] == 0.0  # planned, and planned is not counted
        assert collector.view.kpi(now)["email"][0] == 600.0
        board = collector.kpi_view(now)
        assert board == kpi_view(collector.read_store, est, now)
        assert board is not None
        assert [a["downtime_minutes"] for a in board["areas"] if a["id"] == "email"] == [0.0]
    finally:
        collector.close()


async def test_a_reload_gives_the_live_view_the_new_estate(tmp_path: Path) -> None:
    """SIGHUP's reload: the view's target and areas are the new config's at once (the
    view is built from the estate, so a reload must replace it, not only the estate)."""
    data: dict[str, Any] = {
        "name": "test council ICT",
        "broker": {"host": "127.0.0.1", "port": 1},
        "collector": {"database": str(tmp_path / "collector.db")},
        "web": {"listen": "127.0.0.1", "port": 0},
        "accounting": {"target_percent": 95.0},
        "partners": {"SHARED": {"name": "Shared service"}},
        "sites": {
            "dc": {
                "partner": "SHARED",
                "checks": [
                    {"name": "webmail", "type": "http", "target": "http://127.0.0.1:1/",
                     "area": "email"},
                ],
            }
        },
    }  # fmt: skip
    path = tmp_path / "estate.toml"
    collector = Collector(procs.write_config(path, data))
    try:
        await Feed(collector).event(
            "dc", "webmail", "email", State.UP, State.DOWN, utcnow() - timedelta(minutes=5)
        )
        assert board_snapshot(collector, utcnow())["kpi"]["target_percent"] == 95.0
        data["accounting"]["target_percent"] = 99.5
        procs.write_config(path, data)
        assert await collector.reload(path)
        assert board_snapshot(collector, utcnow())["kpi"]["target_percent"] == 99.5
        assert collector.view.estate is collector.estate
    finally:
        collector.close()
