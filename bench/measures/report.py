"""Target 5: ``availmon report`` for a quarter of 1,000,000 outage rows, beside a bare
interval union of the same rows on integer columns, in the same run.

The store (bench/report_data.py) holds 1,000,000 outages in FY2025Q2 and 100,000 in each of
the three quarters before it (the history chart reads them). Each run clears the figures
cache first, so the first figure is a cold report (the whole quarter and the history read,
each day's summary kept as it is made); then one of the quarter's last outages is annotated
through the CLI, which drops the quarter's figures and its last day's summary, and the
report is made again (``report.again``: one day worked out, the others read back). The
cached case (a quarter already reported) is in the notes, as is the json format, whose
output lists every outage's id. CPU and peak RSS are the whole process's, from ``wait4``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import AVAILMON, PYTHON, Ctx, Figure, Spread
from bench.report_data import AREAS, QUARTER, QUARTERS_US, config_text, make_store, report_spans
from collector.store import Store

ROWS = 1_000_000
HISTORY = 100_000

#: The peer: the same quarter's outages per area in start order, from the same covering
#: index and the same lower bound, merged into a union: what the report does for one
#: figure, and nothing else.
PEER = """
import sqlite3, sys
db, lo, hi, areas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
conn = sqlite3.connect(db)
totals = {}
for area in areas:
    longest = conn.execute(
        "SELECT max(end - start) FROM outages WHERE area = ?", (area,)).fetchone()[0] or 0
    total, cs, ce = 0, None, None
    for s, e in conn.execute(
        "SELECT start, end FROM outages WHERE area = ? AND start >= ? AND start < ?"
        " AND end > ? ORDER BY start", (area, lo - longest, hi, lo)):
        s, e = max(s, lo), min(e, hi)
        if ce is not None and s <= ce:
            ce = max(ce, e)
        else:
            if ce is not None:
                total += ce - cs
            cs, ce = s, e
    totals[area] = total + ((ce - cs) if ce is not None else 0)
print(totals)
"""


#: What any report of these rows costs before it works anything out: the rows the rules
#: need (the report's own query, every column it reads, the quarter and the history's
#: three quarters), read and dropped. A report that reads its rows into Python cannot
#: cost less than this.
READ_FLOOR = """
import sqlite3, sys
db, lo, select = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = sqlite3.connect(db)
n = 0
for _row in conn.execute(select + " WHERE o.start >= ?", (lo,)):
    n += 1
