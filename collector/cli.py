"""Subcommands for the service manager: outage import/list/annotate and reports (issue 3).

    availmon outages import config/sample-outages-FY2019Q2.csv --config config/demo.toml
    availmon outages list --period FY2019Q2 --area email
    availmon outages annotate ID --cause "Fibre cut" --provider "BT Openreach" --unplanned
    availmon report --period FY2019Q2 --format html --out report.html

Every command reads the estate config (areas, partners, sites, accounting settings and
``collector.database``) from ``--config``, which defaults to ``$AVAILMON_CONFIG`` and then to
``config/demo.toml``; ``--db`` overrides the database path.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from availmon.clock import from_iso, utcnow
from availmon.config import Estate, load_config
from availmon.errors import EXIT_FAIL, FileFailure, StoreError, UsageError
from availmon.text import terminal
from collector.accounting import (
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
from collector.outage_csv import parse_csv, read_csv_file
from collector.report import (
    FORMATS,
    SHOWS_MEMBERS,
    build_report,
    render,
    show_minutes,
    show_percent,
)
from collector.store import Store, describe

DEFAULT_CONFIG = "config/demo.toml"
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
    lst.add_argument("--area", help="area id, e.g. email")
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

    rep = sub.add_parser(
        "report",
        help="the quarterly availability report (html, md, csv or json)",
        description="Periods: FY2019Q2 (UK financial quarter, July to September 2019), "
        "2019Q3 (calendar quarter), 2019-09 (month), or --from/--to (both days included).",
    )
    _period_args(rep)
    rep.add_argument("--format", choices=sorted(FORMATS), default="html")
    rep.add_argument("--out", type=Path, help="write to this file (default: standard output)")
    _common(rep)
    rep.set_defaults(func=cmd_report)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=os.environ.get("AVAILMON_CONFIG", DEFAULT_CONFIG),
        help="estate config (default: $AVAILMON_CONFIG, else %(default)s)",
    )
    p.add_argument("--db", type=Path, help="collector database (default: collector.database)")


def _period_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", help="FY2019Q2, 2019Q3, 2019-09 or 2019-07-01..2019-09-30")
    p.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="first day")
    p.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="last day (included)")


def _period(args: argparse.Namespace, estate: Estate, *, default_now: datetime) -> Period:
    tz = ZoneInfo(estate.accounting.timezone)
    if args.period and (args.date_from or args.date_to):
        raise PeriodError("give --period or --from/--to, not both")
    if args.period:
        return parse_period(args.period, tz)
    if args.date_from or args.date_to:
        if not (args.date_from and args.date_to):
            raise PeriodError("--from and --to go together")
        return date_range(parse_date(args.date_from), parse_date(args.date_to), tz)
    return quarter_containing(default_now, tz)


def _open(
    args: argparse.Namespace, *, create: bool = False, estate: Estate | None = None
) -> tuple[Estate, Store]:
    estate = estate or load_config(args.config)
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
    estate = load_config(args.config)
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
    estate = load_config(args.config)
    period = _period(args, estate, default_now=now)  # a usage error before any database one
    _, store = _open(args, estate=estate)
    with _using(store):
        rows = store.outages_between(period.start, period.end, area=args.area, site=args.site)
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
        cause = "; ".join(x for x in (o.cause, o.provider and f"provider {o.provider}") if x)
        table.append(
            (
                o.id,
                _when(o.start, tz),
                _when(o.end, tz) if o.end is not None else "open",
                show_minutes((e - s) / 60_000_000),
                o.area,
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


def _when(us: int, tz: ZoneInfo) -> str:
    return from_us(us).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def cmd_annotate(args: argparse.Namespace) -> int:
    if all(getattr(args, k) is None for k in ("cause", "provider", "note", "planned")):
        raise UsageError(
            "nothing to record: give --cause, --provider, --note, --planned or --unplanned"
        )
    estate, store = _open(args)
    with _using(store):
        row = store.annotate(
            args.id,
            utcnow(),
            cause=args.cause,
            provider=args.provider,
            note=args.note,
            planned=args.planned,
            by=args.by or getpass.getuser(),
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


def cmd_report(args: argparse.Namespace) -> int:
    now = utcnow()
    estate = load_config(args.config)
    period = _period(args, estate, default_now=now)
    _, store = _open(args, estate=estate)
    with _using(store):
        data = build_report(store, estate, period, now, members=args.format in SHOWS_MEMBERS)
    text = render(args.format, data)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FileFailure(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    c = data["combined"]
    met = {True: "met", False: "not met", None: "no figure"}[c["met"]]
    print(
        f"wrote {args.out}: {period.id}, {show_minutes(c['downtime_minutes'])} minutes of"
        f" downtime in {show_minutes(data['period_minutes'])}; combined availability"
        f" {show_percent(c['availability_percent'])}% against {show_percent(c['target_percent'])}%"
        f" target: {met}"
    )
    return 0
