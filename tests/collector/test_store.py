"""The store: idempotent on event id, outages derived from events in seq order."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from availmon.clock import to_iso
from availmon.schema import Event, Evidence, State
from collector.store import Store, derive_intervals

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def ev(seq: int, frm: State, to: State, minute: int, check: str = "web") -> Event:
    at = T0 + timedelta(minutes=minute)
    return Event(
        id=f"hq:{seq}",
        seq=seq,
        site="hq",
        agent="hq",
        check=check,
        area="email",
        from_=frm,
        to=to,
        at=at,
        detected_at=at,
    )


def test_intervals_from_events() -> None:
    rows = [
        ("a", 1, "unknown", "up", "t0"),
        ("b", 2, "up", "down", "t1"),
        ("c", 3, "down", "degraded", "t2"),
        ("d", 4, "degraded", "up", "t3"),
        ("e", 5, "up", "down", "t4"),
    ]
    got = [(i.state, i.start, i.end) for i in derive_intervals(rows)]
    assert got == [("down", "t1", "t2"), ("degraded", "t2", "t3"), ("down", "t4", None)]


def test_a_restarted_agent_continues_the_outage_it_was_in() -> None:
    rows = [
        ("a", 1, "up", "down", "t1"),
        ("b", 2, "unknown", "down", "t2"),  # killed and restarted mid-outage
        ("c", 3, "down", "up", "t3"),
        ("d", 4, "up", "up", "t4"),  # a note that changes nothing (a device reboot)
        ("e", 5, "unknown", "up", "t5"),  # restarted while healthy
    ]
    got = [(i.state, i.start, i.end, i.start_event) for i in derive_intervals(rows)]
    assert got == [("down", "t1", "t3", "a")]


def test_a_restart_into_another_state_splits() -> None:
    rows = [("a", 1, "up", "down", "t1"), ("b", 2, "unknown", "degraded", "t2")]
    got = [(i.state, i.start, i.end) for i in derive_intervals(rows)]
    assert got == [("down", "t1", "t2"), ("degraded", "t2", None)]


def test_ingest_is_idempotent_and_order_free(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    events = [
        ev(1, State.UNKNOWN, State.UP, 0),
        ev(2, State.UP, State.DOWN, 5),
        ev(3, State.DOWN, State.UP, 12),
    ]
    # The end arrives before the start (a replay after a reconnect), then everything again.
    r1 = store.ingest([events[2], events[0]], T0)
    r2 = store.ingest(events, T0)
    assert (r1.inserted, r1.duplicates) == (2, 0)
    assert (r2.inserted, r2.duplicates) == (1, 2)
    outages = store.outages()
    assert [(o["state"], o["start"], o["end"]) for o in outages] == [
        ("down", to_iso(T0 + timedelta(minutes=5)), to_iso(T0 + timedelta(minutes=12)))
    ]
    assert store.event_count() == 3
    store.close()


@settings(max_examples=40, deadline=None)
@given(
    error=st.none() | st.text(max_size=40),
    latency=st.none() | st.floats(0, 86_400),
    loss=st.none() | st.floats(0, 100),
    probes=st.integers(0, 2**63 - 1),
    cause=st.none() | st.text(max_size=20),
)
def test_the_evidence_is_stored_as_its_json_text(
    error: str | None, latency: float | None, loss: float | None, probes: int, cause: str | None
) -> None:
    """The stored evidence is ``model_dump_json``'s text, byte for byte, as TEXT."""
    evidence = Evidence(error=error, latency=latency, loss=loss, probes=probes, cause=cause)
    event = ev(1, State.UP, State.DOWN, 0).model_copy(update={"evidence": evidence})
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "c.db")
        try:
            store.ingest([event], T0)
            [(text, kind)] = store.conn.execute("SELECT evidence, typeof(evidence) FROM events")
        finally:
            store.close()
    assert (text, kind) == (evidence.model_dump_json(), "text")


