"""The agent's on-disk spool: every event is committed here before it is published and
deleted only when every collector it must reach has confirmed, on its ``ack`` topic, that the
event is committed (issue 8). A broker's PUBACK deletes nothing: a broker crash, a cut WAN
link, a collector's full disk or ``kill -9`` of anything loses nothing.

``seq`` is assigned in the same transaction that stores the event, so it survives restarts
and is never reused. A seq dropped at the cap stays as a *drop* (no payload) until the
collectors confirm they know of it, so they never count it as missing. SQLite runs on one
dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from availmon.errors import StartupError
from availmon.schema import Event, Evidence, State, event_id

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Spooled:
    """One held seq: an event (``payload``) or a drop at the cap (``payload`` None), and
    the collectors that have already confirmed it."""

    seq: int
    payload: bytes | None
    confirmed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Confirmed:
    """What a confirmation changed: seqs now gone from the spool, and seqs still held for
    another collector."""

    deleted: list[int]
    held: list[int]


@dataclass(frozen=True)
class SpoolStats:
    depth: int  # events held (drops not included)
    last_seq: int
    dropped: int  # dropped at the cap since the spool was made
    first_seq: int
    unconfirmed: dict[str, int]  # per required collector: held seqs it has not confirmed


_SCHEMA = """
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY, check_name TEXT NOT NULL, from_state TEXT NOT NULL,
        to_state TEXT NOT NULL, payload BLOB NOT NULL);
    -- Seqs dropped at the cap, held until the collectors confirm they know of them.
    CREATE TABLE IF NOT EXISTS drops (seq INTEGER PRIMARY KEY);
    -- Which collector has confirmed which held seq (while another is still awaited).
    CREATE TABLE IF NOT EXISTS confirmed (
        seq INTEGER NOT NULL, collector TEXT NOT NULL, PRIMARY KEY (seq, collector)
    ) WITHOUT ROWID;
"""


def _start_seq(conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
    # A new spool starts seq at the current time in milliseconds, so that an agent whose
    # spool was lost or reinstalled never reuses an id it already sent.
    origin = int(clock() * 1000)
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('seq', ?), ('dropped', 0)", (origin,))
    # The first seq this spool assigns (an older spool: its next one).
    conn.execute("INSERT OR IGNORE INTO meta SELECT 'first', value + 1 FROM meta WHERE key='seq'")


def _create(path: Path, clock: Callable[[], float]) -> None:
    """A new spool, made whole in a file of its own and linked into place: a spool file
    that holds no spool is then never one an agent was starting, always one that lost its
    events (``_held``). Linked, not renamed: a second process starting on the same path
    meanwhile (a misconfiguration) takes the first one's spool rather than replacing it
    under it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            _start_seq(conn, clock)
            first = conn.execute("SELECT value FROM meta WHERE key='first'").fetchone()[0]
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        log.info("new spool %s: its first event will be seq %d", path, first)
    finally:
        tmp.unlink(missing_ok=True)


