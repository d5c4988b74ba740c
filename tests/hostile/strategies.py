"""Hypothesis strategies for what an attacker (or a careless operator) can feed availmon:
MQTT payloads, report periods, CSV rows and config values (issue 15).

Each strategy starts from something valid and breaks it in the ways that once crashed or
leaked: wrong types, huge and tiny numbers, NaN and infinities, unicode and control
characters, markup, secrets where they do not belong.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.conftest import CANARY

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SITE = "hq"
CHECK = "web"
AREA = "internet_web"

#: Text that once went out raw: markup, terminal escapes, bidi overrides, formula starts.
NASTY_TEXT = [
    "</td><script>alert(1)</script>",
    '<img src=x onerror="alert(2)">',
    "\x1b]0;owned\x07\x1b[2J",
    "\u202eevil",
    '=HYPERLINK("http://x.invalid","y")',
    "=cmd|' /C calc'!A0",
    "@SUM(1)",
    "+1",
    "-1",
    "| *x* [y](javascript:z) `w`",
    "\x00\x01\x7f",
    "a" * 5000,
    "",
    " ",
    "𝕏" * 3,
]

texts = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=50),
    st.text(
        alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So"]), max_size=20
    ),
)
numbers = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, -1, 0, 1e308, 5e-324, 2**63, 2**64]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
#: Any JSON-ish value, of any type, nested a little.
values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=10,
)
#: Times as text: valid, naive, far past and future, nonsense.
times = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([UTC, None]),
    ).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            (NOW + timedelta(days=1)).isoformat(),
            (NOW + timedelta(minutes=1)).isoformat(),
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "yesterday",
        ]
    ),
    texts,
)


def valid_event(seq: int = 1) -> dict[str, Any]:
    return {
        "schema": 1,
        "id": f"{SITE}:{seq}",
        "seq": seq,
        "site": SITE,
        "agent": SITE,
        "check": CHECK,
        "area": AREA,
        "from": "up",
        "to": "down",
        "at": NOW.isoformat(),
        "detected_at": NOW.isoformat(),
        "evidence": {"error": "HTTP 503", "latency": 0.2, "loss": 0.0, "probes": 3},
    }


def valid_heartbeat() -> dict[str, Any]:
    return {
        "schema": 1,
        "site": SITE,
        "agent": SITE,
        "at": NOW.isoformat(),
        "seq": 1,
        "spool_depth": 0,
        "checks": [{"check": CHECK, "area": AREA, "state": "up", "latency": 0.1}],
    }


EVENT_FIELDS = [*valid_event(), "evidence.latency", "evidence.loss", "evidence.error"]
HEARTBEAT_FIELDS = [*valid_heartbeat(), "checks.latency", "checks.check", "checks.area"]


def _set(data: dict[str, Any], field: str, value: Any) -> None:
    if "." not in field:
        data[field] = value
        return
    outer, inner = field.split(".", 1)
    target = data.get(outer)
    if isinstance(target, list) and target:
        target = target[0]
    if isinstance(target, dict):  # an earlier change may have replaced it: then nothing
        target[inner] = value


@st.composite
def broken(draw: st.DrawFn, base: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """A valid message with one to three fields replaced by hostile values (or removed)."""
    data = json.loads(json.dumps(base))
    for field in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3, unique=True)):
        if field in ("at", "detected_at", "since"):
            _set(data, field, draw(times))
        elif draw(st.booleans()) and "." not in field:
            data.pop(field, None)
        else:
            _set(data, field, draw(values))
    return data


def _dumps(data: Any) -> bytes:
    # Python writes NaN and Infinity as bare words, as a hostile sender may.
    return json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")


#: ``(kind, payload)`` for the topics of site hq: mostly broken JSON messages, some raw bytes.
payloads = st.one_of(
    st.tuples(st.just("event"), broken(valid_event(), EVENT_FIELDS).map(_dumps)),
    st.tuples(st.just("heartbeat"), broken(valid_heartbeat(), HEARTBEAT_FIELDS).map(_dumps)),
    st.tuples(st.sampled_from(["event", "heartbeat", "status"]), st.binary(max_size=300)),
    st.tuples(st.just("status"), texts.map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.just("event"), values.map(_dumps)),
)

#: Report periods as a person or a URL might give them.
periods = st.one_of(
    st.from_regex(r"\A(FY)?\d{1,5}Q\d\Z"),
    st.from_regex(r"\A\d{1,5}-\d{1,2}\Z"),
    st.tuples(times, times).map(lambda p: f"{p[0][:10]}..{p[1][:10]}"),
    st.builds(
        lambda y, q, fy: f"{'FY' if fy else ''}{y}Q{q}",
        st.integers(0, 10_000),
        st.integers(0, 5),
        st.booleans(),
    ),
    texts,
)

CSV_COLUMNS = ["site", "area", "check", "start", "end", "kind", "cause", "provider", "note"]


@st.composite
def csv_rows(draw: st.DrawFn) -> list[str]:
    """One row: mostly right, with hostile cells (quotes and commas included)."""
    row = {
        "site": draw(st.one_of(st.just("dc"), texts)),
        "area": draw(st.one_of(st.just("email"), texts)),
        "check": draw(texts),
        "start": draw(st.one_of(st.just("2019-07-09T10:05"), times)),
        "end": draw(st.one_of(st.just("2019-07-09T11:17"), times)),
        "kind": draw(st.one_of(st.sampled_from(["unplanned", "planned", "degraded"]), texts)),
        "cause": draw(texts),
        "provider": draw(texts),
        "note": draw(texts),
    }
    return [row[c] for c in CSV_COLUMNS]


@st.composite
def config_data(draw: st.DrawFn) -> dict[str, Any]:
    """An estate config with hostile values in known keys, unknown keys, and secrets (the
    canary) where they do not belong: inline passwords, URLs, headers."""
    secret = f"{CANARY}-{draw(st.integers(0, 999))}"
    check: dict[str, Any] = {
        "name": "web",
        "type": "http",
        "target": "https://intranet.example/",
        "area": "internet_web",
    }
    data: dict[str, Any] = {
        "partners": {"CCC": {"name": "City"}},
        "sites": {"hq": {"partner": "CCC", "checks": [check]}},
    }
    for _ in range(draw(st.integers(1, 4))):
        where = draw(
            st.sampled_from(
                ["check", "check-secret", "url", "header", "broker", "web", "collector", "top"]
            )
        )
        if where == "check":
            check[draw(st.sampled_from([*check, "interval", "timeout", "count"]))] = draw(values)
        elif where == "check-secret":
            check[draw(st.sampled_from(["password", "token", "community", "api_key"]))] = secret
        elif where == "url":
            check["target"] = draw(
                st.sampled_from(
                    [f"https://u:{secret}@h.example/", f"https://h.example/?token={secret}"]
                )
            )
        elif where == "header":
            name = draw(st.sampled_from(["Authorization", "Cookie", "X-Api-Key", "X-Other"]))
            check["headers"] = {name: draw(st.one_of(st.just(secret), st.just([secret]), values))}
        elif where == "broker":
            data["broker"] = draw(
                st.sampled_from([{"password": secret}, {"host": f"mqtt://c:{secret}@h"}])
            )
        elif where in ("web", "collector"):
            key = draw(
                st.sampled_from(
                    ["port", "max_connections", "idle_timeout", "max_payload_bytes", "database"]
                )
            )
            data[where] = {key: draw(values)}
        else:
            data[draw(texts)] = draw(values)
    return data
