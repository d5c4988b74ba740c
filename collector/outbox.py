"""The alerts' tables and the persistent outbox (issue 11): nothing lost, nothing twice.

The engine's decisions (``collector/alerts.py``) are applied here, on the collector's writer
thread, in one transaction with the messages they produce: an alert's row and its outbox
rows commit together. Every message has a key (outage, kind, route, channel), unique in the
table, so a step repeated after a crash queues nothing twice; a message is marked sent only
once its channel has taken it, and retried with exponential backoff until then, in order
per channel (a resolution never overtakes its alert). A channel that fails (a
``DeliveryError``: down, refusing, timing out) holds all its messages behind the failed one,
oldest first. A message its channel could not even try (an unexpected exception: a bug, or a
message the channel cannot compose) holds back only the later messages of its own outage on
that channel, so one such message never stops a channel: it is retried with the same backoff
and the failure is recorded and counted like any other. What the engine has not yet seen is
found again from the outages themselves: at start, every open or recently ended outage
without an alert gets one, so a ``kill -9`` between an outage's commit and its alert
forgets nothing.

The receiving end dedupes on the key: a crash between a channel's "accepted" and our commit
of "sent" is the one window in which a message can go twice, and it goes with the same key
(the webhook's ``Idempotency-Key``, Alertmanager's labels).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from availmon.clock import from_iso
from availmon.config import split_ref
from collector.accounting import from_us, to_us
from collector.alerts import (
    Alert,
    Context,
    Notice,
    OutageInfo,
    RouteState,
    depends_on_down,
    message,
    open_alert,
    step,
    suppressed,
)
from collector.standing import open_verdicts
from collector.store import Store

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (site, agent, check_name) of an outage's check

#: Outbox statuses: waiting for its first try, taken by the channel, last try failed (will
#: be tried again), or no longer worth saying (a repeat overtaken by the resolution).
PENDING, SENT, FAILED, CANCELLED = "pending", "sent", "failed", "cancelled"

#: How ``last_error`` starts for a try that raised something other than a DeliveryError
#: (whose reasons are the channels' own words: "HTTP 503", "SMTP: ...", "cannot connect").
UNEXPECTED = "unexpected error: "


def unexpected_error(exc: BaseException) -> str:
    """The ``last_error`` of a try that raised ``exc`` unexpectedly: its type only (its
    text may quote a secret, a webhook's URL; the traceback goes to the log)."""
    return f"{UNEXPECTED}{type(exc).__name__} (a bug; see the collector's log)"


def failed_unexpectedly(last_error: str | None) -> bool:
    return last_error is not None and last_error.startswith(UNEXPECTED)


def stored_time(value: Any) -> datetime | None:
    """A time as the store keeps it (ISO text, or integer microseconds)."""
    if value is None:
        return None
    if isinstance(value, int):
        return from_us(value)
    return from_iso(str(value))


def _us(dt: datetime | None) -> int | None:
    return to_us(dt) if dt is not None else None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    key: str
    outage_id: str | None
    channel: str
    kind: str
    payload: dict[str, Any]
    due: datetime
    attempts: int
    status: str
    last_error: str | None = None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> OutboxRow:
        return cls(
            int(r["id"]),
            r["key"],
            r["outage_id"],
            r["channel"],
            r["kind"],
            json.loads(r["payload"]),
            from_us(int(r["due"])),
            int(r["attempts"]),
            r["status"],
            r["last_error"],
        )


class AlertBook:
    """Alerts and outbox in the collector's store; every method is one transaction and runs
    on the writer thread (``Collector.write``)."""

    def __init__(self, store: Store, ctx: Context, board_url: str) -> None:
        self.store = store
        self.ctx = ctx
        self.board_url = board_url

    # -- the engine's step ---------------------------------------------------------------

    def sync(self, keys: Iterable[Key] | None, now: datetime) -> tuple[int, int]:
        """Give every new outage of ``keys`` (None: of the whole store, at start) its alert,
        bring every open alert up to date at ``now``, and queue what they say. Returns the
        number of messages queued and of alerts still open."""
        with self.store.transaction():
            return self._sync(keys, now)

    def _sync(self, keys: Iterable[Key] | None, now: datetime) -> tuple[int, int]:
        conn = self.store.conn
        queued = 0
        for row in self._new_outages(keys):
            info = self._info(row)
            alert = open_alert(self.ctx, info, now, recent_starts=self._recent_starts(info))
            if alert is None:
                continue
            self._save(alert)
            log.info(
                "alert %s: %s %s at %s, routes %s",
                alert.outage_id,
                alert.check or "site",
                alert.state,
                alert.site,
                ", ".join(r.route for r in alert.routes) or "none (no route matches)",
            )
        alerts = [
            a
            for a in (
                self._load(r)
                for r in conn.execute("SELECT * FROM alerts WHERE status='open' ORDER BY start")
            )
            if a is not None
        ]
        outages = {a.outage_id: self._outage(a.outage_id) for a in alerts}
        # The report's own rules at ``now`` (windows, dependencies, quorum), as the board
        # shows them: only worked out while an alert is open.
        verdicts = open_verdicts(self.store, self.ctx.estate, now) if alerts else {}
        parents: dict[tuple[str, str], list[str]] = {}
        still_open = 0
        for current in outages.values():
            if current is not None and current.end is None and current.check is not None:
                reason = verdicts.get(current.id)
                key: tuple[str, str] | None
                if reason is not None and reason.kind == "unreachable":
                    key = split_ref(current.site, reason.ref)
                else:
                    parent = depends_on_down(current)
                    key = (current.site, parent) if parent is not None else None
                if key is not None:
                    named = parents.setdefault(key, [])
                    dependent = (
                        current.check
                        if key[0] == current.site
                        else f"{current.check} at {current.site}"
                    )
                    if dependent not in named:
                        named.append(dependent)
        for alert in alerts:
            outage = outages[alert.outage_id]
            why = suppressed(outage, verdicts.get(outage.id)) if outage is not None else None
            after, notices = step(self.ctx, alert, outage, now, why)
            if outage is None and after.status == "resolved":
                after.end = now
                log.info("alert %s: its outage was revised away; resolved", alert.outage_id)
            if after != alert:
                self._save(after)
            deps = parents.get((alert.site, alert.check or ""), [])
            for notice in notices:
                queued += self._enqueue(after, outage, notice, now, deps)
            still_open += after.status == "open"
        return queued, still_open

    def _new_outages(self, keys: Iterable[Key] | None) -> list[dict[str, Any]]:
        """Outages (of these checks) with no alert yet."""
        select = Store._BOARD_SELECT + (
            " WHERE NOT EXISTS (SELECT 1 FROM alerts x WHERE x.outage_id = o.id)"
            " AND o.source IN ('agent', 'provisional')"
        )
        rows: list[dict[str, Any]] = []
        conn = self.store.conn
        if keys is None:
            # Once, at start: everything not yet seen (a crash between commit and alert);
            # what ended too long ago is recorded as late by the engine, and not sent.
            return [dict(r) for r in conn.execute(select + " ORDER BY o.start")]
        for key in sorted(set(keys)):
            rows += [
                dict(r)
                for r in conn.execute(
                    select + " AND o.site=? AND o.agent=? AND o.check_name=? ORDER BY o.start",
                    key,
                )
            ]
        return rows

    def _info(self, row: Mapping[str, Any]) -> OutageInfo:
        evidence: Mapping[str, Any] = {}
        if row.get("start_event"):
            evidence = self.store.start_evidence([row["start_event"]]).get(row["start_event"], {})
        start = stored_time(row["start"])
        assert start is not None
        return OutageInfo(
            row["id"],
            row["site"],
            row.get("agent"),
            row.get("check_name"),
            row["area"],
            row["state"],
            start,
            stored_time(row.get("end")),
            row.get("source") or "agent",
            bool(row.get("planned")),
            row.get("cause"),
            row.get("provider"),
            row.get("note"),
            evidence,
        )

    def _outage(self, outage_id: str) -> OutageInfo | None:
        row = self.store.board_outage(outage_id)
        return self._info(row) if row is not None else None

    def _recent_starts(self, info: OutageInfo) -> int:
        """Outages of the same check that began within ``flap_window`` before this one."""
        window = timedelta(seconds=self.ctx.config.flap_window)
        rows = self.store.conn.execute(
            "SELECT id, start FROM outages WHERE site=? AND agent IS ? AND check_name IS ?"
            " AND source IN ('agent', 'provisional') AND state IN ('down', 'degraded')",
            (info.site, info.agent, info.check),
        )
        count = 0
        for oid, start in rows:
            t = stored_time(start)
            if oid != info.id and t is not None and info.start - window <= t <= info.start:
                count += 1
        return count

    # -- rows ----------------------------------------------------------------------------

    def _save(self, a: Alert) -> None:
        self.store.conn.execute(
            "INSERT INTO alerts (outage_id, site, check_name, area, state, severity, start,"
            " end, created_at, status, routes, suppressed, flapping, acked_at, acked_by, due)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(outage_id) DO UPDATE SET"
            " end=excluded.end, status=excluded.status, routes=excluded.routes,"
            " suppressed=excluded.suppressed, due=excluded.due",
            (
                a.outage_id,
                a.site,
                a.check,
                a.area,
                a.state,
                a.severity,
                to_us(a.start),
                _us(a.end),
                to_us(a.created_at),
                a.status,
                json.dumps([r.to_json() for r in a.routes]),
                a.suppressed,
                int(a.flapping),
                _us(a.acked_at),
                a.acked_by,
                _us(a.due()),
            ),
        )

    def _load(self, r: Mapping[str, Any]) -> Alert | None:
        known = {route.name for route in self.ctx.config.routes}
        routes = [RouteState.from_json(x) for x in json.loads(r["routes"] or "[]")]
        dropped = [x.route for x in routes if x.route not in known]
        if dropped:
            log.warning(
                "alert %s: route(s) %s no longer in the config", r["outage_id"], ", ".join(dropped)
            )
        start = from_us(int(r["start"])) if r["start"] is not None else None
        if start is None:
            return None
        return Alert(
            r["outage_id"],
            r["site"],
            r["check_name"],
            r["area"],
            r["state"],
            r["severity"] or "page",
            start,
            from_us(int(r["end"])) if r["end"] is not None else None,
            from_us(int(r["created_at"])),
            r["status"],
            [x for x in routes if x.route in known],
            r["suppressed"],
            bool(r["flapping"]),
            from_us(int(r["acked_at"])) if r["acked_at"] is not None else None,
            r["acked_by"],
        )

    def _enqueue(
        self,
        alert: Alert,
        outage: OutageInfo | None,
        notice: Notice,
        now: datetime,
        dependents: list[str],
    ) -> int:
        conn = self.store.conn
        oid = alert.outage_id
        route = self.ctx.route(notice.route)
        if notice.kind == "resolved":
            # A "still down" not yet delivered says nothing true any more.
            conn.execute(
                "UPDATE outbox SET status='cancelled' WHERE outage_id=? AND kind='repeat'"
                " AND status IN ('pending', 'failed')",
                (oid,),
            )
        queued = 0
        for channel in route.channels:
            if notice.kind == "firing":
                key = f"{oid}/firing/{channel}"
            elif notice.kind == "resolved":
                key = f"{oid}/resolved/{channel}"
                told = conn.execute(
                    "SELECT 1 FROM outbox WHERE outage_id=? AND channel=? AND kind IN"
                    " ('firing', 'escalation') AND status != 'cancelled'",
                    (oid, channel),
                ).fetchone()
                if told is None:
                    continue
            else:
                key = f"{oid}/{notice.kind}{notice.n}/{notice.route}/{channel}"
            payload = message(
                self.ctx,
                alert,
                outage,
                notice,
                now,
                board_url=self.board_url,
                dependents=dependents,
            )
            payload["key"] = key
            payload["channel"] = channel
            # Queued once per key. A message the other collector of a pair already delivered
            # (its receipt came first: a placeholder row, sent) only gets its content.
            cur = conn.execute(
                "INSERT INTO outbox (key, outage_id, channel, kind, payload, created_at, due,"
                " attempts, status) VALUES (?,?,?,?,?,?,?,0,'pending') ON CONFLICT(key) DO"
                " UPDATE SET payload=excluded.payload WHERE outbox.payload = '{}'",
                (key, oid, channel, notice.kind, json.dumps(payload), to_us(now), to_us(now)),
            )
            if (
                cur.rowcount
                and conn.execute("SELECT status FROM outbox WHERE key=?", (key,)).fetchone()[0]
                == PENDING
            ):
                queued += 1
        return queued

    # -- people --------------------------------------------------------------------------

    def acknowledge(self, outage_id: str, by: str, now: datetime) -> dict[str, Any] | None:
        """Someone is on it: repeats and escalations stop. None for an unknown alert."""
        with self.store.transaction():
            row = self.store.conn.execute(
                "SELECT acked_at FROM alerts WHERE outage_id=? AND status != 'before'",
                (outage_id,),
            ).fetchone()
            if row is None:
                return None
            if row["acked_at"] is None:
                self.store.conn.execute(
                    "UPDATE alerts SET acked_at=?, acked_by=? WHERE outage_id=?",
                    (to_us(now), by, outage_id),
                )
        return alert_detail(self.store, outage_id)

    # -- delivery ------------------------------------------------------------------------

    def peer_sent(self, peer: str, delivered: Iterable[Mapping[str, Any]], now: datetime) -> int:
        """The other collector of a pair delivered these: mark them sent here (before this
        engine has queued them, as placeholders it fills in), so that a hand-over never
        sends them again. Returns how many changed."""
        changed = 0
        with self.store.transaction():
            for d in delivered:
                cur = self.store.conn.execute(
                    "INSERT INTO outbox (key, outage_id, channel, kind, payload, created_at, due,"
                    " attempts, status, sent_at, last_error)"
                    " VALUES (?,?,?,?,'{}',?,?,0,'sent',?,?) ON CONFLICT(key) DO UPDATE SET"
                    " status='sent', sent_at=excluded.sent_at, last_error=excluded.last_error"
                    " WHERE outbox.status != 'sent'",
                    (
                        d["key"],
                        d.get("outage_id"),
                        d["channel"],
                        d["kind"],
                        to_us(now),
                        to_us(now),
                        to_us(now),
                        f"sent by {peer}",
                    ),
                )
                changed += cur.rowcount
        return changed

    def delivered(self, message_id: int, now: datetime) -> None:
        with self.store.transaction():
            self.store.conn.execute(
                "UPDATE outbox SET status='sent', sent_at=?, attempts=attempts+1,"
                " last_error=NULL WHERE id=?",
                (to_us(now), message_id),
            )

    def failed(self, message_id: int, now: datetime, error: str) -> datetime:
        """A try failed: when the next one is due (exponential backoff, capped; never given
        up: a channel that is down delays, never drops)."""
        cfg = self.ctx.config
        with self.store.transaction():
            row = self.store.conn.execute(
                "SELECT attempts FROM outbox WHERE id=?", (message_id,)
            ).fetchone()
            attempts = int(row["attempts"]) + 1 if row is not None else 1
            # 2 ** n as an int overflowed the float past ~1,000 tries (a week down at ten
            # minutes); retry_max is reached long before the 1,000th doubling.
            delay = min(cfg.retry_initial * 2.0 ** min(attempts - 1, 1000), cfg.retry_max)
            due = now + timedelta(seconds=delay)
            self.store.conn.execute(
                "UPDATE outbox SET status='failed', attempts=?, last_error=?, due=? WHERE id=?",
                (attempts, error[:500], to_us(due), message_id),
            )
        return due


# -- reads (any thread with its own connection) ------------------------------------------


def due_messages(store: Store, now: datetime, limit: int = 500) -> list[OutboxRow]:
    """Per channel, the messages that may go now, oldest first: a channel's queue stops at
    its first message that is not due yet (waiting out a backoff), so order is kept. A
    message waiting out a backoff after an unexpected error (:data:`UNEXPECTED`) stops only
    its own outage's later messages on that channel: the others go on, in order."""
    rows = store.conn.execute(
        "SELECT * FROM outbox WHERE status IN ('pending', 'failed') ORDER BY id LIMIT ?",
        (int(limit),),
    )
    blocked: set[str] = set()
    held: set[tuple[str, str]] = set()  # (channel, outage) behind an unexpected failure
    out: list[OutboxRow] = []
    for r in rows:
        m = OutboxRow.from_row(r)
        if m.channel in blocked or (m.channel, m.outage_id) in held:
            continue
        if m.due > now:
            if m.outage_id is not None and failed_unexpectedly(m.last_error):
                held.add((m.channel, m.outage_id))
            else:
                blocked.add(m.channel)
            continue
        out.append(m)
    return out


def next_due(store: Store) -> datetime | None:
    row = store.conn.execute(
        "SELECT min(due) FROM outbox WHERE status IN ('pending', 'failed')"
    ).fetchone()
    return from_us(int(row[0])) if row and row[0] is not None else None


def _summary(store: Store, outage_id: str) -> dict[str, int]:
    counts = {PENDING: 0, SENT: 0, FAILED: 0, CANCELLED: 0}
    for status, n in store.conn.execute(
        "SELECT status, count(*) FROM outbox WHERE outage_id=? GROUP BY status", (outage_id,)
    ):
        counts[status] = int(n)
    return counts


def delivery(a: Mapping[str, Any], counts: Mapping[str, int]) -> str:
    """One word for ``alerts list``: acknowledged, failed, pending, sent, or why nothing was
    sent (held: waiting, flapping or suppressed; none: no message was due)."""
    if a["acked_at"] is not None:
        return "acknowledged"
    if counts.get(FAILED):
        return "failed"
    if counts.get(PENDING):
        return "pending"
    if counts.get(SENT):
        return "sent"
    if a["status"] == "open":
        return "held"
    return "none"


def _alert_json(store: Store, r: Mapping[str, Any]) -> dict[str, Any]:
    counts = _summary(store, r["outage_id"])

    def t(v: Any) -> str | None:
        return from_us(int(v)).isoformat() if v is not None else None

    return {
        "id": r["outage_id"],
        "site": r["site"],
        "check": r["check_name"],
        "area": r["area"],
        "state": r["state"],
        "severity": r["severity"],
        "status": r["status"],
        "delivery": delivery(r, counts),
        "start": t(r["start"]),
        "end": t(r["end"]),
        "routes": [x["route"] for x in json.loads(r["routes"] or "[]")],
        "suppressed": r["suppressed"],
        "flapping": bool(r["flapping"]),
        "acknowledged_at": t(r["acked_at"]),
        "acknowledged_by": r["acked_by"],
        "messages": counts,
    }


def list_alerts(store: Store, *, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Alerts, newest first (outages that ended before alerting existed left out)."""
    sql = "SELECT * FROM alerts WHERE status != 'before'"
    if open_only:
        sql += " AND status = 'open'"
    sql += " ORDER BY start DESC, outage_id LIMIT ?"
    return [_alert_json(store, r) for r in store.conn.execute(sql, (int(limit),))]


def alert_detail(store: Store, outage_id: str) -> dict[str, Any] | None:
    r = store.conn.execute(
        "SELECT * FROM alerts WHERE outage_id=? AND status != 'before'", (outage_id,)
    ).fetchone()
    if r is None:
        return None
    out = _alert_json(store, r)
    out["outbox"] = [
        {
            "id": m["id"],
            "key": m["key"],
            "channel": m["channel"],
            "kind": m["kind"],
            "status": m["status"],
            "attempts": m["attempts"],
            "last_error": m["last_error"],
            "sent_at": from_us(int(m["sent_at"])).isoformat() if m["sent_at"] else None,
        }
        for m in store.conn.execute(
            "SELECT id, key, channel, kind, status, attempts, last_error, sent_at FROM outbox"
            " WHERE outage_id=? ORDER BY id",
            (outage_id,),
        )
    ]
    return out
