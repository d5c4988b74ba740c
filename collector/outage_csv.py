"""Reading outage records from CSV: past quarters' records and outages seen by people.

Columns ``site,area,check,start,end,kind,cause,provider,note``; ``kind`` is ``unplanned``,
``planned`` or ``degraded``; times are ISO 8601 with an offset, or local wall time in the
accounting timezone without one. Every bad row is reported with its line number and reason,
and the caller imports nothing unless every row is good.

Decisions (issue 3):
- the site must be one of the config's sites when the config lists any, because the
  per-partner breakdown hangs on it; keep a retired site in the config (with no checks) to
  import its history;
- ``end`` is required: an import records finished outages (an open one could never be closed
  by re-importing, since the end is part of its identity);
- local times inside the autumn clock change (01:00-02:00 happens twice) or the spring gap are
  rejected: give an offset;
- an outage's identity is (site, area, check, start, end); re-importing a row whose kind,
  cause, provider or note changed updates it, and a file holding one outage twice is an error;
- a row for a check the config lists must give that check's area: the report books a
  configured check's time to its configured area whatever the record says, so a row with
  another would be counted somewhere its author did not put it. A check the config
  does not list (a retired one, or none) keeps the row's area.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from availmon.clock import to_iso
from availmon.config import Estate
from availmon.errors import FileFailure
from availmon.files import NotAFile, read_limited
from availmon.limits import CSV_MAX_BYTES, CSV_MAX_FIELD_CHARS, FIRST_YEAR, LAST_YEAR

COLUMNS = ("site", "area", "check", "start", "end", "kind", "cause", "provider", "note")
#: Import kind -> (state, planned).
KINDS: dict[str, tuple[str, int]] = {
    "unplanned": ("down", 0),
    "planned": ("down", 1),
    "degraded": ("degraded", 0),
}


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Parsed:
    rows: list[dict[str, Any]]
    errors: list[RowError]


def read_csv_file(path: Path, limit: int = CSV_MAX_BYTES) -> str:
    """The file's text, read whole but never more than ``limit`` bytes: a device such as
    /dev/zero, a FIFO or a runaway file is refused with a clear message, not read forever."""
    try:
        raw = read_limited(path, limit)
    except NotAFile as exc:
        split = " (split it)" if str(exc).startswith("larger") else ""
        raise FileFailure(f"cannot read {path}: {exc}{split}") from exc
    except OSError as exc:
        raise FileFailure(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFailure(
            f"cannot read {path}: not UTF-8 (byte {exc.start}); save it as UTF-8 CSV"
        ) from exc


def parse_time(text: str, tz: ZoneInfo) -> datetime:
    """ISO 8601; without an offset it is local wall time, refused if ambiguous or skipped.

    Only FIRST_YEAR to LAST_YEAR: earlier or later dates are typing mistakes, and year 1 or
    9999 would overflow on the way to UTC."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 time") from None
    if not FIRST_YEAR <= dt.year <= LAST_YEAR:
        raise ValueError(f"outside the years {FIRST_YEAR} to {LAST_YEAR}")
    if dt.tzinfo is not None:
        return dt.astimezone(UTC)
    early, late = dt.replace(tzinfo=tz, fold=0), dt.replace(tzinfo=tz, fold=1)
    if early.utcoffset() != late.utcoffset():
        # zoneinfo marks both the repeated hour and the skipped hour this way; tell them apart
        # by whether the wall time survives a round trip through UTC.
        if early.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == dt:
            raise ValueError(f"happens twice in {tz.key} (clocks went back); add an offset")
        raise ValueError(f"does not exist in {tz.key} (clocks went forward); add an offset")
    return early.astimezone(UTC)


