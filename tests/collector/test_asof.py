"""Reproducible reports (issue 10): records never change in place, ``--as-of`` gives the
figures as they were reported then, and the same data gives the same bytes in every format."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from availmon.cli import main
from availmon.clock import to_iso, to_us
from availmon.config import Estate, parse_config
from availmon.schema import Event, State
from collector.accounting import parse_period
from collector.report import FORMATS, build_report, render
from collector.rules import accounting_view, canonical, digest
from collector.rules import record as record_rules
from collector.store import CancelOutcome, DuplicateWindow, Store, WindowCancellation
from tests.collector.helpers import LONDON, PARTNERS, SITES

# Thursday 7 November 2019, GMT: inside FY2019Q3.
T0 = datetime(2019, 11, 7, 9, 0, tzinfo=UTC)
PERIOD = parse_period("FY2019Q3", LONDON)
END = datetime(2020, 2, 1, tzinfo=UTC)  # "now": after the quarter


def estate(**extra: Any) -> Estate:
    sites: dict[str, Any] = {k: {"partner": v} for k, v in SITES.items()}
    for site in ("dc", "ccc-guildhall", "hdc-pathfinder"):
        sites[site]["checks"] = [
            {"name": "webmail", "type": "tcp", "target": "127.0.0.1:9", "area": "email"},
            {"name": "files", "type": "tcp", "target": "127.0.0.1:9", "area": "servers"},
        ]
    return parse_config(
        {
            "name": "test estate",
            "partners": {k: {"name": v} for k, v in PARTNERS.items()},
            "sites": sites,
            **extra,
        },
        "test",
    )


def ev(site: str, seq: int, frm: State, to: State, minute: float, check: str = "webmail") -> Event:
    at = T0 + timedelta(minutes=minute)
    return Event(
        id=f"{site}:{seq}",
        seq=seq,
        site=site,
        agent=site,
        check=check,
        area="email" if check == "webmail" else "servers",
        from_=frm,
        to=to,
        at=at,
        detected_at=at + timedelta(minutes=1),
    )


def stream() -> list[Event]:
    """Webmail down from two sites (a quorum's worth), files down at the data centre."""
    return [
        ev("dc", 1, State.UP, State.DOWN, 0),
        ev("dc", 2, State.DOWN, State.UP, 40),
        ev("ccc-guildhall", 1, State.UP, State.DOWN, 5),
        ev("ccc-guildhall", 2, State.DOWN, State.UP, 35),
        ev("dc", 3, State.UP, State.DOWN, 120, "files"),
        ev("dc", 4, State.DOWN, State.UP, 180, "files"),
    ]


SERVICE = {
    "email": {
        "checks": ["dc/webmail", "ccc-guildhall/webmail", "hdc-pathfinder/webmail"],
        "quorum": 2,
    }
}


def test_as_of_gives_the_figures_reported_then(tmp_path: Path) -> None:
    est = estate()
    store = Store(tmp_path / "c.db")
    try:
        record_rules(store, est, T0 - timedelta(days=30))
        events = stream()
        store.ingest(events[:4], T0 + timedelta(hours=1))  # webmail, received at 10:00
        store.ingest(events[4:], T0 + timedelta(hours=4))  # files, received at 13:00
        noon = T0 + timedelta(hours=3)
        at_noon = build_report(store, est, PERIOD, END, as_of=noon)
        # Someone marks the files outage planned the next day: the past report stands.
        store.annotate("o:dc:3", T0 + timedelta(days=1), planned=True, by="alice")
        later = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(days=2))
        again = build_report(store, est, PERIOD, END, as_of=noon)
    finally:
        store.close()
    servers = {r["id"]: r for r in at_noon["areas"]}["servers"]
    assert servers["downtime_minutes"] == 0  # files' events had not arrived at noon
    assert {r["id"]: r for r in later["areas"]}["servers"]["planned_minutes"] == 60
    assert again == at_noon
    assert at_noon["as_of"] == "2019-11-07T12:00:00+00:00"