def test_annotations_survive_rebuilds(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    store.ingest([ev(1, State.UP, State.DOWN, 0)], T0)
    oid = store.outages()[0]["id"]
    store.conn.execute("INSERT INTO annotations (outage_id, cause) VALUES (?, 'fibre cut')", (oid,))
    store.ingest([ev(2, State.DOWN, State.UP, 30)], T0)
    [outage] = store.outages()
    assert (outage["id"], outage["cause"], outage["end"] is not None) == (oid, "fibre cut", True)
    store.close()


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    store.ingest([ev(1, State.UP, State.DOWN, 0)], T0)
    store.close()
    again = Store(tmp_path / "c.db")
    assert again.event_count() == 1
    assert len(again.outages(open_only=True)) == 1
    again.close()


def test_a_failed_commit_is_rolled_back(tmp_path: Path) -> None:
    """A COMMIT that fails (disk full in production) leaves SQLite's transaction open; unless
    it is rolled back, every later write fails with "cannot start a transaction within a
    transaction". A real failing COMMIT: a deferred foreign key, broken by a trigger on
    ``events``, is only checked at COMMIT."""
    store = Store(tmp_path / "collector.db")
    try:
        conn = store.conn
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TEMP TABLE child "
            "(pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
        conn.execute(
            "CREATE TEMP TRIGGER commit_fails AFTER INSERT ON main.events "
            "BEGIN INSERT INTO child VALUES (1); END"
        )
        first = ev(1, State.UP, State.DOWN, 0)
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            store.ingest([first], T0)
        assert not conn.in_transaction
        conn.execute("DROP TRIGGER commit_fails")
        # The store goes on: the same event is stored now (the failed batch left nothing).
        result = store.ingest([first, ev(2, State.DOWN, State.UP, 5)], T0)
        assert (result.inserted, result.duplicates) == (2, 0)
        assert [e["id"] for e in store.events()] == ["hq:1", "hq:2"]
    finally:
        store.close()


@settings(max_examples=60, deadline=None)
# Two instants holding events of two intervals: the open outage is the one to extend (a tie
# on start picked the closed one), and a rebuild starts at the event that opened its origin.
@example([(State.DEGRADED, 0, 2), (State.DOWN, 0, 1), (State.UP, 0, 1)])
@example(
    [
        (State.UP, 2, 1),
        (State.DEGRADED, 0, 1),
        (State.DEGRADED, 1, 1),
        (State.DOWN, 1, 1),
        (State.UP, 1, 1),
    ]
)
@given(
    st.lists(
        st.tuples(st.sampled_from(list(State)), st.integers(0, 40), st.integers(1, 4)),
        min_size=1,
        max_size=25,
    )
)
def test_batches_in_any_order_give_the_outages_of_one_derivation(
    steps: list[tuple[State, int, int]],
) -> None:
    """Events arriving in batches, in order or not (the incremental path and the re-derive
    path), end with exactly the outages ``derive_intervals`` gives for all of them at once,
    each keeping its start event's ``detected_at`` (the report reads it from the row)."""
    events = []
    prev = State.UNKNOWN
    for seq, (to, minute, _) in enumerate(steps, start=1):
        e = ev(seq, prev, to, minute)
        events.append(e.model_copy(update={"detected_at": e.at + timedelta(seconds=seq)}))
        prev = to
    batches: list[list[Event]] = [[]]
    for e, (_, _, cut) in zip(events, steps, strict=True):
        batches[-1].append(e)
        if cut == 1:
            batches.append([])
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "c.db")
        try:
            for batch in batches:
                store.ingest(batch, T0)
            got = sorted(((o["state"], o["start"], o["end"]) for o in store.outages()), key=repr)
            kept = store.conn.execute(
                "SELECT o.detected, e.detected_at FROM outages o"
                " LEFT JOIN events e ON e.id = o.start_event"
            ).fetchall()
        finally:
            store.close()
    ordered = sorted(events, key=lambda e: (e.at, e.seq))
    want = sorted(
        (
            (iv.state, iv.start, iv.end)
            for iv in derive_intervals(
                (e.id, e.seq, e.from_.value, e.to.value, to_iso(e.at)) for e in ordered
            )
        ),
        key=repr,
    )
    assert got == want
    assert len(kept) == len(got)
    assert all(d is not None and d == e for d, e in kept)
