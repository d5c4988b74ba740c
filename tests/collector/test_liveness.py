"""Liveness rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.liveness import Liveness

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def live(*agents: str) -> Liveness:
    lv = Liveness(GRACE)
    for a in agents:
        lv.set_status(a, "online", T0)
    return lv


def test_offline_past_grace_opens_from_last_heard() -> None:
    lv = live("a", "b")
    lv.heartbeat("a", 0, at(30))
    lv.set_status("a", "offline", at(75))
    assert lv.due(at(100)) == []  # still within grace
    assert lv.due(at(135)) == [("a", at(30))]
    lv.opened("a")
    assert lv.due(at(200)) == []  # opened once


def test_back_online_replaces_after_replay() -> None:
    lv = live("a", "b")
    lv.set_status("a", "offline", at(10))
    lv.opened("a")
    lv.set_status("a", "online", at(300))
    assert lv.heartbeat("a", 5, at(301)) is False  # still replaying its spool
    assert lv.heartbeat("a", 0, at(302)) is True
    assert lv.heartbeat("a", 0, at(303)) is False


def test_every_agent_offline_invents_nothing() -> None:
    lv = live("a", "b", "c")
    for a in "abc":
        lv.set_status(a, "offline", at(10))
    assert lv.due(at(1000)) == []
    # Two come back; the one still missing is dated from the recovery, not before it.
    lv.set_status("a", "online", at(1100))
    lv.set_status("b", "online", at(1101))
    assert lv.due(at(1200)) == [("c", at(1100))]


def test_stopped_is_not_an_outage() -> None:
    lv = live("a", "b")
    lv.set_status("a", "stopped", at(10))
    assert lv.due(at(1000)) == []


def test_a_lone_agent_dropping_is_everyone_dropping() -> None:
    lv = live("a")
    lv.set_status("a", "offline", at(10))
    assert lv.due(at(1000)) == []


def test_a_stopped_agent_does_not_break_the_everyone_offline_rule() -> None:
    lv = live("a", "b", "c")
    lv.set_status("c", "stopped", at(5))  # retired for maintenance
    lv.set_status("a", "offline", at(10))
    lv.set_status("b", "offline", at(10))  # then the broker's uplink fails
    assert lv.due(at(1000)) == []


def test_an_agent_back_while_its_outage_is_being_opened_still_replaces_it() -> None:
    lv = live("a", "b")
    lv.set_status("a", "offline", at(10))
    [(agent, _start)] = lv.due(at(100))
    lv.opened(agent)  # the collector marks it before writing the row ...
    lv.set_status("a", "online", at(100))  # ... so a status arriving during the write sees it
    assert lv.heartbeat("a", 0, at(101)) is True


def test_last_heard_is_the_message_time_not_its_late_delivery() -> None:
    lv = live("a", "b")
    lv.heard("a", at(30))  # a heartbeat sent at 30 s ...
    lv.heard("a", at(20))  # ... and an older one delivered after it changes nothing
    lv.set_status("a", "offline", at(500))
    assert lv.due(at(1000)) == [("a", at(30))]
