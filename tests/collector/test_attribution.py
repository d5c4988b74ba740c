"""What really went down (issue 10): windows, quorum services, dependencies, the per-area
policy, third parties, not-monitored time and partial checks, on hand-built outages."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availmon.config import TIME_CLASSES, Estate, parse_config
from availmon.errors import ConfigError
from collector.accounting import US_PER_MINUTE, Accounts, Outage, account, parse_period, to_us
from collector.attribution import Booking, Offline, _confirmed, _plan, attribute
from collector.maintenance import Target, Window, occurrences
from tests.collector.helpers import LONDON, PARTNERS, SITES, local

M = US_PER_MINUTE
NOW = datetime(2030, 1, 1, tzinfo=UTC)
Q = "FY2019Q2"  # 1 July - 30 September 2019, 132480 minutes


def check(name: str, area: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "type": "tcp", "target": "127.0.0.1:9", "area": area, **kw}


def estate(**extra: Any) -> Estate:
    """The four test sites; ``sites`` entries in ``extra`` add checks to them."""
    sites: dict[str, Any] = {k: {"partner": v} for k, v in SITES.items()}
    for sid, checks in extra.pop("checks", {}).items():
        sites[sid]["checks"] = checks
    data = {
        "name": "test estate",
        "partners": {k: {"name": v} for k, v in PARTNERS.items()},
        "sites": sites,
        **extra,
    }
    return parse_config(data, "test")


def down(site: str, name: str, area: str, start: str, end: str | None, **kw: Any) -> Outage:
    return Outage(
        id=kw.pop("id", f"o:{site}:{name}:{start}"),
        site=site,
        check=name,
        area=area,
        state=kw.pop("state", "down"),
        start=to_us(local(start)),
        end=to_us(local(end)) if end else None,
        **kw,
    )


def figures(est: Estate, outages: list[Outage], **kw: Any) -> Accounts:
    return account(parse_period(Q, LONDON), outages, est, NOW, **kw)


def area_minutes(acc: Accounts) -> dict[str, float]:
    return {a.id: a.downtime / M for a in acc.areas}


# -- quorum services --------------------------------------------------------------------

WEBMAIL = {
    "dc": [check("webmail", "email")],
    "ccc-guildhall": [check("webmail", "email")],
    "hdc-pathfinder": [check("webmail", "email")],
}
EMAIL_SERVICE = {
    "email": {
        "name": "Email",
        "checks": ["dc/webmail", "ccc-guildhall/webmail", "hdc-pathfinder/webmail"],
        "quorum": 2,
        "site": "dc",
    }
}


def test_a_failure_seen_by_one_agent_of_three_is_that_sites_path() -> None:
    est = estate(checks=WEBMAIL, services=EMAIL_SERVICE)
    acc = figures(
        est, [down("ccc-guildhall", "webmail", "email", "2019-07-10T10:00", "2019-07-10T10:40")]
    )
    assert area_minutes(acc) == {
        "network_telephony": 40,
        "email": 0,
        "internet_web": 0,
        "servers": 0,
    }
    [inc] = acc.incidents
    assert inc.area == "network_telephony"
    assert inc.path is True
    assert inc.seen_by == ("ccc-guildhall",)
    assert inc.causes == ("seen from ccc-guildhall only",)
    # The partner whose site's path failed carries it, not the shared service.
    partners = {p.id: p.downtime / M for p in acc.partners}
    assert partners["CCC"] == 40
    assert partners["SHARED"] == 0


def test_a_service_is_down_from_the_moment_the_quorum_agrees() -> None:
    est = estate(checks=WEBMAIL, services=EMAIL_SERVICE)
    rows = [
        down("dc", "webmail", "email", "2019-07-10T10:00", "2019-07-10T11:00"),
        down("ccc-guildhall", "webmail", "email", "2019-07-10T10:15", "2019-07-10T10:50"),
    ]
    acc = figures(est, rows)
    mins = area_minutes(acc)
    # 10:15-10:50 both agree: the service is down (email). Before and after only the data
    # centre's agent sees it: 15 + 10 minutes on the data centre's path.
    assert mins["email"] == 35
    assert mins["network_telephony"] == 25
    service = [i for i in acc.incidents if i.area == "email"]
    assert [(i.start, i.end, i.seen_by, i.services) for i in service] == [
        (
            to_us(local("2019-07-10T10:15")),
            to_us(local("2019-07-10T10:50")),
            ("ccc-guildhall", "dc"),
            ("email",),
        )
    ]
    partners = {p.id: p.downtime / M for p in acc.partners}
    assert partners["SHARED"] == 35 + 25  # its home site, and its own path


def test_a_member_down_while_the_quorum_says_degraded_is_the_services_not_its_path() -> None:
    """One failure seen by two of three members, one down and one degraded: the service is
    degraded for that hour, and the member that said down voted in it, so none of the hour
    is its site's path as well (it was counted twice, once in each area)."""
    est = estate(checks=WEBMAIL, services=EMAIL_SERVICE)
    rows = [
        down("dc", "webmail", "email", "2019-07-10T10:00", "2019-07-10T11:00"),
        down(
            "ccc-guildhall",
            "webmail",
            "email",
            "2019-07-10T10:00",
            "2019-07-10T11:00",
            state="degraded",
        ),
    ]
    acc = figures(est, rows)
    assert area_minutes(acc) == {
        "network_telephony": 0,
        "email": 60,
        "internet_web": 0,
        "servers": 0,
    }
    [inc] = acc.incidents
    assert (inc.area, inc.kind, inc.seen_by, inc.path) == (
        "email",
        "degraded",
        ("ccc-guildhall", "dc"),
        False,
    )


