"""A peer's text in a probe's error (a banner, a reason phrase) goes into logs, events, the
board and alerts: terminal escapes and bidi overrides are shown escaped, and it is cut
short. The probes' own tests check each quote; this checks the floor every error has."""

from __future__ import annotations

from probes.base import ERROR_MAX_CHARS, fail, peer_text


def test_unsafe_characters_are_shown_escaped() -> None:
    hostile = "220 \x1b]0;pwned\x07 ready\x1b[2J \u202egnp.exe\r\nX"
    assert peer_text(hostile) == "220 \\x1b]0;pwned\\x07 ready\\x1b[2J \\u202egnp.exe\\r\\nX"


def test_a_long_quote_is_cut_short() -> None:
    assert peer_text("5" * 300, limit=200) == "5" * 199 + "…"
    assert peer_text("short") == "short"


def test_every_failure_is_safe_and_bounded() -> None:
    error = fail("SIP 503 " + "\x1b[31m" * 20_000).error
    assert error is not None
    assert len(error) == ERROR_MAX_CHARS
    assert "\x1b" not in error
