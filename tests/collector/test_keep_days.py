"""The collector keeps the summary of each day that has ended (issue 9): a report of the
quarter then reads them back, and works out only the day still running."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from availmon.clock import utcnow
from collector.accounting import last_quarters, quarter_containing
from collector.main import Collector
from collector.report import build_report
from tests.collector.helpers import outage, store_row
from tests.peers import estate, free_port, web_check


def kept_days(c: Collector) -> int:
    rows = c.store.conn.execute("SELECT count(*) FROM figures_cache WHERE key LIKE 'part:%'")
    return int(rows.fetchone()[0])


def test_the_collector_keeps_each_ended_day_of_this_quarter_and_the_last(
    tmp_path: Path,
) -> None:
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    try:
        tz = ZoneInfo(c.estate.accounting.timezone)
        now = utcnow()
        this = quarter_containing(now, tz)
        before, _ = last_quarters(this, tz, 2)
        yesterday = (now.astimezone(tz) - timedelta(days=1)).strftime("%Y-%m-%dT10:00")
        late = outage("internet_web", yesterday, None, site="hq", id="i:open")
        c.store.import_outages([store_row(late)])
        made = asyncio.run(c.keep_days())
        days = (now.astimezone(tz).date() - before.start.date()).days
        assert made == days == kept_days(c)
        assert asyncio.run(c.keep_days()) == 0  # nothing twice
        report = build_report(c.read_store, c.estate, this, now)
        assert kept_days(c) == days  # the report only worked out today
        web = next(a for a in report["areas"] if a["id"] == "internet_web")
        assert web["downtime_minutes"] > 14 * 60  # from yesterday 10:00, still open
    finally:
        c.close()