def test_percentage_quorum_counts_only_agents_that_can_see_the_service() -> None:
    svc = {**EMAIL_SERVICE["email"], "quorum": "60%"}
    est = estate(checks=WEBMAIL, services={"email": svc})
    rows = [
        # hdc's agent is offline all morning: two agents can see it, 60% of 2 is 2.
        down("dc", "webmail", "email", "2019-07-10T10:00", "2019-07-10T10:30"),
    ]
    off = [
        Offline(
            "hdc-pathfinder",
            "hdc-pathfinder",
            to_us(local("2019-07-10T08:00")),
            to_us(local("2019-07-10T12:00")),
        )
    ]
    assert area_minutes(figures(est, rows, offline=off))["email"] == 0
    both = [
        *rows,
        down("ccc-guildhall", "webmail", "email", "2019-07-10T10:10", "2019-07-10T10:30"),
    ]
    acc = figures(est, both, offline=off)
    assert area_minutes(acc)["email"] == 20
    assert area_minutes(acc)["network_telephony"] == 10


# -- dependencies -----------------------------------------------------------------------

SIX_BEHIND = {
    "dc": [check("internet-link", "network_telephony", provider="Jisc")],
    "ccc-guildhall": [
        check("web", "internet_web", depends_on="dc/internet-link"),
        check("mail", "email", depends_on="dc/internet-link"),
        check("files", "servers", depends_on="dc/internet-link"),
    ],
    "hdc-pathfinder": [
        check("web", "internet_web", depends_on="dc/internet-link"),
        check("mail", "email", depends_on="dc/internet-link"),
        check("files", "servers", depends_on="dc/internet-link"),
    ],
}


def _six_behind_rows() -> list[Outage]:
    rows = [
        down("dc", "internet-link", "network_telephony", "2019-08-01T09:00", "2019-08-01T10:00")
    ]
    for site in ("ccc-guildhall", "hdc-pathfinder"):
        for name, area in (("web", "internet_web"), ("mail", "email"), ("files", "servers")):
            # Each child noticed a little later and recovered a little later than the link.
            rows.append(down(site, name, area, "2019-08-01T09:02", "2019-08-01T10:05"))
    return rows


def test_a_link_down_with_six_checks_behind_it_across_two_sites_counts_once() -> None:
    acc = figures(estate(checks=SIX_BEHIND), _six_behind_rows())
    mins = area_minutes(acc)
    # The link's hour, in its own area; each child's five minutes after the link came back
    # are its own downtime (it was not behind a down link then).
    assert mins == {"network_telephony": 60, "email": 5, "internet_web": 5, "servers": 5}
    by_area = {a.id: a for a in acc.areas}
    assert by_area["internet_web"].unreachable == 58 * M
    [link] = [i for i in acc.incidents if i.area == "network_telephony"]
    assert link.behind == (
        "ccc-guildhall/files",
        "ccc-guildhall/mail",
        "ccc-guildhall/web",
        "hdc-pathfinder/files",
        "hdc-pathfinder/mail",
        "hdc-pathfinder/web",
    )
    assert not [i for i in acc.incidents if i.kind == "unreachable"]  # not listed twice