def _held(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a spool file that holds no spool: emptied (truncated to nothing) or another
    database. Started on, it was a new spool, silently: every event it held was lost."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
        raise StartupError(
            f"spool {path} holds no spool (emptied, or another file): the events it held"
            " are lost; move it aside to start a new one"
        )


class Spool:
    def __init__(
        self,
        path: Path,
        *,
        site: str,
        agent: str,
        max_events: int,
        clock: Callable[[], float] = time.time,
        mergeable: Iterable[str] = (),
        confirmers: Iterable[str] = ("availmon-collector",),
    ) -> None:
        """``mergeable``: checks whose area counts degraded as down, for which a change
        between the two is not an outage's start or end (see ``_enforce_cap``).
        ``confirmers``: the collectors whose confirmation deletes an event."""
        self.set_mergeable(mergeable)
        self.confirmers = tuple(sorted(set(confirmers)))
        self._confirmers_json = json.dumps(self.confirmers)
        self.path = path
        self.site, self.agent, self.max_events = site, agent, max_events
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create(path, clock)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            _held(self._conn, path)
        except BaseException:
            self._executor.shutdown()
            self._conn.close()
            raise
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)  # an older spool's missing tables
        _start_seq(self._conn, clock)
        # The required collectors may have changed since the last run.
        self._sweep()

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def set_mergeable(self, mergeable: Iterable[str]) -> None:
        """The checks whose area counts degraded as down (again, after a config reload)."""
        self._mergeable = json.dumps(sorted(mergeable))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()

    # -- sync core (spool thread only) --------------------------------------------------

    def _rollback(self) -> None:
        """Undo the transaction a failure interrupted, unless SQLite has already (a full
        disk fails the COMMIT and rolls back: a ROLLBACK then raised 'cannot rollback - no
        transaction is active', and that was the error reported, not the disk)."""
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _meta(self, key: str) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def _append(
        self,
        check: str,
        area: str,
        from_: State,
        to: State,
        at: datetime,
        detected_at: datetime,
        evidence: Evidence,
    ) -> Event:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("seq") + 1
            event = Event(
                id=event_id(self.agent, seq),
                seq=seq,
                site=self.site,
                agent=self.agent,
                check=check,
                area=area,
                from_=from_,
                to=to,
                at=at,
                detected_at=detected_at,
                evidence=evidence,
            )
            self._conn.execute("UPDATE meta SET value=? WHERE key='seq'", (seq,))
            self._conn.execute(
                "INSERT INTO events VALUES (?,?,?,?,?)",
                (seq, check, from_.value, to.value, event.to_json()),
            )
            self._enforce_cap()
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return event

    def _enforce_cap(self) -> None:
        """At the cap, drop the oldest event that neither starts nor ends a counted outage:
        a note that changes no state (from == to), or a change between down and degraded of
        a check whose area counts degraded as down. Starts and ends are never dropped, even
        over the cap."""
        depth = int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])
        while depth > self.max_events:
            row = self._conn.execute(
                "SELECT seq, check_name FROM events WHERE (from_state = to_state"
                " AND from_state != 'unknown') OR (from_state IN ('down', 'degraded')"
                " AND to_state IN ('down', 'degraded') AND check_name IN"
                " (SELECT value FROM json_each(?))) ORDER BY seq LIMIT 1",
                (self._mergeable,),
            ).fetchone()
            if row is None:
                log.warning(
                    "spool over its cap of %d events (%d held): nothing left that can "
                    "be dropped without losing an outage start or end",
                    self.max_events,
                    depth,
                )
                return
            self._conn.execute("DELETE FROM events WHERE seq=?", (row[0],))
            self._conn.execute("INSERT OR IGNORE INTO drops VALUES (?)", (row[0],))
            self._conn.execute("UPDATE meta SET value=value+1 WHERE key='dropped'")
            log.warning(
                "spool at its cap of %d events: dropped superseded intermediate state "
                "seq %d of check %s%s",
                self.max_events,
                row[0],
                row[1],
                self._awaited(),
            )
            depth -= 1

    def _awaited(self) -> str:
        """Why the spool is full, when a collector is the reason: it has not confirmed."""
        waiting = {c: n for c, n in self._unconfirmed().items() if n}
        if not waiting:
            return ""
        return (
            " (awaiting confirmation from "
            + ", ".join(f"{c}: {n} seqs" for c, n in sorted(waiting.items()))
            + ")"
        )

    _HELD = "SELECT seq, payload FROM events UNION ALL SELECT seq, NULL FROM drops"

    def _with_confirmations(self, rows: list[Any]) -> list[Spooled]:
        if not rows or len(self.confirmers) < 2:
            return [Spooled(int(r[0]), None if r[1] is None else bytes(r[1])) for r in rows]
        seqs = [int(r[0]) for r in rows]
        by_seq: dict[int, set[str]] = {}
        for seq, collector in self._conn.execute(
            "SELECT seq, collector FROM confirmed WHERE seq BETWEEN ? AND ?",
            (min(seqs), max(seqs)),
        ):
            by_seq.setdefault(int(seq), set()).add(str(collector))
        return [
            Spooled(
                int(r[0]),
                None if r[1] is None else bytes(r[1]),
                frozenset(by_seq.get(int(r[0]), ())),
            )
            for r in rows
        ]

    def _pending(self, after: int, limit: int) -> list[Spooled]:
        rows = self._conn.execute(
            f"SELECT * FROM ({self._HELD}) WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
        ).fetchall()
        return self._with_confirmations(rows)

    def _get(self, seqs: list[int]) -> list[Spooled]:
        out: list[Any] = []
        for i in range(0, len(seqs), 500):
            chunk = seqs[i : i + 500]
            marks = ",".join("?" * len(chunk))
            out += self._conn.execute(
                f"SELECT * FROM ({self._HELD}) WHERE seq IN ({marks})", chunk
            ).fetchall()
        out.sort(key=lambda r: int(r[0]))
        return self._with_confirmations(out)

    def _confirm(self, collector: str, ranges: list[tuple[int, int]]) -> Confirmed:
        if collector not in self.confirmers:
            return Confirmed([], [])
        deleted: list[int] = []
        held: list[int] = []
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for lo, hi in ranges:
                if len(self.confirmers) == 1:
                    for table in ("events", "drops"):
                        deleted += [
                            int(r[0])
                            for r in self._conn.execute(
                                f"DELETE FROM {table} WHERE seq BETWEEN ? AND ? RETURNING seq",
                                (lo, hi),
                            )
                        ]
                    continue
                self._conn.execute(
                    f"INSERT OR IGNORE INTO confirmed SELECT seq, ? FROM ({self._HELD})"
                    " WHERE seq BETWEEN ? AND ?",
                    (collector, lo, hi),
                )
                done, waiting = self._settle(lo, hi)
                deleted += done
                held += waiting
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return Confirmed(sorted(deleted), sorted(held))

    def _settle(self, lo: int, hi: int) -> tuple[list[int], list[int]]:
        """Delete the seqs in ``[lo, hi]`` every required collector has confirmed."""
        rows = self._conn.execute(
            "SELECT seq, count(*) = ? FROM confirmed WHERE seq BETWEEN ? AND ?"
            " AND collector IN (SELECT value FROM json_each(?)) GROUP BY seq",
            (len(self.confirmers), lo, hi, self._confirmers_json),
        ).fetchall()
        done = [int(r[0]) for r in rows if r[1]]
        for seq in done:
            self._conn.execute("DELETE FROM events WHERE seq=?", (seq,))
            self._conn.execute("DELETE FROM drops WHERE seq=?", (seq,))
            self._conn.execute("DELETE FROM confirmed WHERE seq=?", (seq,))
        return done, [int(r[0]) for r in rows if not r[1]]

    def _sweep(self) -> None:
        """Settle every held seq against the current set of required collectors."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._settle(0, 2**63 - 1)
            # Confirmations of seqs no longer held (a drop already settled) are noise.
            self._conn.execute(
                f"DELETE FROM confirmed WHERE seq NOT IN (SELECT seq FROM ({self._HELD}))"
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _unconfirmed(self) -> dict[str, int]:
        held = int(self._conn.execute(f"SELECT count(*) FROM ({self._HELD})").fetchone()[0])
        got = dict(
            self._conn.execute("SELECT collector, count(*) FROM confirmed GROUP BY collector")
        )
        return {c: held - int(got.get(c, 0)) for c in self.confirmers}

    def _stats(self) -> SpoolStats:
        depth = int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])
        return SpoolStats(
            depth,
            self._meta("seq"),
            self._meta("dropped"),
            self._meta("first"),
            self._unconfirmed(),
        )

    # -- async API ------------------------------------------------------------------------

    async def append(
        self,
        check: str,
        area: str,
        from_: State,
        to: State,
        at: datetime,
        detected_at: datetime,
        evidence: Evidence,
    ) -> Event:
        event: Event = await self._run(
            self._append, check, area, from_, to, at, detected_at, evidence
        )
        return event

    async def pending(self, limit: int = 100, *, after: int = 0) -> list[Spooled]:
        """Held seqs (events and drops) after ``after``, in seq order."""
        rows: list[Spooled] = await self._run(self._pending, after, limit)
        return rows

    async def get(self, seqs: list[int]) -> list[Spooled]:
        """Those of ``seqs`` still held, in seq order."""
        rows: list[Spooled] = await self._run(self._get, seqs)
        return rows

    async def confirm(self, collector: str, ranges: list[tuple[int, int]]) -> Confirmed:
        """``collector`` has committed (or refused for good) these seqs: delete each one
        every required collector has now confirmed. Another collector's word is ignored."""
        result: Confirmed = await self._run(self._confirm, collector, ranges)
        return result

    async def stats(self) -> SpoolStats:
        result: SpoolStats = await self._run(self._stats)
        return result
