"""Subcommands for the service manager: outage import/list/annotate and reports (issue 3),
alerts list/ack/test (issue 11).

    availmon outages import config/sample-outages-FY2019Q2.csv --config config/demo.toml
    availmon outages list --period FY2019Q2 --area email
    availmon outages annotate ID --cause "Fibre cut" --provider "BT Openreach" --unplanned
    availmon report --period FY2019Q2 --format html --out report.html

Every command reads the estate config (areas, partners, sites, accounting settings and
``collector.database``) from ``--config``, else ``$AVAILMON_CONFIG``, else
``/etc/availmon/availmon.toml`` (:mod:`availmon.configpath`), and says which on stderr;
``--db`` overrides the database path.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from availmon.clock import from_iso, utcnow
from availmon.config import Estate, load_config, scope_issues
from availmon.configpath import describe as describe_config
from availmon.configpath import find_config
from availmon.errors import EXIT_FAIL, FileFailure, NoSuchRecord, StoreError, UsageError
from availmon.files import write_whole
from availmon.limits import ANNOTATION_MAX_CHARS, MAX_LIST_ROWS, REASON_MAX_CHARS, WHO_MAX_CHARS
from availmon.text import terminal
from collector.accounting import (
    BusinessCalendar,
    Outage,
    Period,
    PeriodError,
    date_range,
    from_us,
    parse_date,
    parse_period,
    quarter_containing,
    to_us,
)
from collector.alerts import Context, test_message
from collector.maintenance import Window, expand
from collector.outage_csv import parse_csv, read_csv_file
from collector.outage_csv import parse_time as parse_local_time
from collector.outbox import UNEXPECTED, AlertBook, list_alerts
from collector.report import (
    FORMATS,
    accounts_for,
    build_report,
    downtime_summary,
    render,
    show_minutes,
    show_percent,
    show_target,
    window_of,
)
from collector.rules import record as record_rules
from collector.store import CancelOutcome, DuplicateWindow, Store, describe

#: How long a command waits for a database another process (the collector) is writing.
BUSY_TIMEOUT = 30.0


def add_parser(sub: Any) -> None:
    outages = sub.add_parser("outages", help="import, list and annotate outage records")
    osub = outages.add_subparsers(dest="outages_command", required=True, metavar="ACTION")

    imp = osub.add_parser(
        "import",
        help="import outages from CSV (all rows or none; re-importing changes nothing)",
        description="Columns: site,area,check,start,end,kind,cause,provider,note. kind is "
        "unplanned, planned or degraded; times are ISO 8601 with an offset, or local time "
        "(the accounting timezone) without one.",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--dry-run", action="store_true", help="check every row, store nothing")
    _common(imp)
    imp.set_defaults(func=cmd_import)

    lst = osub.add_parser("list", help="list outages (this quarter unless a period is given)")
    _period_args(lst)
    lst.add_argument(
        "--area",
        help="area id, e.g. email: the outages the report counts in it (a configured"
        " check's are in the check's area)",
    )
    lst.add_argument("--site", help="site id")
    lst.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    _common(lst)
    lst.set_defaults(func=cmd_list)

    ann = osub.add_parser(
        "annotate",
        help="record an outage's cause, provider, note, or planned/unplanned",
        description="Fields not given keep their value. Annotations survive the rebuild of "
        "outages from agent events.",
    )
    ann.add_argument("id", help="outage id, as shown by 'availmon outages list'")
    ann.add_argument("--cause")
    ann.add_argument("--provider", help="third party responsible, e.g. 'BT Openreach'")
    ann.add_argument("--note")
    kind = ann.add_mutually_exclusive_group()
    kind.add_argument("--planned", dest="planned", action="store_true", default=None)
    kind.add_argument("--unplanned", dest="planned", action="store_false")
    ann.add_argument(
        "--by", help="who is recording this (default: your login name); kept with the change"
    )
    _common(ann)
    ann.set_defaults(func=cmd_annotate)

    add_alert_parsers(sub)

    rep = sub.add_parser(
        "report",
        help="the quarterly availability report (html, md, csv or json)",
        description="Periods: FY2019Q2 (UK financial quarter, July to September 2019), "
        "2019Q3 (calendar quarter), 2019-09 (month), or --from/--to (both days included).",
    )
    _period_args(rep)
    rep.add_argument(
        "--as-of",
        metavar="TIMESTAMP",
        help="the figures as they were reported then: only what had been recorded by then,"
        " under the rules in force then (ISO 8601; local time without an offset)",
    )
    rep.add_argument(
        "--generated-at",
        metavar="TIMESTAMP",
        help="the time printed as 'generated' (default: --as-of, else now): an input, so"
        " the same data gives the same bytes",
    )
    rep.add_argument("--format", choices=sorted(FORMATS), default="html")
    rep.add_argument("--out", type=Path, help="write to this file (default: standard output)")
    _common(rep)
    rep.set_defaults(func=cmd_report)

    mnt = sub.add_parser(
        "maintenance",
        help="declare, list and cancel maintenance windows (planned work, declared before it)",
    )
    msub = mnt.add_subparsers(dest="maintenance_command", required=True, metavar="ACTION")
    add = msub.add_parser(
        "add",
        help="declare a one-off window: outages inside it are planned, an overrun is not",
        description="A window plans time only from when it is declared: work already under"
        " way is marked planned with 'outages annotate --planned' (a reclassification,"
        " listed as such). Scope lists left out match everything.",
    )
    add.add_argument("--start", required=True, help="ISO 8601; local time without an offset")
    add.add_argument("--end", required=True, help="ISO 8601; local time without an offset")
    for key, text in (
        ("site", "site id"),
        ("area", "area id"),
        ("check", "check name, site/check, or a service id"),
        ("partner", "partner id"),
    ):
        add.add_argument(f"--{key}", action="append", default=[], help=f"{text} (repeatable)")
    add.add_argument("--reason", required=True, help="what the work is (printed on the report)")
    add.add_argument("--by", help="who is declaring it (default: your login name)")
    _common(add)
    add.set_defaults(func=cmd_maintenance_add)
    mls = msub.add_parser("list", help="windows in a period: declared and recurring")
    _period_args(mls)
    mls.add_argument("--json", action="store_true")
    _common(mls)
    mls.set_defaults(func=cmd_maintenance_list)
    can = msub.add_parser("cancel", help="cancel a declared window (recorded, with who)")
    can.add_argument("id", help="window id, e.g. m:3")
    can.add_argument("--reason")
    can.add_argument("--by", help="who is cancelling it (default: your login name)")
    _common(can)
    can.set_defaults(func=cmd_maintenance_cancel)


def add_alert_parsers(sub: Any) -> None:
    alerts = sub.add_parser("alerts", help="list, acknowledge and test alerts")
    asub = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    lst = asub.add_parser(
        "list", help="alerts, newest first: pending, sent, failed, acknowledged, held"
    )
    lst.add_argument("--open", action="store_true", help="only alerts whose outage is ongoing")
    lst.add_argument(
        "--limit", type=_rows, default=50, help=f"at most this many, 1-{MAX_LIST_ROWS} (50)"
    )
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(lst)
    lst.set_defaults(func=cmd_alerts_list)
    ack = asub.add_parser("ack", help="acknowledge an alert: its repeats and escalation stop")
    ack.add_argument("id", help="alert id (the outage's id), as 'alerts list' shows it")
    ack.add_argument("--by", help="who is on it (default: your login name)")
    _common(ack)
    ack.set_defaults(func=cmd_alerts_ack)
    test = asub.add_parser(
        "test", help="send a test message through a route's channels now, and say how it went"
    )
    test.add_argument("route", help="route name, from alerts.routes")
    _common(test)
    test.set_defaults(func=cmd_alerts_test)


def _rows(text: str) -> int:
    """``--limit``: a whole number of rows, 1 to ``MAX_LIST_ROWS``."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIST_ROWS:
        raise argparse.ArgumentTypeError(f"expected a number 1-{MAX_LIST_ROWS}, got {text!r}")
    return int(text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="estate config (default: $AVAILMON_CONFIG, else /etc/availmon/availmon.toml)",
    )
    p.add_argument("--db", type=Path, help="collector database (default: collector.database)")


