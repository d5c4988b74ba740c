"""The agent's on-disk spool: every event is committed here before it is published and
deleted only when every collector it must reach has confirmed, on its ``ack`` topic, that the
event is committed (issue 8). A broker's PUBACK deletes nothing: a broker crash, a cut WAN
link, a collector's full disk or ``kill -9`` of anything loses nothing.

``seq`` is assigned in the same transaction that stores the event, so it survives restarts
and is never reused: each time the spool is opened it numbers on from the current time in
milliseconds when that is past its last seq, as a new spool does, so a spool rolled back (a
host restored from a snapshot, a -wal lost) never numbers a new event with a seq it already
sent. A seq dropped at the cap stays as a *drop* (no payload) until the collectors confirm
they know of it, so they never count it as missing. SQLite runs on one dedicated thread,
never on the event loop.

A spool that cannot be written (a full disk, an I/O error, a read-only file system) loses
nothing and stops nothing: each transition it cannot take waits in memory, in order, and is
written, still in order, as soon as it can be (``keep_writing``); one that comes meanwhile
waits behind them. A corrupt spool is a ``SpoolError`` that names the file and what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeVar

from availmon.errors import StartupError
from availmon.schema import MAX_SPOOL_ERROR, Event, Evidence, State, event_id
from availmon.text import one_line

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Transitions held in memory while the spool cannot be written, at most (or its cap, if
#: lower); past it the spool's own rule applies: the oldest superseded intermediate state
#: goes, an outage's start or end never does. About 0.7 KB each (7 MB at 10,000).
MAX_UNWRITTEN = 10_000
#: Held transitions written per transaction once the spool can be written again.
FLUSH_CHUNK = 200
#: Seconds before the first retry of a spool that could not be written, doubling up to
#: ``RETRY_MAX``.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0


class SpoolError(StartupError):
    """The spool cannot be used (corrupt, not a spool, or it cannot be opened): the message
    names the file and what to do."""


#: SQLite's primary result codes (``sqlite_errorname`` starts with one) for a fault of the
#: spool's surroundings, which passes (space is freed, a lock is let go): the spool waits.
_ENVIRONMENT = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_READONLY",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
)
_CORRUPT = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
#: The same, from the message, for an error that carries no name.
_ENVIRONMENT_TEXT = ("disk is full", "i/o error", "readonly", "locked", "unable to open")


def _fault(exc: BaseException) -> Literal["environment", "corrupt"] | None:
    """What a failure of the spool's database says: the file is damaged (``corrupt``), its
    surroundings are at fault (``environment``: a full disk...), or neither (a bug)."""
    if not isinstance(exc, sqlite3.Error):
        return None
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith(_CORRUPT):
        return "corrupt"
    if name.startswith(_ENVIRONMENT):
        return "environment"
    text = str(exc).lower()
    if "malformed" in text or "not a database" in text:
        return "corrupt"
    if any(n in text for n in _ENVIRONMENT_TEXT):
        return "environment"
    return None


def _hint(exc: sqlite3.Error) -> str:
    """What to do about an environment fault, from SQLite's own name for it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    if name.startswith("SQLITE_FULL") or name == "SQLITE_IOERR_SHMSIZE":
        return "its file system is full: free space on it"
    if name.startswith("SQLITE_READONLY"):
        return "it or its file system is read-only: make it writable"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return "another process holds it (a second agent with the same agent.state_dir?)"
    if name.startswith("SQLITE_CANTOPEN"):
        return "check agent.state_dir and its permissions"
    return "its file system may be full or failing: check it"


def _error_text(exc: sqlite3.Error) -> str:
    """A write failure as the heartbeat's ``spool_error`` carries it: SQLite's message and
    its name for it, on one printable line (a path in it may hold anything), bounded."""
    return one_line(f"{exc} ({getattr(exc, 'sqlite_errorname', '?')})")[:MAX_SPOOL_ERROR]


def _corrupt_message(path: Path, exc: BaseException) -> str:
    return (
        f"spool {path} is corrupt or not an availmon spool: {exc}; move it aside (with its"
        " -wal and -shm files) to start a new one: the events it held that the collectors"
        " had not confirmed are lost, every other one was delivered"
    )


def _open_error(path: Path, exc: sqlite3.Error, doing: str = "opened") -> SpoolError:
    """The start-up error for a spool that cannot be made or opened, naming it."""
    if _fault(exc) == "corrupt":
        return SpoolError(_corrupt_message(path, exc))
    hint = f": {_hint(exc)}, then start the agent again" if _fault(exc) else ""
    return SpoolError(f"spool {path} cannot be {doing}: {exc}{hint}")


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
    dropped: int  # dropped at the cap since the spool was made (held in memory too)
    first_seq: int
    unconfirmed: dict[str, int]  # per required collector: held seqs it has not confirmed
    #: Transitions held in memory, not yet written (the spool could not take them).
    unwritten: int = 0
    #: Why the last write failed, while the spool cannot be written (None once it can).
    error: str | None = None


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


