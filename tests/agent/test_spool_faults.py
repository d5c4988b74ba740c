"""A spool that cannot be written, one rolled back, one damaged: no transition is lost while
the agent lives, no seq is given out twice, and a damaged file is named with what to do.

"Full" is a real SQLite "database or disk is full": the spool's file may grow no more
(``PRAGMA max_page_count``), or its file system is a real 2 MB tmpfs filled to the brim
(root only). Nothing here waits on a sleep: the agent's retry comes on its own schedule and
the test waits for what it does.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

import agent.spool as spool_module
from agent.main import Agent
from agent.spool import Spool, SpoolError
from agent.state import Transition
from availmon.cli import main as availmon_main
from availmon.config import Check
from availmon.schema import Evidence, Heartbeat, State, topic
from collector.gaps import Gaps
from tests.agent.test_publisher import publisher
from tests.e2e.procs import write_config
from tests.peers import estate, estate_data, free_port, http_target, mosquitto, web_check

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
DEADLINE = 60.0  # only guards a hung test

#: One transition as the tests write it: check, from, to, minute after T0.
Step = tuple[str, State, State, int]


def make(path: Path, cap: int = 1000, clock: Any = None, **kw: Any) -> Spool:
    extra = {} if clock is None else {"clock": clock}
    return Spool(path, site="hq", agent="hq", max_events=cap, mergeable=("web",), **kw, **extra)


async def put(s: Spool, step: Step) -> int | None:
    """Append ``step``; its seq, or None when the spool held it in memory."""
    check, frm, to, minute = step
    at = T0 + timedelta(minutes=minute)
    event = await s.append(check, "internet_web", frm, to, at, at, Evidence())
    return None if event is None else event.seq


async def stored(s: Spool, step: Step) -> int:
    """Append ``step``, which the spool must take: its seq."""
    seq = await put(s, step)
    assert seq is not None, f"{step} was held, not stored"
    return seq


async def on_spool_thread(s: Spool, sql: str) -> Any:
    """Run ``sql`` on the spool's own connection, on its thread."""

    def run() -> Any:
        return s._conn.execute(sql).fetchall()

    return await s._run(run)


async def may_grow(s: Spool, grow: bool) -> None:
    """Let the spool's file grow, or not any more (its next page is 'disk full')."""
    if grow:
        await on_spool_thread(s, "PRAGMA max_page_count=1073741823")
    else:
        [(pages,)] = await on_spool_thread(s, "PRAGMA page_count")
        await on_spool_thread(s, f"PRAGMA max_page_count={pages}")


def pad(minute: int) -> Step:
    """A check of its own going down and up (never dropped at the cap), to fill a spool."""
    return ("pad", *((State.UP, State.DOWN) if minute % 2 == 0 else (State.DOWN, State.UP)), minute)


async def fill(s: Spool) -> list[int]:
    """Its file may grow no more: ``pad`` transitions until the spool cannot take one
    more, the seqs written (the last one is then held in memory)."""
    await may_grow(s, False)
    written: list[int] = []
    for minute in range(10_000):  # bounded: a page fills within a few dozen events
        seq = await put(s, pad(minute))
        if seq is None:
            return written
        written.append(seq)
    raise AssertionError("the spool never filled")


Row = tuple[str, str, str, datetime, int]


async def tail(s: Spool, after: int) -> list[Row]:
    """The events held after seq ``after``: (check, from, to, at, seq), in seq order."""
    out = []
    for row in await s.pending(100_000, after=after):
        if row.payload is not None:
            e = json.loads(row.payload)
            at = datetime.fromisoformat(e["at"])
            out.append((e["check"], e["from"], e["to"], at, e["seq"]))
    return out


def as_written(steps: list[Step]) -> list[tuple[str, str, str, datetime]]:
    return [(c, f.value, t.value, T0 + timedelta(minutes=m)) for c, f, t, m in steps]


def without_seq(rows: list[Row]) -> list[tuple[str, str, str, datetime]]:
    return [r[:4] for r in rows]