def _load(args: argparse.Namespace) -> Estate:
    """The estate config found by :func:`availmon.configpath.find_config`, named on stderr
    (stdout may be a report) when it was not given with ``--config``, once per command;
    ``args.config`` becomes the file read."""
    loaded: Estate | None = getattr(args, "estate", None)
    if loaded is None:
        path, source = find_config(args.config)
        if source != "--config":  # typed on the command line: no need to say it back
            print(f"availmon: {describe_config(path, source)}", file=sys.stderr)
        args.config = path
        args.estate = loaded = load_config(path)
    return loaded


def _period_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", help="FY2019Q2, 2019Q3, 2019-09 or 2019-07-01..2019-09-30")
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="first day")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="last day (included)")


def _period(args: argparse.Namespace, estate: Estate, *, default_now: datetime) -> Period:
    tz = ZoneInfo(estate.accounting.timezone)
    # `is not None`: an empty value (--period '') is a bad value, not "none given".
    ranged = args.date_from is not None or args.date_to is not None
    if args.period is not None and ranged:
        raise PeriodError("give --period or --from/--to, not both")
    if args.period is not None:
        return parse_period(args.period, tz)
    if ranged:
        if args.date_from is None or args.date_to is None:
            raise PeriodError("--from and --to go together")
        return date_range(_day(args.date_from, "--from"), _day(args.date_to, "--to"), tz)
    return quarter_containing(default_now, tz)