def outage_id(site: str, area: str, check: str, start: str, end: str) -> str:
    key = "\x1f".join((site, area, check, start, end))
    return "imp:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def parse_csv(text: str, estate: Estate) -> Parsed:
    """Validate every row; return the store rows and every problem found."""
    tz = ZoneInfo(estate.accounting.timezone)
    errors: list[RowError] = []
    rows: list[dict[str, Any]] = []
    if "\x00" in text:
        # csv reads a NUL as text (this Python's does); the store would keep it, SQLite's
        # functions stop at it and the CSV report writes it back out.
        line = text.count("\n", 0, text.index("\x00")) + 1
        return Parsed([], [RowError(line, "unreadable CSV: a NUL byte (is it a text file?)")])
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return Parsed([], [RowError(1, f"empty file: expected the header {','.join(COLUMNS)}")])
    names = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in names]
    unknown = [h for h in names if h not in COLUMNS]
    if missing or unknown or len(set(names)) != len(names):
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if len(set(names)) != len(names):
            problems.append("a column is named twice")
        return Parsed(
            [], [RowError(1, f"bad header: {'; '.join(problems)} (expected {','.join(COLUMNS)})")]
        )
    seen: dict[str, int] = {}
    line = reader.line_num + 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A field over csv's own limit, a NUL byte, a quote left open: nothing after it
            # can be trusted to be on the line it claims.
            errors.append(RowError(line, f"unreadable CSV: {_csv_problem(exc)}"))
            break
        here, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue
        if len(record) != len(names):
            errors.append(RowError(here, f"expected {len(names)} fields, found {len(record)}"))
            continue
        cell = {n: v.strip() for n, v in zip(names, record, strict=True)}
        long = [n for n in names if len(cell[n]) > CSV_MAX_FIELD_CHARS]
        if long:
            errors.extend(
                RowError(here, f"{n} is longer than {CSV_MAX_FIELD_CHARS} characters") for n in long
            )
            continue
        problems = _problems(cell, estate)
        start = end = None
        for key in ("start", "end"):
            if not cell[key]:
                problems.append(f"{key} is empty")
                continue
            try:
                value = parse_time(cell[key], tz)
            except ValueError as exc:
                problems.append(f"{key} {cell[key]!r}: {exc}")
                continue
            if key == "start":
                start = value
            else:
                end = value
        if start is not None and end is not None and end <= start:
            what = "before" if end < start else "the same as"
            problems.append(f"end {cell['end']} is {what} start {cell['start']}")
        if problems or start is None or end is None:
            errors.extend(RowError(here, p) for p in problems)
            continue
        oid = outage_id(cell["site"], cell["area"], cell["check"], to_iso(start), to_iso(end))
        if oid in seen:
            errors.append(RowError(here, f"the same outage as line {seen[oid]}"))
            continue
        seen[oid] = here
        state, planned = KINDS[cell["kind"].lower()]
        rows.append(
            {
                "id": oid,
                "site": cell["site"],
                "agent": None,
                "check_name": cell["check"] or None,
                "area": cell["area"],
                "state": state,
                "start": to_iso(start),
                "end": to_iso(end),
                "planned": planned,
                "cause": cell["cause"] or None,
                "provider": cell["provider"] or None,
                "note": cell["note"] or None,
            }
        )
    if not rows and not errors:
        errors.append(RowError(line, "no outages in the file"))
    return Parsed(rows, errors)


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a field is longer than {csv.field_size_limit()} characters"
    if "NUL" in text:
        return "a NUL byte (is this a CSV file?)"
    return text


def _problems(cell: dict[str, str], estate: Estate) -> list[str]:
    problems: list[str] = []
    site, area, kind = cell["site"], cell["area"], cell["kind"].lower()
    if not site:
        problems.append("site is empty")
    elif estate.sites and site not in estate.sites:
        problems.append(f"unknown site {site!r} (known: {', '.join(sorted(estate.sites))})")
    if not area:
        problems.append("area is empty")
    elif area not in estate.areas:
        problems.append(f"unknown area {area!r} (known: {', '.join(estate.areas)})")
    else:
        # The report books a configured check's time to the check's area whatever a record
        # says (``attribution.Rules.area_of``): a row naming another would be counted where
        # nobody who wrote it looked for it.
        home = estate.check_areas().get((site, cell["check"]))
        if home is not None and home != area:
            problems.append(
                f"area {area!r} is not the area of check {cell['check']!r} at site {site!r}"
                f" (the config puts it in {home!r})"
            )
    if kind not in KINDS:
        problems.append(f"kind {cell['kind']!r} is not one of {', '.join(KINDS)}")
    return problems
