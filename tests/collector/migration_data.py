"""A store with a bit of everything, and every figure read from it, for the migration test.

``populate`` fills a store through its public writes only (agent events in and out of order,
a CSV import imported again with a change, annotations, a provisional outage and its
not-monitored time, another agent stopped and back, declared maintenance windows, one of
them cancelled), so the same code runs against the store before issue 9's integer times
(ISO text times) and after it (integer microseconds). ``figures`` renders what users and
other modules read: the report in every format for three quarters, live and ``--as-of``,
the live KPI and the rows of every public read method.

The fixtures in ``tests/collector/data/`` were made once by the code before migration
m012_integer_times (the integration branch with issues 10 and 11, commit b470b5a, whose
schema is m001-m005 and m010), with::

    git archive b470b5a | tar -x -C /tmp/before
    PYTHONPATH=/tmp/before:. python -m tests.collector.migration_data tests/collector/data

``store-v5.sql`` is that store (``iterdump``; "v5": it was first made at schema m005), and
``v5-*`` what it read back; the test loads the dump, lets the current Store migrate it and
compares every figure byte for byte.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from availmon.config import Estate, parse_config
from availmon.schema import Event, Evidence, State
from collector.accounting import parse_period
from collector.outage_csv import parse_csv
from collector.report import build_report, kpi_snapshot, render
from collector.store import Store

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample-outages-FY2019Q2.csv"
NOW = datetime(2025, 12, 20, 12, 0, 30, 250_000, tzinfo=UTC)
PERIODS = ("FY2019Q2", "FY2025Q2", "FY2025Q3")
#: An ``--as-of`` moment between the records (issue 10): after the first events were
#: received, before the re-import, the cancellation, the replays and the provisional outage.
AS_OF = datetime(2025, 12, 19, 13, 0, tzinfo=UTC)
FORMATS = ("json", "csv", "md", "html")
#: (site, check, area): sites in the config, one retired site, one area no longer configured.
CHECKS = (
    ("dc", "wan", "network_telephony"),
    ("dc", "webmail", "email"),
    ("ccc-guildhall", "intranet", "internet_web"),
    ("hdc-pathfinder", "files", "servers"),
    ("scdc-cambourne", "phones", "network_telephony"),
    ("retired-site", "web", "internet_web"),
    ("dc", "legacy", "legacy_area"),
)


def estate() -> Estate:
    partners = {"CCC": "Cambridge City", "HDC": "Huntingdonshire", "SCDC": "South Cambs"}
    sites = {"dc": "CCC", "ccc-guildhall": "CCC", "hdc-pathfinder": "HDC"}
    sites["scdc-cambourne"] = "SCDC"
    return parse_config(
        {
            "name": "migration estate",
            "partners": {k: {"name": v} for k, v in partners.items()},
            "sites": {k: {"partner": v} for k, v in sites.items()},
        },
        "migration",
    )


def _events(rng: random.Random) -> list[Event]:
    """Each check flaps from mid-2025 to NOW: odd microseconds, degraded and unknown runs,
    restatements, and a run still open at NOW."""
    out: list[Event] = []
    start = datetime(2025, 6, 20, 3, 0, tzinfo=UTC)
    for n, (site, check, area) in enumerate(CHECKS):
        at = start + timedelta(hours=n * 7, microseconds=rng.randrange(1_000_000))
        prev = State.UNKNOWN
        seq = 1000 * n
        while at < NOW - timedelta(hours=2):
            to = rng.choice([State.UP, State.UP, State.DOWN, State.DEGRADED, State.UNKNOWN])
            if to == prev and rng.random() < 0.7:
                to = State.UP if prev != State.UP else State.DOWN
            seq += 1
            out.append(
                Event(
                    id=f"{site}:{seq}",
                    seq=seq,
                    site=site,
                    agent=site,
                    check=check,
                    area=area,
                    from_=prev,
                    to=to,
                    at=at,
                    detected_at=at + timedelta(seconds=15),
                    evidence=Evidence(
                        error=None if to == State.UP else rng.choice(["HTTP 503", "timeout"]),
                        latency=round(rng.random(), 3) if to != State.DOWN else None,
                    ),
                )
            )
            prev = to
            at += timedelta(
                minutes=rng.choice([3, 90, 900, 3000, 9000]), microseconds=rng.randrange(10**6)
            )
    return out


def populate(store: Store, est: Estate) -> None:
    rng = random.Random(9)
    events = _events(rng)
    # In batches, some shuffled (late events re-derive), some replayed (duplicates).
    for i in range(0, len(events), 20):
        batch = events[i : i + 20]
        if i % 60 == 20:
            rng.shuffle(batch)
        store.ingest(batch, NOW - timedelta(days=1))
        if i % 100 == 0:
            store.ingest(batch[:5], NOW)
    store.import_outages(
        parse_csv(SAMPLE.read_text(encoding="utf-8"), est).rows,
        datetime(2025, 11, 1, 12, 0, tzinfo=UTC),
    )
    outages = sorted(store.outages(), key=lambda o: o["id"])
    at = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)
    for n, o in enumerate(outages[::5]):
        store.annotate(
            o["id"],
            at + timedelta(minutes=n),
            cause=f"cause {n}" if n % 2 else None,
            provider="BT Openreach" if n % 3 == 0 else None,
            note="=1+1 <b>note</b>" if n % 4 == 1 else None,
            planned=[None, True, False][n % 3],
            by=f"user{n % 2}",
        )
    # Issue 10's records. An import seen again with a cause (a second version recorded).
    rows = parse_csv(SAMPLE.read_text(encoding="utf-8"), est).rows
    again = [{**r, "cause": "power cut (re-imported)"} for r in rows[:3]]
    store.import_outages(again, AS_OF + timedelta(hours=1))
    webmail = {"checks": ["dc/webmail"]}
    by = "ops"
    store.declare_window(
        datetime(2025, 11, 1, 1, 0, 0, 500_000, tzinfo=UTC),
        datetime(2025, 11, 12, 5, 0, tzinfo=UTC),
        webmail,
        "mail upgrade",
        by,
        datetime(2025, 10, 30, 12, 0, tzinfo=UTC),
    )
    w = store.declare_window(
        datetime(2025, 12, 14, 0, 0, tzinfo=UTC),
        datetime(2025, 12, 14, 6, 0, tzinfo=UTC),
        {"areas": ["network_telephony"]},
        "core switch swap",
        by,
        datetime(2025, 12, 1, 8, 0, tzinfo=UTC),
    )
    store.cancel_window(w["id"], by, AS_OF + timedelta(hours=2), "postponed")
    stopped = datetime(2025, 11, 20, 9, 30, 0, 250_000, tzinfo=UTC)
    back = datetime(2025, 11, 20, 13, 0, tzinfo=UTC)
    store.open_not_monitored("scdc-cambourne", "scdc-cambourne", stopped, stopped, "stopped")
    store.close_not_monitored("scdc-cambourne", back, back)
    offline = NOW - timedelta(minutes=90)
    store.open_provisional("hdc-pathfinder", "hdc-pathfinder", offline)
    store.open_not_monitored("hdc-pathfinder", "hdc-pathfinder", offline, NOW, "offline")


_PYGAL_ID = re.compile(r"chart-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def unrandom(text: str) -> str:
    """pygal names each chart with a fresh uuid4: the one part of a report that is not a
    function of its data (mask it to compare)."""
    return _PYGAL_ID.sub("chart-UUID", text)


def _dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True) + "\n"


def figures(store: Store, est: Estate) -> dict[str, str]:
    """Every figure and row a user or another module reads, as text, by file name."""
    out: dict[str, str] = {}
    tz = est.accounting.timezone
    from zoneinfo import ZoneInfo

    for pid in PERIODS:
        data = build_report(store, est, parse_period(pid, ZoneInfo(tz)), NOW)
        for fmt in FORMATS:
            out[f"report-{pid}.{fmt}"] = unrandom(render(fmt, data))
    # As it stood before the re-import, the cancellation and the provisional outage.
    data = build_report(store, est, parse_period("FY2025Q3", ZoneInfo(tz)), NOW, as_of=AS_OF)
    for fmt in FORMATS:
        out[f"report-FY2025Q3-as-of.{fmt}"] = unrandom(render(fmt, data))
    q = parse_period("FY2025Q3", ZoneInfo(tz))
    ids = sorted(o["id"] for o in store.outages())
    reads: dict[str, Any] = {
        "kpi": kpi_snapshot(store, est, NOW),
        "outages": store.outages(),
        "outages_open": store.outages(open_only=True),
        "outages_recent": store.outages(limit=50),
        "outages_between": store.outages_between(q.start, q.end),
        "outages_between_area": store.outages_between(q.start, q.end, area="email"),
        "board_outages": store.board_outages(start=q.start, end=q.end, limit=100),
        "board_open": store.board_outages(open_only=True),
        "recent": store.recent_outages(10),
        "outage": [store.outage(i) for i in ids[::7]],
        "board_outage": [store.board_outage(i) for i in ids[::11]],
        "outage_events": [store.outage_events(i) for i in ids[::13]],
        "start_evidence": store.start_evidence([f"dc:{n}" for n in range(1, 40, 3)]),
        "earliest": store.earliest_record(),
        "first_seen": [store.check_first_seen(s, c) for s, c, _ in CHECKS],
        "event_history": sorted(store.event_history()),
        "events": store.events()[::9],
        "annotation_history": [store.annotation_history(i) for i in ids[::5]],
        "windows": store.windows(q.start, q.end),
        "windows_as_of": store.windows(q.start, q.end, AS_OF),
        "not_monitored": store.not_monitored(q.start, q.end),
        "outages_as_of": store.outages_as_of(q.start, q.end, AS_OF),
        "detected_at": store.detected_at([f"dc:{n}" for n in range(1, 40, 3)]),
    }
    for name, value in reads.items():
        out[f"reads-{name}.json"] = _dump(value)
    return out


def main(outdir: Path) -> None:
    """Make the fixtures with whatever code is on the path (see the module docstring)."""
    outdir.mkdir(parents=True, exist_ok=True)
    db = outdir / "store-v5.db"
    db.unlink(missing_ok=True)
    est = estate()
    store = Store(db)
    populate(store, est)
    for name, text in figures(store, est).items():
        (outdir / f"v5-{name}").write_text(text, encoding="utf-8")
    store.close()
    conn = sqlite3.connect(db)
    (outdir / "store-v5.sql").write_text("\n".join(conn.iterdump()) + "\n", encoding="utf-8")
    conn.close()
    db.unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