def _day(text: str, option: str) -> date:
    try:
        return parse_date(text)
    except PeriodError as exc:
        raise PeriodError(f"{option}: {exc}") from None


def _open(
    args: argparse.Namespace, *, create: bool = False, estate: Estate | None = None
) -> tuple[Estate, Store]:
    estate = estate or _load(args)
    db = args.db or estate.collector.database
    if not create and not Path(db).exists():
        raise StoreError(
            f"no database at {db}: import outages first, run the collector, or pass --db"
        )
    return estate, Store(db, busy_timeout=BUSY_TIMEOUT)


@contextlib.contextmanager
def _using(store: Store) -> Iterator[Store]:
    """Close the store however the command ends; a database failure becomes one line."""
    try:
        yield store
    except sqlite3.Error as exc:
        raise StoreError(describe(exc, store.path)) from exc
    finally:
        store.close()


def cmd_import(args: argparse.Namespace) -> int:
    estate = _load(args)
    parsed = parse_csv(read_csv_file(args.file), estate)
    if parsed.errors:
        for err in parsed.errors:
            print(terminal(f"{args.file}: {err}"), file=sys.stderr)
        bad = len({e.line for e in parsed.errors})
        print(f"nothing imported: {bad} bad row(s)", file=sys.stderr)
        return EXIT_FAIL
    if args.dry_run:
        print(f"{args.file}: {len(parsed.rows)} outages, all good (dry run: nothing stored)")
        return 0
    _, store = _open(args, create=True)
    with _using(store):
        result = store.import_outages(parsed.rows)
    print(
        f"{args.file}: {len(parsed.rows)} outages: {result.new} new, {result.updated} updated,"
        f" {result.unchanged} unchanged (database {args.db or estate.collector.database})"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    now = utcnow()
    estate = _load(args)
    period = _period(args, estate, default_now=now)  # a usage error before any database one
    _, store = _open(args, estate=estate)
    with _using(store):
        _known(args.area, "area", estate.areas, store.outage_areas)
        _known(args.site, "site", estate.sites, store.outage_sites)
        rows = store.outages_between(period.start, period.end, site=args.site)
        # ``--area`` picks what the report counts in the area: a configured check's records
        # count in its configured area whatever area they were stored with (a check moved
        # since, an import from before imports were held to it; ``attribution.Rules
        # .area_of``), a record of any other check in its own.
        homes = estate.check_areas()
        for r in rows:
            r["report_area"] = homes.get((r["site"], r["check_name"] or ""), r["area"])
        if args.area is not None:
            rows = [r for r in rows if r["report_area"] == args.area]
        calendar = BusinessCalendar.from_accounting(estate.accounting)
        acc = accounts_for(store, estate, period, now, calendar, bookings=True)
    # What the rules made of each outage (issue 10): the window that covered it, what it was
    # behind, the service whose path it was.
    made: dict[str, set[str]] = {}
    for b in acc.bookings:
        for oid in b.outages:
            if b.planned_by:
                made.setdefault(oid, set()).add(
                    "marked planned" if b.planned_by == "annotation" else f"window {b.planned_by}"
                )
            if b.cls == "unreachable" and b.parent:
                made.setdefault(oid, set()).add(f"unreachable behind {b.parent}")
            if b.path and b.service:
                made.setdefault(oid, set()).add(f"path ({b.service} seen from {b.site} only)")
    for r in rows:
        notes = made.get(r["id"], set())
        if r["report_area"] != r["area"]:
            notes.add(f"recorded in area {r['area']}")
        r["attribution"] = sorted(notes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    tz = ZoneInfo(estate.accounting.timezone)
    now_us = to_us(now)
    table = [("ID", "START", "END", "MIN", "AREA", "SITE", "CHECK", "KIND", "SOURCE", "CAUSE")]
    for r in rows:
        o = Outage.from_row(r)
        s, e = o.span(now_us)
        kind = o.kind or "unknown"
        cause = "; ".join(
            x for x in (o.cause, o.provider and f"provider {o.provider}", *r["attribution"]) if x
        )
        table.append(
            (
                o.id,
                _when(o.start, tz),
                _when(o.end, tz) if o.end is not None else "open",
                show_minutes((e - s) / 60_000_000),
                r["report_area"],
                o.site,
                o.check or "",
                kind,
                o.source,
                cause,
            )
        )
    # Imported and annotated text goes to a terminal: no escape sequence gets through.
    shown = [[terminal(c) for c in row] for row in table]
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]) - 1)]
    for cells in shown:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[-1])
    print(f"{len(rows)} outage(s) in {period.id}")
    return 0