def test_as_of_uses_the_rules_in_force_then(tmp_path: Path) -> None:
    before, after = estate(), estate(services=SERVICE)
    store = Store(tmp_path / "c.db")
    try:
        record_rules(store, before, T0 - timedelta(days=30))
        store.ingest(stream(), T0 + timedelta(hours=4))
        old = build_report(store, after, PERIOD, END, as_of=T0 + timedelta(days=1))
        record_rules(store, after, T0 + timedelta(days=2))  # the quorum service is configured
        new = build_report(store, after, PERIOD, END, as_of=T0 + timedelta(days=3))
        old_again = build_report(store, after, PERIOD, END, as_of=T0 + timedelta(days=1))
    finally:
        store.close()
    email = lambda data: {r["id"]: r for r in data["areas"]}["email"]  # noqa: E731
    network = lambda data: {r["id"]: r for r in data["areas"]}["network_telephony"]  # noqa: E731
    # Without the service: two checks down, their union 40 minutes in email.
    assert email(old)["downtime_minutes"] == 40
    # With it: down from 09:05 (both agree) to 09:35; the rest is the data centre's path.
    assert email(new)["downtime_minutes"] == 30
    assert network(new)["downtime_minutes"] == 10
    assert old_again == old
    assert old["settings"]["rules"] != new["settings"]["rules"]


def files_event(seq: int, frm: State, to: State, at: str) -> Event:
    """Event ``seq`` of the data centre's file server at local time ``at``."""
    when = datetime.fromisoformat(at).replace(tzinfo=LONDON).astimezone(UTC)
    return Event(
        id=f"dc:{seq}",
        seq=seq,
        site="dc",
        agent="dc",
        check="files",
        area="servers",
        from_=frm,
        to=to,
        at=when,
        detected_at=when,
    )


def test_as_of_reads_an_outage_on_to_its_end_after_the_period(tmp_path: Path) -> None:
    """An outage across the period's end: ``--as-of`` gives its real end (as the live
    report does), once the event that ended it was received; its minutes stay the period's.
    An event after the period that only restates the outage does not end it, and an outage
    after the period is not listed."""
    est = estate()
    q2 = parse_period("FY2019Q2", LONDON)
    down_at, up_at = T0, T0 + timedelta(hours=1)  # when each was received
    store = Store(tmp_path / "c.db")
    try:
        store.ingest([files_event(1, State.UP, State.DOWN, "2019-09-30T23:00")], down_at)
        store.ingest(
            [
                files_event(2, State.UNKNOWN, State.DOWN, "2019-10-01T00:30"),  # agent restart
                files_event(3, State.DOWN, State.UP, "2019-10-01T01:00"),
                files_event(4, State.UP, State.DOWN, "2019-10-02T09:00"),
            ],
            up_at,
        )
        live = build_report(store, est, q2, END)
        after = build_report(store, est, q2, END, as_of=up_at)
        before = build_report(store, est, q2, END, as_of=down_at)
    finally:
        store.close()
    [line] = live["outages"]
    assert line["end"] == "2019-10-01T01:00:00+01:00"
    assert after["outages"] == live["outages"]
    servers = {r["id"]: r for r in after["areas"]}["servers"]
    assert servers["downtime_minutes"] == 60  # 23:00 to midnight, the period's end
    # Before the end was received, the outage was open: so it stood.
    [open_line] = before["outages"]
    assert open_line["start"] == line["start"]
    assert open_line["end"] is None


def reordered(est: Estate) -> Estate:
    """``est`` with its areas and partners listed in the reverse order (the same rules)."""
    return est.model_copy(
        update={
            "areas": dict(reversed(est.areas.items())),
            "partners": dict(reversed(est.partners.items())),
        }
    )


def layout(data: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The order of a report's areas, partners and policy lines."""
    return (
        [a["id"] for a in data["areas"]],
        [p["id"] for p in data["by_partner"]],
        list(data["policy"]),
    )


def test_as_of_lays_the_report_out_in_the_configs_order(tmp_path: Path) -> None:
    """The recorded rules keep the config's order (the digest is over the sorted rules,
    so it does not change with the order): a report ``--as-of`` lists areas, partners and
    the policy as the live report did then, not alphabetically."""
    est = reordered(estate())  # servers first, SHARED first: not alphabetical
    store = Store(tmp_path / "c.db")
    try:
        record_rules(store, est, T0 - timedelta(days=30))
        store.ingest(stream(), T0 + timedelta(hours=4))
        live = build_report(store, est, PERIOD, END)
        as_of = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(days=1))
    finally:
        store.close()
    assert layout(as_of) == layout(live)
    assert layout(live)[0][0] == "servers"
    assert layout(live)[1][0] == "SHARED"
    down = lambda data: [a["downtime_minutes"] for a in data["areas"]]  # noqa: E731
    assert down(as_of) == down(live)