async def either(event: asyncio.Event, task: asyncio.Task[Any]) -> None:
    """Wait for ``event``; fail at once if ``task`` (the agent, the publisher) ends."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        raise AssertionError(
            f"{task.get_name()} ended: {task.exception() if not task.cancelled() else 'cancelled'}"
        )


# -- 1. a spool that cannot be written ----------------------------------------------------------

#: Two checks' transitions, interleaved: web's outage flaps, mail's starts and ends.
STEPS: list[Step] = [
    ("web", State.UNKNOWN, State.UP, 1),
    ("mail", State.UNKNOWN, State.UP, 1),
    ("web", State.UP, State.DOWN, 2),
    ("web", State.DOWN, State.DEGRADED, 3),
    ("mail", State.UP, State.DOWN, 3),
    ("web", State.DEGRADED, State.DOWN, 4),
    ("web", State.DOWN, State.UP, 5),
    ("mail", State.DOWN, State.UP, 6),
]


async def test_a_full_spool_keeps_every_transition_and_writes_them_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The append that found the disk full raised, and the transition was gone (the state
    machine had moved on). Now each waits in memory; one that comes once there is room again
    still waits behind them; all are written in the order they happened, seqs in a row."""
    path = tmp_path / "a.spool.db"
    s = make(path)
    try:
        written = await fill(s)
        full = pad(len(written))  # the one that found it full
        for step in STEPS:
            assert await put(s, step) is None
        stats = await s.stats()
        assert (stats.depth, stats.unwritten) == (len(written), len(STEPS) + 1)
        assert await tail(s, written[-1]) == []

        await may_grow(s, True)  # space is back; the retry has not run yet
        late: Step = ("web", State.UP, State.DOWN, 9)
        assert await put(s, late) is None  # behind those held, never before them
        assert await s.flush() == 0

        got = await tail(s, written[-1])
        assert without_seq(got) == as_written([full, *STEPS, late])
        assert [r[4] for r in got] == list(range(written[-1] + 1, written[-1] + 1 + len(got)))
        assert (await s.stats()).unwritten == 0
    finally:
        s.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # once for the episode, not once per transition
    assert str(path) in errors[0]
    assert "database or disk is full" in errors[0]
    assert any("can be written again" in r.getMessage() for r in caplog.records)


async def test_held_in_memory_the_spool_cap_rule_applies(tmp_path: Path) -> None:
    """At its cap, memory keeps what the spool's own cap keeps: the oldest superseded
    intermediate state goes (a note, a change between down and degraded where degraded
    counts as down), never an outage's start or end; the drops are counted as the spool's."""
    flaps: list[Step] = [("web", State.UP, State.DEGRADED, 0)]
    for i in range(1, 12):
        downish = (State.DEGRADED, State.DOWN) if i % 2 else (State.DOWN, State.DEGRADED)
        flaps.append(("web", *downish, i))
        if i % 4 == 0:
            flaps.append(("mail", State.UP, State.UP, i))  # a note: a reboot
    flaps += [
        ("mail", State.UP, State.DOWN, 12),  # mail's degraded is not down: none droppable
        ("mail", State.DOWN, State.DEGRADED, 13),
        ("mail", State.DEGRADED, State.DOWN, 14),
        ("web", State.DOWN, State.UP, 15),
    ]
    healthy = make(tmp_path / "healthy.spool.db", cap=10)
    broken = make(tmp_path / "broken.spool.db", cap=10)
    try:
        for step in flaps:
            assert await put(healthy, step) is not None
        await on_spool_thread(broken, "PRAGMA query_only=1")  # read-only: cannot be written
        for step in flaps:
            assert await put(broken, step) is None
        held = await broken.stats()
        await on_spool_thread(broken, "PRAGMA query_only=0")
        assert await broken.flush() == 0
        kept_on_disk = without_seq(await tail(healthy, 0))
        kept_in_memory = without_seq(await tail(broken, 0))
        disk_stats, memory_stats = await healthy.stats(), await broken.stats()
    finally:
        healthy.close()
        broken.close()
    assert kept_in_memory == kept_on_disk
    assert len(kept_on_disk) == 10
    assert kept_on_disk[0][:3] == ("web", "up", "degraded")  # the start stays
    assert kept_on_disk[-1][:3] == ("web", "down", "up")  # and the end
    assert held.unwritten == 10
    assert held.dropped == disk_stats.dropped == len(flaps) - 10
    assert memory_stats.dropped == disk_stats.dropped  # counted as the spool's own drops
    reopened = make(tmp_path / "broken.spool.db", cap=10)
    try:
        assert (await reopened.stats()).dropped == disk_stats.dropped  # and kept
    finally:
        reopened.close()


