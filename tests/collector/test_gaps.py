"""Missing seqs per agent, and what the log says when they stop counting."""

from __future__ import annotations

import logging

import pytest

from collector.gaps import Gaps


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
