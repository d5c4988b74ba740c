"""Users' patterns (``body_regex``, ``expect``): a pattern that backtracks without end is a
result at the probe's timeout, and the event loop runs while it searches."""

from __future__ import annotations

import pytest
from probe_peers import LoopTurns
from pydantic import ValidationError

from probes import patterns, tcp

#: Exponential for a backtracking engine: (a|aa)+ tries every split of the a's before the
#: "!" fails it. Python's re took hours on this; the regex module gives up at its timeout.
CATASTROPHIC = r"(a|aa)+$"
EXPLODING = "a" * 60 + "!"


async def test_a_search_lets_the_loop_run_and_ends_at_its_time() -> None:
    async with LoopTurns() as turns:
        before = turns.count
        with pytest.raises(patterns.PatternTimeout):
            await patterns.search(CATASTROPHIC, EXPLODING, 0.2)
        during = turns.count - before
    assert during > 0  # a search on the loop (re) lets nothing else run until it ends


async def test_an_ordinary_search_answers_on_the_loop() -> None:
    assert await patterns.search(r"^SSH-2\.0-", "SSH-2.0-OpenSSH_9.2\r\n", 1.0)
    assert not await patterns.search(r"^220 ", "554 go away\r\n", 1.0)
    assert await patterns.search(CATASTROPHIC, "a" * 60, 1.0)  # it matches at once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(unclosed", "invalid regular expression: missing ) at position 9"),
        ("a{2,1}", "invalid regular expression: min repeat greater than max repeat"),
    ],
)
def test_a_bad_pattern_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        tcp.Options.model_validate({"expect": text})
    assert message in str(caught.value)


def test_a_pattern_is_kept_as_its_text() -> None:
    """What the config said, for the reload's comparison and the probe's messages."""
    options = tcp.Options.model_validate({"expect": "^220 "})
    assert options.expect == "^220 "
    assert options.model_dump(mode="json")["expect"] == "^220 "
