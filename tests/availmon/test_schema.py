"""The heartbeat's spool fields: optional (an older agent's heartbeat still validates, and
says nothing of them), and ``spool_error`` is bounded, one printable line."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from availmon.schema import MAX_SPOOL_ERROR, Heartbeat

#: A heartbeat as an agent from before ``spool_unwritten`` / ``spool_error`` sends it.
OLD = {
    "schema": 1,
    "site": "hq",
    "agent": "hq",
    "at": "2026-01-05T09:00:00.000000+00:00",
    "seq": 7,
    "first_seq": 1,
    "spool_depth": 3,
    "spool_dropped": 0,
    "unconfirmed": {"availmon-collector": 3},
    "traps": {},
    "checks": [],
}


def with_(**fields: object) -> bytes:
    return json.dumps({**OLD, **fields}).encode()


def test_an_older_agents_heartbeat_validates_and_says_nothing_of_them() -> None:
    hb = Heartbeat.model_validate_json(json.dumps(OLD))
    assert (hb.spool_unwritten, hb.spool_error) == (0, None)
    assert not {"spool_unwritten", "spool_error"} & hb.model_fields_set


def test_a_spool_that_cannot_be_written_round_trips() -> None:
    error = "database or disk is full (SQLITE_FULL) at /var/lib/availmon/agent/hq.spool.db"
    hb = Heartbeat.model_validate_json(with_(spool_unwritten=12, spool_error=error))
    assert (hb.spool_unwritten, hb.spool_error) == (12, error)
    assert Heartbeat.model_validate_json(hb.to_json()) == hb


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"spool_error": "x" * (MAX_SPOOL_ERROR + 1)}, "at most 500 characters"),
        ({"spool_error": "disk I/O error\nspool ok"}, "character '\\n' is not printable"),
        ({"spool_error": "full \x1b[2J"}, "character '\\x1b' is not printable"),
        ({"spool_error": "full \u202egnp.exe"}, "character '\\u202e' is not printable"),
        ({"spool_unwritten": -1}, "greater than or equal to 0"),
        ({"spool_unwritten": 2**63}, "less than or equal to"),
    ],
)
def test_bad_spool_fields_are_refused(fields: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match="spool_") as caught:
        Heartbeat.model_validate_json(with_(**fields))
    assert why in str(caught.value)


def test_the_longest_spool_error_is_taken() -> None:
    error = "é" * MAX_SPOOL_ERROR  # characters, not bytes
    assert Heartbeat.model_validate_json(with_(spool_error=error)).spool_error == error
