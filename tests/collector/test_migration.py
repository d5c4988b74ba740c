"""Migration m012 (issue 9): a store written with ISO text times (by the code with issues 10
and 11, before the integer times), opened by today's Store, reads back exactly as it did:
every report in every format, live and ``--as-of``, the KPI and every public read.

The fixtures (``tests/collector/data``) were made by the code before the migration; see
``tests/collector/migration_data.py`` for how.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from availmon.errors import StoreError
from availmon.schema import Event, State
from collector.store import Store
from tests.collector.migration_data import NOW, estate, figures, populate

DATA = Path(__file__).resolve().parent / "data"


def old_store(path: Path) -> Path:
    """The pre-issue-9 store, rebuilt from its dump."""
    conn = sqlite3.connect(path)
    conn.executescript((DATA / "store-v5.sql").read_text(encoding="utf-8"))
    conn.close()
    return path


def golden() -> dict[str, str]:
    return {p.name.removeprefix("v5-"): p.read_text(encoding="utf-8") for p in DATA.glob("v5-*")}


def test_the_old_store_holds_iso_text(tmp_path: Path) -> None:
    """The fixture is what the test claims: the schema before m012, times as text, and
    issue 10's records in it."""
    conn = sqlite3.connect(old_store(tmp_path / "old.db"))
    try:
        done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
        assert {"m005_accounted_seqs", "m010_issue10_records"} <= done
        assert "m012_integer_times" not in done
        for table in ("outages", "import_history"):
            kinds = conn.execute(f"SELECT DISTINCT typeof(start), typeof(end) FROM {table}")
            assert set(kinds.fetchall()) <= {("text", "text"), ("text", "null")}
        assert conn.execute("SELECT DISTINCT typeof(at) FROM events").fetchall() == [("text",)]
        for table in ("maintenance_windows", "not_monitored", "maintenance_cancellations"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
    finally:
        conn.close()


def test_opening_an_old_store_migrates_it_to_integer_times(tmp_path: Path) -> None:
    path = old_store(tmp_path / "old.db")
    before = sqlite3.connect(path)
    counts = [
        before.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "outages")
    ]
    before.close()
    store = Store(path)
    try:
        conn = store.conn
        assert [
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("events", "outages")
        ] == counts
        kinds = conn.execute("SELECT DISTINCT typeof(start), typeof(end) FROM outages")
        assert {tuple(k) for k in kinds} == {("integer", "integer"), ("integer", "null")}
        # Imported outages' versions are outage times too; the records' own times stay text.
        kinds = conn.execute("SELECT DISTINCT typeof(start), typeof(end) FROM import_history")
        assert {tuple(k) for k in kinds} == {("integer", "integer")}
        kinds = conn.execute(
            "SELECT DISTINCT typeof(start), typeof(end), typeof(recorded_at) FROM not_monitored"
        )
        assert {tuple(k) for k in kinds} == {("text", "text", "text"), ("text", "null", "text")}
        kinds = conn.execute("SELECT DISTINCT typeof(start), typeof(end) FROM maintenance_windows")
        assert [tuple(k) for k in kinds] == [("text", "text")]
        kinds = conn.execute(
            "SELECT DISTINCT typeof(at), typeof(detected_at), typeof(received_at) FROM events"
        )
        assert [tuple(k) for k in kinds] == [("integer", "integer", "integer")]
        # m016: each outage an event started keeps that event's detected_at (the report
        # reads it from the row, with no join into the events).
        kept = conn.execute(
            "SELECT o.detected, e.detected_at, o.start FROM outages o"
            " JOIN events e ON e.id = o.start_event"
        ).fetchall()
        assert kept
        assert all(d == e for d, e, _ in kept)
        assert any(d > s for d, _, s in kept)  # some confirmation time to account for
        # The indexes came through the table rebuilds.
        names = {r[1] for r in conn.execute("PRAGMA index_list(events)")}
        assert {
            "idx_events_site_agent_check_name_at",
            "idx_events_site_agent_check_name_seq",
        } <= names
    finally:
        store.close()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    store = Store(old_store(tmp_path_factory.mktemp("migrated") / "old.db"))
    try:
        return figures(store, estate())
    finally:
        store.close()


@pytest.mark.parametrize("name", sorted(golden()))
def test_every_figure_reads_back_unchanged_after_the_migration(
    name: str, migrated: dict[str, str]
) -> None:
    assert migrated[name] == golden()[name]


def test_a_new_store_given_the_same_writes_reads_the_same(tmp_path: Path) -> None:
    """Today's code, from empty, gives what the old code gave for the same writes."""
    store = Store(tmp_path / "new.db")
    try:
        populate(store, estate())
        got = figures(store, estate())
    finally:
        store.close()
    want = golden()
    assert sorted(got) == sorted(want)
    for name in sorted(want):
        assert got[name] == want[name], name


def test_a_migrated_store_takes_new_events(tmp_path: Path) -> None:
    """After the migration the incremental path carries on from the converted history."""
    store = Store(old_store(tmp_path / "old.db"))
    try:
        open_wan = next(
            (o for o in store.outages(open_only=True) if o["check_name"] == "wan"), None
        )
        last = store.conn.execute(
            "SELECT max(seq), to_state FROM events WHERE site='dc' AND check_name='wan'"
        ).fetchone()
        prev = State(last[1])
        to = State.UP if prev != State.UP else State.DOWN
        ev = Event(
            id=f"dc:{last[0] + 1}",
            seq=last[0] + 1,
            site="dc",
            agent="dc",
            check="wan",
            area="network_telephony",
            from_=prev,
            to=to,
            at=NOW,
            detected_at=NOW,
        )
        assert store.ingest([ev], NOW + timedelta(seconds=1)).inserted == 1
        wan = [o for o in store.outages() if o["check_name"] == "wan"]
        if open_wan is not None:
            closed = next(o for o in wan if o["id"] == open_wan["id"])
            assert closed["end"] == NOW.isoformat(timespec="microseconds")
        if to != State.UP:
            assert any(o["start"] == NOW.isoformat(timespec="microseconds") for o in wan)
    finally:
        store.close()


def test_a_store_of_a_newer_release_is_refused_not_rewritten(tmp_path: Path) -> None:
    """Code one release back opened a newer store, wrote to it, and rewrote derived data
    without what the newer code keeps; the newer code then never refilled it."""
    path = tmp_path / "collector.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations VALUES ('m999_from_a_newer_release', 'now')")
    conn.commit()
    before = conn.execute("SELECT count(*) FROM _migrations").fetchone()
    conn.close()
    for tolerant in (False, True):
        with pytest.raises(StoreError) as refused:
            Store(path, tolerant=tolerant)
        assert str(refused.value) == (
            f"database {path} was written by a newer availmon (its migrations"
            " m999_from_a_newer_release are unknown to this one): run that release, or"
            " restore a backup taken before the upgrade"
        )
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone() == before
    conn.close()
