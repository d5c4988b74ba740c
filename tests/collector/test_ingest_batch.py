"""A batch of events is parsed in one pass when every event in it is sound (issue 8's
throughput); any other batch is judged event by event. The one-pass parse must give exactly
the verdict judging each event alone gives: the same events, refusals, drops and counts."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from availmon.schema import topic
from collector.ingest import Accepted, Rejected, Rules, judge_each, validate
from tests.hostile import strategies as hs
from tests.peers import estate, web_check

EST = estate(Path("/nonexistent"), 1883, [web_check("http://127.0.0.1:9/")])
TOPIC = topic(hs.SITE, hs.SITE, "events")
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_by_one(payload: bytes) -> Accepted | Rejected:
    """The verdict of judging each event alone (``validate`` before the one-pass parse)."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return Rejected("malformed", "")
    return judge_each(data, hs.SITE, hs.SITE, Rules.of(EST, hs.NOW))


def same_verdict(payload: bytes) -> None:
    got = validate(TOPIC, payload, estate=EST, now=hs.NOW)
    want = one_by_one(payload)
    if isinstance(want, Rejected) and want.reason == "malformed":
        assert isinstance(got, Rejected)
        assert got.reason == "malformed"
        return
    assert got == want


def good(seq: int) -> dict[str, Any]:
    return hs.valid_event(seq)


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    """Mostly sound batches, some with hostile events or a hostile envelope."""
    n = draw(st.integers(0, 6))
    events: list[Any] = []
    for seq in range(1, n + 1):
        kind = draw(st.sampled_from(["good", "good", "good", "broken", "late", "other"]))
        if kind == "good":
            events.append(good(seq))
        elif kind == "broken":
            events.append(draw(hs.broken(good(seq), hs.EVENT_FIELDS)))
        elif kind == "late":
            ev = good(seq)
            ev["at"] = (hs.NOW + timedelta(days=1)).isoformat()
            events.append(ev)
        else:
            events.append(draw(hs.values))
    data: dict[str, Any] = {"schema": 1, "first_seq": 1, "events": events, "dropped": []}
    for field in draw(st.lists(st.sampled_from([*data, "extra"]), max_size=2, unique=True)):
        if draw(st.booleans()):
            data.pop(field, None)
        else:
            data[field] = draw(hs.values)
    payload = hs._dumps(data)
    if draw(st.integers(0, 9)) == 0:  # a byte changed: broken JSON, bad UTF-8, ...
        at = draw(st.integers(0, max(len(payload) - 1, 0)))
        payload = payload[:at] + bytes([draw(st.integers(0, 255))]) + payload[at + 1 :]
    return payload


@FAST
@given(payload=batches())
# Sound; one event refused among sound ones; an envelope with a bad drop range; Python's
# json reads a lone surrogate and a UTF-8 byte order mark, the one-pass parser does not.
@example(payload=hs._dumps({"events": [good(1), good(2)], "dropped": [[3, 4]]}))
@example(payload=hs._dumps({"events": [good(1), {**good(2), "site": "dc"}, good(3)]}))
@example(payload=hs._dumps({"events": [good(1)], "dropped": [[5, 4]]}))
@example(payload=hs._dumps({"events": [{**good(1), "check": "\ud800"}]}))
@example(payload=b"\xef\xbb\xbf" + hs._dumps({"events": [good(1)]}))
@example(payload=hs._dumps({"events": [{**good(1), "seq": 1.0}, {**good(2), "seq": "2"}]}))
def test_one_pass_parse_gives_the_verdict_of_judging_each_event(payload: bytes) -> None:
    same_verdict(payload)


def test_a_refused_event_keeps_its_own_reason_and_the_others_are_stored() -> None:
    late = {**good(2), "detected_at": (hs.NOW + timedelta(days=1)).isoformat()}
    verdict = validate(
        TOPIC, hs._dumps({"events": [good(1), late, good(3)]}), estate=EST, now=hs.NOW
    )
    assert isinstance(verdict, Accepted)
    assert [e.seq for e in verdict.events] == [1, 3]
    assert [(r.seq, r.verdict.reason) for r in verdict.refused] == [(2, "future")]