def test_a_change_of_order_alone_records_a_version_with_the_same_digest(
    tmp_path: Path,
) -> None:
    """Recording the same rules again records nothing; listing them in another order
    records a version with the same digest (the figures' rules did not change, the
    report's layout did); a version recorded sorted (before the order was kept) is
    recorded again once in the config's order, and reports as of before that stay sorted."""
    est = estate()
    store = Store(tmp_path / "c.db")
    try:
        # As versions were recorded before: sorted.
        view = accounting_view(est)
        assert store.record_rules(digest(view), canonical(view), T0 - timedelta(days=30))
        store.ingest(stream(), T0 + timedelta(hours=4))
        assert record_rules(store, est, T0 - timedelta(days=20))  # now in the config's order
        assert not record_rules(store, est, T0 - timedelta(days=10))
        assert record_rules(store, reordered(est), T0 - timedelta(days=5))
        assert not record_rules(store, reordered(est), T0 - timedelta(days=4))
        versions = store.conn.execute("SELECT digest FROM rules_versions").fetchall()
        sorted_then = build_report(store, est, PERIOD, END, as_of=T0 - timedelta(days=25))
        first = build_report(store, est, PERIOD, END, as_of=T0 - timedelta(days=15))
        second = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(days=1))
    finally:
        store.close()
    assert len({d for (d,) in versions}) == 1
    assert len(versions) == 3
    assert layout(sorted_then)[0] == sorted(est.areas)
    assert layout(first)[0] == list(est.areas)
    assert layout(second)[0] == list(reversed(est.areas))
    assert first["settings"]["rules"].split(",")[0] == second["settings"]["rules"].split(",")[0]


def test_a_window_declared_after_the_report_does_not_change_it(tmp_path: Path) -> None:
    est = estate()
    store = Store(tmp_path / "c.db")
    try:
        store.ingest(stream(), T0 + timedelta(hours=4))
        reported = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(days=1))
        store.declare_window(
            T0 + timedelta(hours=2),
            T0 + timedelta(hours=3),
            {"sites": ["dc"]},
            "disk swap",
            "bob",
            T0 + timedelta(days=5),  # declared afterwards: plans nothing before it
        )
        now = build_report(store, est, PERIOD, END)
        again = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(days=1))
    finally:
        store.close()
    assert again == reported
    servers = {r["id"]: r for r in now["areas"]}["servers"]
    assert servers["planned_minutes"] == 0
    assert [w["id"] for w in now["windows"]] == ["m:1"]


def test_declared_before_the_work_it_plans_it_and_the_report_says_which(tmp_path: Path) -> None:
    est = estate()
    store = Store(tmp_path / "c.db")
    try:
        store.declare_window(
            T0 + timedelta(hours=2),
            T0 + timedelta(hours=2, minutes=30),
            {"checks": ["files"]},
            "disk swap",
            "bob",
            T0 - timedelta(days=1),
        )
        store.ingest(stream(), T0 + timedelta(hours=4))
        data = build_report(store, est, PERIOD, END)
    finally:
        store.close()
    servers = {r["id"]: r for r in data["areas"]}["servers"]
    assert servers["planned_minutes"] == 30
    planned = [o for o in data["outages"] if o["kind"] == "planned"]
    assert [(o["planned_by"], o["minutes"]) for o in planned] == [(["m:1"], 30)]
    assert data["windows"][0]["covered_minutes"] == 30
    assert data["windows"][0]["by"] == "bob"


def test_not_monitored_records_make_the_column_real(tmp_path: Path) -> None:
    est = estate()
    store = Store(tmp_path / "c.db")
    try:
        store.open_not_monitored(
            "hdc-pathfinder", "hdc-pathfinder", T0, T0 + timedelta(minutes=1), "offline"
        )
        mid = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(minutes=30))
        store.close_not_monitored(
            "hdc-pathfinder", T0 + timedelta(hours=1), T0 + timedelta(hours=1)
        )
        store.provisional_dropped("hdc-pathfinder", T0 + timedelta(hours=1, minutes=1))
        after = build_report(store, est, PERIOD, END)
        mid_again = build_report(store, est, PERIOD, END, as_of=T0 + timedelta(minutes=30))
    finally:
        store.close()
    nm = lambda data, a: {r["id"]: r for r in data["areas"]}[a]["not_monitored_minutes"]  # noqa: E731
    assert nm(after, "email") == 60
    assert nm(after, "servers") == 60
    # At 09:30 the agent was still away: 30 minutes so far, and the provisional outage open.
    assert nm(mid, "email") == 30
    assert {r["id"]: r for r in mid["areas"]}["network_telephony"]["downtime_minutes"] == 30
    assert mid_again == mid