def _known(
    name: str | None, what: str, configured: Iterable[str], stored: Callable[[], list[str]]
) -> None:
    """A name to filter by must be in the config or, for a retired one, in the database: a
    mistyped one would list nothing and look like a quiet quarter."""
    if name is None or name in configured:
        return
    known = sorted({*configured, *stored()})
    if name not in known:
        raise UsageError(f"--{what} {name!r}: no such {what} (known: {', '.join(known) or 'none'})")


def _text(value: str | None, option: str, longest: int) -> str | None:
    """Text recorded in the store, within the length the board and the API allow."""
    if value is not None and len(value) > longest:
        raise UsageError(f"{option}: longer than {longest} characters ({len(value)})")
    return value


def _who(args: argparse.Namespace) -> str:
    """Who a change is recorded under: ``--by``, else the login name; as the API's
    X-Availmon-User, 1-64 printable characters (an empty --by is refused, not ignored)."""
    if args.by is None:
        return getpass.getuser()
    by: str = args.by.strip()
    if not by or len(by) > WHO_MAX_CHARS or not by.isprintable():
        raise UsageError(
            f"--by {args.by!r}: expected a name of 1-{WHO_MAX_CHARS} printable characters"
        )
    return by


def _when(us: int, tz: ZoneInfo) -> str:
    return from_us(us).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def cmd_annotate(args: argparse.Namespace) -> int:
    if all(getattr(args, k) is None for k in ("cause", "provider", "note", "planned")):
        raise UsageError(
            "nothing to record: give --cause, --provider, --note, --planned or --unplanned"
        )
    texts = {k: _text(getattr(args, k), f"--{k}", n) for k, n in ANNOTATION_MAX_CHARS.items()}
    by = _who(args)
    estate, store = _open(args)
    with _using(store):
        row = store.annotate(
            args.id,
            utcnow(),
            cause=texts["cause"],
            provider=texts["provider"],
            note=texts["note"],
            planned=args.planned,
            by=by,
        )
    start = from_iso(row["start"]).astimezone(ZoneInfo(estate.accounting.timezone))
    start_text = start.strftime("%Y-%m-%d %H:%M")
    print(
        terminal(
            f"{row['id']} ({row['area']} at {row['site']}, from {start_text}):"
            f" {'planned' if row['planned'] else 'unplanned'}; cause {row['cause']!r};"
            f" provider {row['provider']!r}; note {row['note']!r}"
        )
    )
    return 0


def parse_time(text: str, tz: ZoneInfo, what: str) -> datetime:
    """ISO 8601; a time without an offset is local (the accounting timezone), refused where
    the clocks change (skipped or repeated), as an import refuses it."""
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{what}: not a time (ISO 8601, e.g. 2019-10-01T09:00): {text!r}"
        ) from None
    try:
        return parse_local_time(text.strip(), tz)
    except ValueError as exc:
        raise UsageError(f"{what} {text!r}: {exc}") from None


