"""Users' patterns (``body_regex``, ``expect``): a pattern that backtracks without end is a
result at the probe's timeout, and the event loop runs while it searches."""

from __future__ import annotations

import asyncio

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


@pytest.mark.parametrize("text", ["x{100000000}", "((a{30}){30}){30}", r"\p{L}{4294967294}"])
def test_a_pattern_that_would_compile_to_gigabytes_is_a_config_error(text: str) -> None:
    """regex writes fixed repeats out in full: x{100000000} took 2.9 GB to compile."""
    with pytest.raises(ValidationError, match="regular expression too large"):
        tcp.Options.model_validate({"expect": text})


@pytest.mark.parametrize("text", ["x{0,100000}", ".{1,5000}", "(ab){1000}", r"\p{L}{300}"])
def test_long_ranges_and_modest_counts_are_fine(text: str) -> None:
    assert tcp.Options.model_validate({"expect": text}).expect == text


async def test_slow_searches_leave_the_loops_thread_pool_alone() -> None:
    """asyncio's default pool resolves names and reads secrets for every check: searches
    that run to their time on it (six fill it on two cores) held up healthy checks."""
    slow = [
        asyncio.create_task(patterns.search(CATASTROPHIC, EXPLODING, 2.0))
        for _ in range(8)  # more than the default pool's workers on any machine here
    ]
    try:
        job = asyncio.create_task(asyncio.to_thread(lambda: "resolved"))
        done, _ = await asyncio.wait([job, *slow], return_when=asyncio.FIRST_COMPLETED)
        assert job in done  # not queued behind the searches
    finally:
        for task in slow:
            task.cancel()  # the two under way run out their time on their threads


async def test_one_search_gets_at_most_its_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stopping agent waits for the searches under way: each is capped, whatever the
    probe's timeout."""
    monkeypatch.setattr(patterns, "MOST_SECONDS", 0.2)
    with pytest.raises(patterns.PatternTimeout):
        await patterns.search(CATASTROPHIC, EXPLODING, 3600.0)


def test_the_probe_help_calls_a_pattern_a_regex() -> None:
    from availmon.probecli import options_help

    assert "--expect  (regex (optional), default None)" in options_help("tcp")
    assert "--body-regex  (regex (optional), default None)" in options_help("http")