def test_the_same_data_gives_the_same_bytes_in_every_format(tmp_path: Path) -> None:
    est = estate(services=SERVICE)
    out: dict[str, list[str]] = {f: [] for f in FORMATS}
    for run in range(2):
        store = Store(tmp_path / f"c{run}.db")
        try:
            store.ingest(stream(), T0 + timedelta(hours=4))
            data = build_report(
                store, est, PERIOD, END + timedelta(days=run), as_of=T0 + timedelta(days=1)
            )
        finally:
            store.close()
        for fmt in FORMATS:
            out[fmt].append(render(fmt, data))
    for fmt, (a, b) in out.items():
        assert a == b, fmt
    assert 'id="chart-downtime"' in out["html"][0]
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}", out["html"][0])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(1, 5), min_size=6, max_size=6))
def test_figures_never_depend_on_arrival_order_or_on_which_collector(
    tmp_path_factory: Any, seed: int, cuts: list[int]
) -> None:
    """Two collectors fed the same events in different orders and batches agree exactly."""
    est = estate(services=SERVICE)
    events = stream()
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)
    reports = []
    for order in (events, shuffled):
        d = tmp_path_factory.mktemp("c")
        store = Store(d / "c.db")
        try:
            batch: list[Event] = []
            for e, cut in zip(order, cuts, strict=True):
                batch.append(e)
                if cut == 1:
                    store.ingest(batch, T0 + timedelta(hours=4))
                    batch = []
            if batch:
                store.ingest(batch, T0 + timedelta(hours=4))
            reports.append(
                json.dumps(build_report(store, est, PERIOD, END, generated_at=END), sort_keys=True)
            )
        finally:
            store.close()
    assert reports[0] == reports[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "availmon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_maintenance_cli_declares_lists_and_cancels(tmp_path: Path) -> None:
    cfg = tmp_path / "estate.toml"
    lines = ['name = "test estate"', "[collector]", f'database = "{tmp_path / "c.db"}"']
    for pid, name in PARTNERS.items():
        lines += [f"[partners.{pid}]", f'name = "{name}"']
    for site, partner in SITES.items():
        lines += [f"[sites.{site}]", f'partner = "{partner}"']
    lines += [
        "[[maintenance]]",
        'name = "sunday-patching"',
        'every = "sunday"',
        "start = 02:00:00",
        "end = 04:00:00",
        'sites = ["dc"]',
    ]
    cfg.write_text("\n".join(lines) + "\n")
    add = cli(
        "maintenance", "add", "--config", str(cfg), "--start", "2099-11-12T22:00",
        "--end", "2099-11-13T01:00", "--site", "dc", "--area", "servers",
        "--reason", "SAN firmware", "--by", "carol",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert add.stdout.startswith(
        "m:1: 2099-11-12 22:00 to 2099-11-13 01:00, sites dc; areas servers"
    )
    bad = cli(
        "maintenance", "add", "--config", str(cfg), "--start", "2099-11-12T22:00",
        "--end", "2099-11-13T01:00", "--site", "nowhere", "--reason", "x",
    )  # fmt: skip
    assert bad.returncode == 2
    assert "unknown site 'nowhere'" in bad.stderr
    listed = cli("maintenance", "list", "--config", str(cfg), "--period", "2099-11", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["by"]) for r in rows if r["source"] == "declared"] == [("m:1", "carol")]
    assert sum(r["source"] == "config" for r in rows) == 5  # five Sundays in November 2099
    gone = cli("maintenance", "cancel", "m:1", "--config", str(cfg), "--by", "carol")
    assert gone.returncode == 0, gone.stderr
    listed = cli("maintenance", "list", "--config", str(cfg), "--period", "2099-11", "--json")
    assert "m:1" not in [r["id"] for r in json.loads(listed.stdout)]
    rep = cli(
        "report", "--config", str(cfg), "--period", "2099-11", "--format", "json",
        "--as-of", "2000-01-01T00:00", "--generated-at", "2000-01-01T00:00",
    )  # fmt: skip
    assert rep.returncode == 0, rep.stderr
    assert json.loads(rep.stdout)["generated_at"] == "2000-01-01T00:00:00+00:00"
    csv_file = tmp_path / "out.csv"
    csv_file.write_text(
        "site,area,check,start,end,kind,cause,provider,note\n"
        "dc,servers,files,2019-08-04T02:30,2019-08-04T04:45,unplanned,patch overran,,\n"
    )
    imp = cli("outages", "import", str(csv_file), "--config", str(cfg))
    assert imp.returncode == 0, imp.stderr
    listed = cli("outages", "list", "--config", str(cfg), "--period", "2019-08", "--json")
    [row] = json.loads(listed.stdout)
    assert row["attribution"] == ["window sunday-patching@2019-08-04T02:00+01:00"]
    table = cli("outages", "list", "--config", str(cfg), "--period", "2019-08")
    assert "window sunday-patching@2019-08-04T02:00+01:00" in table.stdout


def test_a_window_is_cancelled_once_and_cancelling_it_again_writes_nothing(
    tmp_path: Path,
) -> None:
    """A second cancellation was ignored by the table but still said "cancelled" and dropped
    the cached figures of every period from the window's start on."""
    store = Store(tmp_path / "c.db")
    try:
        w = store.declare_window(
            T0 + timedelta(hours=2), T0 + timedelta(hours=3), {"sites": ["dc"]}, "swap", "bob", T0
        )
        first = store.cancel_window(w["id"], "alice", T0 + timedelta(hours=1), "postponed")
        assert first == WindowCancellation(
            CancelOutcome.CANCELLED, "m:1", "alice", to_iso(T0 + timedelta(hours=1)), "postponed"
        )
        # Figures of the quarter are cached: a write into it would drop them.
        version = store.figures_version(to_us(END))
        assert store.cache_figures("q", to_us(PERIOD.start), to_us(END), version, "{}")
        generation, writes = store.figures_generation(), store.window_writes
        again = store.cancel_window("m:1", "carol", T0 + timedelta(days=1), "again")
        assert again == WindowCancellation(
            CancelOutcome.ALREADY_CANCELLED,
            "m:1",
            "alice",
            to_iso(T0 + timedelta(hours=1)),
            "postponed",
        )
        assert store.cached_figures("q") == "{}"
        assert store.figures_generation() == generation
        assert store.window_writes == writes
        found = store.window("m:1")
        assert found is not None
        assert (found["cancelled_by"], found["cancelled_at"]) == ("alice", first.at)
        for missing in ("m:2", "bogus"):
            assert store.cancel_window(missing, "carol", T0, None) == WindowCancellation(
                CancelOutcome.NO_SUCH_WINDOW, missing
            )
        assert store.cached_figures("q") == "{}"
    finally:
        store.close()


def test_the_same_window_is_declared_once(tmp_path: Path) -> None:
    """Declaring the same window again (another reason, someone else) added a second row:
    listed twice, on the report twice. Scopes that mean the same are the same; a
    cancelled window does not count; what is stored reads back as it was given."""
    start, end = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    store = Store(tmp_path / "c.db")
    other = Store(tmp_path / "c.db")  # another process: the CLI beside the collector
    try:
        first = store.declare_window(
            start, end, {"sites": ["dc", "ccc-guildhall"], "areas": ["servers"]}, "x", "bob", T0
        )
        assert first["scope"] == {"sites": ["dc", "ccc-guildhall"], "areas": ["servers"]}
        same_scopes = [
            {"sites": ["dc", "ccc-guildhall"], "areas": ["servers"]},
            {"areas": ["servers"], "sites": ["ccc-guildhall", "dc", "dc"], "checks": []},
            {"sites": ("ccc-guildhall", "dc"), "areas": ["servers"], "partners": []},
        ]
        for scope in same_scopes:
            with pytest.raises(DuplicateWindow) as refused:
                other.declare_window(
                    start.astimezone(LONDON), end, scope, "another reason", "carol", T0
                )
            assert refused.value.existing_id == "m:1"
            assert refused.value.existing == first
        assert [w["id"] for w in store.windows(start, end)] == ["m:1"]
        assert store.window("m:2") is None
        # Not the same window: other times, another scope.
        for s, e, scope in [
            (start, end + timedelta(minutes=1), {"sites": ["dc", "ccc-guildhall"]}),
            (start, end, {"sites": ["dc", "ccc-guildhall"]}),
            (start, end, {"sites": ["dc"], "areas": ["servers"]}),
            (start, end, {}),
        ]:
            store.declare_window(s, e, scope, "x", "bob", T0)
        with pytest.raises(DuplicateWindow) as refused:
            store.declare_window(start, end, {"sites": [], "areas": []}, "x", "bob", T0)
        assert refused.value.existing_id == "m:5"
        # Once cancelled, it can be declared again (and then not a third time).
        cancelled = store.cancel_window("m:1", "bob", T0, None)
        assert cancelled.outcome is CancelOutcome.CANCELLED
        again = store.declare_window(start, end, same_scopes[1], "x again", "carol", T0)
        assert again["id"] == "m:6"
        assert again["scope"] == same_scopes[1]  # stored as given
        with pytest.raises(DuplicateWindow) as refused:
            store.declare_window(start, end, same_scopes[0], "x", "bob", T0)
        assert refused.value.existing_id == "m:6"
    finally:
        other.close()
        store.close()


def test_the_maintenance_cli_refuses_a_duplicate_and_a_second_cancellation(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelling twice printed "m:1 cancelled" and exited 0; declaring the same window
    twice recorded it twice."""
    add = ["maintenance", "add", "--config", config_file, "--start", "2099-07-12T22:00",
           "--end", "2099-07-13T01:00", "--area", "servers"]  # fmt: skip
    sites = ["--site", "dc", "--site", "ccc-guildhall"]
    assert usage(capsys, *add, *sites, "--reason", "SAN firmware", "--by", "carol") == (0, [])
    swapped = ["--site", "ccc-guildhall", "--site", "dc", "--reason", "again", "--by", "dave"]
    assert usage(capsys, *add, *swapped) == (
        2,
        [
            "availmon: m:1 already declares this window (2099-07-12 22:00 to 2099-07-13 01:00,"
            " areas servers; sites dc, ccc-guildhall; 'SAN firmware', declared by carol);"
            " nothing changed (cancel m:1 to declare it anew)"
        ],
    )
    db = tmp_path / "cli.db"

    def rows(table: str) -> list[Any]:
        conn = sqlite3.connect(db)
        try:
            return conn.execute(f"SELECT * FROM {table}").fetchall()
        finally:
            conn.close()

    assert len(rows("maintenance_windows")) == 1
    cancel = ["maintenance", "cancel", "m:1", "--config", config_file]
    # 09:00 UTC is 10:00 in London (summer time): the CLI's times are the accounting's.
    monkeypatch.setattr("collector.cli.utcnow", lambda: datetime(2099, 7, 1, 9, tzinfo=UTC))
    assert main([str(a) for a in [*cancel, "--by", "alice"]]) == 0
    assert capsys.readouterr().out == "m:1 cancelled\n"
    before = (rows("maintenance_cancellations"), rows("figures_state"))
    monkeypatch.setattr("collector.cli.utcnow", lambda: datetime(2099, 7, 2, 9, tzinfo=UTC))
    assert usage(capsys, *cancel, "--by", "bob", "--reason", "twice") == (
        2,
        ["availmon: m:1 was already cancelled by alice at 2099-07-01 10:00; nothing changed"],
    )
    assert (rows("maintenance_cancellations"), rows("figures_state")) == before
    assert usage(capsys, "maintenance", "cancel", "m:9", "--config", config_file) == (
        2,
        ["availmon: no declared window 'm:9'"],
    )
    # Cancelled, the same window can be declared again.
    assert usage(capsys, *add, *sites, "--reason", "SAN firmware", "--by", "carol") == (0, [])
    assert len(rows("maintenance_windows")) == 2


def usage(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.splitlines()


def test_a_maintenance_listing_never_creates_a_database(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad period, or a mistyped --db, left a new directory and database behind."""
    db = tmp_path / "new" / "new.db"
    argv = ["maintenance", "list", "--config", config_file, "--db", db]
    assert usage(capsys, *argv, "--period", "BOGUS") == (
        2,
        [
            "availmon: unknown period 'BOGUS': use FY2019Q2 (UK financial quarter), 2019Q3"
            " (calendar quarter), 2019-09 (month) or 2019-07-01..2019-09-30"
        ],
    )
    assert usage(capsys, *argv, "--period", "2019Q3") == (
        3,
        [f"availmon: no database at {db}: import outages first, run the collector, or pass --db"],
    )
    assert not db.parent.exists()
    assert not (tmp_path / "cli.db").exists()


def test_a_new_install_lists_the_configs_windows_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the collector has ever run, nothing is declared: the config's recurring
    windows are the whole list, and no database is made to say so."""
    config = tmp_path / "estate.toml"
    demo = (Path(__file__).resolve().parents[2] / "config" / "demo.toml").read_text()
    db = tmp_path / "state" / "collector.db"
    config.write_text(demo.replace('database = "state/demo/collector.db"', f'database = "{db}"'))
    assert main(["maintenance", "list", "--period", "2019Q3", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(out) - 1} window(s) in 2019Q3; 0 cancelled"
    assert len(out) > 1  # the demo's Sunday patching, each week of the quarter
    assert not db.parent.exists()


@pytest.mark.parametrize(
    "command", [["report"], ["maintenance", "list"], ["outages", "list"]], ids=" ".join
)
def test_from_to_past_the_last_year_is_a_usage_error(
    command: list[str], config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The day after 9999-12-31: 'unexpected OverflowError: date value out of range'."""
    argv = [*command, "--from", "2019-01-01", "--to", "9999-12-31", "--config", config_file]
    assert usage(capsys, *argv) == (
        2,
        ["availmon: period 2019-01-01..9999-12-31 is outside 1990-01-01 to 2100-12-31"],
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["maintenance", "add", "--start", "2031-03-30T01:30", "--end", "2031-03-30T03:00",
          "--reason", "x"],
         "--start '2031-03-30T01:30': does not exist in Europe/London (clocks went forward);"
         " add an offset"),
        (["maintenance", "add", "--start", "2019-10-27T00:30", "--end", "2019-10-27T01:30",
          "--reason", "x"],
         "--end '2019-10-27T01:30': happens twice in Europe/London (clocks went back);"
         " add an offset"),
        (["report", "--as-of", "2019-10-27T01:30"],
         "--as-of '2019-10-27T01:30': happens twice in Europe/London (clocks went back);"
         " add an offset"),
        (["report", "--generated-at", "2031-03-30T01:59"],
         "--generated-at '2031-03-30T01:59': does not exist in Europe/London (clocks went"
         " forward); add an offset"),
    ],
)  # fmt: skip
def test_local_times_inside_a_clock_change_are_refused(
    argv: list[str],
    message: str,
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """01:30 on the spring Sunday never happens (it was stored as 02:30); on the autumn one
    it happens twice (it was taken as summer time). An import refuses both; so does this."""
    assert usage(capsys, *argv, "--config", config_file) == (2, [f"availmon: {message}"])
    assert not (tmp_path / "cli.db").exists()
    # With an offset, it says which instant.
    if argv[0] == "maintenance":
        fixed = [a + "+01:00" if a.startswith("20") and a.endswith(":30") else a for a in argv]
        assert usage(capsys, *fixed, "--by", "carol", "--config", config_file)[0] == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--period", ""], "unknown period '': use FY2019Q2 (UK financial quarter), 2019Q3"
                           " (calendar quarter), 2019-09 (month) or 2019-07-01..2019-09-30"),
        (["--from", "", "--to", ""], "--from: not a date (YYYY-MM-DD): ''"),
        (["--from", "2019-07-01", "--to", ""], "--to: not a date (YYYY-MM-DD): ''"),
        (["--from", ""], "--from and --to go together"),
        (["--as-of", ""], "--as-of: not a time (ISO 8601, e.g. 2019-10-01T09:00): ''"),
        (["--generated-at", ""],
         "--generated-at: not a time (ISO 8601, e.g. 2019-10-01T09:00): ''"),
    ],
)  # fmt: skip
def test_an_empty_value_is_a_bad_value_not_none_given(
    argv: list[str], message: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--period '' gave this quarter's report, --as-of '' the figures as of now: exit 0."""
    code, err = usage(capsys, "report", *argv, "--format", "json", "--config", config_file)
    assert (code, err) == (2, [f"availmon: {message}"])
    assert capsys.readouterr().out == ""