async def test_past_its_cap_memory_keeps_every_start_and_end(tmp_path: Path) -> None:
    s = make(tmp_path / "a.spool.db", cap=10)
    try:
        await on_spool_thread(s, "PRAGMA query_only=1")
        steps: list[Step] = [
            ("web", State.UP if i % 2 else State.DOWN, State.DOWN if i % 2 else State.UP, i)
            for i in range(1, 16)
        ]
        for step in steps:
            assert await put(s, step) is None
        assert (await s.stats()).unwritten == 15
        await on_spool_thread(s, "PRAGMA query_only=0")
        assert await s.flush() == 0
        assert without_seq(await tail(s, 0)) == as_written(steps)
    finally:
        s.close()


async def test_the_spool_says_why_its_last_write_failed_until_one_succeeds(
    tmp_path: Path,
) -> None:
    """What the heartbeat's spool_error carries: the latest failure, not the episode's
    first (a disk that was full and is now read-only needs another fix), None once a write
    succeeds with nothing left held."""
    s = make(tmp_path / "a.spool.db")
    try:
        assert (await s.stats()).error is None
        await fill(s)
        assert (await s.stats()).error == "database or disk is full (SQLITE_FULL)"
        await may_grow(s, True)
        await on_spool_thread(s, "PRAGMA query_only=1")
        assert await s.flush() == 1
        stats = await s.stats()
        assert stats.error == "attempt to write a readonly database (SQLITE_READONLY)"
        assert stats.unwritten == 1
        await on_spool_thread(s, "PRAGMA query_only=0")
        assert await s.flush() == 0
        assert (await s.stats()).error is None
    finally:
        s.close()


async def test_a_confirmation_the_spool_cannot_record_deletes_nothing(tmp_path: Path) -> None:
    """Deleting is writing too: it raised out of the publisher and ended the agent. Now
    nothing is deleted, the events are published and confirmed again, then deleted."""
    s = make(tmp_path / "a.spool.db")
    try:
        seqs = [await stored(s, ("web", State.UP, State.DOWN, i)) for i in range(3)]
        await on_spool_thread(s, "PRAGMA query_only=1")
        done = await s.confirm("availmon-collector", [(seqs[0], seqs[-1])])
        assert (done.deleted, done.held) == ([], [])
        assert [p.seq for p in await s.pending()] == seqs
        await on_spool_thread(s, "PRAGMA query_only=0")
        done = await s.confirm("availmon-collector", [(seqs[0], seqs[-1])])
        assert done.deleted == seqs
    finally:
        s.close()


