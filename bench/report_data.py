"""A collector store with a million outages in one quarter, for the report and reads benches.

1,000 checks (40 sites x 25 checks, the four areas, three councils and the shared data centre)
each flapping through a quarter: mostly short drops, some long ones, down, degraded and
unknown, a few planned and annotated, agent-derived rows each with when it was declared (two
60 s probes after the first failure, as the default three failures declare it: the
confirmation time issue 10 books). The rows go straight into a Store-created database with
``executemany`` (the events they would have come from are not written: nothing the benches
measure reads them): the bench measures reading them, not ingesting them.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from availmon.clock import to_us
from availmon.config import Estate, parse_config
from collector.store import Store

AREAS = ("network_telephony", "email", "internet_web", "servers")
PARTNERS = {
    "CCC": "Cambridge City Council",
    "HDC": "Huntingdonshire District Council",
    "SCDC": "South Cambridgeshire District Council",
    "SHARED": "Shared service (data centre)",
}
SITES = 40
CHECKS_PER_SITE = 25
#: The report's quarter (FY2025Q2: July to September 2025) and the three before it (UTC
#: bounds of the Europe/London quarters).
QUARTER = "FY2025Q2"
QUARTERS_US = (
    (to_us(datetime(2024, 9, 30, 23, tzinfo=UTC)), to_us(datetime(2024, 12, 31, tzinfo=UTC))),
    (to_us(datetime(2024, 12, 31, tzinfo=UTC)), to_us(datetime(2025, 3, 31, 23, tzinfo=UTC))),
    (to_us(datetime(2025, 3, 31, 23, tzinfo=UTC)), to_us(datetime(2025, 6, 30, 23, tzinfo=UTC))),
    (to_us(datetime(2025, 6, 30, 23, tzinfo=UTC)), to_us(datetime(2025, 9, 30, 23, tzinfo=UTC))),
)
#: From an outage's first failed probe to its declaration: two more 60 s probes.
CONFIRMATION_US = 120_000_000
#: The columns ``_rows`` gives, in order.
COLUMNS = (
    "id, site, agent, check_name, area, state, start, end, source, planned, cause, provider,"
    " note, start_event, end_event, detected"
)
#: "Now" for the report: the quarter is complete.
NOW = datetime(2025, 11, 15, 12, tzinfo=UTC)


def report_spans(rows: int, history: int) -> list[tuple[int, int, int]]:
    """``rows`` outages in the report's quarter, ``history`` in each of the three before."""
    return [(lo, hi, history) for lo, hi in QUARTERS_US[:3]] + [(*QUARTERS_US[3], rows)]


def site_ids() -> list[str]:
    return [f"site-{n:02d}" for n in range(SITES)]


def checks() -> list[tuple[str, str, str]]:
    """(site, check, area) for the 1,000 checks."""
    out = []
    for site in site_ids():
        for c in range(CHECKS_PER_SITE):
            out.append((site, f"check-{c:02d}", AREAS[c % len(AREAS)]))
    return out


def config_text(database: Path, broker_port: int = 1883, web_port: int = 0) -> str:
    """``estate``'s config as TOML, for the processes the benches start (``availmon report``,
    ``availmon collector``)."""
    lines = [
        'name = "bench estate"',
        "",
        "[broker]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        "",
        "[collector]",
        f'database = "{database}"',
        "",
        "[web]",
        'listen = "127.0.0.1"',
        f"port = {web_port}",
        "",
    ]
    for pid, name in PARTNERS.items():
        lines += [f"[partners.{pid}]", f'name = "{name}"', ""]
    partner_ids = list(PARTNERS)
    for n, site in enumerate(site_ids()):
        lines += [f"[sites.{site}]", f'partner = "{partner_ids[n % len(partner_ids)]}"', ""]
        for s, check, area in checks():
            if s == site:
                lines += [
                    f"[[sites.{site}.checks]]",
                    f'name = "{check}"',
                    'type = "tcp"',
                    'target = "127.0.0.1:9"',
                    f'area = "{area}"',
                    'interval = "60s"',
                    "",
                ]
    return "\n".join(lines)


