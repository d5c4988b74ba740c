"""The agent's on-disk spool: every event is committed here before it is published and
deleted only after the broker's PUBACK, so a cut WAN link or ``kill -9`` loses nothing.

``seq`` is assigned in the same transaction that stores the event, so it survives restarts
and is never reused. SQLite runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from availmon.schema import Event, Evidence, State, event_id

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Spooled:
    seq: int
    payload: bytes


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
    ) -> None:
        """``mergeable``: checks whose area counts degraded as down, for which a change
        between the two is not an outage's start or end (see ``_enforce_cap``)."""
        self._mergeable = json.dumps(sorted(mergeable))
        self.path = path
        self.site, self.agent, self.max_events = site, agent, max_events
        path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY, check_name TEXT NOT NULL, from_state TEXT NOT NULL,
                to_state TEXT NOT NULL, payload BLOB NOT NULL);
            """
        )
        # A new spool starts seq at the current time in milliseconds, so that an agent whose
        # spool was lost or reinstalled never reuses an id it already sent.
        self._conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('seq', ?), ('dropped', 0)",
            (int(clock() * 1000),),
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()

    # -- sync core (spool thread only) --------------------------------------------------

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
            self._conn.execute("ROLLBACK")
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
            self._conn.execute("UPDATE meta SET value=value+1 WHERE key='dropped'")
            log.warning(
                "spool at its cap of %d events: dropped superseded intermediate state "
                "seq %d of check %s",
                self.max_events,
                row[0],
                row[1],
            )
            depth -= 1

    def _pending(self, limit: int) -> list[Spooled]:
        rows = self._conn.execute(
            "SELECT seq, payload FROM events ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [Spooled(int(r[0]), bytes(r[1])) for r in rows]

    def _ack(self, seqs: list[int]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany("DELETE FROM events WHERE seq=?", [(s,) for s in seqs])
        self._conn.execute("COMMIT")

    def _stats(self) -> tuple[int, int, int]:
        depth = int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])
        return depth, self._meta("seq"), self._meta("dropped")

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

    async def pending(self, limit: int = 100) -> list[Spooled]:
        rows: list[Spooled] = await self._run(self._pending, limit)
        return rows

    async def ack(self, seqs: list[int]) -> None:
        await self._run(self._ack, seqs)

    async def stats(self) -> tuple[int, int, int]:
        """(depth, last seq, dropped at cap)."""
        result: tuple[int, int, int] = await self._run(self._stats)
        return result
