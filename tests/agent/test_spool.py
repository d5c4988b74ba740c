"""The on-disk spool: seq survives restarts, order is kept, the cap drops only superseded
intermediate states."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.spool import Spool
from availmon.errors import StartupError
from availmon.schema import Evidence, State

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def spool(tmp_path: Path, cap: int = 100, mergeable: tuple[str, ...] = ("web",)) -> Spool:
    return Spool(
        tmp_path / "a.spool.db", site="hq", agent="hq", max_events=cap, mergeable=mergeable
    )


async def add(s: Spool, frm: State, to: State, minute: int, check: str = "web") -> int:
    at = T0 + timedelta(minutes=minute)
    ev = await s.append(check, "email", frm, to, at, at, Evidence())
    assert ev is not None  # stored, not held in memory
    return ev.seq


async def test_seq_is_persistent_and_never_reused(tmp_path: Path) -> None:
    """Reopened with the clock where it was (so numbering from the clock changes nothing:
    see test_spool_faults for a reopened spool whose clock has moved on)."""
    s = Spool(tmp_path / "a.spool.db", site="hq", agent="hq", max_events=100, clock=lambda: 1.0)
    first = await add(s, State.UNKNOWN, State.UP, 0)
    assert await add(s, State.UP, State.DOWN, 1) == first + 1
    await s.confirm("availmon-collector", [(first, first + 1)])
    s.close()
    s = Spool(tmp_path / "a.spool.db", site="hq", agent="hq", max_events=100, clock=lambda: 1.0)
    assert await add(s, State.DOWN, State.UP, 2) == first + 2
    pending = await s.pending()
    assert [p.seq for p in pending] == [first + 2]
    event = json.loads(pending[0].payload)
    assert event["id"] == f"hq:{first + 2}"
    assert (event["from"], event["to"]) == ("down", "up")
    s.close()


async def test_pending_in_seq_order_until_acknowledged(tmp_path: Path) -> None:
    s = spool(tmp_path)
    seqs = [await add(s, State.UP, State.DOWN, i) for i in range(5)]
    assert [p.seq for p in await s.pending(3)] == seqs[:3]
    await s.confirm("availmon-collector", [(seqs[0], seqs[1])])
    assert [p.seq for p in await s.pending()] == seqs[2:]
    assert (await s.stats()).depth == 3
    s.close()


async def test_cap_keeps_outage_starts_and_ends(tmp_path: Path) -> None:
    s = spool(tmp_path, cap=10)
    # An outage that flaps between degraded and down many times while the link is cut.
    await add(s, State.UP, State.DEGRADED, 0)
    for i in range(1, 15):
        await add(
            s, State.DEGRADED if i % 2 else State.DOWN, State.DOWN if i % 2 else State.DEGRADED, i
        )
    await add(s, State.DEGRADED, State.UP, 15)
    pending = [json.loads(p.payload) for p in await s.pending() if p.payload is not None]
    stats = await s.stats()
    depth, last_seq, dropped = stats.depth, stats.last_seq, stats.dropped
    assert depth == 10
    assert dropped == 6
    assert last_seq == pending[-1]["seq"]
    assert (pending[0]["from"], pending[0]["to"]) == ("up", "degraded")
    assert (pending[-1]["from"], pending[-1]["to"]) == ("degraded", "up")
    s.close()


async def test_cap_keeps_degraded_changes_where_degraded_is_not_down(tmp_path: Path) -> None:
    # In an area that does not count degraded as down, up->degraded->down->up has its
    # counted outage start at degraded->down: never dropped, whatever the cap.
    s = spool(tmp_path, cap=10, mergeable=())
    await add(s, State.UP, State.DEGRADED, 0)
    for i in range(1, 15):
        await add(
            s, State.DEGRADED if i % 2 else State.DOWN, State.DOWN if i % 2 else State.DEGRADED, i
        )
    stats = await s.stats()
    depth, dropped = stats.depth, stats.dropped
    assert (depth, dropped) == (15, 0)
    s.close()


async def test_cap_drops_notes_first(tmp_path: Path) -> None:
    s = spool(tmp_path, cap=3, mergeable=())
    await add(s, State.UP, State.DOWN, 0)
    await add(s, State.DOWN, State.DOWN, 1)  # a reboot note during the outage
    await add(s, State.DOWN, State.UP, 2)
    await add(s, State.UP, State.DOWN, 3)
    pending = [json.loads(p.payload) for p in await s.pending() if p.payload is not None]
    assert [(e["from"], e["to"]) for e in pending] == [
        ("up", "down"),
        ("down", "up"),
        ("up", "down"),
    ]
    s.close()


async def test_a_lost_spool_never_reuses_ids(tmp_path: Path) -> None:
    s = Spool(tmp_path / "a.db", site="hq", agent="hq", max_events=10, clock=lambda: 1000.0)
    before = [await add(s, State.UP, State.DOWN, i) for i in range(3)]
    s.close()
    (tmp_path / "a.db").unlink()  # a reinstalled agent, a few seconds later
    s = Spool(tmp_path / "a.db", site="hq", agent="hq", max_events=10, clock=lambda: 1005.0)
    assert await add(s, State.DOWN, State.UP, 1) > max(before)
    s.close()


async def test_cap_never_drops_starts_or_ends(tmp_path: Path) -> None:
    s = spool(tmp_path, cap=10)
    for i in range(6):
        await add(s, State.UP, State.DOWN, 2 * i)
        await add(s, State.DOWN, State.UP, 2 * i + 1)
    stats = await s.stats()
    depth, dropped = stats.depth, stats.dropped
    assert (depth, dropped) == (12, 0)
    s.close()


async def test_drops_stay_until_confirmed_so_they_are_never_seen_as_gaps(tmp_path: Path) -> None:
    """A seq dropped at the cap is held (without its event) and sent as a drop until the
    collector confirms it knows of it; then it is gone."""
    s = spool(tmp_path, cap=3, mergeable=())
    await add(s, State.UP, State.DOWN, 0)
    note = await add(s, State.DOWN, State.DOWN, 1)
    await add(s, State.DOWN, State.UP, 2)
    await add(s, State.UP, State.DOWN, 3)
    held = await s.pending()
    assert [(p.seq, p.payload is None) for p in held if p.seq == note] == [(note, True)]
    assert (await s.stats()).depth == 3
    done = await s.confirm("availmon-collector", [(held[0].seq, held[-1].seq)])
    assert done.deleted == [p.seq for p in held]
    assert await s.pending() == []
    s.close()


async def test_two_collectors_both_confirm_before_an_event_goes(tmp_path: Path) -> None:
    """With a pair, one collector's word is remembered; the event goes when both have
    confirmed, and a collector that is not required changes nothing."""
    s = Spool(tmp_path / "a.db", site="hq", agent="hq", max_events=100, confirmers=("ca", "cb"))
    seqs = [await add(s, State.UP, State.DOWN, i) for i in range(3)]
    first = await s.confirm("ca", [(seqs[0], seqs[2])])
    assert (first.deleted, first.held) == ([], seqs)
    assert (await s.stats()).unconfirmed == {"ca": 0, "cb": 3}
    assert all(p.confirmed == {"ca"} for p in await s.pending())
    assert (await s.confirm("stranger", [(seqs[0], seqs[2])])).deleted == []
    second = await s.confirm("cb", [(seqs[0], seqs[1])])
    assert second.deleted == seqs[:2]
    assert [p.seq for p in await s.pending()] == seqs[2:]
    assert (await s.stats()).unconfirmed == {"ca": 0, "cb": 1}
    s.close()
    # A new config that needs only "ca": what ca confirmed goes at start.
    s = Spool(tmp_path / "a.db", site="hq", agent="hq", max_events=100, confirmers=("ca",))
    assert await s.pending() == []
    s.close()


def _emptied(tmp_path: Path) -> Path:
    """The spool's files truncated to nothing."""
    for f in tmp_path.glob("a.spool.db*"):
        f.write_bytes(b"")
    return tmp_path / "a.spool.db"