async def test_the_agent_goes_on_probing_while_its_spool_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real agent whose spool's disk fills: it ended (exit 3) with the transition in
    flight gone. Now it goes on probing, its heartbeat counts what it holds in memory and
    says why, and once there is room its own retry writes every transition, in order, in a
    chain, and its heartbeat says the spool is written again."""
    monkeypatch.setattr(spool_module, "RETRY_FIRST", 0.05)  # the agent's own retry, sooner
    async with http_target() as target:
        check = web_check(target.url, failures_to_down=1, successes_to_up=1)
        cfg = estate(tmp_path, free_port(), [check])  # no broker: the spool holds everything
        changed = asyncio.Event()
        agent = Agent(cfg, "hq", on_result=lambda *_: changed.set())
        seen: list[Transition] = []
        sink = agent.scheduler._on_transition

        async def recording(c: Check, t: Transition, detected: datetime) -> None:
            seen.append(t)
            await sink(c, t, detected)

        agent.scheduler._on_transition = recording
        written = asyncio.Event()
        wake = agent.publisher.wake

        def woken() -> None:
            written.set()
            wake()

        agent.publisher.wake = woken  # type: ignore[method-assign]

        async def until(state: State) -> None:
            async with asyncio.timeout(DEADLINE):
                while agent.scheduler.state_of("web") is not state:
                    changed.clear()
                    await either(changed, run)

        stop = asyncio.Event()
        filled = await fill(agent.spool)
        run = asyncio.create_task(agent.run(stop))
        try:
            await until(State.UP)
            target.healthy = False
            await until(State.DOWN)
            target.healthy = True
            await until(State.UP)
            assert not run.done()  # it did not end
            held = agent.spool.unwritten
            # At least the note that filled it (its retry may have found room for a few of
            # unknown -> up, up -> down, down -> up meanwhile: the end below checks them all).
            assert held >= 1
            assert len(seen) >= 3
            hb = Heartbeat.model_validate_json(await agent._heartbeat())
            assert hb.spool_depth >= len(filled) + held
            assert hb.spool_unwritten >= 1  # its retry may have written some meanwhile
            assert hb.spool_error == "database or disk is full (SQLITE_FULL)"
            assert [c.state for c in hb.checks] == [State.UP]

            written.clear()
            await may_grow(agent.spool, True)
            async with asyncio.timeout(DEADLINE):
                while agent.spool.unwritten:
                    await either(written, run)
                    written.clear()
            hb = Heartbeat.model_validate_json(await agent._heartbeat())
            assert (hb.spool_unwritten, hb.spool_error) == (0, None)
            stop.set()
            async with asyncio.timeout(DEADLINE):
                await run
        finally:
            stop.set()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            agent.spool.close()
    s = make(tmp_path / "agent" / "hq.spool.db")
    try:
        events = [r for r in await tail(s, filled[-1]) if r[0] == "web"]
    finally:
        s.close()
    # Every transition the state machine made, each once, in order, seqs increasing.
    assert [(c, f, t) for c, f, t, _, _ in events] == [
        ("web", t.from_.value, t.to.value) for t in seen
    ]
    assert [e[4] for e in events] == sorted(e[4] for e in events)
    assert all(a[2] == b[1] for a, b in itertools.pairwise(events))  # a chain


# -- 2. a spool rolled back --------------------------------------------------------------------


def _copy_spool(src: Path, dst: Path, *, main_only: bool = False) -> None:
    for f in dst.parent.glob(dst.name + "*"):
        f.unlink()
    for suffix in ("",) if main_only else ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copy(f"{src}{suffix}", f"{dst}{suffix}")


@pytest.mark.parametrize("how", ["snapshot restored", "wal lost"])
async def test_a_rolled_back_spool_never_reuses_a_seq_it_sent(tmp_path: Path, how: str) -> None:
    """Rolled back (a host restored from a snapshot; its -wal lost after kill -9), the
    spool's last seq was below seqs it had sent: its new events took them again, and the
    collector quarantined every one as a seq conflict. Reopened, it now numbers on from the
    clock, as a new spool does, and its first seq says so: the collector, which expects
    every seq from an agent's first one, sees nothing missing."""
    path = tmp_path / "a.spool.db"
    saved = tmp_path / "saved" / "a.spool.db"
    saved.parent.mkdir()
    gaps = Gaps(grace=120.0)
    now = 0.0

    def collector_saw(s: Spool, seqs: list[int]) -> None:
        gaps.seen("hq", [(q, q) for q in seqs], now, first_seq=s.first_seq)

    s = make(path, clock=lambda: 1000.0)
    before = [await stored(s, ("web", State.UP, State.DOWN, i)) for i in range(3)]
    collector_saw(s, before)
    if how == "snapshot restored":
        s.close()
        _copy_spool(path, saved)
        s = make(path, clock=lambda: 1000.5)  # started again, half a second later
    else:
        _copy_spool(path, saved, main_only=True)  # its -wal never reached the main file
    sent = [await stored(s, ("web", State.DOWN, State.UP, 10 + i)) for i in range(5)]
    collector_saw(s, sent)
    s.close()

    _copy_spool(saved, path)  # rolled back
    s = make(path, clock=lambda: 1001.0)
    try:
        again = [await stored(s, ("web", State.UP, State.DOWN, 20 + i)) for i in range(3)]
        stats = await s.stats()
    finally:
        s.close()
    assert min(again) > max(sent + before)
    assert stats.first_seq == again[0] == s.first_seq
    collector_saw(s, again)
    gaps.heartbeat("hq", stats.last_seq, stats.first_seq, settled=True, now=now)
    assert gaps.evaluate(now + 1000.0) == {"hq": 0}


async def test_a_reopened_spool_numbers_on_from_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "a.spool.db"
    s = make(path, clock=lambda: 1000.0)
    first = await put(s, ("web", State.UP, State.DOWN, 0))
    assert first == 1_000_001 == s.first_seq
    s.close()
    s = make(path, clock=lambda: 1000.0)  # the clock where it was: no jump
    assert await put(s, ("web", State.DOWN, State.UP, 1)) == 1_000_002
    assert s.first_seq == 1_000_001
    s.close()
    s = make(path, clock=lambda: 2000.0)
    try:
        assert s.first_seq == 2_000_001  # numbered on at open, before any event
        assert (await s.stats()).last_seq == 2_000_000
        assert [p.seq for p in await s.pending()] == [1_000_001, 1_000_002]  # still held
        assert await put(s, ("web", State.UP, State.DOWN, 2)) == 2_000_001
    finally:
        s.close()