def test_unreachable_chain_names_the_top_most_ancestor() -> None:
    est = estate(
        checks={
            "dc": [check("internet-link", "network_telephony")],
            "ccc-guildhall": [
                check("wan-link", "network_telephony", depends_on="dc/internet-link"),
                check("web", "internet_web", depends_on="wan-link"),
            ],
        }
    )
    rows = [
        down("dc", "internet-link", "network_telephony", "2019-08-01T09:00", "2019-08-01T09:30"),
        down(
            "ccc-guildhall", "wan-link", "network_telephony", "2019-08-01T08:50", "2019-08-01T09:40"
        ),
        down("ccc-guildhall", "web", "internet_web", "2019-08-01T08:50", "2019-08-01T09:40"),
    ]
    att = attribute(
        est, rows, to_us(local("2019-08-01T00:00")), to_us(local("2019-08-02T00:00")), to_us(NOW)
    )
    web = [b for b in att.bookings if b.check == "web"]
    assert [(b.cls, b.parent, (b.end - b.start) // M) for b in web] == [
        ("unreachable", "ccc-guildhall/wan-link", 10),  # 08:50-09:00, the site's own link
        ("unreachable", "dc/internet-link", 30),  # 09:00-09:30, the top-most one down
        ("unreachable", "ccc-guildhall/wan-link", 10),  # 09:30-09:40
    ]
    acc = figures(est, rows)
    assert area_minutes(acc)["network_telephony"] == 50  # 08:50-09:40 once
    assert area_minutes(acc)["internet_web"] == 0


def test_dependency_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        estate(
            checks={
                "dc": [
                    check("a", "servers", depends_on="b"),
                    check("b", "servers", depends_on="a"),
                ],
                "ccc-guildhall": [check("c", "servers", depends_on="nowhere/x")],
            }
        )
    text = [str(i) for i in err.value.issues]
    assert (
        "test: sites.ccc-guildhall.checks.c.depends_on: no site 'nowhere'"
        " (write site/check for a check at another site)" in text
    )
    assert "test: sites.dc.checks.a.depends_on: dependency loop: dc/a -> dc/b -> dc/a" in text


# -- maintenance windows ------------------------------------------------------------------

SUNDAYS = [
    {
        "name": "sunday-patching",
        "every": "sunday",
        "start": "02:00:00",
        "end": "04:00:00",
        "sites": ["dc"],
        "reason": "weekly patching",
    }
]


def test_work_that_overruns_a_recurring_window_is_unplanned_after_it() -> None:
    est = estate(checks={"dc": [check("files", "servers")]}, maintenance=SUNDAYS)
    # Sunday 4 August 2019 (BST): the work ran from 02:30 to 04:45.
    acc = figures(est, [down("dc", "files", "servers", "2019-08-04T02:30", "2019-08-04T04:45")])
    servers = next(a for a in acc.areas if a.id == "servers")
    assert servers.planned == 90 * M
    assert servers.downtime == 135 * M  # planned counts by default, shown apart
    kinds = {(i.kind, i.duration // M, i.planned_by) for i in acc.incidents}
    assert kinds == {
        ("planned", 90, ("sunday-patching@2019-08-04T02:00+01:00",)),
        ("unplanned", 45, ()),
    }


def test_a_windows_planned_minutes_are_the_time_it_planned_once() -> None:
    """Two checks down through a two-hour window: it planned two hours, not four. Degraded
    time in an area that does not count degraded time stays degraded inside a window: the
    window planned none of it."""
    est = estate(
        checks={"dc": [check("files", "servers"), check("db", "servers"), check("mail", "email")]},
        maintenance=SUNDAYS,
        areas={"email": {"name": "Email", "degraded_counts_as_down": False}},
    )
    wid = "sunday-patching@2019-08-04T02:00+01:00"
    both = [
        down("dc", "files", "servers", "2019-08-04T02:00", "2019-08-04T04:00"),
        down("dc", "db", "servers", "2019-08-04T02:00", "2019-08-04T04:00"),
    ]
    assert figures(est, both).covered == {wid: 120 * M}
    slow = [down("dc", "mail", "email", "2019-08-04T02:00", "2019-08-04T03:00", state="degraded")]
    acc = figures(est, slow)
    email = next(a for a in acc.areas if a.id == "email")
    assert (email.planned, email.degraded) == (0, 60 * M)
    assert acc.covered == {}


def test_recurring_windows_keep_local_time_across_the_clock_change() -> None:
    est = estate(maintenance=[{**SUNDAYS[0], "every": "last sunday"}])
    rule = est.maintenance[0]
    lo, hi = to_us(local("2019-10-01T00:00")), to_us(local("2019-11-01T00:00"))
    [w] = occurrences(rule, lo, hi, "Europe/London")
    # 27 October 2019 is the day the clocks go back: 02:00 GMT, two hours of wall clock.
    assert w.start == to_us(datetime(2019, 10, 27, 2, 0, tzinfo=UTC))
    assert w.end == to_us(datetime(2019, 10, 27, 4, 0, tzinfo=UTC))
    first_tuesday = estate(maintenance=[{**SUNDAYS[0], "every": "first tuesday"}]).maintenance[0]
    days = [
        local_day(w.start)
        for w in occurrences(first_tuesday, lo, to_us(local("2020-01-01T00:00")), "Europe/London")
    ]
    assert days == ["2019-10-01", "2019-11-05", "2019-12-03"]


def local_day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, LONDON).date().isoformat()


def test_a_declared_window_plans_nothing_before_it_was_declared() -> None:
    est = estate(checks={"dc": [check("files", "servers")]})
    win = Window(
        id="m:1",
        start=to_us(local("2019-08-06T10:00")),
        end=to_us(local("2019-08-06T12:00")),
        by="alice",
        recorded_at=to_us(local("2019-08-06T10:30")),  # declared half an hour in
    )
    acc = figures(
        est, [down("dc", "files", "servers", "2019-08-06T10:00", "2019-08-06T11:00")], windows=[win]
    )
    servers = next(a for a in acc.areas if a.id == "servers")
    assert servers.planned == 30 * M


def test_a_window_scope_matches_every_list_given() -> None:
    est = estate(
        checks={"dc": [check("files", "servers"), check("web", "internet_web")]},
        maintenance=[{**SUNDAYS[0], "areas": ["servers"]}],
    )
    rows = [
        down("dc", "files", "servers", "2019-08-04T02:30", "2019-08-04T03:00"),
        down("dc", "web", "internet_web", "2019-08-04T02:30", "2019-08-04T03:00"),
    ]
    planned = {a.id: a.planned // M for a in figures(est, rows).areas}
    assert planned == {"network_telephony": 0, "email": 0, "internet_web": 0, "servers": 30}


# -- the policy, one class at a time --------------------------------------------------------

POLICY_CHECKS = {
    "dc": [
        check("link", "email"),
        check("router", "network_telephony"),
        check("mail", "email", depends_on="router"),
        check("other", "servers"),
    ],
}


def policy_rows() -> tuple[list[Outage], list[Offline], list[Window]]:
    """One piece of every class in the email area, apart in time, and servers downtime."""
    rows = [
        # down 60 (first 3 minutes: confirmation)
        down(
            "dc",
            "link",
            "email",
            "2019-08-06T10:00",
            "2019-08-06T11:00",
            detected=to_us(local("2019-08-06T10:03")),
        ),
        # degraded 30
        down("dc", "mail", "email", "2019-08-07T10:00", "2019-08-07T10:30", state="degraded"),
        # planned 20 (a window covers it)
        down("dc", "mail", "email", "2019-08-08T10:00", "2019-08-08T10:20"),
        # unreachable 40: mail down while its router (another area) is down
        down("dc", "router", "network_telephony", "2019-08-11T10:00", "2019-08-11T11:00"),
        down("dc", "mail", "email", "2019-08-11T10:10", "2019-08-11T10:50"),
        # other areas must not move
        down("dc", "other", "servers", "2019-08-09T10:00", "2019-08-09T10:45"),
    ]
    off = [Offline("dc", "dc", to_us(local("2019-08-10T10:00")), to_us(local("2019-08-10T10:50")))]
    win = [
        Window(
            "m:1",
            to_us(local("2019-08-08T09:00")),
            to_us(local("2019-08-08T12:00")),
            recorded_at=to_us(local("2019-08-01T09:00")),
        )
    ]
    return rows, off, win


#: Minutes of each class in email: confirmation is inside down's 60.
CLASS_MINUTES = {
    "down": 57,
    "confirmation": 3,
    "degraded": 30,
    "planned": 20,
    "unreachable": 40,
    "unknown": 50,
}


@pytest.mark.parametrize("cls", TIME_CLASSES)
@pytest.mark.parametrize("treatment", ["downtime", "excluded", "up"])
def test_each_policy_choice_changes_its_figure_and_no_other(cls: str, treatment: str) -> None:
    rows, off, win = policy_rows()
    base = figures(estate(checks=POLICY_CHECKS), rows, offline=off, windows=win)
    changed = figures(
        estate(checks=POLICY_CHECKS, areas={"email": {"policy": {cls: treatment}}}),
        rows,
        offline=off,
        windows=win,
    )
    b = {a.id: a for a in base.areas}
    c = {a.id: a for a in changed.areas}
    # The defaults: down, confirmation, degraded and planned count; unknown and unreachable
    # are up (unreachable time counts in the parent's area instead).
    assert b["email"].downtime == (57 + 3 + 30 + 20) * M
    assert b["email"].excluded == 0
    # (When nothing is counted the 50 minutes unknown would still be shown apart.)
    assert c["email"].not_monitored == b["email"].not_monitored == 50 * M
    minutes = CLASS_MINUTES[cls] * M
    was_counted = cls in ("down", "confirmation", "degraded", "planned")
    expected_down = b["email"].downtime + (0 if was_counted else minutes) * (
        treatment == "downtime"
    )
    if was_counted and treatment != "downtime":
        expected_down -= minutes
    assert c["email"].downtime == expected_down
    assert c["email"].excluded == (minutes if treatment == "excluded" else 0)
    assert c["email"].measured == b["email"].measured - c["email"].excluded
    for aid in ("network_telephony", "internet_web", "servers"):
        assert c[aid] == b[aid]
    assert c["servers"].downtime == 45 * M


def test_the_estate_wide_policy_applies_where_an_area_says_nothing() -> None:
    rows, off, win = policy_rows()
    est = estate(checks=POLICY_CHECKS, accounting={"policy": {"unknown": "excluded"}})
    email = next(a for a in figures(est, rows, offline=off, windows=win).areas if a.id == "email")
    assert email.excluded == 50 * M


def test_combined_figure_is_the_sum_of_area_unavailabilities() -> None:
    rows, off, win = policy_rows()
    est = estate(checks=POLICY_CHECKS, areas={"email": {"policy": {"unknown": "excluded"}}})
    acc = figures(est, rows, offline=off, windows=win)
    email = next(a for a in acc.areas if a.id == "email")
    assert email.measured == acc.period_time - 50 * M
    assert acc.combined_ratio == 1 - sum(Fraction(a.downtime, a.measured) for a in acc.areas)


# -- not monitored, partial checks, third parties ------------------------------------------


def test_not_monitored_time_is_the_agent_offline_less_what_its_spool_told() -> None:
    est = estate(checks={"dc": [check("files", "servers"), check("web", "internet_web")]})
    off = [Offline("dc", "dc", to_us(local("2019-08-06T10:00")), to_us(local("2019-08-06T11:00")))]
    rows = [down("dc", "files", "servers", "2019-08-06T10:20", "2019-08-06T10:30")]
    acc = figures(est, rows, offline=off)
    nm = {a.id: a.not_monitored // M for a in acc.areas}
    assert nm == {"network_telephony": 0, "email": 0, "internet_web": 60, "servers": 50}
    assert area_minutes(acc)["servers"] == 10


def test_a_check_that_existed_for_part_of_the_period_counts_only_then() -> None:
    est = estate(checks={"dc": [check("files", "servers", added="2019-08-15")]})
    rows = [down("dc", "files", "servers", "2019-08-14T23:00", "2019-08-15T01:00")]
    off = [Offline("dc", "dc", to_us(local("2019-07-01T00:00")), to_us(local("2019-07-02T00:00")))]
    acc = figures(est, rows, offline=off)
    assert area_minutes(acc)["servers"] == 60
    assert next(a for a in acc.areas if a.id == "servers").not_monitored == 0
    assert acc.partial == {
        "dc/files": (to_us(local("2019-08-15T00:00")), to_us(local("2019-10-01T00:00")))
    }


def jisc_estate() -> Estate:
    """The data centre's internet link, run by Jisc (its ``provider``), and a file server."""
    return estate(
        checks={
            "dc": [
                check("internet-link", "network_telephony", provider="Jisc"),
                check("files", "servers"),
            ]
        }
    )


def test_third_party_downtime_by_provider_and_cause_and_the_kpi_without_it() -> None:
    est = jisc_estate()
    rows = [
        down(
            "dc",
            "internet-link",
            "network_telephony",
            "2019-08-01T09:00",
            "2019-08-01T10:00",
            cause="fibre cut",
            provider="Jisc",
        ),
        down(
            "dc", "files", "servers", "2019-08-02T09:00", "2019-08-02T09:30", cause="disk failure"
        ),
    ]
    acc = figures(est, rows)
    assert [(s.name, s.downtime // M) for s in acc.providers] == [("Jisc", 60), ("", 30)]
    assert [(s.name, s.downtime // M) for s in acc.causes] == [
        ("fibre cut", 60),
        ("disk failure", 30),
    ]
    assert acc.combined_downtime == 90 * M
    assert acc.combined_own_downtime == 30 * M
    assert acc.combined_own_ratio is not None
    assert acc.combined_ratio is not None
    assert acc.combined_own_ratio > acc.combined_ratio


def test_a_checks_configured_provider_stands_for_records_that_name_none() -> None:
    """The config says who runs a line (``provider``); its outages from the agent record no
    provider, and the board and the alerts name the configured one: so do the figures. A
    provider recorded on the outage (an annotation) still wins."""
    est = jisc_estate()
    rows = [
        down("dc", "internet-link", "network_telephony", "2019-08-01T09:00", "2019-08-01T10:00"),
        down(
            "dc",
            "internet-link",
            "network_telephony",
            "2019-08-03T09:00",
            "2019-08-03T09:20",
            provider="BT Openreach",
        ),
        down("dc", "files", "servers", "2019-08-02T09:00", "2019-08-02T09:30"),
    ]
    acc = figures(est, rows)
    assert [(s.name, s.downtime // M) for s in acc.providers] == [
        ("Jisc", 60),
        ("", 30),
        ("BT Openreach", 20),
    ]
    network = next(a for a in acc.areas if a.id == "network_telephony")
    assert network.third_party == 80 * M
    assert acc.combined_own_downtime == 30 * M
    assert {i.providers for i in acc.incidents} == {("Jisc",), ("BT Openreach",), ()}


# -- order never matters -----------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_figures_do_not_depend_on_the_order_records_arrive_in(seed: int) -> None:
    rows = [*_six_behind_rows(), *policy_rows()[0][:1]]
    est = estate(checks={**SIX_BEHIND, "dc": [*SIX_BEHIND["dc"], *POLICY_CHECKS["dc"]]})
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    a, b = figures(est, rows), figures(est, shuffled)
    assert a.areas == b.areas
    assert a.incidents == b.incidents
    assert a.bookings == b.bookings


def test_timeline_runs_match_the_full_sweep() -> None:
    """A check's timeline is cut into runs of overlapping records, each swept alone: the
    pieces must be exactly those of one sweep over every record (random records, seeded)."""
    from collector.attribution import _sweep, _timeline

    rng = random.Random(10)
    states = ["down", "degraded", "unknown", "up"]
    for _ in range(300):
        recs = []
        for n in range(rng.randrange(1, 12)):
            s = rng.randrange(0, 1_000)
            e = s + rng.randrange(0, 200) if rng.random() < 0.9 else None
            recs.append(Outage(f"o{n}", "s1", "c", "email", rng.choice(states), s, e))
        lo, hi, now = rng.randrange(0, 300), rng.randrange(600, 1_300), 1_100
        spans = []
        for o in recs:
            s, e = o.span(now)
            s, e = max(s, lo), min(e, hi)
            if e > s:
                spans.append((s, e, o))
        spans.sort(key=lambda t: t[0])
        assert _timeline(recs, [], lo, hi, now) == _sweep(spans, [], lo, hi)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 50),
    length=st.integers(1, 50),
    conf_start=st.integers(-10, 110),
    conf_length=st.integers(0, 60),
    state=st.sampled_from(["down", "degraded"]),
)
def test_confirmation_split_without_windows_is_the_general_split(
    start: int, length: int, conf_start: int, conf_length: int, state: str
) -> None:
    """The quick split of down time that no window touches (every declared failure's
    confirmation) books exactly what the general one (windows, annotations) books."""
    base = Booking(
        "email", "hq", "web", state, start, start + length, ("o:1",), "c", None, None, state=state
    )
    conf = (conf_start, conf_start + conf_length)
    general = _plan(base, Target("hq", "p", frozenset({"email"}), frozenset()), [], [conf], False)
    quick = [base] if state != "down" else _confirmed(base, conf)
    assert quick == general
