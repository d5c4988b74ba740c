"""The collector keeps the summary of each day that has ended (issue 9): a report of the
quarter then reads them back, and works out only the day still running."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing.process
import signal
from datetime import timedelta
from pathlib import Path
from zoneinfo import TZPATH, ZoneInfo

import pytest

from availmon.clock import utcnow
from collector.accounting import last_quarters, quarter_containing, to_us
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
        made = asyncio.run(c.keep_days(now))
        days = (now.astimezone(tz).date() - before.start.date()).days
        assert made == days == kept_days(c)
        assert c.keeper_passes == 1
        assert asyncio.run(c.keep_days(now)) == 0  # nothing twice
        assert c.keeper_passes == 1  # nothing written, no day ended: no process started
        report = build_report(c.read_store, c.estate, this, now)
        assert kept_days(c) == days  # the report only worked out today
        web = next(a for a in report["areas"] if a["id"] == "internet_web")
        # From yesterday 10:00 (or the quarter's start, if it began today), still open.
        since = max(late.start, this.start_us)
        assert web["downtime_minutes"] == pytest.approx((to_us(now) - since) / 60e6)
    finally:
        c.close()


def history_keys(c: Collector) -> set[tuple[int, int]]:
    rows = c.store.conn.execute("SELECT lo, hi FROM figures_cache WHERE key LIKE 'combined:%'")
    return {(int(lo), int(hi)) for lo, hi in rows}


def test_the_collector_keeps_the_history_the_quarterly_report_shows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last quarter's report charts it and the three quarters before it: after a change
    of the rules or an import, the first report worked those three out from their records.
    The keeper keeps them, once, so that the report reads them back."""
    caplog.set_level(logging.INFO, logger="collector.main")
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    try:
        tz = ZoneInfo(c.estate.accounting.timezone)
        now = utcnow()
        this = quarter_containing(now, tz)
        last, _ = last_quarters(this, tz, 2)
        long_ago = (now.astimezone(tz) - timedelta(days=430)).strftime("%Y-%m-%dT10:00")
        c.store.import_outages(
            [store_row(outage("internet_web", long_ago, None, site="hq", id="i:old"))]
        )
        asyncio.run(c.keep_days(now))
        shown = {(q.start_us, q.end_us) for q in last_quarters(last, tz)}
        assert history_keys(c) == shown  # this quarter is running: never kept
        assert "kept the figures of 4 quarters the report's history charts" in caplog.messages
        kept = c.store.conn.execute(
            "SELECT key, data FROM figures_cache WHERE key LIKE 'combined:%'"
        ).fetchall()
        report = build_report(c.read_store, c.estate, last, now)
        assert (
            c.store.conn.execute(
                "SELECT key, data FROM figures_cache WHERE key LIKE 'combined:%'"
            ).fetchall()
            == kept
        )  # read back, nothing worked out again
        c.store.conn.execute("DELETE FROM figures_cache")
        c.store.conn.commit()
        assert build_report(c.read_store, c.estate, last, now)["history"] == report["history"]
        # Open since 14 months ago: the one area measured was down throughout each quarter.
        assert [h["availability_percent"] for h in report["history"]] == [0.0] * 4
    finally:
        c.close()


def test_what_stops_the_keeper_comes_back_to_the_collector(tmp_path: Path) -> None:
    """The keeper's process finds no database where the config says: the pass raises with
    the reason (the collector's loop logs it and tries again next pass)."""
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    try:
        garbage = tmp_path / "garbage.db"
        garbage.write_bytes(b"this is not a database, " * 100)
        collector = c.estate.collector.model_copy(update={"database": garbage})
        c.estate = c.estate.model_copy(update={"collector": collector})
        with pytest.raises(RuntimeError, match="not a database"):
            asyncio.run(c.keep_days())
        assert c._keeping is None
    finally:
        c.close()


def test_a_keeper_that_reads_other_time_zone_rules_keeps_and_drops_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector keys its figures on the time zone rules it read at start; the keeper
    is a new process each pass and reads them afresh. After a tzdata upgrade it dropped
    every figure the collector kept (kept under other rules, to it) and kept its own where
    the collector never reads, on every pass until a restart. It now does neither, and
    says why."""
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    try:
        tz = ZoneInfo(c.estate.accounting.timezone)
        now = utcnow()
        yesterday = (now.astimezone(tz) - timedelta(days=1)).strftime("%Y-%m-%dT10:00")
        c.store.import_outages(
            [store_row(outage("internet_web", yesterday, None, site="hq", id="i:open"))]
        )
        asyncio.run(c.keep_days(now))
        upgraded = tmp_path / "tz"
        (upgraded / "Europe").mkdir(parents=True)
        london = next(p for p in TZPATH if Path(p, "Europe/London").is_file())
        (upgraded / "Europe/London").write_bytes(Path(london, "Europe/Paris").read_bytes())
        monkeypatch.setenv("PYTHONTZPATH", str(upgraded))  # what the next keeper reads
        before = c.store.conn.execute("SELECT key FROM figures_cache ORDER BY key").fetchall()
        early = (now.astimezone(tz) - timedelta(days=2)).strftime("%Y-%m-%dT10:00")
        c.store.import_outages(  # a write into a kept day: the next pass starts
            [store_row(outage("email", early, yesterday, site="hq", id="i:late"))]
        )
        left = c.store.conn.execute("SELECT key FROM figures_cache ORDER BY key").fetchall()
        assert 0 < len(left) < len(before)
        with pytest.raises(RuntimeError, match="time zone database or the holidays library"):
            asyncio.run(c.keep_days(now))
        assert c.keeper_passes == 2
        after = c.store.conn.execute("SELECT key FROM figures_cache ORDER BY key").fetchall()
        assert after == left  # nothing dropped, nothing kept under the other rules
    finally:
        c.close()


def test_a_pass_cancelled_stops_its_process(tmp_path: Path) -> None:
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))

    async def cancel_it() -> multiprocessing.process.BaseProcess:
        task = asyncio.ensure_future(c.keep_days())
        await asyncio.sleep(0)  # the task's first step asks the internal thread for the state
        # That thread is one, first come first served: once this is answered, the task's
        # answer came first, and its next step (start the process) ran before ours.
        await c.internal(lambda: None)
        proc = c._keeping
        assert proc is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return proc

    try:
        proc = asyncio.run(cancel_it())
        assert proc.exitcode == -signal.SIGTERM  # stopped, not left to finish its pass
        assert c._keeping is None
    finally:
        c.close()


def test_a_write_into_a_kept_day_starts_the_next_pass(tmp_path: Path) -> None:
    """The keeper skips a pass only while nothing can be missing: a late outage imported
    into a kept day drops that day, and the next pass starts a process and keeps it again."""
    c = Collector(estate(tmp_path, free_port(), [web_check("http://127.0.0.1:9/")]))
    try:
        tz = ZoneInfo(c.estate.accounting.timezone)
        now = utcnow()
        first = asyncio.run(c.keep_days(now))
        assert first == kept_days(c) > 0
        yesterday = (now.astimezone(tz) - timedelta(days=1)).strftime("%Y-%m-%dT10:00")
        late = outage("internet_web", yesterday, None, site="hq", id="i:late")
        c.store.import_outages([store_row(late)])
        assert kept_days(c) == first - 1
        assert asyncio.run(c.keep_days(now)) == 1
        assert c.keeper_passes == 2
        assert kept_days(c) == first
    finally:
        c.close()