def cmd_report(args: argparse.Namespace) -> int:
    now = utcnow()
    estate = _load(args)
    tz = ZoneInfo(estate.accounting.timezone)
    as_of = None if args.as_of is None else parse_time(args.as_of, tz, "--as-of")
    generated = (
        None if args.generated_at is None else parse_time(args.generated_at, tz, "--generated-at")
    )
    if as_of is not None and as_of > now:
        raise UsageError(f"--as-of {args.as_of} is in the future")
    period = _period(args, estate, default_now=as_of or now)
    _, store = _open(args, estate=estate)
    with _using(store):
        record_rules(store, estate, now)
        data = build_report(store, estate, period, now, as_of=as_of, generated_at=generated)
    text = render(args.format, data)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        write_whole(args.out, text)
    except OSError as exc:
        raise FileFailure(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    c = data["combined"]
    met = {True: "met", False: "not met", None: "no figure"}[c["met"]]
    print(
        f"wrote {args.out}: {period.id}, {downtime_summary(data)}; combined availability"
        f" {show_percent(c['availability_percent'])}% against {show_target(c['target_percent'])}%"
        f" target: {met}"
    )
    return 0


def _scope_text(scope: dict[str, Any]) -> str:
    parts = [f"{k} {', '.join(v)}" for k, v in scope.items() if v]
    return "; ".join(parts) or "everything"


def cmd_maintenance_add(args: argparse.Namespace) -> int:
    estate = _load(args)
    tz = ZoneInfo(estate.accounting.timezone)
    start = parse_time(args.start, tz, "--start")
    end = parse_time(args.end, tz, "--end")
    if end <= start:
        raise UsageError(f"--end {args.end} is not after --start {args.start}")
    if not args.reason.strip():
        raise UsageError("--reason: empty (say what the work is: it is printed on the report)")
    _text(args.reason, "--reason", REASON_MAX_CHARS)
    by = _who(args)
    scope = {
        "sites": args.site,
        "areas": args.area,
        "checks": args.check,
        "partners": args.partner,
    }
    problems = scope_issues(
        str(args.config),
        "maintenance",
        scope,
        sites={k: {"checks": [c.model_dump() for c in v.checks]} for k, v in estate.sites.items()},
        areas=set(estate.areas),
        partners=dict(estate.partners),
        services=dict(estate.services),
    )
    if problems:
        raise UsageError("; ".join(p.message for p in problems))
    now = utcnow()
    _, store = _open(args, create=True, estate=estate)
    with _using(store):
        record_rules(store, estate, now)
        try:
            row = store.declare_window(start, end, scope, args.reason, by, now)
        except DuplicateWindow as exc:
            raise UsageError(_duplicate_text(exc.existing, tz)) from None
    late = " (declared after its start: it plans only from now)" if start < now else ""
    print(
        terminal(
            f"{row['id']}: {_when(to_us(start), tz)} to {_when(to_us(end), tz)},"
            f" {_scope_text(scope)}: {args.reason!r}, declared by {row['by']}{late}"
        )
    )
    return 0


def _duplicate_text(existing: dict[str, Any], tz: ZoneInfo) -> str:
    """A declaration refused: the same window is declared already (and not cancelled)."""
    start, end = (_when(to_us(from_iso(existing[k])), tz) for k in ("start", "end"))
    return (
        f"{existing['id']} already declares this window ({start} to {end},"
        f" {_scope_text(existing['scope'])}; {existing['reason']!r}, declared by"
        f" {existing['by']}); nothing changed (cancel {existing['id']} to declare it anew)"
    )


def cmd_maintenance_list(args: argparse.Namespace) -> int:
    now = utcnow()
    estate = _load(args)
    period = _period(args, estate, default_now=now)  # a usage error before any database one
    declared: list[Window] = []
    cancelled: list[dict[str, Any]] = []
    # A listing never creates a database (a mistyped --db left an empty one behind). With
    # none at the config's path yet (a new install), nothing has been declared: the config's
    # windows are the list. A --db that is not there is a mistake, and says so.
    if args.db is not None or Path(estate.collector.database).exists():
        _, store = _open(args, estate=estate)
        try:
            declared = [window_of(r) for r in store.windows(period.start, period.end)]
            cancelled = [
                r for r in store.windows(period.start, period.end, now) if r["cancelled_at"]
            ]
        finally:
            store.close()
    windows = expand(
        estate.maintenance, declared, period.start_us, period.end_us, estate.accounting.timezone
    )
    tz = ZoneInfo(estate.accounting.timezone)
    rows = [
        {
            "id": w.id,
            "source": w.source,
            "start": _when(w.start, tz),
            "end": _when(w.end, tz),
            "scope": _scope_text(w.scope.model_dump()),
            "reason": w.reason or "",
            "by": w.by or "config",
        }
        for w in windows
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(
            terminal(
                f"{r['id']:<40} {r['start']} to {r['end']}  {r['scope']}  {r['reason']}"
                f"  ({r['by']})"
            )
        )
    print(f"{len(rows)} window(s) in {period.id}; {len(cancelled)} cancelled")
    return 0


def cmd_maintenance_cancel(args: argparse.Namespace) -> int:
    reason = _text(args.reason, "--reason", REASON_MAX_CHARS)
    by = _who(args)
    estate, store = _open(args)
    with _using(store):
        done = store.cancel_window(args.id, by, utcnow(), reason)
    if done.outcome is CancelOutcome.NO_SUCH_WINDOW:
        raise UsageError(f"no declared window {args.id!r}")
    if done.outcome is CancelOutcome.ALREADY_CANCELLED:
        tz = ZoneInfo(estate.accounting.timezone)
        when = _when(to_us(from_iso(done.at)), tz) if done.at is not None else "?"
        raise UsageError(
            f"{done.window_id} was already cancelled by {done.by} at {when}; nothing changed"
        )
    print(terminal(f"{args.id} cancelled"))
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    estate, store = _open(args)
    with _using(store):
        rows = list_alerts(store, open_only=args.open, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    tz = ZoneInfo(estate.accounting.timezone)
    table = [("ID", "STATUS", "DELIVERY", "SEVERITY", "SITE", "CHECK", "START", "ROUTES", "NOTE")]
    for a in rows:
        note = a["suppressed"] or ""
        if a["acknowledged_by"]:
            note = f"acknowledged by {a['acknowledged_by']}"
        elif a["messages"]["failed"]:
            note = "a channel is failing: retrying"
        elif a["flapping"] and a["delivery"] == "held":
            note = note or "flapping: held back"
        start = from_iso(a["start"]).astimezone(tz).strftime("%Y-%m-%d %H:%M") if a["start"] else ""
        table.append(
            (
                a["id"],
                a["status"],
                a["delivery"],
                a["severity"] or "",
                a["site"],
                a["check"] or "",
                start,
                ",".join(a["routes"]) or "-",
                note,
            )
        )
    shown = [[terminal(c) for c in row] for row in table]
    widths = [max(len(row[i]) for row in shown) for i in range(len(shown[0]) - 1)]
    for cells in shown:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + cells[-1])
    print(f"{len(rows)} alert(s)")
    return 0


def cmd_alerts_ack(args: argparse.Namespace) -> int:
    by = _who(args)
    estate, store = _open(args)
    with _using(store):
        done = AlertBook(store, Context.of(estate), "").acknowledge(args.id, by, utcnow())
    if done is None:
        raise NoSuchRecord(f"no alert with id {args.id!r} (see 'availmon alerts list')")
    print(
        terminal(
            f"{done['id']}: acknowledged by {done['acknowledged_by']}; status {done['status']}"
        )
    )
    return 0


async def cmd_alerts_test(args: argparse.Namespace) -> int:
    # Imported here: the channels bring aiohttp and aiosmtplib, which no other command needs.
    import aiohttp

    from collector import channels

    estate = _load(args)
    ctx = Context.of(estate)
    names = [r.name for r in estate.alerts.routes]
    if args.route not in names:
        raise UsageError(f"no route {args.route!r} (alerts.routes: {', '.join(names) or 'none'})")
    route = ctx.route(args.route)
    web = estate.web
    board = estate.alerts.board_url or f"http://{web.listen}:{web.port}"
    tz = ZoneInfo(estate.accounting.timezone)
    failed = 0
    async with aiohttp.ClientSession() as session:
        senders = channels.build(
            estate.alerts.model_copy(
                update={"channels": {n: estate.alerts.channels[n] for n in route.channels}}
            ),
            channels.Deps(session, tz),
        )
        for name in route.channels:
            message = test_message(ctx, route.name, name, utcnow(), board_url=board)
            try:
                await senders[name].send(message)
            except channels.DeliveryError as exc:
                failed += 1
                print(terminal(f"{name}: failed: {exc}"))
            except Exception as exc:  # a bug: named, not its text (it may quote a secret)
                failed += 1
                print(terminal(f"{name}: failed: {UNEXPECTED}{type(exc).__name__} (a bug)"))
            else:
                print(f"{name}: sent")
    return EXIT_FAIL if failed else 0
