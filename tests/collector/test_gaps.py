"""Missing seqs per agent, and what the log says when they stop counting."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import pytest

from availmon.clock import utcnow
from availmon.schema import Heartbeat, State, topic
from collector.gaps import Gaps
from collector.main import Collector
from tests.collector.board_helpers import Feed, board_estate


def test_a_hole_is_missing_past_the_grace_and_arriving_clears_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g = Gaps(grace=10.0)
    g.seen("a", [(1, 5), (8, 10)], 0.0, first_seq=1)
    assert g.evaluate(5.0) == {"a": 0}  # within the grace
    with caplog.at_level(logging.INFO, logger="collector.gaps"):
        assert g.evaluate(20.0) == {"a": 2}
        g.seen("a", [(6, 7)], 21.0)
        assert g.evaluate(22.0) == {"a": 0}
    assert "seqs 6-7 (2 events) never arrived" in caplog.text
    assert "every missing seq has now arrived" in caplog.text


def test_a_restarted_agents_new_numbering_says_so_not_that_they_arrived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An agent numbers afresh from the clock when its spool opens: seqs missing before the
    restart stop counting, which the log said was their arrival."""
    g = Gaps(grace=10.0)
    g.seen("a", [(1, 5), (8, 10)], 0.0, first_seq=1)
    assert g.evaluate(20.0) == {"a": 2}
    with caplog.at_level(logging.INFO, logger="collector.gaps"):
        g.seen("a", [(1000, 1001)], 21.0, first_seq=1000)
        assert g.evaluate(22.0) == {"a": 0}
    assert "every missing seq has now arrived" not in caplog.text
    assert "below where its numbering now starts (1000; the agent restarted)" in caplog.text


def test_the_start_of_a_numbering_only_moves_up() -> None:
    """A batch delivered late, from before the agent's restart, carries the older start:
    the hole between the two numberings must not count again."""
    g = Gaps(grace=10.0)
    g.seen("a", [(1000, 1001)], 0.0, first_seq=1000)
    g.seen("a", [(1, 5)], 1.0, first_seq=1)
    assert g.evaluate(100.0) == {"a": 0}


async def test_a_restarted_collector_does_not_count_the_hole_between_numberings(
    tmp_path: Path,
) -> None:
    """Every agent restart starts a new numbering from the clock: a collector starting up
    took the lowest stored seq as where the agent's seqs begin, and counted the hole up to
    the new numbering (millions of seqs an hour) as missing."""
    estate = board_estate(tmp_path)
    c = Collector(estate)
    try:
        feed = Feed(c)
        t0 = utcnow() - timedelta(hours=2)
        feed.seq["dc"] = 1_700_000_000_000  # the first numbering
        await feed.event("dc", "webmail", "email", State.UP, State.DOWN, t0)
        restarted = 1_700_003_600_000  # an hour later the agent restarted
        feed.seq["dc"] = restarted
        await feed.event("dc", "webmail", "email", State.DOWN, State.UP, t0 + timedelta(hours=1))
        hb = Heartbeat(
            site="dc",
            agent="dc",
            at=utcnow(),
            seq=restarted + 1,
            first_seq=restarted + 1,
            spool_depth=0,
            checks=[],
        )
        await c.handle_batch([(topic("dc", "dc", "heartbeat"), hb.to_json())])
    finally:
        c.close()
    again = Collector(estate)
    try:
        again._load_live()  # as at start
        assert again.gaps.evaluate(time.monotonic() + 3600) == {"dc": 0}
    finally:
        again.close()
