"""The collector's SQLite store: events (idempotent on id), the outage intervals derived from
them, live check status and agent liveness.

Synchronous by design: the collector calls it from one writer thread and reads from others
(WAL), so SQLite never blocks the event loop. Schema changes are migrations, applied in one
transaction at open.

Times: event times (``events.at``, ``detected_at``, ``received_at``) and outage times
(``outages.start``, ``end``) are stored as integer microseconds since the Unix epoch, UTC
(issue 9: compared and summed as numbers, indexed compactly, read without parsing). The
public read methods that return rows as dicts give those times back as ISO 8601 UTC text
(``availmon.clock.to_iso``'s form), as they always have; the methods whose names end in
``_us`` take and return microseconds. Issue 10's versions of imported outages
(``import_history.start``, ``end``) are outage times too; the alerts' tables (issue 11) keep
microseconds of their own. Bookkeeping times (annotations, heartbeats, agent status,
conflicts, maintenance windows, not-monitored records, when a record was made) stay ISO
text: they are compared with each other and with ``--as-of``, never with outage times in
SQL.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import operator
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from availmon.areas import NETWORK_AREA
from availmon.clock import iso_to_us, to_iso, to_us, us_to_iso, utcnow
from availmon.errors import EXIT_USAGE, NoSuchRecord, StoreError
from availmon.schema import Event, Evidence, Heartbeat, State

if TYPE_CHECKING:  # imported when a migration runs: most opens have none to run
    import sqlite_utils

#: The check name of the collector's provisional "site unreachable" outages.
SITE_UNREACHABLE = "site-unreachable"

Migration = Callable[["sqlite_utils.Database"], None]
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


@migration
def m010_issue10_records(db: sqlite_utils.Database) -> None:
    # What really went down (issue 10): records with who and when, never changed in place,
    # so that a report can be computed as it stood at any moment (``--as-of``).
    # One-off maintenance windows, declared before the work; a cancellation is a record too.
    db.execute(
        "CREATE TABLE maintenance_windows (n INTEGER PRIMARY KEY, start TEXT NOT NULL,"
        " end TEXT NOT NULL, scope TEXT NOT NULL, reason TEXT, by TEXT NOT NULL,"
        " recorded_at TEXT NOT NULL)"
    )
    db.table("maintenance_cancellations").create(
        {"n": int, "by": str, "at": str, "reason": str}, pk="n"
    )
    # Time an agent was not heard past its grace (or was stopped): the "not monitored" column.
    # ``end``/``ended_at`` are written once, when it returns; ``dropped_at`` once, when its
    # replay replaced the provisional "site unreachable" outage.
    db.execute(
        "CREATE TABLE not_monitored (n INTEGER PRIMARY KEY, site TEXT NOT NULL,"
        " agent TEXT NOT NULL, start TEXT NOT NULL, recorded_at TEXT NOT NULL, why TEXT,"
        " end TEXT, ended_at TEXT, dropped_at TEXT)"
    )
    db.execute("CREATE INDEX not_monitored_agent ON not_monitored (agent, end)")
    # Every version of an imported outage, with when it was imported (NULL: before issue 10).
    db.execute(
        "CREATE TABLE import_history (outage_id TEXT NOT NULL, recorded_at TEXT, site TEXT,"
        " agent TEXT, check_name TEXT, area TEXT, state TEXT, start TEXT, end TEXT,"
        " planned INTEGER, cause TEXT, provider TEXT, note TEXT)"
    )
    db.execute(
        "INSERT INTO import_history SELECT id, NULL, site, agent, check_name, area, state,"
        " start, end, planned, cause, provider, note FROM outages WHERE source='import'"
    )
    db.execute("CREATE INDEX import_history_id ON import_history (outage_id, recorded_at)")
    # The accounting rules (areas, policy, windows, services, checks) in force from a moment.
    db.execute(
        "CREATE TABLE rules_versions (n INTEGER PRIMARY KEY, digest TEXT NOT NULL,"
        " recorded_at TEXT NOT NULL, rules TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX events_received ON events (received_at)")


@migration
def m011_alerts(db: sqlite_utils.Database) -> None:
    # Issue 11: one alert per outage (where its routes stand, who acknowledged it) and the
    # outbox of messages to channels, each keyed so that it is queued once and sent until a
    # channel takes it. Times of these tables are integer microseconds since the epoch.
    db.table("alerts").create(
        {
            "outage_id": str,
            "site": str,
            "check_name": str,
            "area": str,
            "state": str,
            "severity": str,
            "start": int,
            "end": int,
            "created_at": int,
            "status": str,
            "routes": str,
            "suppressed": str,
            "flapping": int,
            "acked_at": int,
            "acked_by": str,
            "due": int,
        },
        pk="outage_id",
        not_null={"site", "area", "status"},
    )
    db.table("alerts").create_index(["status", "due"])
    db.table("outbox").create(
        {
            "id": int,
            "key": str,
            "outage_id": str,
            "channel": str,
            "kind": str,
            "payload": str,
            "created_at": int,
            "due": int,
            "attempts": int,
            "last_error": str,
            "status": str,
            "sent_at": int,
        },
        pk="id",
        not_null={"key", "channel", "kind", "payload", "status", "due"},
        defaults={"attempts": 0},
    )
    db.table("outbox").create_index(["key"], unique=True)
    db.table("outbox").create_index(["status", "channel", "id"])
    db.table("outbox").create_index(["outage_id"])
    # Outages that had ended before alerting was installed are history, not news.
    db.execute(
        "INSERT INTO alerts (outage_id, site, check_name, area, state, created_at, status)"
        " SELECT id, site, check_name, area, state, 0, 'before' FROM outages"
        " WHERE end IS NOT NULL"
    )


def _iso_to_us(value: Any) -> Any:
    """A stored ISO time as microseconds (m012); NULL stays NULL."""
    return iso_to_us(value) if isinstance(value, str) else value


@migration
def m012_integer_times(db: sqlite_utils.Database) -> None:
    # Issue 9: times as integer microseconds since the epoch (UTC). The columns change type
    # (a TEXT column would turn an integer back into text), then every value is converted;
    # the tables' indexes are recreated by ``transform``.
    event_times = ["at", "detected_at", "received_at"]
    db.table("events").transform(types=dict.fromkeys(event_times, int))
    db.table("events").convert(event_times, _iso_to_us)
    db.table("outages").transform(types={"start": int, "end": int})
    db.table("outages").convert(["start", "end"], _iso_to_us)
    # Issue 10's versions of imported outages are outage rows too (``outages_as_of`` reads
    # them beside ``outages``): the same form. The records' own times (windows, not
    # monitored, when something was recorded) stay ISO text, like annotations.
    db.table("import_history").transform(types={"start": int, "end": int})
    db.table("import_history").convert(["start", "end"], _iso_to_us)


@migration
def m013_read_paths(db: sqlite_utils.Database) -> None:
    # Issue 9: the report and the live view read outages by area in start order. One index
    # holds every column those passes read (no table lookup per row: "covering"), in the
    # order they read them; it replaces (area, start). Open outages and the longest closed
    # one per area bound the passes' ranges (an outage that began before a period and
    # reaches into it begins no earlier than the period minus the longest outage).
    db.execute("DROP INDEX IF EXISTS idx_outages_area_start")
    db.execute(
        "CREATE INDEX outages_span ON outages (area, start, id, end, state, planned, site,"
        " check_name, cause, provider, note)"
    )
    # (Keyed by check: it also finds a check's open outage when ingest picks up its tail.)
    db.execute(
        "CREATE INDEX outages_open ON outages (site, agent, check_name, start) WHERE end IS NULL"
    )
    db.execute("CREATE INDEX outages_length ON outages (area, end - start)")
    # The few outages with a cause, provider or note of their own (imports, provisional).
    db.execute(
        "CREATE INDEX outages_noted ON outages (area, start, id)"
        " WHERE cause IS NOT NULL OR provider IS NOT NULL OR note IS NOT NULL"
    )


@migration
def m014_figures_cache(db: sqlite_utils.Database) -> None:
    # Issue 9: figures of periods that have ended, keyed on the config they came from. A
    # write that changes outages before ``horizon`` (the end of the latest period cached)
    # drops the entries it affects and bumps ``version``, so a computation that read the
    # data before that write cannot store what it found (``cache_figures``).
    db.table("figures_cache").create({"key": str, "lo": int, "hi": int, "data": str}, pk="key")
    db.table("figures_cache").create_index(["hi"])
    db.execute(
        "CREATE TABLE figures_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " version INTEGER NOT NULL, horizon INTEGER NOT NULL)"
    )
    db.execute("INSERT INTO figures_state VALUES (1, 0, -9223372036854775808)")


@migration
def m015_outage_writes(db: sqlite_utils.Database) -> None:
    # Issue 9: every transaction that changes outages counts here, whichever process made
    # it, so the collector's live view notices an import or annotation made by the CLI.
    db.execute("ALTER TABLE figures_state ADD COLUMN writes INTEGER NOT NULL DEFAULT 0")


@migration
def m016_outage_detected(db: sqlite_utils.Database) -> None:
    # When the failure was declared (its start event's ``detected_at``; the end of the
    # confirmation window, issue 10) kept on the outage row: the report read it through a
    # join into the events table for every row of a period (about 1 CPU-s a million rows on
    # a store with their events). NULL for an outage no event started (imported, provisional).
    db.execute("ALTER TABLE outages ADD COLUMN detected INTEGER")
    db.execute(
        "UPDATE outages SET detected = (SELECT e.detected_at FROM events e"
        " WHERE e.id = outages.start_event) WHERE start_event IS NOT NULL"
    )


@migration
def m017_agent_first_seq(db: sqlite_utils.Database) -> None:
    # Where each agent's numbering last started (its heartbeat's first_seq): an agent numbers
    # afresh from the clock each time its spool opens, and a collector starting up must not
    # count the hole between two numberings as missing events.
    db.execute("ALTER TABLE agents ADD COLUMN first_seq INTEGER")


#: Later than any time stored (µs): "to the end of time" for range reads.
FOREVER = 1 << 62


def _iso(us: int | None) -> str | None:
    """SQL ``iso(x)``: a stored time as the ISO text the public read methods return."""
    return us_to_iso(us) if us is not None else None


#: The fields of an outage row as events in order write it (``Changes.rows``); the rest of
#: such a row is fixed: source 'agent', planned 0, no cause, provider or note.
OUTAGE_ROW = (
    "id",
    "site",
    "agent",
    "check_name",
    "area",
    "state",
    "start",
    "end",
    "start_event",
    "end_event",
    "detected",
)
OUTAGE_AREA, OUTAGE_END, OUTAGE_END_EVENT = 4, 7, 9


@dataclass
class Changes:
    """What committed writes did to the outages, for the collector's live view (issue 9).

    ``since``: the earliest time (µs) whose figures may differ, None when no outage changed.
    ``opened`` and ``closed``: outages opened or closed by events that came in order (the
    cheap case: read those rows again). ``replaced_since``: outages from then on were
    re-derived, annotated, imported or dropped, so whatever was read of them is stale.

    ``rows`` and ``ends``: what events in order wrote, so the view needs no read back
    (issue 8's throughput): ``rows`` the outages they opened, as stored (``OUTAGE_ROW``'s
    fields, times in µs, end and end event set when closed since; nothing else of such a
    row is set, so none carries an annotation); ``ends`` ``(end, end_event, area)`` of the
    outages open before that they closed. An id of ``opened`` or ``closed`` in neither was
    written otherwise (a provisional record) and is read back.
    """

    since: int | None = None
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    replaced_since: int | None = None
    rows: dict[str, list[Any]] = field(default_factory=dict)
    ends: dict[str, tuple[int, str, str]] = field(default_factory=dict)

    @property
    def replaced(self) -> bool:
        return self.replaced_since is not None

    def touch(self, at: int) -> None:
        if self.since is None or at < self.since:
            self.since = at

    def replace(self, at: int) -> None:
        self.touch(at)
        if self.replaced_since is None or at < self.replaced_since:
            self.replaced_since = at

    def merge(self, other: Changes) -> None:
        if other.since is not None:
            self.touch(other.since)
        if other.replaced_since is not None:
            self.replace(other.replaced_since)
        self.opened += other.opened
        self.closed += other.closed
        self.rows.update(other.rows)
        for oid, (end, end_event, area) in other.ends.items():
            row = self.rows.get(oid)
            if row is None:
                self.ends[oid] = (end, end_event, area)
            else:  # opened by an earlier commit not taken yet: its row, closed
                row[OUTAGE_AREA], row[OUTAGE_END], row[OUTAGE_END_EVENT] = area, end, end_event


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

    last: tuple[int, int] | None  # (at µs, seq) of the latest event; None: the check has none
    open: tuple[str, int, str] | None  # (state, start µs, start_event)


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


T = TypeVar("T")


@dataclass(frozen=True)
class Interval(Generic[T]):
    start: T
    end: T | None
    state: str
    start_event: str
    end_event: str | None


def restates(state: str, from_state: str, to_state: str) -> bool:
    """Whether an event from ``from_state`` to ``to_state`` only restates ``state``, the
    check's state so far (``derive_intervals``): it neither ends nor starts an interval."""
    return from_state in (State.UNKNOWN, to_state) and to_state == state