def opened_read_only(monkeypatch: pytest.MonkeyPatch, path: Path, clock: float) -> Spool:
    """The spool opened while it cannot be written (its connection is read-only until the
    test says otherwise; chmod would not stop root)."""
    connect = Spool._connect

    def read_only(self: Spool, *, exclusive: bool) -> Any:
        conn = connect(self, exclusive=exclusive)
        conn.execute("PRAGMA query_only=1")
        return conn

    with monkeypatch.context() as m:
        m.setattr(Spool, "_connect", read_only)
        return make(path, clock=lambda: clock)


async def test_a_spool_that_cannot_be_written_at_start_numbers_on_at_its_first_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It opens, and numbers on from the clock with the first event it can write, in the
    same transaction; its first seq changes with it, not before."""
    path = tmp_path / "a.spool.db"
    s = make(path, clock=lambda: 1000.0)
    held = await put(s, ("web", State.UP, State.DOWN, 0))
    s.close()
    s = opened_read_only(monkeypatch, path, 2000.0)
    try:
        assert s.first_seq == 1_000_001  # not numbered on yet: nothing could be written
        assert await put(s, ("web", State.DOWN, State.UP, 1)) is None
        await on_spool_thread(s, "PRAGMA query_only=0")
        assert await s.flush() == 0
        assert [p.seq for p in await s.pending()] == [held, 2_000_001]
        assert s.first_seq == 2_000_001
    finally:
        s.close()


async def test_a_batch_says_the_first_seq_of_the_numbering_its_events_are_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Numbered on only at its first write (the spool could not be written at start), the
    spool's first seq changes during a publisher's session: read once per session, the
    batches after it said the old one, and the collector took the jump for missing seqs."""
    path = tmp_path / "hq.spool.db"
    s = make(path, clock=lambda: 1000.0)
    await put(s, ("web", State.UP, State.DOWN, 0))
    s.close()
    s = opened_read_only(monkeypatch, path, 2000.0)
    async with mosquitto(tmp_path / "mq") as broker:
        cfg = estate(tmp_path, broker.port, [web_check("http://127.0.0.1:9/")])

        pub = publisher(cfg, s)
        said: dict[int, int] = {}  # seq -> the first_seq of the batch that carried it
        arrived = asyncio.Event()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="reader") as reader:
            await reader.subscribe(topic("hq", "hq", "events"), qos=1)

            async def listen() -> None:
                async for message in reader.messages:
                    batch = json.loads(message.payload)
                    said.update({e["seq"]: batch["first_seq"] for e in batch["events"]})
                    arrived.set()

            async def until(seq: int) -> None:
                async with asyncio.timeout(DEADLINE):
                    while seq not in said:
                        arrived.clear()
                        await either(arrived, task)

            listening = asyncio.create_task(listen())
            task = asyncio.create_task(pub.run())
            try:
                await until(1_000_001)
                await on_spool_thread(s, "PRAGMA query_only=0")
                assert await put(s, ("web", State.DOWN, State.UP, 1)) == 2_000_001
                pub.wake()
                await until(2_000_001)
            finally:
                for t in (task, listening):
                    t.cancel()
                await asyncio.gather(task, listening, return_exceptions=True)
                s.close()
    assert said == {1_000_001: 1_000_001, 2_000_001: 2_000_001}