def _start_seq(conn: sqlite3.Connection, origin: int) -> None:
    # A new spool starts seq at the current time in milliseconds, so that an agent whose
    # spool was lost or reinstalled never reuses an id it already sent.
    conn.execute("INSERT OR IGNORE INTO meta VALUES ('seq', ?), ('dropped', 0)", (origin,))
    # The first seq this spool assigns (an older spool: its next one).
    conn.execute("INSERT OR IGNORE INTO meta SELECT 'first', value + 1 FROM meta WHERE key='seq'")


def _create(path: Path, clock: Callable[[], float]) -> bool:
    """A new spool, made whole in a file of its own and linked into place: a spool file
    that holds no spool is then never one an agent was starting, always one that lost its
    events (``_held``). Linked, not renamed: a second process starting on the same path
    meanwhile (a misconfiguration) takes the first one's spool rather than replacing it
    under it. True when this call made it."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.new")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            _start_seq(conn, int(clock() * 1000))
            first = conn.execute("SELECT value FROM meta WHERE key='first'").fetchone()[0]
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        log.info("new spool %s: its first event will be seq %d", path, first)
        return True
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


_DOWNISH = (State.DOWN, State.DEGRADED)


@dataclass(frozen=True, slots=True)
class _Unwritten:
    """A transition the spool could not take yet: an event without its seq (that is given
    when it is written, so seqs stay in the order transitions happened)."""

    check: str
    area: str
    from_: State
    to: State
    at: datetime
    detected_at: datetime
    evidence: Evidence

    def droppable(self, mergeable: frozenset[str]) -> bool:
        """The spool's own rule at its cap (``Spool._enforce_cap``): a note that changes no
        state, or a change between down and degraded where degraded counts as down."""
        if self.from_ == self.to:
            return self.from_ is not State.UNKNOWN
        return self.from_ in _DOWNISH and self.to in _DOWNISH and self.check in mergeable


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
        #: Transitions the spool could not take yet, in order (touched on its thread only).
        self._unwritten: deque[_Unwritten] = deque()
        self.max_unwritten = min(max_events, MAX_UNWRITTEN)
        #: Dropped from ``_unwritten`` at its cap, not yet counted in the spool's ``dropped``.
        self._unwritten_dropped = 0
        #: While the spool cannot be written: since when (monotonic), the last failure's
        #: text (the heartbeat's ``spool_error``), and what is said once.
        self._fault_since: float | None = None
        self._error: str | None = None
        self._episode = {"held": 0, "dropped": 0}
        self._said: set[str] = set()
        self._waiting = asyncio.Event()  # something is held: ``keep_writing`` has work
        path.parent.mkdir(parents=True, exist_ok=True)
        created = False
        if not path.exists():
            try:
                created = _create(path, clock)
            except sqlite3.Error as exc:
                raise _open_error(path, exc, "created") from exc
            except OSError as exc:
                raise SpoolError(f"spool {path} cannot be created: {exc.strerror or exc}") from exc
        # Numbering goes on from the clock when it is past the last seq, as a new spool's
        # does: a spool rolled back since it last ran (a restored snapshot, a lost -wal)
        # holds a last seq below some it sent, and must not give those out again.
        self._origin: int | None = None if created else int(clock() * 1000)
        self._setup_due = True  # the first write numbers on and sweeps (``_setup``)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        try:
            self._conn = self._open()
        except BaseException:
            self._executor.shutdown()
            raise
        try:
            self._write([])
        except sqlite3.Error as exc:
            # A full disk: the agent starts, and numbers on at its first write that succeeds.
            # Another process holding the spool is a second agent on it: not started.
            name = getattr(exc, "sqlite_errorname", None) or ""
            if _fault(exc) != "environment" or name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
                self._executor.shutdown()
                self._conn.close()
                raise _open_error(path, exc) from exc
            self._failed(exc, "numbering at start")
        self._first_seq = self._read_first()
        self._closed = False

    def _connect(self, *, exclusive: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            if exclusive:
                conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            _held(conn, self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)  # an older spool's missing tables
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self) -> sqlite3.Connection:
        """The spool's connection. On a full disk SQLite cannot make the -shm file a WAL
        database is read through (SQLITE_IOERR_SHMSIZE; a clean stop removed it): the spool
        is then opened for this process alone, its WAL index in memory, so that the agent
        runs and holds its transitions until there is room, rather than not start."""
        try:
            return self._connect(exclusive=False)
        except sqlite3.Error as exc:
            name = getattr(exc, "sqlite_errorname", None) or ""
            if not name.startswith(("SQLITE_IOERR", "SQLITE_FULL")):
                raise _open_error(self.path, exc) from exc
            first = exc
        try:
            conn = self._connect(exclusive=True)
        except sqlite3.Error as exc:
            raise _open_error(self.path, first) from exc
        log.warning(
            "spool %s: %s (%s): opened for this agent alone (no other process can read it"
            " until the agent restarts); %s",
            self.path,
            first,
            getattr(first, "sqlite_errorname", "?"),
            _hint(first),
        )
        return conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, partial(fn, *args)
            )
        except sqlite3.Error as exc:
            if _fault(exc) == "corrupt":
                raise SpoolError(_corrupt_message(self.path, exc)) from exc
            raise

    def set_mergeable(self, mergeable: Iterable[str]) -> None:
        """The checks whose area counts degraded as down (again, after a config reload)."""
        names = sorted(mergeable)
        self._mergeable = json.dumps(names)
        self._mergeable_set = frozenset(names)

    @property
    def first_seq(self) -> int:
        """The first seq of this spool's numbering (a batch's ``first_seq``)."""
        return self._first_seq

    @property
    def unwritten(self) -> int:
        """Transitions held in memory: the spool could not take them yet."""
        return len(self._unwritten)

    def close(self) -> None:
        """Stop the spool's thread, write what is held in memory if the spool now takes it
        (else say how much is lost with the process), and close."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        try:
            if self._unwritten:
                self._flush()
        except sqlite3.Error as exc:
            log.error("spool %s: %s", self.path, exc)
        if self._unwritten:
            log.error(
                "spool %s could not take %d transitions (%s): they are lost with this process"
                " (each is in this log, as the check's state change)",
                self.path,
                len(self._unwritten),
                self._error,
            )
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

    def _read_first(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key='first'").fetchone()
        return int(row[0]) if row is not None else self._meta("seq") + 1

    def _setup(self) -> tuple[int, int] | None:
        """Once per open, in the first write transaction: number on from the clock (a new
        spool's rule) when it is past the last seq, and settle every held seq against the
        required collectors (they may have changed since the last run). The jump, if any."""
        jump = None
        if self._origin is not None:
            _start_seq(self._conn, self._origin)  # an older spool's missing keys
            last = self._meta("seq")
            if self._origin > last:
                self._conn.execute("UPDATE meta SET value=? WHERE key='seq'", (self._origin,))
                self._conn.execute("UPDATE meta SET value=? WHERE key='first'", (self._origin + 1,))
                jump = (last, self._origin + 1)
        self._sweep_held()
        return jump

    def _insert(self, item: _Unwritten) -> Event:
        seq = self._meta("seq") + 1
        event = Event(
            id=event_id(self.agent, seq),
            seq=seq,
            site=self.site,
            agent=self.agent,
            check=item.check,
            area=item.area,
            from_=item.from_,
            to=item.to,
            at=item.at,
            detected_at=item.detected_at,
            evidence=item.evidence,
        )
        self._conn.execute("UPDATE meta SET value=? WHERE key='seq'", (seq,))
        self._conn.execute(
            "INSERT INTO events VALUES (?,?,?,?,?)",
            (seq, item.check, item.from_.value, item.to.value, event.to_json()),
        )
        self._enforce_cap()
        return event

    def _write(self, items: Sequence[_Unwritten]) -> list[Event]:
        """Store ``items`` in one transaction, seqs in their order; all or nothing."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            jump = self._setup() if self._setup_due else None
            events = [self._insert(item) for item in items]
            dropped = self._unwritten_dropped
            if dropped:
                self._conn.execute("UPDATE meta SET value=value+? WHERE key='dropped'", (dropped,))
            self._conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._unwritten_dropped -= dropped
        if self._setup_due:
            self._setup_due = False
            self._first_seq = self._read_first()
            if jump is not None:
                log.info(
                    "spool %s: numbering goes on from the clock at seq %d (the last one"
                    " stored was %d), so no seq it may already have sent is used again",
                    self.path,
                    jump[1],
                    jump[0],
                )
        return events

    def _append(self, item: _Unwritten) -> Event | None:
        """The event stored, or None: held in memory, behind any held before it."""
        if self._unwritten:
            self._hold(item)
            return None
        try:
            [event] = self._write([item])
        except sqlite3.Error as exc:
            if _fault(exc) != "environment":
                raise
            self._failed(exc, "writing a transition")
            self._hold(item)
            return None
        self._recovered()
        return event

    def _hold(self, item: _Unwritten) -> None:
        self._unwritten.append(item)
        self._episode["held"] += 1
        if len(self._unwritten) <= self.max_unwritten:
            return
        for i, held in enumerate(self._unwritten):
            if held.droppable(self._mergeable_set):
                del self._unwritten[i]
                self._unwritten_dropped += 1
                self._episode["dropped"] += 1
                self._once(
                    "cap",
                    logging.WARNING,
                    "spool %s: %d transitions held in memory, its cap: dropping superseded"
                    " intermediate states (first: %s %s -> %s at %s), never an outage's start"
                    " or end",
                    self.path,
                    self.max_unwritten,
                    held.check,
                    held.from_.value,
                    held.to.value,
                    held.at.isoformat(),
                )
                return
        self._once(
            "over",
            logging.WARNING,
            "spool %s: over its cap of %d transitions held in memory: nothing left that can"
            " be dropped without losing an outage start or end",
            self.path,
            self.max_unwritten,
        )

    def _flush(self) -> int:
        """Write the held transitions, in order, as far as the spool takes them; how many
        are still held."""
        chunk = FLUSH_CHUNK
        while self._unwritten:
            items = list(islice(self._unwritten, chunk))
            try:
                self._write(items)
            except sqlite3.Error as exc:
                if _fault(exc) != "environment":
                    raise
                if len(items) > 1:  # room for fewer, perhaps: one at a time
                    chunk = 1
                    continue
                self._failed(exc, "writing a transition")
                return len(self._unwritten)
            for _ in items:
                self._unwritten.popleft()
        self._recovered()
        return 0

    def _once(self, key: str, level: int, msg: str, *args: Any) -> None:
        """Say ``msg`` once while the spool cannot be written."""
        if key not in self._said:
            self._said.add(key)
            log.log(level, msg, *args)

    def _failed(self, exc: sqlite3.Error, doing: str) -> None:
        """The spool could not be written: said once per episode, with why."""
        if self._fault_since is None:
            self._fault_since = time.monotonic()
        # The latest failure, not the episode's first: a disk that was full and is now
        # read-only needs another fix.
        self._error = _error_text(exc)
        self._once(
            "failed",
            logging.ERROR,
            "spool %s cannot be written (%s, %s): %s; transitions wait in memory (up to %d)"
            " and are written in order once it can be; probing and heartbeats go on",
            self.path,
            self._error,
            doing,
            _hint(exc),
            self.max_unwritten,
        )

    def _recovered(self) -> None:
        if self._fault_since is None or self._unwritten:
            return
        log.warning(
            "spool %s can be written again after %.0f s: %d transitions held in memory"
            " meanwhile are written in order (%d superseded intermediate states dropped)",
            self.path,
            time.monotonic() - self._fault_since,
            self._episode["held"] - self._episode["dropped"],
            self._episode["dropped"],
        )
        self._fault_since = None
        self._error = None
        self._episode = {"held": 0, "dropped": 0}
        self._said.clear()

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
        try:
            self._conn.execute("BEGIN IMMEDIATE")
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
        except sqlite3.Error as exc:
            self._rollback()
            if _fault(exc) != "environment":
                raise
            # Nothing deleted: the events stay held, are published again and confirmed
            # again (idempotent) until the spool can record it.
            self._failed(exc, "recording a confirmation")
            return Confirmed([], [])
        except BaseException:
            self._rollback()
            raise
        self._recovered()
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

    def _sweep_held(self) -> None:
        """Settle every held seq against the current set of required collectors (in a
        write transaction)."""
        self._settle(0, 2**63 - 1)
        # Confirmations of seqs no longer held (a drop already settled) are noise.
        self._conn.execute(
            f"DELETE FROM confirmed WHERE seq NOT IN (SELECT seq FROM ({self._HELD}))"
        )

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
            self._meta("dropped") + self._unwritten_dropped,
            self._read_first(),
            self._unconfirmed(),
            len(self._unwritten),
            self._error,
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
    ) -> Event | None:
        """Store a transition as the next event; None when the spool cannot take it now: it
        is held in memory and written in order by ``keep_writing`` (a transition that comes
        while others are held waits behind them, so none overtakes another)."""
        item = _Unwritten(check, area, from_, to, at, detected_at, evidence)
        event: Event | None = await self._run(self._append, item)
        if event is None:
            self._waiting.set()
        return event

    async def flush(self) -> int:
        """Write what is held in memory, in order, as far as the spool takes it; how many
        transitions are still held."""
        left: int = await self._run(self._flush)
        if not left:
            self._waiting.clear()
            if self._unwritten:  # held again meanwhile
                self._waiting.set()
        return left

    async def keep_writing(
        self,
        written: Callable[[], object] = lambda: None,
    ) -> None:
        """Until cancelled: whenever transitions are held in memory, try to write them,
        ``RETRY_FIRST`` seconds later, then backing off (doubling up to ``RETRY_MAX``);
        ``written`` is called after each try (the publisher may have new events)."""
        delay = RETRY_FIRST
        while True:
            await self._waiting.wait()
            await asyncio.sleep(delay)
            left = await self.flush()
            written()
            delay = min(delay * 2, RETRY_MAX) if left else RETRY_FIRST

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