def derive_intervals(events: Iterable[tuple[str, int, str, str, T]]) -> list[Interval[T]]:
    """Not-up intervals from one check's events ``(id, seq, from, to, at)`` in time order
    (``at`` in any ordered form: the store passes microseconds).

    Each event closes the open interval (if any) at its ``at`` and opens a new one when it
    leads into down, degraded or unknown. An event that only restates the open state (an
    agent restarted mid-outage reports ``unknown -> down``; a reboot note is ``up -> up``)
    continues the interval instead of splitting it.
    """
    out: list[Interval[T]] = []
    open_: tuple[str, T, str] | None = None  # state, start, start_event
    for ev_id, _seq, from_state, to_state, at in events:
        if restates(open_[0] if open_ else State.UP, from_state, to_state):
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
        #: The open write transaction's changes, and those committed since ``take_changes``.
        self._changes = Changes()
        self._pending = Changes()
        #: Transactions of this Store that counted in ``outage_writes``.
        self.own_writes = 0
        #: Declared windows recorded or cancelled through this Store (``windows_changed``).
        self.window_writes = 0
        #: Not-monitored records opened or closed through this Store (they count in figures
        #: under some policies, and write no outage).
        self.not_monitored_writes = 0
        try:
            self.conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(describe(exc, self.path)) from exc
        except OSError as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            self._migrate()
        except StoreError:
            self.conn.close()
            raise
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
        conn.create_function("iso", 1, _iso, deterministic=True)
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
            newer = sorted(done - {name for name, _ in MIGRATIONS})
            if newer:
                # Written by a later release: this code would read its tables as it knows
                # them and rewrite derived data without what the later one keeps (an
                # outage's declared time, say), and the later release would not refill it.
                raise StoreError(
                    f"database {self.path} was written by a newer availmon (its migrations"
                    f" {', '.join(newer)} are unknown to this one): run that release, or"
                    " restore a backup taken before the upgrade"
                )
            todo = [(name, fn) for name, fn in MIGRATIONS if name not in done]
            if todo:
                import sqlite_utils  # a tenth of a second of imports (click, pluggy)

                db = sqlite_utils.Database(self.conn)
                for name, fn in todo:
                    fn(db)
                    self.conn.execute(
                        "INSERT INTO _migrations VALUES (?, datetime('now'))", (name,)
                    )
        self._migrated = True

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Changes]:
        """One write transaction; what it changes is kept once it commits, and figures
        cached for the periods it touched are dropped in it."""
        if not self._migrated:
            self._migrate()
        changes = self._changes = Changes()
        with _Transaction(self.conn):
            yield changes
            if changes.since is not None:
                self._invalidate_figures(changes.since)
                self.conn.execute("UPDATE figures_state SET writes = writes + 1")
        if changes.since is not None:
            self.own_writes += 1
        self._pending.merge(changes)

    def take_changes(self) -> Changes:
        """What the writes committed since the last call changed (writer thread only)."""
        out, self._pending = self._pending, Changes()
        return out

    def has_changes(self) -> bool:
        """Committed changes not yet taken (a cheap check from any thread)."""
        p = self._pending
        return p.since is not None or bool(p.opened or p.closed)

    def data_version(self) -> int:
        """SQLite's ``data_version``: it moves when another connection commits, by any
        process; this connection's own commits leave it as it is."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def outage_writes(self) -> int:
        """How many transactions, by any process, have changed outages (m015)."""
        return int(self.conn.execute("SELECT writes FROM figures_state").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> Any:
        """One write transaction (BEGIN IMMEDIATE), for modules that keep their own tables
        in this database (the alerts' outbox)."""
        return self._tx()

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
        " source, planned, start_event, end_event, detected) VALUES ",
        "(?,?,?,?,?,?,?,?,'agent',0,?,?,?)",
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
        received = to_us(received_at)
        # The evidence's serializer called as ``model_dump_json()`` calls it, without that
        # method's Python wrapper: the same text at a quarter of the cost (issue 8's
        # throughput; ``test_store`` holds the two equal).
        evidence = Evidence.__pydantic_serializer__.to_json
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
                to_us(ev.at),
                to_us(ev.detected_at),
                received,
                evidence(ev.evidence).decode(),
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
            events, rows, duplicates, conflicts = self._sort_out(events, rows, received_at)
            self._rows_at_once(self._INSERT_EVENTS, rows)
        else:
            self.conn.execute("RELEASE new_events")
        # Per check, its new events as ``(at, seq, event)``, ``at`` as stored.
        by_check: dict[tuple[str, str, str], list[tuple[int, int, Event]]] = {}
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
        closed: list[tuple[int, str, str, str]] = []
        for key, new in by_check.items():
            new.sort(key=_AT_SEQ)
            self._advance(key, new, tails[key], opened, closed)
        self._rows_at_once(self._INSERT_OUTAGES, opened)
        self._rows_at_once(self._CLOSE_OUTAGES, closed)
        return IngestResult(len(rows), duplicates, tuple(conflicts))

    def _sort_out(
        self, events: list[Event], rows: list[tuple[Any, ...]], received_at: datetime
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
                (
                    ev.id,
                    to_iso(received_at),
                    ev.to_json().decode(),
                    json.dumps([*stored[:3], us_to_iso(stored[3])]),  # as ISO text, as ever
                ),
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
        tail = self._tails[key] = _Tail((int(last[0]), int(last[1])), open_)
        return tail

    def _advance(
        self,
        key: tuple[str, str, str],
        new: list[tuple[int, int, Event]],
        tail: _Tail,
        opened: list[list[Any]],
        closed: list[tuple[int, str, str, str]],
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
        changes = self._changes
        changes.touch(tail.open[1] if tail.open is not None else first[0])
        up = State.UP
        row: list[Any] | None = None  # the outage this batch opened and has not closed yet
        for at, seq, ev in new:
            tail.last = (at, seq)
            state = tail.open[0] if tail.open else up
            to = ev.to
            if to == state and ev.from_ in (State.UNKNOWN, to):
                continue
            if row is not None:
                row[OUTAGE_AREA], row[OUTAGE_END], row[OUTAGE_END_EVENT] = ev.area, at, ev.id
                changes.closed.append(row[0])
                row = None
            elif tail.open is not None:
                oid = f"o:{tail.open[2]}"
                closed.append((at, ev.id, ev.area, oid))
                changes.closed.append(oid)
                changes.ends[oid] = (at, ev.id, ev.area)
            tail.open = None
            if to is not up:
                row = [f"o:{ev.id}", site, agent, check, ev.area, to._value_, at, None, ev.id]
                row += (None, to_us(ev.detected_at))  # end event; when it was declared
                opened.append(row)
                changes.opened.append(row[0])
                changes.rows[row[0]] = row
                tail.open = (to._value_, at, ev.id)

    def _rebuild(self, site: str, agent: str, check: str, since: tuple[int, int]) -> None:
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
        origin = (int(row[0]), int(row[1])) if row is not None else (at, seq)
        self._changes.replace(origin[0])
        rows = self.conn.execute(
            "SELECT id, seq, from_state, to_state, at, area, detected_at FROM events"
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
        detected = {r[0]: r[6] for r in rows}
        for iv in derive_intervals((r[0], r[1], r[2], r[3], r[4]) for r in rows):
            self.conn.execute(
                "INSERT INTO outages (id, site, agent, check_name, area, state, start, end,"
                " source, planned, start_event, end_event, detected)"
                " VALUES (?,?,?,?,?,?,?,?,'agent',0,?,?,?)",
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
                    detected.get(iv.start_event),
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
                " spool_depth, first_seq) VALUES (?,?,'online',?,?,?,?,?)"
                " ON CONFLICT(agent) DO UPDATE SET"
                " site=excluded.site, last_heartbeat=excluded.last_heartbeat,"
                " last_seq=excluded.last_seq, spool_depth=excluded.spool_depth,"
                # Never lowered by a heartbeat delivered late: numberings only move up.
                " first_seq=max(COALESCE(agents.first_seq, 0), COALESCE(excluded.first_seq, 0))",
                (hb.agent, hb.site, now, now, hb.seq, hb.spool_depth, hb.first_seq),
            )

    def open_provisional(self, site: str, agent: str, start: datetime) -> str:
        """The collector's own "site unreachable" record while an agent is offline."""
        oid = f"p:{agent}:{to_iso(start)}"
        with self._tx() as changes:
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO outages (id, site, agent, check_name, area, state, start,"
                " source, planned, cause) VALUES (?,?,?,'site-unreachable',?,'down',?,"
                "'provisional',0,'site unreachable: agent offline')",
                (oid, site, agent, NETWORK_AREA, to_us(start)),
            )
            if cur.rowcount:
                changes.touch(to_us(start))
                changes.opened.append(oid)
        return oid

    def drop_provisional(self, agent: str) -> int:
        """The agent is back and has replayed its spool: its own record replaces ours."""
        with self._tx() as changes:
            first = self.conn.execute(
                "SELECT min(start) FROM outages WHERE source='provisional' AND agent=?", (agent,)
            ).fetchone()[0]
            cur = self.conn.execute(
                "DELETE FROM outages WHERE source='provisional' AND agent=?", (agent,)
            )
            if first is not None:
                changes.replace(int(first))
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
        """Outages (annotations applied), latest start first; times as ISO UTC text.

        Open ones come from their own index; ``limit`` takes the latest of each area from
        the area's index and merges them: neither reads the whole table."""
        if open_only:
            sql = (
                self._OUTAGE_SELECT.replace(
                    "FROM outages o", "FROM outages o INDEXED BY outages_open"
                )
                + " WHERE o.end IS NULL ORDER BY o.start DESC"
            )
            rows = [dict(r) for r in self.conn.execute(sql)]
            return rows[:limit] if limit is not None else rows
        if limit is None:
            sql = self._OUTAGE_SELECT + " ORDER BY o.start DESC"
            return [dict(r) for r in self.conn.execute(sql)]
        rows = []
        for area in self._areas():
            sql = self._OUTAGE_SELECT + " WHERE o.area = ? ORDER BY o.start DESC LIMIT ?"
            rows += [dict(r) for r in self.conn.execute(sql, (area, int(limit)))]
        rows.sort(key=lambda r: r["start"], reverse=True)
        return rows[: int(limit)]

    def outage_areas(self) -> list[str]:
        """Every area an outage is stored in (one no longer configured too), sorted."""
        return self._areas()

    def outage_sites(self) -> list[str]:
        """Every site an outage is stored for (a retired one too), sorted."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT site FROM outages ORDER BY site")]

    def _areas(self) -> list[str]:
        """Every area an outage was stored in, by one index probe each."""
        out: list[str] = []
        while True:
            row = self.conn.execute(
                "SELECT min(area) FROM outages WHERE area > ?", (out[-1] if out else "",)
            ).fetchone()
            if row is None or row[0] is None:
                return out
            out.append(row[0])

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
        """Every (site, check, area) with events: the last ``received_at`` (ISO UTC text) and
        whether an outage derived from them is open. Read once at start (one pass over
        ``events``), so a check removed from the config can still take its late events."""
        open_ = {
            (r[0], r[1], r[2])
            for r in self.conn.execute(
                "SELECT site, check_name, area FROM outages WHERE source='agent' AND end IS NULL"
            )
        }
        return [
            (site, check, area, last, (site, check, area) in open_)
            for site, check, area, last in self.conn.execute(
                "SELECT site, check_name, area, iso(max(received_at)) FROM events"
                " GROUP BY site, check_name, area"
            )
        ]

    def agents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM agents ORDER BY site, agent")]

    def first_seqs(self) -> dict[str, int]:
        """Per agent, where its numbering last started, as its heartbeats said."""
        rows = self.conn.execute("SELECT agent, first_seq FROM agents WHERE first_seq > 0")
        return {agent: int(first) for agent, first in rows}

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
        """Every event, times as ISO UTC text (tests and tools; the collector never reads all)."""
        rows = self.conn.execute(
            "SELECT id, seq, site, agent, check_name, area, from_state, to_state, iso(at) AS at,"
            " iso(detected_at) AS detected_at, iso(received_at) AS received_at, evidence"
            " FROM events ORDER BY site, agent, seq"
        )
        return [{**dict(r), "evidence": json.loads(r["evidence"])} for r in rows]

    # -- accounting (issue 3): imports, annotations, period reads ---------------------------

    def import_outages(
        self, rows: Sequence[Mapping[str, Any]], at: datetime | None = None
    ) -> ImportResult:
        """Store imported outages in one transaction: all rows or none.

        Rows carry a deterministic ``id`` (the outage's identity: site, area, check, start,
        end), so importing the same file again changes nothing, and a corrected cause or kind
        in a re-imported file updates the row instead of duplicating it. ``start`` and ``end``
        are ISO text with an offset (``collector.outage_csv`` writes them so).
        """
        new = updated = 0
        fields = ("state", "planned", "cause", "provider", "note")
        recorded = to_iso(at or utcnow())
        with self._tx() as changes:
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
                            iso_to_us(row["start"]),
                            iso_to_us(row["end"]) if row["end"] is not None else None,
                            row["planned"],
                            row.get("cause"),
                            row.get("provider"),
                            row.get("note"),
                        ),
                    )
                    new += 1
                    self._import_version(row, recorded)
                elif tuple(old) != tuple(row.get(f) for f in fields):
                    self.conn.execute(
                        "UPDATE outages SET state=?, planned=?, cause=?, provider=?, note=?"
                        " WHERE id=?",
                        (*(row.get(f) for f in fields), row["id"]),
                    )
                    updated += 1
                    self._import_version(row, recorded)
                else:
                    continue
                changes.replace(iso_to_us(row["start"]))
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
        with self._tx() as changes:
            found_start = self.conn.execute(
                "SELECT start FROM outages WHERE id=?", (outage_id,)
            ).fetchone()
            if found_start is None:
                raise NoSuchRecord(f"no outage with id {outage_id!r}")
            changes.replace(int(found_start[0]))
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
        "SELECT o.id, o.site, o.agent, o.check_name, o.area, o.state, iso(o.start) AS start,"
        " iso(o.end) AS end,"
        " o.source, COALESCE(a.planned, o.planned) AS planned,"
        " COALESCE(a.cause, o.cause) AS cause, COALESCE(a.provider, o.provider) AS provider,"
        " COALESCE(a.note, o.note) AS note"
        " FROM outages o LEFT JOIN annotations a ON a.outage_id = o.id"
    )

    def outage(self, outage_id: str) -> dict[str, Any] | None:
        """One outage (annotations applied), times as ISO UTC text; None if there is none."""
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
        """Outages (annotations applied) that overlap ``[start, end)``; open ones included;
        earliest start first, times as ISO UTC text."""
        sql = self._OUTAGE_SELECT + " WHERE o.start < ? AND (o.end IS NULL OR o.end > ?)"
        params: list[Any] = [to_us(end), to_us(start)]
        if area is not None:
            sql += " AND o.area = ?"
            params.append(area)
        if site is not None:
            sql += " AND o.site = ?"
            params.append(site)
        sql += " ORDER BY o.start, o.id"
        return [dict(r) for r in self.conn.execute(sql, params)]

    def earliest_record(self) -> str | None:
        """The first time anything was recorded (outage or event), ISO UTC text: before it,
        "no data"."""
        firsts = [
            self.conn.execute("SELECT min(start) FROM outages WHERE area = ?", (a,)).fetchone()[0]
            for a in self._areas()
        ]
        # Each check's first event, from the (site, agent, check_name, at) index: one probe
        # per check rather than a scan of every event.
        key: tuple[str, str, str] = ("", "", "")
        while True:
            row = self.conn.execute(
                "SELECT site, agent, check_name FROM events"
                " WHERE (site, agent, check_name) > (?, ?, ?)"
                " ORDER BY site, agent, check_name LIMIT 1",
                key,
            ).fetchone()
            if row is None:
                break
            key = (row[0], row[1], row[2])
            firsts.append(
                self.conn.execute(
                    "SELECT min(at) FROM events WHERE site = ? AND agent = ? AND check_name = ?",
                    key,
                ).fetchone()[0]
            )
        known = [int(t) for t in firsts if t is not None]
        return us_to_iso(min(known)) if known else None

    # -- the report's passes (issue 9): collector.tally's Source -------------------------
    # Every pass reads the outages of one area that overlap [lo, hi) in (start, id) order
    # from the outages_span index; times in µs. Annotations apply as in _OUTAGE_SELECT.

    #: Outages whose annotation says planned where the row says not, or the other way.
    _FLIPPED = (
        "SELECT o2.rowid FROM annotations a JOIN outages o2 ON o2.id = a.outage_id"
        " WHERE a.planned IS NOT NULL AND (a.planned != 0) != (IFNULL(o2.planned, 0) != 0)"
    )
    _OVERLAP = (
        " FROM outages o WHERE o.area = :area AND o.start >= :since AND o.start < :hi"
        " AND (o.end IS NULL OR o.end > :lo)"
    )
    #: ``collector.tally``'s row code, planned as stored (``_EFFECTIVE``: as annotated).
    _CODE = "length(o.state) + 16 * (IFNULL(o.planned, 0) != 0)"
    _EFFECTIVE = "length(o.state) + 16 * (COALESCE(a.planned, o.planned, 0) != 0)"

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside one read transaction: one state of the data for every query (a
        pass's streams must line up row for row while the writer commits beside them)."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def _span_params(self, area: str, lo: int, hi: int) -> dict[str, Any]:
        """The index range of a pass: from the start of the longest outage that could
        reach into ``[lo, hi)``."""
        longest, first_open = self.conn.execute(
            "SELECT (SELECT max(end - start) FROM outages WHERE area = :a),"
            " (SELECT min(start) FROM outages INDEXED BY outages_open"
            " WHERE area = :a AND end IS NULL)",
            {"a": area},
        ).fetchone()
        since = lo - (longest or 0)
        if first_open is not None:
            since = min(since, first_open)
        return {"area": area, "since": since, "lo": lo, "hi": hi}

    def span_areas(self, lo: int, hi: int) -> list[str]:
        """Areas with an outage overlapping ``[lo, hi)`` (µs), sorted; a few index probes
        per stored area."""
        out: list[str] = []
        for area in self._areas():
            params = self._span_params(area, lo, hi)
            if self.conn.execute("SELECT 1" + self._OVERLAP + " LIMIT 1", params).fetchone():
                out.append(area)
        return out

    def kpi_spans(
        self, area: str, since: int, *, degraded: bool, planned: bool
    ) -> list[tuple[int, int, str, str | None, str]]:
        """``(start, end, site, check, state)`` of the closed outages of ``area`` ending after
        ``since`` that count as downtime (as ``counted_spans``), in start order: the live
        KPI's history. With the check, so that the caller can book a configured check's
        time in its configured area whatever area its rows were stored with (as the report
        does: ``attribution.Rules.area_of``)."""
        sql = self._kpi_sql("o.start, o.end, o.site, o.check_name, o.state", degraded, planned)
        return list(self._plain(sql, self._span_params(area, since, FOREVER)))

    def _kpi_sql(self, columns: str, degraded: bool, planned: bool) -> str:
        """The closed outages ``kpi_spans`` reads, in start order."""
        return (
            f"SELECT {columns}"
            + self._OVERLAP
            + " AND o.end IS NOT NULL AND o.state != 'unknown'"
            + ("" if degraded else " AND o.state != 'degraded'")
            + (
                ""
                if planned
                else f" AND ((IFNULL(o.planned, 0) != 0) = (o.rowid IN ({self._FLIPPED})))"
            )
            + " ORDER BY o.start, o.id"
        )

    def kpi_checks(self, area: str, since: int) -> list[tuple[str, str | None]]:
        """``(site, check)`` of the closed outages of ``area`` ending after ``since``, each
        once: whether any of them is a check configured in another area (one SQL pass over
        the covering index, where ``kpi_spans`` with its checks costs a Python lookup a row)."""
        sql = (
            "SELECT DISTINCT o.site, o.check_name"
            + self._OVERLAP
            + " AND o.end IS NOT NULL AND o.state != 'unknown'"
        )
        return list(self._plain(sql, self._span_params(area, since, FOREVER)))

    def kpi_plain_spans(
        self, area: str, since: int, *, degraded: bool, planned: bool
    ) -> list[tuple[int, int]]:
        """``kpi_spans`` without the checks, for an area none of whose records count
        elsewhere (the common case: no check was moved, and no import named another area)."""
        sql = self._kpi_sql("o.start, o.end", degraded, planned)
        return list(self._plain(sql, self._span_params(area, since, FOREVER)))

    def first_overlapping(
        self, area: str, since: int, *, away: Collection[tuple[str, str]] = ()
    ) -> int | None:
        """The earliest start of an outage of ``area`` open or ending after ``since``; one
        that ended as it began is left out (no time of it is accounted: issue 10's
        accounting lists an area outside the config only for time it had), and so are those
        of the checks in ``away`` (site, name): configured in another area, their time is
        booked there (``kpi_spans``)."""
        params = {**self._span_params(area, since, FOREVER), "away": _away_keys(away)}
        row = self.conn.execute(
            "SELECT min(o.start)"
            + self._OVERLAP
            + f" AND (o.end IS NULL OR o.end > o.start) AND NOT {self._away(away)}",
            params,
        ).fetchone()
        return int(row[0]) if row is not None and row[0] is not None else None

    @staticmethod
    def _away(away: Collection[tuple[str, str]]) -> str:
        """Whether a row is of a check in ``away`` (the ``:away`` parameter, ``_away_keys``);
        plainly false without any."""
        if not away:
            return "0"
        return (
            "(o.site || char(31) || IFNULL(o.check_name, '')"
            " IN (SELECT value FROM json_each(:away)))"
        )

    def span_rows(self, area: str, lo: int, hi: int) -> Iterator[tuple[int, int | None, int, str]]:
        """``collector.tally.Row`` s of ``area`` overlapping ``[lo, hi)``, as the cursor
        yields them (the pass never holds them all)."""
        sql = (
            f"SELECT o.start, o.end, {self._CODE}, o.site"
            + self._OVERLAP
            + " ORDER BY o.start, o.id"
        )
        rows: Iterator[tuple[int, int | None, int, str]] = self._plain(
            sql, self._span_params(area, lo, hi)
        )
        return rows

    def span_flips(self, area: str, lo: int, hi: int) -> list[tuple[int, bool]]:
        """``collector.tally.Source.span_flips``: few rows, found from the annotations."""
        sql = (
            f"SELECT o.start, o.rowid IN ({self._FLIPPED})"
            + self._OVERLAP
            + " AND o.start IN (SELECT o2.start FROM annotations a JOIN outages o2"
            " ON o2.id = a.outage_id WHERE o2.area = :area AND a.planned IS NOT NULL"
            " AND (a.planned != 0) != (IFNULL(o2.planned, 0) != 0))"
            " ORDER BY o.start, o.id"
        )
        return [(int(s), bool(f)) for s, f in self._plain(sql, self._span_params(area, lo, hi))]

    def span_notes(
        self, area: str, lo: int, hi: int
    ) -> list[tuple[int, int, str | None, str | None, str | None]]:
        """``(start, state + 3 * planned, cause, provider, note)`` of the rows of ``area``
        overlapping ``[lo, hi)`` that have a cause, provider or note (their own, from the
        outages_noted index, or an annotation's), in ``(start, id)`` order."""
        params = self._span_params(area, lo, hi)
        select = (
            f"SELECT o.start, o.id, {self._EFFECTIVE}, COALESCE(a.cause, o.cause),"
            " COALESCE(a.provider, o.provider), COALESCE(a.note, o.note)"
        )
        own = self._plain(
            select + " FROM outages o INDEXED BY outages_noted"
            " LEFT JOIN annotations a ON a.outage_id = o.id"
            + self._OVERLAP.removeprefix(" FROM outages o")
            + " AND (o.cause IS NOT NULL OR o.provider IS NOT NULL OR o.note IS NOT NULL)",
            params,
        )
        annotated = self._plain(
            select
            + " FROM annotations a JOIN outages o ON o.id = a.outage_id"
            + self._OVERLAP.removeprefix(" FROM outages o")
            + " AND (a.cause IS NOT NULL OR a.provider IS NOT NULL OR a.note IS NOT NULL)",
            params,
        )
        rows = {r[:2]: r for r in own}
        rows.update((r[:2], r) for r in annotated)
        return [(r[0], r[2], r[3], r[4], r[5]) for _, r in sorted(rows.items())]

    def span_members(self, area: str, lo: int, hi: int) -> Iterator[tuple[str, str | None]]:
        """``(id, check)`` of the rows ``span_rows`` returns, in its order."""
        sql = "SELECT o.id, o.check_name" + self._OVERLAP + " ORDER BY o.start, o.id"
        rows: Iterator[tuple[str, str | None]] = self._plain(sql, self._span_params(area, lo, hi))
        return rows

    def counted_spans(
        self, area: str, lo: int, hi: int, now: int, *, degraded: bool, planned: bool
    ) -> list[tuple[int, int]]:
        """``(start, span end)`` of the rows of ``area`` overlapping ``[lo, hi)`` that count
        as downtime (not unknown; degraded and planned ones as told), in start order."""
        sql = (
            "SELECT o.start, COALESCE(o.end, max(:now, o.start))"
            + self._OVERLAP
            + " AND o.state != 'unknown'"
            + ("" if degraded else " AND o.state != 'degraded'")
            + (
                ""
                if planned
                else f" AND ((IFNULL(o.planned, 0) != 0) = (o.rowid IN ({self._FLIPPED})))"
            )
            + " ORDER BY o.start, o.id"
        )
        return list(self._plain(sql, {**self._span_params(area, lo, hi), "now": now}))

    def _plain(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> sqlite3.Cursor:
        """A cursor of plain tuples: sqlite3.Row costs more per row than the passes can
        spare."""
        cur = self.conn.cursor()
        cur.row_factory = None
        return cur.execute(sql, params)

    # -- figures of ended periods (issue 9) ------------------------------------------------

    def cached_figures(self, key: str) -> str | bytes | None:
        """What ``cache_figures`` stored under ``key`` (JSON, as text or as UTF-8 bytes),
        unless a write has dropped it since."""
        row = self.conn.execute("SELECT data FROM figures_cache WHERE key=?", (key,)).fetchone()
        return row[0] if row is not None else None

    def cached_until(self, key: str) -> int | None:
        """The end (µs) of the period ``cache_figures`` kept under ``key``, nothing read."""
        row = self.conn.execute("SELECT hi FROM figures_cache WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row is not None else None

    def figures_version(self, hi: int) -> int | None:
        """Call before computing figures of a period ending at ``hi`` (µs) to cache: from
        now on a write into the period bumps the version this returns. None when the store
        cannot be written (the figures are then computed, not cached)."""
        try:
            with self._tx():
                self.conn.execute(
                    "UPDATE figures_state SET horizon = max(horizon, ?) WHERE id = 1", (hi,)
                )
                return int(self.conn.execute("SELECT version FROM figures_state").fetchone()[0])
        except sqlite3.Error:
            return None

    def cache_figures(
        self, key: str, lo: int, hi: int, version: int | None, data: str | bytes
    ) -> bool:
        """Keep figures of ``[lo, hi)`` computed after ``figures_version`` returned
        ``version``, unless a write into the period came between; True when kept. A store
        that cannot be written keeps nothing, and says so by False."""
        if version is None:
            return False
        try:
            with self._tx():
                cur = self.conn.execute(
                    "INSERT OR REPLACE INTO figures_cache SELECT ?, ?, ?, ?"
                    " WHERE (SELECT version FROM figures_state) = ?",
                    (key, lo, hi, data, version),
                )
                return cur.rowcount > 0
        except sqlite3.Error:
            return False

    def figures_generation(self) -> int | None:
        """Bumped by every write that drops cached figures (``_invalidate_figures``); None
        when the store cannot say (not readable, or not set up yet)."""
        try:
            row = self.conn.execute("SELECT version FROM figures_state").fetchone()
        except sqlite3.Error:
            return None
        return int(row[0]) if row is not None else None

    def drop_figures_except(self, fingerprint: str) -> int:
        """Drop the cached figures whose key does not hold ``fingerprint`` (worked out
        under other rules); how many. A store that cannot be written drops none."""
        try:
            with self._tx():
                cur = self.conn.execute(
                    "DELETE FROM figures_cache WHERE instr(key, ?) = 0", (f":{fingerprint}:",)
                )
                return cur.rowcount
        except sqlite3.Error:
            return 0

    def _invalidate_figures(self, since: int) -> None:
        """In a write transaction that changed outages, or issue 10's records (windows,
        not-monitored time), from ``since`` on: cached figures of periods ending after it are
        no longer true."""
        horizon = self.conn.execute("SELECT horizon FROM figures_state").fetchone()[0]
        if since < horizon:
            self.conn.execute("UPDATE figures_state SET version = version + 1")
            self.conn.execute("DELETE FROM figures_cache WHERE hi > ?", (since,))

    # -- the live board and its API (issue 12): reads only, all in this block -------------
    # Times are compared as stored (integer µs) and returned as ISO UTC text.

    _BOARD_SELECT = (
        "SELECT o.id, o.site, o.agent, o.check_name, o.area, o.state, iso(o.start) AS start,"
        " iso(o.end) AS end,"
        " o.source, COALESCE(a.planned, o.planned) AS planned,"
        " COALESCE(a.cause, o.cause) AS cause, COALESCE(a.provider, o.provider) AS provider,"
        " COALESCE(a.note, o.note) AS note, o.start_event, o.end_event,"
        " a.updated_at AS annotated_at, a.updated_by AS annotated_by"
        " FROM outages o LEFT JOIN annotations a ON a.outage_id = o.id"
    )

    #: ``kind``: the board's and the report's words for an outage (``board.outage_shown``,
    #: ``board.outage_kind``), either of which a filter may name, as SQL on the row.
    _KINDS: ClassVar[dict[str, str]] = {
        "unplanned": "COALESCE(o.state, 'down') NOT IN ('unknown', 'degraded') AND {P} = 0",
        "planned": "COALESCE(o.state, 'down') != 'unknown' AND {P} != 0",
        "degraded": "o.state = 'degraded' AND {P} = 0",
        "down": "COALESCE(o.state, 'down') NOT IN ('degraded', 'unknown') AND {P} = 0",
        "maintenance": "{P} != 0",
        "unknown": "o.state = 'unknown'",
    }

    def board_outages(
        self,
        *,
        open_only: bool = False,
        closed_only: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
        site: str | None = None,
        sites: Sequence[str] | None = None,
        check: str | None = None,
        area: str | None = None,
        kind: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Outages (annotations applied, with who last annotated) newest first; ``start``/
        ``end`` keep those overlapping ``[start, end)``; ``sites`` those at any of them;
        ``kind`` those the board or the report calls so. Every filter is SQL, so that
        ``limit`` rows are all that is read (the API's list is open to any reader)."""
        if sites is not None and not sites:
            # At none of no sites (a partner with none): nothing, and no query to plan (an
            # always-false term beside ``INDEXED BY`` is "no query solution" to SQLite).
            return []
        where: list[str] = []
        params: list[Any] = []
        if open_only:
            where.append("o.end IS NULL")
        if closed_only:
            where.append("o.end IS NOT NULL")
        if sites is not None:
            where.append(f"o.site IN ({','.join('?' * len(sites))})")
            params += list(sites)
        if kind is not None:
            where.append(
                "(" + self._KINDS[kind].format(P="COALESCE(a.planned, o.planned, 0)") + ")"
            )
        if end is not None:
            where.append("o.start < ?")
            params.append(to_us(end))
        if start is not None:
            where.append("(o.end IS NULL OR o.end > ?)")
            params.append(to_us(start))
        for column, value in (("o.site", site), ("o.check_name", check), ("o.area", area)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        select = self._BOARD_SELECT
        if open_only:
            select = select.replace("FROM outages o", "FROM outages o INDEXED BY outages_open")
        sql = select + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY o.start DESC, o.id LIMIT ?"
        return [dict(r) for r in self.conn.execute(sql, [*params, int(limit)])]

    def board_rows(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """The outages with these ids, as ``board_outages`` gives them (any order)."""
        out: list[dict[str, Any]] = []
        wanted = list(dict.fromkeys(ids))
        for i in range(0, len(wanted), 500):  # under SQLite's limit on bound parameters
            chunk = wanted[i : i + 500]
            sql = self._BOARD_SELECT + f" WHERE o.id IN ({','.join('?' * len(chunk))})"
            cur = self._plain(sql, chunk)
            names = [d[0] for d in cur.description]
            out += [dict(zip(names, r, strict=True)) for r in cur]
        return out

    def board_outage(self, outage_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(self._BOARD_SELECT + " WHERE o.id=?", (outage_id,)).fetchone()
        return dict(row) if row is not None else None

    def recent_outages(self, limit: int) -> list[dict[str, Any]]:
        """The latest closed outages, newest end first (the board's "recent" list).

        Read per area backwards from the latest start, and only as far back as an outage
        could still end after the ``limit``-th latest end found (its start plus the area's
        longest outage): never the whole table."""
        limit = int(limit)
        best: list[tuple[int, str]] = []  # (end, id), latest first
        for area in self._areas():
            longest = self.conn.execute(
                "SELECT max(end - start) FROM outages WHERE area = ?", (area,)
            ).fetchone()[0]
            cursor: tuple[int, str] = (FOREVER, "")
            while True:
                rows = self.conn.execute(
                    "SELECT o.start, o.id, o.end FROM outages o WHERE o.area = ?"
                    " AND (o.start, o.id) < (?, ?) ORDER BY o.start DESC, o.id DESC LIMIT 200",
                    (area, *cursor),
                ).fetchall()
                for _start, oid, end in rows:
                    if end is not None:
                        best.append((int(end), oid))
                best.sort(reverse=True)
                del best[limit:]
                if len(rows) < 200:
                    break
                cursor = (int(rows[-1][0]), rows[-1][1])
                if len(best) == limit and cursor[0] + (longest or 0) < best[-1][0]:
                    break
        by_id = {r["id"]: r for r in self.board_rows(oid for _, oid in best)}
        return [by_id[oid] for _, oid in best if oid in by_id]

    def check_first_seen(self, site: str, check: str) -> str | None:
        """When this check was first recorded (an event or an imported outage), ISO UTC text:
        before it the history bars say "no data" rather than claim a 100% nobody measured."""
        row = self.conn.execute(
            "SELECT iso(min(t)) FROM (SELECT min(at) AS t FROM events WHERE site=? AND check_name=?"
            " UNION ALL SELECT min(start) FROM outages WHERE site=? AND check_name=?)",
            (site, check, site, check),
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def outage_events(self, outage_id: str) -> list[dict[str, Any]]:
        """What the probes saw: the check's events from the outage's start to its end (times
        as ISO UTC text)."""
        o = self.conn.execute(
            "SELECT site, agent, check_name, start, end FROM outages WHERE id=?", (outage_id,)
        ).fetchone()
        if o is None or o["agent"] is None or o["check_name"] is None:
            return []
        # Qualified names: ``at`` alone in ORDER BY would be the ISO alias, not the column.
        sql = (
            "SELECT e.id, e.seq, e.from_state, e.to_state, iso(e.at) AS at,"
            " iso(e.detected_at) AS detected_at, iso(e.received_at) AS received_at, e.evidence"
            " FROM events e WHERE e.site=? AND e.agent=? AND e.check_name=? AND e.at >= ?"
        )
        params: list[Any] = [o["site"], o["agent"], o["check_name"], o["start"]]
        if o["end"] is not None:
            sql += " AND e.at <= ?"
            params.append(o["end"])
        rows = self.conn.execute(sql + " ORDER BY e.at, e.seq LIMIT 500", params)
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

    # -- what really went down (issue 10): records with who and when, and as-of reads ------
    # Nothing here changes a record in place: a window is cancelled by a cancellation record,
    # a not-monitored record's end is written once. ``as_of`` reads keep only what had been
    # recorded (received, imported, annotated, declared) by then.

    def _import_version(self, row: Mapping[str, Any], recorded: str) -> None:
        self.conn.execute(
            "INSERT INTO import_history VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row["id"],
                recorded,
                row["site"],
                row.get("agent"),
                row.get("check_name"),
                row["area"],
                row["state"],
                iso_to_us(row["start"]),
                iso_to_us(row["end"]) if row["end"] is not None else None,
                row["planned"],
                row.get("cause"),
                row.get("provider"),
                row.get("note"),
            ),
        )

    def declare_window(
        self,
        start: datetime,
        end: datetime,
        scope: Mapping[str, Any],
        reason: str | None,
        by: str,
        at: datetime,
    ) -> dict[str, Any]:
        """A one-off maintenance window, recorded with who and when. The same window (same
        start, end and scope) already declared and not cancelled is refused: DuplicateWindow,
        and nothing is written. Its reason and who declared it do not make it another one."""
        stored_scope = json.dumps(dict(scope), sort_keys=True)
        wanted = _scope_key(json.loads(stored_scope))
        with self._tx():
            same_times = self.conn.execute(
                self._WINDOW_SELECT + " WHERE w.start=? AND w.end=? AND c.n IS NULL ORDER BY w.n",
                (to_iso(start), to_iso(end)),
            ).fetchall()
            for row in same_times:
                if _scope_key(json.loads(row["scope"])) == wanted:
                    raise DuplicateWindow(_window_row(row))
            self._invalidate_figures(to_us(start))
            cur = self.conn.execute(
                "INSERT INTO maintenance_windows (start, end, scope, reason, by, recorded_at)"
                " VALUES (?,?,?,?,?,?)",
                (to_iso(start), to_iso(end), stored_scope, reason, by, to_iso(at)),
            )
        self.window_writes += 1
        found = self.window(f"m:{cur.lastrowid}")
        assert found is not None
        return found

    def cancel_window(
        self, window_id: str, by: str, at: datetime, reason: str | None
    ) -> WindowCancellation:
        """Cancel a declared window (a record of its own). A window is cancelled once: the
        first cancellation stands, and cancelling it again writes nothing (ALREADY_CANCELLED,
        with that first cancellation's who and when)."""
        n = _window_n(window_id)
        with self._tx():
            row = (
                None
                if n is None
                else self.conn.execute(
                    "SELECT w.start, c.by, c.at, c.reason FROM maintenance_windows w"
                    " LEFT JOIN maintenance_cancellations c ON c.n = w.n WHERE w.n=?",
                    (n,),
                ).fetchone()
            )
            if row is None:
                return WindowCancellation(CancelOutcome.NO_SUCH_WINDOW, window_id)
            if row["at"] is not None:
                return WindowCancellation(
                    CancelOutcome.ALREADY_CANCELLED, f"m:{n}", row["by"], row["at"], row["reason"]
                )
            self._invalidate_figures(iso_to_us(row["start"]))
            self.conn.execute(
                "INSERT INTO maintenance_cancellations VALUES (?,?,?,?)",
                (n, by, to_iso(at), reason),
            )
        self.window_writes += 1
        return WindowCancellation(CancelOutcome.CANCELLED, f"m:{n}", by, to_iso(at), reason)

    _WINDOW_SELECT = (
        "SELECT 'm:' || w.n AS id, w.start, w.end, w.scope, w.reason, w.by, w.recorded_at,"
        " c.at AS cancelled_at, c.by AS cancelled_by"
        " FROM maintenance_windows w LEFT JOIN maintenance_cancellations c ON c.n = w.n"
    )

    def window(self, window_id: str) -> dict[str, Any] | None:
        n = _window_n(window_id)
        row = self.conn.execute(self._WINDOW_SELECT + " WHERE w.n=?", (n,)).fetchone()
        return _window_row(row) if row is not None else None

    def windows(
        self, start: datetime, end: datetime, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Declared windows overlapping ``[start, end)`` as recorded by ``as_of`` (a window
        cancelled by then is left out; one cancelled later is in)."""
        sql = self._WINDOW_SELECT + " WHERE w.start < ? AND w.end > ?"
        params: list[Any] = [to_iso(end), to_iso(start)]
        if as_of is not None:
            sql += " AND w.recorded_at <= ?"
            params.append(to_iso(as_of))
        rows = [_window_row(r) for r in self.conn.execute(sql + " ORDER BY w.n", params)]
        cut = to_iso(as_of) if as_of is not None else None
        return [
            r
            for r in rows
            if r["cancelled_at"] is None or (cut is not None and r["cancelled_at"] > cut)
        ]

    def open_not_monitored(
        self, site: str, agent: str, start: datetime, at: datetime, why: str
    ) -> None:
        """The agent has not been heard from since ``start`` (one open record per agent)."""
        with self._tx():
            if self.conn.execute(
                "SELECT 1 FROM not_monitored WHERE agent=? AND end IS NULL", (agent,)
            ).fetchone():
                return
            self._invalidate_figures(to_us(start))
            self.conn.execute(
                "INSERT INTO not_monitored (site, agent, start, recorded_at, why)"
                " VALUES (?,?,?,?,?)",
                (site, agent, to_iso(start), to_iso(at), why),
            )
        self.not_monitored_writes += 1

    def close_not_monitored(self, agent: str, end: datetime, at: datetime) -> int:
        with self._tx():
            for (start,) in self.conn.execute(
                "SELECT start FROM not_monitored WHERE agent=? AND end IS NULL", (agent,)
            ).fetchall():
                self._invalidate_figures(iso_to_us(start))
            cur = self.conn.execute(
                "UPDATE not_monitored SET end=?, ended_at=? WHERE agent=? AND end IS NULL",
                (to_iso(end), to_iso(at), agent),
            )
        if cur.rowcount:
            self.not_monitored_writes += 1
        return cur.rowcount

    def provisional_dropped(self, agent: str, at: datetime) -> None:
        """The agent's replay replaced its provisional outage: remembered for ``--as-of``."""
        with self._tx():
            self.conn.execute(
                "UPDATE not_monitored SET dropped_at=? WHERE agent=? AND dropped_at IS NULL",
                (to_iso(at), agent),
            )

    def not_monitored(
        self, start: datetime, end: datetime, as_of: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Not-monitored records overlapping ``[start, end)``; as recorded by ``as_of`` (an
        end written later is not known yet: the record is open then)."""
        sql = "SELECT * FROM not_monitored WHERE start < ? AND (end IS NULL OR end > ?)"
        params: list[Any] = [to_iso(end), to_iso(start)]
        if as_of is not None:
            sql += " AND recorded_at <= ?"
            params.append(to_iso(as_of))
        out = []
        for r in self.conn.execute(sql + " ORDER BY n", params):
            row = dict(r)
            if (
                as_of is not None
                and row["ended_at"] is not None
                and row["ended_at"] > to_iso(as_of)
            ):
                row["end"] = None
                row["dropped_at"] = None
            if (
                as_of is not None
                and row["dropped_at"] is not None
                and row["dropped_at"] > to_iso(as_of)
            ):
                row["dropped_at"] = None
            out.append(row)
        return out

    def outages_as_of(
        self, start: datetime, end: datetime, as_of: datetime
    ) -> list[dict[str, Any]]:
        """The outages overlapping ``[start, end)`` as they stood at ``as_of``: derived
        again from the events received by then, imports as imported by then, annotations
        as made by then, and the provisional outages then open (from the not-monitored
        records). Same shape as ``outages_between``."""
        cut = to_iso(as_of)
        lo, hi = to_us(start), to_us(end)
        notes = self.annotations_as_of(as_of)
        out: list[dict[str, Any]] = []
        rows = self.conn.execute(
            "SELECT id, seq, site, agent, check_name, area, from_state, to_state, at,"
            " detected_at FROM events WHERE received_at <= ? AND at < ?"
            " ORDER BY site, agent, check_name, at, seq",
            (to_us(as_of), hi),
        ).fetchall()
        by_check: dict[tuple[str, str, str], list[Any]] = {}
        for r in rows:
            by_check.setdefault((r["site"], r["agent"], r["check_name"]), []).append(r)
        for (site, agent, check), evs in by_check.items():
            state = evs[-1]["to_state"]  # each event leaves its check in its "to" state
            if state != State.UP:
                # An outage still open at the period's end: read on to the event that ended
                # it, if received by then, so that it shows its real end as the live report
                # does (its minutes are clipped to the period all the same).
                evs += self._ending((site, agent, check), hi, as_of, state)
            detected = {e["id"]: e["detected_at"] for e in evs}
            area = evs[-1]["area"]
            for iv in derive_intervals(
                (e["id"], e["seq"], e["from_state"], e["to_state"], e["at"]) for e in evs
            ):
                if (iv.end is not None and iv.end <= lo) or iv.start >= hi:
                    continue
                out.append(
                    {
                        "id": f"o:{iv.start_event}",
                        "site": site,
                        "agent": agent,
                        "check_name": check,
                        "area": area,
                        "state": iv.state,
                        "start": us_to_iso(iv.start),
                        "end": _iso(iv.end),
                        "source": "agent",
                        "planned": 0,
                        "cause": None,
                        "provider": None,
                        "note": None,
                        "detected_at": _iso(detected.get(iv.start_event)),
                    }
                )
        imports = self.conn.execute(
            "SELECT h.* FROM import_history h WHERE (h.recorded_at IS NULL OR h.recorded_at <= ?)"
            " AND h.start < ? AND (h.end IS NULL OR h.end > ?) ORDER BY h.outage_id,"
            " h.recorded_at IS NOT NULL, h.recorded_at, h.rowid",
            (cut, hi, lo),
        ).fetchall()
        latest: dict[str, dict[str, Any]] = {}
        for r in imports:
            latest[r["outage_id"]] = {
                **dict(r),
                "id": r["outage_id"],
                "source": "import",
                "start": us_to_iso(r["start"]),
                "end": _iso(r["end"]),
            }
        for r in latest.values():
            r.pop("outage_id", None)
            r.pop("recorded_at", None)
            out.append(r)
        for nm in self.not_monitored(start, end, as_of):
            if nm["why"] != "offline" or nm["dropped_at"] is not None:
                continue
            out.append(
                {
                    "id": f"p:{nm['agent']}:{nm['start']}",
                    "site": nm["site"],
                    "agent": nm["agent"],
                    "check_name": "site-unreachable",
                    "area": NETWORK_AREA,
                    "state": "down",
                    "start": nm["start"],
                    "end": None,
                    "source": "provisional",
                    "planned": 0,
                    "cause": "site unreachable: agent offline",
                    "provider": None,
                    "note": None,
                }
            )
        for r in out:
            a = notes.get(r["id"])
            if a is not None:
                for key in ("cause", "provider", "note", "planned"):
                    if a.get(key) is not None:
                        r[key] = a[key]
        out.sort(key=lambda r: (r["start"], r["id"]))
        return out

    def _ending(self, key: tuple[str, str, str], hi: int, as_of: datetime, state: str) -> list[Any]:
        """A check's events from ``hi`` (µs) on, received by ``as_of``, up to the first that
        ends an outage in ``state`` (``derive_intervals``), in time order: a cursor read no
        further than it, however long the check's history after it."""
        ending: list[Any] = []
        for e in self.conn.execute(
            "SELECT id, seq, site, agent, check_name, area, from_state, to_state, at,"
            " detected_at FROM events WHERE site=? AND agent=? AND check_name=? AND at >= ?"
            " AND received_at <= ? ORDER BY at, seq",
            (*key, hi, to_us(as_of)),
        ):
            ending.append(e)
            if not restates(state, e["from_state"], e["to_state"]):
                break
        return ending

    def annotations_as_of(self, as_of: datetime) -> dict[str, dict[str, Any]]:
        """Each outage's annotation folded from its history up to ``as_of``."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.conn.execute(
            "SELECT * FROM annotation_history WHERE at <= ? ORDER BY outage_id, at, rowid",
            (to_iso(as_of),),
        ):
            cur = out.setdefault(r["outage_id"], {})
            for key in ("cause", "provider", "note", "planned"):
                if r[key] is not None:
                    cur[key] = r[key]
        return out

    def detected_at(self, event_ids: Sequence[str]) -> dict[str, str]:
        """When each of these events was detected (the end of an outage's confirmation)."""
        out: dict[str, str] = {}
        ids = list(event_ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                f"SELECT id, iso(detected_at) AS detected_at FROM events WHERE id IN ({marks})",
                chunk,
            ):
                out[r["id"]] = r["detected_at"]
        return out

    def outage_records_us(self, start: datetime, end: datetime) -> Iterator[tuple[Any, ...]]:
        """The outages overlapping ``[start, end)`` (annotations applied) with when each
        failure was declared (``detected``, kept on the row from its start event's
        ``detected_at``: no join into the events, for the confirmation class),
        as plain tuples in ``collector.accounting.Outage``'s field order, times in
        microseconds as stored: the report reads every row of a period, so no text is
        formatted and parsed back and no dict is built per row. In no particular order: the
        accounting orders what it needs; and as they come, not as a list, so a million of them
        are never held twice."""
        sql = f"{self._RECORD_SELECT} WHERE o.start < ? AND (o.end IS NULL OR o.end > ?)"
        return iter(self._plain(sql, (to_us(end), to_us(start))))

    _RECORD_SELECT = (
        "SELECT o.id, o.site, NULLIF(o.check_name, ''), o.area, o.state, o.start, o.end,"
        " COALESCE(a.planned, o.planned, 0) != 0,"
        " NULLIF(COALESCE(a.cause, o.cause), ''), NULLIF(COALESCE(a.provider, o.provider), ''),"
        " NULLIF(COALESCE(a.note, o.note), ''), COALESCE(NULLIF(o.source, ''), 'agent'),"
        " o.detected, NULLIF(o.agent, '')"
        " FROM outages o LEFT JOIN annotations a ON a.outage_id = o.id"
    )

    def outage_records_starting(
        self, after: int | None, before: int, reach: int
    ) -> Iterator[tuple[Any, ...]]:
        """``outage_records_us`` of the outages that start in ``[after, before)`` µs (any
        time before when ``after`` is None) and end after ``reach`` (or are open): a period
        read a day at a time, each day a range of the ``(area, start)`` index."""
        sql = (
            f"{self._RECORD_SELECT} WHERE o.area IN (SELECT DISTINCT area FROM outages)"
            " AND o.start >= ? AND o.start < ? AND (o.end IS NULL OR o.end > ?)"
        )
        return iter(self._plain(sql, (-FOREVER if after is None else after, before, reach)))

    def outage_records_by_id(self, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """``outage_records_us`` of these outages."""
        out: list[tuple[Any, ...]] = []
        for n in range(0, len(ids), 500):
            chunk = ids[n : n + 500]
            marks = ",".join("?" * len(chunk))
            out += self._plain(f"{self._RECORD_SELECT} WHERE o.id IN ({marks})", chunk)
        return out

    def record_rules(self, digest: str, rules: str, at: datetime) -> bool:
        """Remember the accounting rules in force from ``at``, when they changed: their
        digest, or only their text. The digest is over the sorted rules; the text keeps the
        config's order, which a report ``--as-of`` lays its areas and partners out in
        (``collector.rules.stored``), so a config that only lists them in another order is
        a version of its own with the same digest, and so, once, is the first recording of
        rules last recorded sorted (before the text kept the order)."""
        with self._tx():
            last = self.conn.execute(
                "SELECT digest, rules FROM rules_versions ORDER BY n DESC LIMIT 1"
            ).fetchone()
            if last is not None and last[0] == digest and last[1] == rules:
                return False
            self.conn.execute(
                "INSERT INTO rules_versions (digest, recorded_at, rules) VALUES (?,?,?)",
                (digest, to_iso(at), rules),
            )
        return True

    def rules_at(self, at: datetime) -> tuple[str, str, str] | None:
        """(digest, recorded_at, rules JSON) of the rules in force at ``at``."""
        row = self.conn.execute(
            "SELECT digest, recorded_at, rules FROM rules_versions WHERE recorded_at <= ?"
            " ORDER BY recorded_at DESC, n DESC LIMIT 1",
            (to_iso(at),),
        ).fetchone()
        return (row[0], row[1], row[2]) if row is not None else None


def _away_keys(away: Collection[tuple[str, str]]) -> str:
    """``Store._away``'s parameter: each check as site and name joined by a unit separator
    (a character no config name holds), as JSON for ``json_each``."""
    return json.dumps([f"{site}\x1f{check}" for site, check in away])


def _window_n(window_id: str) -> int | None:
    text = window_id.removeprefix("m:")
    return int(text) if text.isdigit() else None


def _window_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["scope"] = json.loads(out["scope"])
    return out


def _scope_key(scope: Mapping[str, Any]) -> str:
    """What a window's scope means, as text to compare: a list's order and repeats mean
    nothing, and an empty list means what a list left out means (everything)."""
    out: dict[str, Any] = {}
    for key, value in scope.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            if not value:
                continue
            value = sorted(set(value))
        out[key] = value
    return json.dumps(out, sort_keys=True)


class DuplicateWindow(StoreError):
    """``Store.declare_window``: the same window (start, end and scope) is already declared
    and not cancelled; nothing was written. ``existing`` is that window, as ``Store.window``
    reads it."""

    exit_code = EXIT_USAGE

    def __init__(self, existing: dict[str, Any]) -> None:
        self.existing = existing
        self.existing_id: str = existing["id"]
        super().__init__(f"the same window is already declared: {self.existing_id}")


class CancelOutcome(enum.Enum):
    """What ``Store.cancel_window`` did."""

    #: Cancelled now: the cancellation is recorded.
    CANCELLED = "cancelled"
    #: Cancelled before: nothing written; the first cancellation stands.
    ALREADY_CANCELLED = "already cancelled"
    #: No declared window has that id: nothing written.
    NO_SUCH_WINDOW = "no such window"


@dataclass(frozen=True)
class WindowCancellation:
    """``Store.cancel_window``'s answer. ``by``, ``at`` (ISO 8601 UTC, as stored) and
    ``reason`` are the cancellation in force: this one (CANCELLED) or the first one
    (ALREADY_CANCELLED); None when there is no such window. ``window_id`` is the window's
    id (``m:N``), or the id as given when there is no such window."""

    outcome: CancelOutcome
    window_id: str
    by: str | None = None
    at: str | None = None
    reason: str | None = None


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


def written_board_row(raw: Sequence[Any]) -> dict[str, Any]:
    """What ``Store.board_rows`` reads back for a row of ``Changes.rows``: an outage that
    events in order wrote, never annotated (its id is its new start event's)."""
    oid, site, agent, check, area, state, start, end, start_event, end_event, _ = raw
    return {
        "id": oid,
        "site": site,
        "agent": agent,
        "check_name": check,
        "area": area,
        "state": state,
        "start": us_to_iso(start),
        "end": us_to_iso(end) if end is not None else None,
        "source": "agent",
        "planned": 0,
        "cause": None,
        "provider": None,
        "note": None,
        "start_event": start_event,
        "end_event": end_event,
        "annotated_at": None,
        "annotated_by": None,
    }