# -- 3. a damaged spool --------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    if how == "truncated to half":
        path.write_bytes(data[: (len(data) // 2) // page * page])
    elif how == "garbage header":
        data[0:100] = bytes(range(100))
        path.write_bytes(data)
    elif how == "none":
        return
    else:  # garbage over every other page after the first
        for p in range(1, len(data) // page, 2):
            data[p * page : p * page + 64] = b"\xa5" * 64
        path.write_bytes(data)


async def damaged_spool(tmp_path: Path, how: str) -> Path:
    path = tmp_path / "agent" / "hq.spool.db"
    s = make(path)
    for i in range(300):
        await put(s, (f"check{i % 7}", State.UP, State.DOWN, i))
    s.close()  # checkpointed: the damage hits every event
    damage(path, how)
    return path


async def open_and_read(path: Path) -> None:
    s = make(path)
    try:  # found on the first read, if not at open
        await s.pending(100_000)
        await s.stats()
    finally:
        s.close()


HOW = ["truncated to half", "garbage header", "garbage over pages"]


@pytest.mark.parametrize("how", HOW)
async def test_a_corrupt_spool_is_named_with_what_to_do(tmp_path: Path, how: str) -> None:
    path = await damaged_spool(tmp_path, how)
    with pytest.raises(SpoolError) as caught:
        await open_and_read(path)
    said = str(caught.value)
    assert f"spool {path} is corrupt or not an availmon spool" in said
    assert "move it aside" in said
    assert "not confirmed are lost" in said


async def test_a_spool_damaged_while_the_agent_runs_is_named_too(tmp_path: Path) -> None:
    """Found by a read, not at start: the publisher's, here."""
    path = await damaged_spool(tmp_path, "none")
    s = make(path)
    try:
        damage(path, "garbage over pages")
        with pytest.raises(SpoolError, match=f"spool {path} is corrupt or not an availmon spool"):
            await s.pending(100_000)
    finally:
        s.close()


def test_availmon_agent_on_a_corrupt_spool_says_which_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said 'availmon: database error: database disk image is malformed', nothing more,
    and crash-looped under systemd."""
    path = asyncio.run(damaged_spool(tmp_path, "garbage header"))
    config = tmp_path / "estate.toml"
    check = web_check("http://127.0.0.1:9/")
    write_config(config, estate_data(tmp_path, free_port(), [check]))
    code = availmon_main(["agent", "--config", str(config), "--site", "hq"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith(f"availmon: spool {path} is corrupt or not an availmon spool: ")
    assert "move it aside" in err[-1]


# -- a real full file system (root: a 2 MB tmpfs) ----------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "fs"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


def shm_of(path: Path) -> Path:
    return path.with_name(path.name + "-shm")


def fill_disk(where: Path) -> Path:
    filler = where / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            for _ in range(10_000):  # bounded: 2 MB is 32 of these
                f.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return filler
    raise AssertionError("the file system never filled")


async def test_a_real_full_disk_then_space_freed(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = small_fs / "agent" / "hq.spool.db"
    s = make(path)
    try:
        first = [await stored(s, ("web", State.UP, State.DOWN, i)) for i in range(5)]
        filler = fill_disk(small_fs)
        steps: list[Step] = []
        for minute in range(10, 10_000):  # until it is full (the WAL may have had room)
            frm, to = (State.UP, State.DOWN) if minute % 2 else (State.DOWN, State.UP)
            step: Step = ("web", frm, to, minute)
            seq = await put(s, step)
            if seq is None:
                steps.append(step)
                break
            first.append(seq)
        more: list[Step] = [("mail", State.UNKNOWN, State.UP, 20_000 + i) for i in range(50)]
        for step in more:
            assert await put(s, step) is None
        stats = await s.stats()
        assert stats.unwritten == 1 + len(more)
        assert stats.error == "database or disk is full (SQLITE_FULL)"
        filler.unlink()
        assert await s.flush() == 0
        assert (await s.stats()).error is None
        got = await tail(s, first[-1])
        assert without_seq(got) == as_written(steps + more)
    finally:
        s.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert str(path) in errors[0]


async def test_started_on_a_full_disk_the_agent_runs_and_holds(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean stop removes the spool's -shm file, which SQLite cannot make again on a full
    disk ('disk I/O error' at the first read): the agent did not start. Now the spool opens
    for this process alone and holds what it cannot write; a new spool on a full disk is
    refused as a full disk, never as corruption."""
    path = small_fs / "agent" / "hq.spool.db"
    s = make(path, clock=lambda: 1000.0)
    before = [await stored(s, ("web", State.UP, State.DOWN, i)) for i in range(3)]
    s.close()
    assert not shm_of(path).exists()  # a clean stop removed it
    filler = fill_disk(small_fs)
    with pytest.raises(SpoolError) as caught:
        make(small_fs / "other" / "hq.spool.db")
    assert "corrupt" not in str(caught.value)
    assert "full" in str(caught.value)
    s = make(path, clock=lambda: 2000.0)
    try:
        assert any("opened for this agent alone" in r.getMessage() for r in caplog.records)
        assert s.first_seq == 1_000_001  # numbering on from the clock is a write: it waits
        assert [p.seq for p in await s.pending()] == before
        steps: list[Step] = [("web", State.DOWN, State.UP, 10), ("web", State.UP, State.DOWN, 11)]
        for step in steps:
            assert await put(s, step) is None
        filler.unlink()
        assert await s.flush() == 0
        got = await tail(s, before[-1])
        assert without_seq(got) == as_written(steps)
        assert got[0][4] == 2_000_001 == s.first_seq  # numbered on at its first write
    finally:
        s.close()