def _names(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir())


async def test_a_spool_emptied_on_disk_is_refused_not_started_afresh(tmp_path: Path) -> None:
    """Truncated to nothing (a restore gone wrong, a full disk's aftermath), it was taken
    for a new spool: the agent started with seq from the clock and no word, and every event
    it had not yet delivered was gone. Only a file that is not there is a new spool."""
    s = spool(tmp_path)
    await add(s, State.UP, State.DOWN, 0)
    s.close()
    path = _emptied(tmp_path)
    with pytest.raises(StartupError, match=f"spool {path} holds no spool"):
        spool(tmp_path)
    assert path.stat().st_size == 0  # left as found, for whoever looks into it
    assert not [n for n in _names(tmp_path) if n.endswith(".new")]


async def test_a_full_disk_is_reported_as_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite rolls a transaction back itself when the disk fills; the spool's own ROLLBACK
    then failed, and 'cannot rollback - no transaction is active' was reported instead. (A
    full spool no longer raises at all: the transition waits in memory, test_spool_faults.)"""
    s = spool(tmp_path)
    await add(s, State.UP, State.DOWN, 0)
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    s._conn.execute(f"PRAGMA max_page_count={pages}")  # the file may grow no more

    async def fill() -> int:
        for minute in range(1, 10_000):  # bounded: a page fills within a few dozen events
            at = T0 + timedelta(minutes=minute)
            if (
                await s.append(
                    f"check-{minute:05d}", "email", State.DOWN, State.UP, at, at, Evidence()
                )
                is None
            ):
                return minute
        raise AssertionError("the spool never filled")

    await fill()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1
    assert "database or disk is full" in said[0]
    assert "cannot rollback" not in said[0]
    s.close()
