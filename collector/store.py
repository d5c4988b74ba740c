"""The collector's SQLite store: events (idempotent on id), the outage intervals derived from
them, live check status and agent liveness.

Synchronous by design: the collector calls it from one writer thread and reads from others
(WAL), so SQLite never blocks the event loop. Schema changes are migrations, applied in one
transaction at open.
"""

from __future__ import annotations

import json
import math
import operator
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

import sqlite_utils

from availmon.areas import NETWORK_AREA
from availmon.clock import to_iso
from availmon.errors import NoSuchRecord, StoreError
from availmon.schema import Event, Heartbeat, State

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    """Register a schema step; steps run once each, in definition order."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db.table("events").create(
        {
            "id": str,
            "seq": int,
            "site": str,
            "agent": str,
            "check_name": str,
            "area": str,
            "from_state": str,
            "to_state": str,
            "at": str,
            "detected_at": str,
            "received_at": str,
            "evidence": str,
        },
        pk="id",
    )
    db.table("events").create_index(["site", "agent", "check_name", "seq"])
    # One row per interval in which a check was not up. Rows with source 'agent' are derived
    # from events and rebuilt when events arrive; 'import' rows come from CSV; 'provisional'
    # rows are the collector's own "site unreachable" records.
    db.table("outages").create(
        {
            "id": str,
            "site": str,
            "agent": str,
            "check_name": str,
            "area": str,
            "state": str,
            "start": str,
            "end": str,
            "source": str,
            "planned": int,
            "cause": str,
            "provider": str,
            "note": str,
            "start_event": str,
            "end_event": str,
        },
        pk="id",
        not_null={"site", "area", "state", "start", "source"},
        defaults={"planned": 0},
    )
    db.table("outages").create_index(["area", "start"])
    db.table("outages").create_index(["site", "agent", "check_name"])
    # What people said about an outage survives the rebuilds of derived rows.
    db.table("annotations").create(
        {
            "outage_id": str,
            "cause": str,
            "provider": str,
            "note": str,
            "planned": int,
            "updated_at": str,
        },
        pk="outage_id",
    )
    db.table("check_status").create(
        {
            "site": str,
            "agent": str,
            "check_name": str,
            "area": str,
            "state": str,
            "since": str,
            "latency": float,
            "error": str,
            "updated_at": str,
        },
        pk=("site", "check_name"),
    )
    db.table("agents").create(
        {
            "agent": str,
            "site": str,
            "status": str,
            "status_at": str,
            "last_heartbeat": str,
            "last_seq": int,
            "spool_depth": int,
        },
        pk="agent",
    )


@migration
def m002_order_and_conflicts(db: sqlite_utils.Database) -> None:
    # Outages are derived in (at, seq) order: robust to an agent whose seq was reset.
    db.table("events").create_index(["site", "agent", "check_name", "at"])
    # Same id, different content: an agent reset that reused ids. Kept for review, never lost.
    db.table("conflicts").create(
        {"id": str, "received_at": str, "payload": str, "stored": str}, pk=("id", "received_at")
    )


@migration
def m003_keep_every_conflicting_version(db: sqlite_utils.Database) -> None:
    # Keyed on the payload, so two other versions of one id are both kept, and a redelivered
    # conflict is recognised rather than stored again.
    db.execute("ALTER TABLE conflicts RENAME TO conflicts_old")
    db.table("conflicts").create(
        {"id": str, "received_at": str, "payload": str, "stored": str}, pk=("id", "payload")
    )
    db.execute(
        "INSERT OR IGNORE INTO conflicts SELECT id, received_at, payload, stored FROM conflicts_old"
    )
    db.execute("DROP TABLE conflicts_old")


@migration
def m004_annotation_history(db: sqlite_utils.Database) -> None:
    # Who changed an outage's annotation and when (issue 12): the current annotation says who
    # last changed it, and every change is kept, so the outage page can show the history.
    db.execute("ALTER TABLE annotations ADD COLUMN updated_by TEXT")
    db.table("annotation_history").create(
        {
            "outage_id": str,
            "at": str,
            "by": str,
            "cause": str,
            "provider": str,
            "note": str,
            "planned": int,
        },
    )
    db.table("annotation_history").create_index(["outage_id", "at"])


@migration
def m005_accounted_seqs(db: sqlite_utils.Database) -> None:
    # Seqs an agent reported dropped at its spool's cap, and events refused for good: not
    # stored, yet accounted for, so gap detection (issue 8) does not count them as missing.
    db.table("accounted").create(
        {"agent": str, "lo": int, "hi": int, "why": str}, pk=("agent", "lo", "why")
    )


@dataclass(frozen=True)
class IngestResult:
    inserted: int
    duplicates: int
    conflicts: tuple[str, ...] = ()


@dataclass
class _Tail:
    """Where a check's outage derivation stands: its last event and its open interval (as
    ``derive_intervals`` would leave them), so an event that arrives in order extends the
    history in O(1) instead of re-deriving it."""

    last: tuple[str, int] | None  # (at, seq) of the latest event; None: the check has none
    open: tuple[str, str, str] | None  # (state, start, start_event)


#: Rows per statement in ``Store._rows_at_once``: 500 events bind 6,000 values, well under
#: SQLite's limit of 32,766 a statement.
_ROWS_PER_STATEMENT = 500

#: Sort key of ``(at, seq, event)``: time order, seq breaking ties.
_AT_SEQ = operator.itemgetter(0, 1)


@dataclass(frozen=True)
class ImportResult:
    new: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class Interval:
    start: str
    end: str | None
    state: str
    start_event: str
    end_event: str | None


def derive_intervals(events: Iterable[tuple[str, int, str, str, str]]) -> list[Interval]:
    """Not-up intervals from one check's events ``(id, seq, from, to, at)`` in time order.

    Each event closes the open interval (if any) at its ``at`` and opens a new one when it
    leads into down, degraded or unknown. An event that only restates the open state (an
    agent restarted mid-outage reports ``unknown -> down``; a reboot note is ``up -> up``)
    continues the interval instead of splitting it.
    """
    out: list[Interval] = []
    open_: tuple[str, str, str] | None = None  # state, start, start_event
    for ev_id, _seq, from_state, to_state, at in events:
        if from_state in (State.UNKNOWN, to_state) and to_state == (
            open_[0] if open_ else State.UP
        ):
            continue
        if open_ is not None:
            state, start, start_event = open_
            out.append(Interval(start, at, state, start_event, ev_id))
            open_ = None
        if to_state != State.UP:
            open_ = (to_state, at, ev_id)
    if open_ is not None:
        state, start, start_event = open_
        out.append(Interval(start, None, state, start_event, None))
    return out


class Store:
    def __init__(
        self,
        path: str | Path,
        *,
        tolerant: bool = False,
        busy_timeout: float = 30.0,
        cache_mib: int | None = None,
    ) -> None:
        """Open (creating it if need be) and migrate. A file that is not a usable database,
        or a directory that cannot be made, is a ``StoreError`` naming the path.

        ``tolerant``: a database that cannot be written yet (a read-only or full file
        system) is opened anyway and migrated on the first write that succeeds; the
        collector starts, says so on /healthz, and waits for it.

        ``cache_mib``: SQLite's page cache for this connection (default: SQLite's 2 MiB)."""
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._cache_mib = cache_mib
        self._tails: dict[tuple[str, str, str], _Tail] = {}
        self._migrated = False
        try:
            self.conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(describe(exc, self.path)) from exc
        except OSError as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        self.db = sqlite_utils.Database(self.conn)
        try:
            self._migrate()
        except sqlite3.Error as exc:
            if tolerant and isinstance(exc, sqlite3.OperationalError) and store_fault(exc):
                return
            self.conn.close()
            raise StoreError(describe(exc, self.path)) from exc

    def _connect(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            # FULL: we confirm and PUBACK only after commit, so a commit must survive power
            # loss too.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            if self._cache_mib is not None:
                conn.execute(f"PRAGMA cache_size={-1024 * int(self._cache_mib)}")  # KiB
        except sqlite3.OperationalError as exc:
            # A read-only file system: reads work; the first write says why and the
            # collector reopens the connection once it can write.
            if store_fault(exc) is None:
                conn.close()
                raise
        return conn

    def reopen(self) -> None:
        """A fresh connection, after a fault that may have left this one unable to write
        (a database opened while its file system was read-only stays read-only)."""
        conn = self._connect()
        old, self.conn = self.conn, conn
        self.db = sqlite_utils.Database(conn)
        self._tails.clear()
        old.close()
        self._migrate()

    def ready(self) -> None:
        """A write that does nothing: raises while the database cannot be written."""
        with self._tx():
            pass

    def _migrate(self) -> None:
        with _Transaction(self.conn):
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
            done = {r[0] for r in self.conn.execute("SELECT name FROM _migrations")}
            for name, fn in MIGRATIONS:
                if name not in done:
                    fn(self.db)
                    self.conn.execute(
                        "INSERT INTO _migrations VALUES (?, datetime('now'))", (name,)
                    )
        self._migrated = True

    def _tx(self) -> Any:
        if not self._migrated:
            self._migrate()
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()

    # -- writes -------------------------------------------------------------------------

    def ingest(
        self,
        events: list[Event],
        received_at: datetime,
        accounted: Sequence[tuple[str, int, int, str]] = (),
    ) -> IngestResult:
        """Store events idempotently on id and bring the outages of the checks they touch up to
        date, in one transaction; ``accounted``: ``(agent, lo, hi, why)`` seq ranges to
        remember as dropped or refused.

        A replay of a stored event is a duplicate; an event that reuses a stored id with other
        content is a conflict: quarantined in ``conflicts`` and reported, never applied.
        """
        try:
            with self._tx():
                result = self._ingest(events, received_at)
                self.conn.executemany(
                    "INSERT OR IGNORE INTO accounted VALUES (?,?,?,?)", list(accounted)
                )
                return result
        except BaseException:
            self._tails.clear()  # rolled back: the cache may be ahead of the database
            raise

    _INSERT_EVENTS = (
        "INSERT INTO events (id, seq, site, agent, check_name, area, from_state, to_state, at,"
        " detected_at, received_at, evidence) VALUES ",
        "(?,?,?,?,?,?,?,?,?,?,?,?)",
    )
    _INSERT_OUTAGES = (
        "INSERT OR REPLACE INTO outages (id, site, agent, check_name, area, state, start, end,"
        " source, planned, start_event, end_event) VALUES ",
        "(?,?,?,?,?,?,?,?,'agent',0,?,?)",
    )

    #: Many outages' ends in one statement, as ``_rows_at_once`` does (``UPDATE ... FROM``).
    _CLOSE_OUTAGES = (
        "WITH v(end_, end_event, area, id) AS (VALUES ",
        "(?,?,?,?)",
        ") UPDATE outages SET end=v.end_, end_event=v.end_event, area=v.area FROM v"
        " WHERE outages.id = v.id",
    )

    def _rows_at_once(self, sql: tuple[str, ...], rows: Sequence[Sequence[Any]]) -> None:
        """``sql`` is ``(head, one row's VALUES, tail)``: ``head (row), (row), ... tail``,
        hundreds of rows a statement, rather than ``executemany``'s one row a step. SQLite's
        work on a step runs without the GIL, and ``executemany`` gives the GIL up and waits to
        take it back for every row: behind the validation of the next batch on the event loop,
        that wait (up to the interpreter's switch interval, 5 ms) made the writer thread crawl
        (issue 8's throughput)."""
        head, one, *tail = sql
        for i in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[i : i + _ROWS_PER_STATEMENT]
            self.conn.execute(
                head + ",".join([one] * len(chunk)) + "".join(tail),
                list(chain.from_iterable(chunk)),
            )

    def _ingest(self, events: list[Event], received_at: datetime) -> IngestResult:
        received = to_iso(received_at)
        # ``_value_``, not ``.value``: the same text without a Python-level property call.
        rows = [
            (
                ev.id,
                ev.seq,
                ev.site,
                ev.agent,
                ev.check,
                ev.area,
                ev.from_._value_,
                ev.to._value_,
                to_iso(ev.at),
                to_iso(ev.detected_at),
                received,
                ev.evidence.model_dump_json(),
            )
            for ev in events
        ]
        # Each check's tail as it stands before this batch's rows go in.
        tails = {key: self._tail(key) for key in {(ev.site, ev.agent, ev.check) for ev in events}}
        # Usually every event is new: insert them all, and let the primary key say otherwise
        # (issue 8's throughput: no lookup of each id first). Otherwise the insert is undone
        # and each event is sorted out: new, a duplicate, or a conflict.
        duplicates = 0
        conflicts: list[str] = []
        self.conn.execute("SAVEPOINT new_events")
        try:
            self._rows_at_once(self._INSERT_EVENTS, rows)
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK TO new_events")
            self.conn.execute("RELEASE new_events")
            events, rows, duplicates, conflicts = self._sort_out(events, rows, received)
            self._rows_at_once(self._INSERT_EVENTS, rows)
        else:
            self.conn.execute("RELEASE new_events")
        # Per check, its new events as ``(at, seq, event)``, ``at`` as stored.
        by_check: dict[tuple[str, str, str], list[tuple[str, int, Event]]] = {}
        for ev, row in zip(events, rows, strict=True):
            key = (ev.site, ev.agent, ev.check)
            new = by_check.get(key)
            if new is None:
                new = by_check[key] = []
            new.append((row[8], ev.seq, ev))
        # The outages that events arriving in order open and close, written together at the
        # end (issue 8's throughput): the rows opened, with their end when the batch closes
        # them too, and the ends of the outages that were open before it.
        opened: list[list[Any]] = []
        closed: list[tuple[str, str, str, str]] = []
        for key, new in by_check.items():
            new.sort(key=_AT_SEQ)
            self._advance(key, new, tails[key], opened, closed)
        self._rows_at_once(self._INSERT_OUTAGES, opened)
        self._rows_at_once(self._CLOSE_OUTAGES, closed)
        return IngestResult(len(rows), duplicates, tuple(conflicts))

    def _sort_out(
        self, events: list[Event], rows: list[tuple[Any, ...]], received: str
    ) -> tuple[list[Event], list[tuple[Any, ...]], int, list[str]]:
        """The events (and their rows) not stored yet; the number of duplicates (a replay of
        a stored event, or of a conflict already held); and the ids of the new conflicts: an
        event that reuses a stored id with other content is quarantined in ``conflicts``,
        never applied."""
        existing: dict[str, tuple[Any, ...]] = {}
        ids = list({ev.id for ev in events})
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            found = self.conn.execute(
                "SELECT id, site, check_name, to_state, at FROM events WHERE id IN"
                f" ({','.join('?' * len(chunk))})",
                chunk,
            )
            existing.update((r[0], tuple(r[1:])) for r in found)
        fresh: list[Event] = []
        fresh_rows: list[tuple[Any, ...]] = []
        duplicates = 0
        conflicts: list[str] = []
        for ev, row in zip(events, rows, strict=True):
            what = (ev.site, ev.check, row[7], row[8])  # site, check, to_state, at
            stored = existing.get(ev.id)
            if stored is None:
                existing[ev.id] = what
                fresh.append(ev)
                fresh_rows.append(row)
            elif stored == what:
                duplicates += 1
            elif self.conn.execute(
                "INSERT OR IGNORE INTO conflicts VALUES (?,?,?,?)",
                (ev.id, received, ev.to_json().decode(), json.dumps(stored)),
            ).rowcount:
                conflicts.append(ev.id)
            else:
                duplicates += 1  # a conflict we already hold, delivered again
        return fresh, fresh_rows, duplicates, conflicts

    def _tail(self, key: tuple[str, str, str]) -> _Tail:
        tail = self._tails.get(key)
        if tail is not None:
            return tail
        last = self.conn.execute(
            "SELECT at, seq FROM events WHERE site=? AND agent=? AND check_name=?"
            " ORDER BY at DESC, seq DESC LIMIT 1",
            key,
        ).fetchone()
        if last is None:
            # No events, so no outages derived from them: the first events extend nothing.
            tail = self._tails[key] = _Tail(None, None)
            return tail
        # Only the latest interval can be open; ask for it by that, not by start order, which
        # ties when a run's outages begin at the same instant (degraded, then down, at once).
        row = self.conn.execute(
            "SELECT state, start, start_event FROM outages WHERE source='agent' AND"
            " site=? AND agent=? AND check_name=? AND end IS NULL ORDER BY start DESC LIMIT 1",
            key,
        ).fetchone()
        open_ = (row[0], row[1], row[2]) if row is not None else None
        tail = self._tails[key] = _Tail((str(last[0]), int(last[1])), open_)
        return tail

    def _advance(
        self,
        key: tuple[str, str, str],
        new: list[tuple[str, int, Event]],
        tail: _Tail,
        opened: list[list[Any]],
        closed: list[tuple[str, str, str, str]],
    ) -> None:
        """Apply a check's new events (sorted) to its outages: incrementally when they all
        come after what was stored (the rows to write go to ``opened`` and ``closed``), else
        by re-deriving from the outage the first falls in."""
        first = new[0][:2]
        if tail.last is not None and first <= tail.last:
            self._rebuild(*key, first)
            self._tails.pop(key, None)
            return
        site, agent, check = key
        up = State.UP
        row: list[Any] | None = None  # the outage this batch opened and has not closed yet
        for at, seq, ev in new:
            tail.last = (at, seq)
            state = tail.open[0] if tail.open else up
            to = ev.to
            if to == state and ev.from_ in (State.UNKNOWN, to):
                continue
            if row is not None:
                row[4], row[7], row[9] = ev.area, at, ev.id  # area, end, end_event
                row = None
            elif tail.open is not None:
                closed.append((at, ev.id, ev.area, f"o:{tail.open[2]}"))
            tail.open = None
            if to is not up:
                row = [f"o:{ev.id}", site, agent, check, ev.area, to._value_, at, None, ev.id, None]
                opened.append(row)
                tail.open = (to._value_, at, ev.id)

    def _rebuild(self, site: str, agent: str, check: str, since: tuple[str, int]) -> None:
        """Re-derive the check's outages from the last one that began before ``since``
        (the ``(at, seq)`` of the earliest new event).

        Events usually arrive in order, so this touches only the tail of the history; a late
        event (a spool replay) re-derives from the outage it falls into. Positions are
        ``(at, seq)``, not ``at`` alone: events of one instant may belong to two intervals
        (a restated "degraded" that closes one run, then "down" that opens the next).
        """
        key = (site, agent, check)
        at, seq = since
        row = self.conn.execute(
            "SELECT o.start, e.seq FROM outages o JOIN events e ON e.id = o.start_event"
            " WHERE o.source='agent' AND o.site=? AND o.agent=? AND o.check_name=?"
            " AND (o.start < ? OR (o.start = ? AND e.seq <= ?))"
            " ORDER BY o.start DESC, e.seq DESC LIMIT 1",
            (*key, at, at, seq),
        ).fetchone()
        origin = (str(row[0]), int(row[1])) if row is not None else (at, seq)
        rows = self.conn.execute(
            "SELECT id, seq, from_state, to_state, at, area FROM events"
            " WHERE site=? AND agent=? AND check_name=? AND (at > ? OR (at = ? AND seq >= ?))"
            " ORDER BY at, seq",
            (*key, origin[0], origin[0], origin[1]),
        ).fetchall()
        # Every derived outage from the origin on is re-derived: those starting later, and
        # those starting at the origin's instant from its event on.
        self.conn.execute(
            "DELETE FROM outages WHERE source='agent' AND site=? AND agent=? AND check_name=?"
            " AND (start > ? OR (start = ? AND start_event IN (SELECT id FROM events"
            " WHERE site=? AND agent=? AND check_name=? AND at = ? AND seq >= ?)))",
            (*key, origin[0], origin[0], *key, origin[0], origin[1]),
        )
        area = rows[-1][5] if rows else None
        for iv in derive_intervals((r[0], r[1], r[2], r[3], r[4]) for r in rows):
            self.conn.execute(
                "INSERT INTO outages (id, site, agent, check_name, area, state, start, end,"
                " source, planned, start_event, end_event) VALUES (?,?,?,?,?,?,?,?,'agent',0,?,?)",
                (
                    f"o:{iv.start_event}",
                    site,
                    agent,
                    check,
                    area,
                    iv.state,
                    iv.start,
                    iv.end,
                    iv.start_event,
                    iv.end_event,
                ),
            )

    def record_heartbeat(self, hb: Heartbeat, received_at: datetime) -> None:
        now = to_iso(received_at)
        with self._tx():
            for c in hb.checks:
                self.conn.execute(
                    "INSERT OR REPLACE INTO check_status VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        hb.site,
                        hb.agent,
                        c.check,
                        c.area,
                        c.state.value,
                        to_iso(c.since) if c.since else None,
                        c.latency,
                        c.error,
                        now,
                    ),
                )
            self.conn.execute(
                "INSERT INTO agents (agent, site, status, status_at, last_heartbeat, last_seq,"
                " spool_depth) VALUES (?,?,'online',?,?,?,?) ON CONFLICT(agent) DO UPDATE SET"
                " site=excluded.site, last_heartbeat=excluded.last_heartbeat,"
                " last_seq=excluded.last_seq, spool_depth=excluded.spool_depth",
                (hb.agent, hb.site, now, now, hb.seq, hb.spool_depth),
            )

    def open_provisional(self, site: str, agent: str, start: datetime) -> str:
        """The collector's own "site unreachable" record while an agent is offline."""
        oid = f"p:{agent}:{to_iso(start)}"
        with self._tx():
            self.conn.execute(
                "INSERT OR IGNORE INTO outages (id, site, agent, check_name, area, state, start,"
                " source, planned, cause) VALUES (?,?,?,'site-unreachable',?,'down',?,"
                "'provisional',0,'site unreachable: agent offline')",
                (oid, site, agent, NETWORK_AREA, to_iso(start)),
            )
        return oid

    def drop_provisional(self, agent: str) -> int:
        """The agent is back and has replayed its spool: its own record replaces ours."""
        with self._tx():
            cur = self.conn.execute(
                "DELETE FROM outages WHERE source='provisional' AND agent=?", (agent,)
            )
        return cur.rowcount

    def record_agent_status(self, site: str, agent: str, status: str, at: datetime) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT INTO agents (agent, site, status, status_at) VALUES (?,?,?,?)"
                " ON CONFLICT(agent) DO UPDATE SET site=excluded.site, status=excluded.status,"
                " status_at=excluded.status_at",
                (agent, site, status, to_iso(at)),
            )

    # -- reads --------------------------------------------------------------------------

    def outages(self, *, open_only: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        sql = (
            "SELECT o.id, o.site, o.agent, o.check_name, o.area, o.state, o.start, o.end,"
            " o.source, COALESCE(a.planned, o.planned) AS planned,"
            " COALESCE(a.cause, o.cause) AS cause, COALESCE(a.provider, o.provider) AS provider,"
            " COALESCE(a.note, o.note) AS note"
            " FROM outages o LEFT JOIN annotations a ON a.outage_id = o.id"
        )
        if open_only:
            sql += " WHERE o.end IS NULL"
        sql += " ORDER BY o.start DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [dict(r) for r in self.conn.execute(sql)]

    def check_statuses(self) -> list[dict[str, Any]]:
        """Latencies that are not finite and non-negative (stored before issue 15 refused
        them) read as not measured: ``-Infinity`` is not JSON."""
        rows = [
            dict(r)
            for r in self.conn.execute("SELECT * FROM check_status ORDER BY site, check_name")
        ]
        for row in rows:
            latency = row["latency"]
            if latency is not None and not (math.isfinite(latency) and latency >= 0):
                row["latency"] = None
        return rows

    def event_history(self) -> list[tuple[str, str, str, str, bool]]:
        """Every (site, check, area) with events: the last ``received_at`` and whether an
        outage derived from them is open. Read once at start (one pass over ``events``), so
        a check removed from the config can still take its late events."""
        open_ = {
            (r[0], r[1], r[2])
            for r in self.conn.execute(
                "SELECT site, check_name, area FROM outages WHERE source='agent' AND end IS NULL"
            )
        }
        return [
            (site, check, area, last, (site, check, area) in open_)
            for site, check, area, last in self.conn.execute(
                "SELECT site, check_name, area, max(received_at) FROM events"
                " GROUP BY site, check_name, area"
            )
        ]

    def agents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM agents ORDER BY site, agent")]

    def seen_seqs(self) -> dict[str, list[tuple[int, int]]]:
        """Per agent, the seq ranges held: stored, or accounted for (dropped, refused)."""
        out: dict[str, list[int]] = {}
        for agent, seq in self.conn.execute("SELECT agent, seq FROM events"):
            out.setdefault(agent, []).append(int(seq))
        ranges: dict[str, list[tuple[int, int]]] = {}
        for agent, seqs in out.items():
            seqs.sort()
            merged: list[tuple[int, int]] = []
            for s in seqs:
                if merged and s <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(s, merged[-1][1]))
                else:
                    merged.append((s, s))
            ranges[agent] = merged
        for agent, lo, hi in self.conn.execute("SELECT agent, lo, hi FROM accounted"):
            ranges.setdefault(agent, []).append((int(lo), int(hi)))
        return ranges

    def event_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM events").fetchone()[0])

    def events(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM events ORDER BY site, agent, seq")
        return [{**dict(r), "evidence": json.loads(r["evidence"])} for r in rows]

    # -- accounting (issue 3): imports, annotations, period reads ---------------------------

    def import_outages(self, rows: Sequence[Mapping[str, Any]]) -> ImportResult:
        """Store imported outages in one transaction: all rows or none.

        Rows carry a deterministic ``id`` (the outage's identity: site, area, check, start,
        end), so importing the same file again changes nothing, and a corrected cause or kind
        in a re-imported file updates the row instead of duplicating it.
        """
        new = updated = 0
        fields = ("state", "planned", "cause", "provider", "note")
        with self._tx():
            for row in rows:
                old = self.conn.execute(
                    "SELECT state, planned, cause, provider, note FROM outages WHERE id=?",
                    (row["id"],),
                ).fetchone()
                if old is None:
                    self.conn.execute(
                        "INSERT INTO outages (id, site, agent, check_name, area, state, start,"
                        " end, source, planned, cause, provider, note)"
                        " VALUES (?,?,?,?,?,?,?,?,'import',?,?,?,?)",
                        (
                            row["id"],
                            row["site"],
                            row.get("agent"),
                            row.get("check_name"),
                            row["area"],
                            row["state"],
                            row["start"],
                            row["end"],
                            row["planned"],
                            row.get("cause"),
                            row.get("provider"),
                            row.get("note"),
                        ),
                    )
                    new += 1
                elif tuple(old) != tuple(row.get(f) for f in fields):
                    self.conn.execute(
                        "UPDATE outages SET state=?, planned=?, cause=?, provider=?, note=?"
                        " WHERE id=?",
                        (*(row.get(f) for f in fields), row["id"]),
                    )
                    updated += 1
        return ImportResult(new, updated, len(rows) - new - updated)

    def annotate(
        self,
        outage_id: str,
        at: datetime,
        *,
        cause: str | None = None,
        provider: str | None = None,
        note: str | None = None,
        planned: bool | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        """Record what people know about an outage; fields left as None keep their value.

        Written to ``annotations`` so the rebuild of agent-derived rows never loses it; ``by``
        (who) and ``at`` (when) go with it, and each change is kept in ``annotation_history``.
        """
        with self._tx():
            if (
                self.conn.execute("SELECT 1 FROM outages WHERE id=?", (outage_id,)).fetchone()
                is None
            ):
                raise NoSuchRecord(f"no outage with id {outage_id!r}")
            flag = None if planned is None else int(planned)
            self.conn.execute(
                "INSERT INTO annotations (outage_id, cause, provider, note, planned, updated_at,"
                " updated_by) VALUES (?,?,?,?,?,?,?) ON CONFLICT(outage_id) DO UPDATE SET"
                " cause=COALESCE(excluded.cause, cause),"
                " provider=COALESCE(excluded.provider, provider),"
                " note=COALESCE(excluded.note, note),"
                " planned=COALESCE(excluded.planned, planned), updated_at=excluded.updated_at,"
                " updated_by=excluded.updated_by",
                (outage_id, cause, provider, note, flag, to_iso(at), by),
            )
            self.conn.execute(
                "INSERT INTO annotation_history (outage_id, at, by, cause, provider, note,"
                " planned) VALUES (?,?,?,?,?,?,?)",
                (outage_id, to_iso(at), by, cause, provider, note, flag),
            )
        found = self.outage(outage_id)
        assert found is not None
        return found

    _OUTAGE_SELECT = (
        "SELECT o.id, o.site, o.agent, o.check_name, o.area, o.state, o.start, o.end,"
        " o.source, COALESCE(a.planned, o.planned) AS planned,"
        " COALESCE(a.cause, o.cause) AS cause, COALESCE(a.provider, o.provider) AS provider,"
        " COALESCE(a.note, o.note) AS note"
        " FROM outages o LEFT JOIN annotations a ON a.outage_id = o.id"
    )

    def outage(self, outage_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self._OUTAGE_SELECT + " WHERE o.id=?", (outage_id,)).fetchone()
        return dict(row) if row is not None else None

    def outages_between(
        self,
        start: datetime,
        end: datetime,
        *,
        area: str | None = None,
        site: str | None = None,
    ) -> list[dict[str, Any]]:
        """Outages (annotations applied) that overlap ``[start, end)``; open ones included."""
        sql = self._OUTAGE_SELECT + " WHERE o.start < ? AND (o.end IS NULL OR o.end > ?)"
        params: list[Any] = [to_iso(end), to_iso(start)]
        if area is not None:
            sql += " AND o.area = ?"
            params.append(area)
        if site is not None:
            sql += " AND o.site = ?"
            params.append(site)
        sql += " ORDER BY o.start, o.id"
        return [dict(r) for r in self.conn.execute(sql, params)]

    def earliest_record(self) -> str | None:
        """The first time anything was recorded (outage or event): before it, "no data"."""
        row = self.conn.execute(
            "SELECT min(t) FROM (SELECT min(start) AS t FROM outages"
            " UNION ALL SELECT min(at) FROM events)"
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    # -- the live board and its API (issue 12): reads only, all in this block -------------
    # Times are compared as stored (ISO UTC text, fixed width, so text order is time order).

    _BOARD_SELECT = (
        "SELECT o.id, o.site, o.agent, o.check_name, o.area, o.state, o.start, o.end,"
        " o.source, COALESCE(a.planned, o.planned) AS planned,"
        " COALESCE(a.cause, o.cause) AS cause, COALESCE(a.provider, o.provider) AS provider,"
        " COALESCE(a.note, o.note) AS note, o.start_event, o.end_event,"
        " a.updated_at AS annotated_at, a.updated_by AS annotated_by"
        " FROM outages o LEFT JOIN annotations a ON a.outage_id = o.id"
    )

    def board_outages(
        self,
        *,
        open_only: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
        site: str | None = None,
        check: str | None = None,
        area: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Outages (annotations applied, with who last annotated) newest first; ``start``/
        ``end`` keep those overlapping ``[start, end)``."""
        where: list[str] = []
        params: list[Any] = []
        if open_only:
            where.append("o.end IS NULL")
        if end is not None:
            where.append("o.start < ?")
            params.append(to_iso(end))
        if start is not None:
            where.append("(o.end IS NULL OR o.end > ?)")
            params.append(to_iso(start))
        for column, value in (("o.site", site), ("o.check_name", check), ("o.area", area)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = self._BOARD_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY o.start DESC, o.id LIMIT ?"
        return [dict(r) for r in self.conn.execute(sql, [*params, int(limit)])]

    def board_outage(self, outage_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self._BOARD_SELECT + " WHERE o.id=?", (outage_id,)).fetchone()
        return dict(row) if row is not None else None

    def recent_outages(self, limit: int) -> list[dict[str, Any]]:
        """The latest closed outages, newest end first (the board's "recent" list)."""
        sql = self._BOARD_SELECT + " WHERE o.end IS NOT NULL ORDER BY o.end DESC LIMIT ?"
        return [dict(r) for r in self.conn.execute(sql, (int(limit),))]

    def check_first_seen(self, site: str, check: str) -> str | None:
        """When this check was first recorded (an event or an imported outage): before it
        the history bars say "no data" rather than claim a 100% nobody measured."""
        row = self.conn.execute(
            "SELECT min(t) FROM (SELECT min(at) AS t FROM events WHERE site=? AND check_name=?"
            " UNION ALL SELECT min(start) FROM outages WHERE site=? AND check_name=?)",
            (site, check, site, check),
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def outage_events(self, outage_id: str) -> list[dict[str, Any]]:
        """What the probes saw: the check's events from the outage's start to its end."""
        o = self.conn.execute(
            "SELECT site, agent, check_name, start, end FROM outages WHERE id=?", (outage_id,)
        ).fetchone()
        if o is None or o["agent"] is None or o["check_name"] is None:
            return []
        sql = (
            "SELECT id, seq, from_state, to_state, at, detected_at, received_at, evidence"
            " FROM events WHERE site=? AND agent=? AND check_name=? AND at >= ?"
        )
        params: list[Any] = [o["site"], o["agent"], o["check_name"], o["start"]]
        if o["end"] is not None:
            sql += " AND at <= ?"
            params.append(o["end"])
        rows = self.conn.execute(sql + " ORDER BY at, seq LIMIT 500", params)
        return [{**dict(r), "evidence": json.loads(r["evidence"])} for r in rows]

    def start_evidence(self, event_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Evidence of the given events by id: why each outage began, as the probes saw it."""
        out: dict[str, dict[str, Any]] = {}
        ids = list(event_ids)
        for i in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                f"SELECT id, evidence FROM events WHERE id IN ({marks})", chunk
            ):
                out[r["id"]] = json.loads(r["evidence"])
        return out

    def annotation_history(self, outage_id: str) -> list[dict[str, Any]]:
        """Every change to an outage's annotation, oldest first: who, when and what."""
        rows = self.conn.execute(
            "SELECT at, by, cause, provider, note, planned FROM annotation_history"
            " WHERE outage_id=? ORDER BY at, rowid",
            (outage_id,),
        )
        return [dict(r) for r in rows]


#: sqlite3 error text -> the reason it is counted under. Each is the environment's fault, not
#: the data's: the collector keeps the batch unacknowledged and retries (issue 8, part 3).
_STORE_FAULTS = (
    ("database or disk is full", "disk_full"),
    ("disk i/o error", "io_error"),
    ("readonly", "readonly"),
    ("read-only", "readonly"),
    ("locked", "locked"),
    ("busy", "locked"),
    ("unable to open", "cant_open"),
    ("malformed", "corrupt"),
    ("not a database", "corrupt"),
)


def store_fault(exc: BaseException) -> str | None:
    """Why the store failed when the fault is the environment's (disk full, I/O, read-only,
    locked ...), or None when it is a property of what was written (a constraint)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | OverflowError):
        return None
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        for needle, reason in _STORE_FAULTS:
            if needle in text:
                return reason
        return "other"
    if isinstance(exc, OSError):
        return "io_error"
    return None


def describe(exc: sqlite3.Error, path: Path) -> str:
    """One line for a database failure, with what to do about the usual ones."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"database {path} is locked by another process (the collector?): {text}; try again"
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        return f"database {path} is corrupt or not an availmon database: {text}"
    return f"database {path}: {text}"


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: take the write lock up front so a locked database waits
    (busy_timeout) instead of failing half-way."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except sqlite3.Error:
                # A failed COMMIT (disk full) leaves the transaction open; close it, or every
                # later write fails with "cannot start a transaction within a transaction".
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