print(n)
"""

#: ``PEER``'s union done by SQLite itself (window functions, no row in Python): what one
#: pass over the rows costs where the work stays in C.
SQL_UNION = """
import sqlite3, sys
db, lo, hi, areas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
conn = sqlite3.connect(db)
q = (
    "WITH o AS (SELECT max(start, :lo) AS s, min(end, :hi) AS e FROM outages"
    " WHERE area = :area AND start < :hi AND end > :lo),"
    " m AS (SELECT s, e, max(e) OVER (ORDER BY s ROWS BETWEEN UNBOUNDED PRECEDING"
    " AND 1 PRECEDING) AS pe FROM o),"
    " g AS (SELECT s, e, sum(pe IS NULL OR s > pe) OVER (ORDER BY s ROWS UNBOUNDED"
    " PRECEDING) AS grp FROM m)"
    " SELECT sum(ge - gs) FROM (SELECT min(s) AS gs, max(e) AS ge FROM g GROUP BY grp)"
)
print({a: conn.execute(q, {"lo": lo, "hi": hi, "area": a}).fetchone()[0] for a in areas})
"""


def timed(argv: Sequence[str], timeout: float = 600) -> tuple[float, float, float]:
    """Run to the end: (wall s, CPU s user + system, peak RSS MB), from ``wait4``."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            raise RuntimeError(f"{argv[0]} ran past {timeout} s")
        time.sleep(0.005)
    wall = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {err[-500:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def clear_cache(db: Path) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM figures_cache")
    conn.close()


def late_note(db: Path, config: Path, lo: int, hi: int, n: int) -> None:
    """A person annotates one of the quarter's last outages, through the CLI: the write
    drops the quarter's figures and its last day's summary, as any late write does."""
    conn = sqlite3.connect(db)
    (oid,) = conn.execute(
        "SELECT id FROM outages WHERE start >= ? AND start < ? ORDER BY start DESC LIMIT 1",
        (hi - 6 * 3_600_000_000, hi),
    ).fetchone()
    conn.close()
    note = ["--note", f"bench note {n}", "--config", str(config)]
    subprocess.run(
        [AVAILMON, "outages", "annotate", oid, *note],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def keep_pass(config: Path, hi: int) -> tuple[list[float], list[float]]:
    """What the collector does in the background, in this process: keep every day of
    the quarter, then the history's quarters, as the first pass after the quarter has
    ended; the CPU seconds of each day, and of each quarter."""
    from datetime import UTC, datetime, timedelta

    from availmon.config import load_config
    from collector.report import keep_days, keep_history
    from collector.store import Store

    estate = load_config(str(config))
    store = Store(estate.collector.database)
    try:
        after = datetime.fromtimestamp(hi / 1e6, UTC) + timedelta(hours=12)
        return list(keep_days(store, estate, after)), list(keep_history(store, estate, after))
    finally:
        store.close()


def run(ctx: Ctx) -> list[Figure]:
    db = ctx.workdir / "report.db"
    ctx.say(f"bench: report: making a store of {ROWS + 3 * HISTORY:,} outages")
    made = make_store(db, report_spans(ROWS, HISTORY))
    config = ctx.workdir / "estate.toml"
    config.write_text(config_text(db))
    out = ctx.workdir / "report.html"
    argv = [AVAILMON, "report", "--period", QUARTER, "--config", str(config)]
    lo, hi = QUARTERS_US[3]
    peer = [PYTHON, "-c", PEER, str(db), str(lo), str(hi), *AREAS]
    floor = [PYTHON, "-c", READ_FLOOR, str(db), str(QUARTERS_US[0][0]), Store._RECORD_SELECT]
    in_sql = [PYTHON, "-c", SQL_UNION, str(db), str(lo), str(hi), *AREAS]
    timed(peer)  # warm the page cache for both: the figure is CPU, not the first read
    cpu, rss, peer_cpu, ratio, walls = [], [], [], [], []
    floor_cpu: list[float] = []
    sql_cpu: list[float] = []
    again_cpu, again_rss, again_ratio = [], [], []
    for n in range(ctx.runs):
        clear_cache(db)
        wall, used, mb = timed([*argv, "--format", "html", "--out", str(out)])
        _, theirs, _ = timed(peer)
        floor_cpu.append(timed(floor)[1])
        sql_cpu.append(timed(in_sql)[1])
        cpu.append(used)
        rss.append(mb)
        walls.append(wall)
        peer_cpu.append(theirs)
        ratio.append(used / theirs)
        late_note(db, config, lo, hi, n)
        _, used, mb = timed([*argv, "--format", "html", "--out", str(out)])
        again_cpu.append(used)
        again_rss.append(mb)
        again_ratio.append(used / theirs)
    _, cached, cached_mb = timed([*argv, "--format", "html", "--out", str(out)])
    clear_cache(db)
    _, as_json, json_mb = timed([*argv, "--format", "json", "--out", str(ctx.workdir / "r.json")])
    clear_cache(db)
    days, quarters = keep_pass(config, hi)
    # The first report once the collector's pass is done (after an import or a change of the
    # rules): the days and the history read back, the quarter's figures made from them.
    _, kept, _ = timed([*argv, "--format", "html", "--out", str(out)])
    cpu_s, rss_s = Spread.of(cpu), Spread.of(rss)
    note = (
        f"{made:,} rows ({ROWS:,} in {QUARTER}); cold: figures cache cleared before each run"
        f" (wall {Spread.of(walls).text()} s); cached: {cached:.2f} CPU-s, {cached_mb:.0f} MB;"
        f" --format json (every outage id listed): {as_json:.2f} CPU-s, {json_mb:.0f} MB;"
        f" the collector keeping the days ({len(days)} of the quarter and the last):"
        f" {sum(days):.1f} CPU-s, {Spread.of(days).text()} a day, then the history's"
        f" {len(quarters)} quarters: {sum(quarters):.1f} CPU-s; the report after that pass:"
        f" {kept:.2f} CPU-s; floor: the rows the rules need read and dropped (the report's"
        f" query, the quarter and the history) {Spread.of(floor_cpu).text()} CPU-s, the"
        f" union done by SQLite's window functions {Spread.of(sql_cpu).text()} CPU-s"
    )
    return [
        Figure(
            "report.cpu",
            cpu_s,
            "CPU-s",
            cpu_s.median <= 2.0,
            peer="interval union",
            peer_value=Spread.of(peer_cpu),
            ratio=Spread.of(ratio),
            note=note,
            extra={
                "cached_cpu": cached,
                "json_cpu": as_json,
                "json_rss_mb": json_mb,
                "after_keeper_cpu": kept,
                "read_floor_cpu": Spread.of(floor_cpu).median,
                "sql_union_cpu": Spread.of(sql_cpu).median,
            },
        ),
        Figure("report.rss", rss_s, "MB", rss_s.median <= 300),
        Figure(
            "report.again.cpu",
            Spread.of(again_cpu),
            "CPU-s",
            Spread.of(again_cpu).median <= 2.0,
            peer="interval union",
            peer_value=Spread.of(peer_cpu),
            ratio=Spread.of(again_ratio),
            note="the same report after a note on one of the quarter's last outages"
            " (`availmon outages annotate`): the days before it read back from the store",
        ),
        Figure("report.again.rss", Spread.of(again_rss), "MB", Spread.of(again_rss).median <= 300),
    ]


if __name__ == "__main__":
    import sys
    import tempfile

    from bench.run import table

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="availmon-bench-") as tmp:
        figures = run(Ctx(runs=runs, workdir=Path(tmp)))
    print(table({f.key: f for f in figures}, {}))