def estate(database: Path, **collector: Any) -> Estate:
    """The estate of the generated store: every check configured (a TCP check to a
    loopback port with nothing listening; the benches never run probes)."""
    sites: dict[str, Any] = {}
    partner_ids = list(PARTNERS)
    for n, site in enumerate(site_ids()):
        sites[site] = {
            "partner": partner_ids[n % len(partner_ids)],
            "checks": [
                {
                    "name": check,
                    "type": "tcp",
                    "target": "127.0.0.1:9",
                    "area": area,
                    "interval": "60s",
                }
                for s, check, area in checks()
                if s == site
            ],
        }
    return parse_config(
        {
            "name": "bench estate",
            "broker": {"host": "127.0.0.1", "port": 1883},
            "collector": {"database": str(database), **collector},
            "web": {"listen": "127.0.0.1", "port": 0},
            "partners": {k: {"name": v} for k, v in PARTNERS.items()},
            "sites": sites,
        },
        "bench",
    )


def _rows(spans: list[tuple[int, int, int]], seed: int) -> Iterator[tuple[Any, ...]]:
    """``count`` outages in each ``[lo, hi)``: faults (incidents) each seen by about a
    hundred checks of one area at once, with a few seconds' jitter, so the report has
    thousands of incidents of many rows rather than one that covers the whole quarter."""
    rng = random.Random(seed)
    by_area: dict[str, list[tuple[str, str]]] = {a: [] for a in AREAS}
    for site, check, area in checks():
        by_area[area].append((site, check))
    n = 0
    for lo, hi, count in spans:
        per_area = count // len(AREAS)
        for a, area in enumerate(AREAS):
            rows = per_area + (count - per_area * len(AREAS) if a == 0 else 0)
            faults = max(rows // 100, 1)
            step = (hi - lo) // faults
            left = rows
            for f in range(faults):
                r = rng.random()
                if r < 0.80:
                    length = rng.randrange(30, 300) * 1_000_000
                elif r < 0.99:
                    length = rng.randrange(5, 30) * 60_000_000
                else:
                    length = rng.randrange(1, 4) * 3_600_000_000
                start = lo + f * step + rng.randrange(max(step - length, 1))
                s = rng.random()
                state = "down" if s < 0.80 else "degraded" if s < 0.93 else "unknown"
                planned = 1 if rng.random() < 0.03 else 0
                seen = left // (faults - f)
                left -= seen
                for site, check in rng.sample(by_area[area], min(seen, len(by_area[area]))):
                    n += 1
                    eid = f"{site}:h{n}"  # never an id a live agent's event takes
                    t0 = start + rng.randrange(20_000_000)
                    t1 = max(start + length - rng.randrange(20_000_000), t0 + 1_000_000)
                    t1 = min(t1, hi - 1)
                    yield (
                        f"o:{eid}",
                        site,
                        site,
                        check,
                        area,
                        state,
                        t0,
                        t1,
                        "agent",
                        planned,
                        None,  # agents record no cause; people annotate (below)
                        None,
                        None,
                        eid,
                        f"{site}:{n}e",
                        min(t0 + CONFIRMATION_US, t1 - 1),
                    )


INSERT = f"INSERT INTO outages ({COLUMNS}) VALUES ({','.join('?' * 16)})"


def make_store(path: Path, spans: list[tuple[int, int, int]], *, seed: int = 9) -> int:
    """Create the store at ``path`` (migrated by Store) holding ``count`` generated outages
    in each ``(lo, hi, count)`` (µs), and annotations on one in a thousand; returns the
    number of outage rows."""
    Store(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        total = 0
        batch: list[tuple[Any, ...]] = []
        for row in _rows(spans, seed):
            batch.append(row)
            if len(batch) == 50_000:
                conn.executemany(INSERT, batch)
                total += len(batch)
                batch = []
        conn.executemany(INSERT, batch)
        total += len(batch)
        # People annotated one outage in five hundred: planned work, causes, providers.
        conn.execute(
            "INSERT INTO annotations (outage_id, cause, provider, planned, updated_at,"
            " updated_by) SELECT id, CASE rowid % 3 WHEN 0 THEN 'planned works' WHEN 1 THEN"
            " 'fibre cut' ELSE 'power' END, CASE rowid % 3 WHEN 1 THEN 'BT Openreach' END,"
            " rowid % 3 = 0, '2025-10-01T09:00:00.000000+00:00', 'bench'"
            " FROM outages WHERE rowid % 500 = 7"
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return total
