"""``availmon outages import|list|annotate``: all rows or none, idempotent, every error said."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from availmon.cli import main
from availmon.config import Estate, load_config, parse_config
from availmon.schema import Event
from collector.accounting import quarter_containing
from collector.outage_csv import parse_csv
from collector.store import Store
from tests.collector.helpers import LONDON, write_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample-outages-FY2019Q2.csv"
HEADER = "site,area,check,start,end,kind,cause,provider,note\n"
GOOD = "dc,email,webmail,2019-07-09T10:05,2019-07-09T11:17,unplanned,DB failover,,\n"


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def stored(db: Path) -> list[dict[str, object]]:
    s = Store(db)
    try:
        return s.outages()
    finally:
        s.close()


def stored_one(db: Path, oid: str) -> dict[str, object]:
    s = Store(db)
    try:
        row = s.outage(oid)
    finally:
        s.close()
    assert row is not None
    return row


def test_sample_file_is_good_against_the_demo_config() -> None:
    """The README's first step: the shipped sample imports into the shipped demo estate."""
    parsed = parse_csv(SAMPLE.read_text(encoding="utf-8"), load_config(ROOT / "config/demo.toml"))
    assert parsed.errors == []
    assert len(parsed.rows) == 12
    kinds = {(r["state"], r["planned"]) for r in parsed.rows}
    assert kinds == {("down", 0), ("down", 1), ("degraded", 0)}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            "dc,email,webmail,2019-07-01T11:00,2019-07-01T10:00,unplanned,,,",
            "line 3: end 2019-07-01T10:00 is before start 2019-07-01T11:00",
        ),
        (
            "dc,email,webmail,2019-07-01T10:00,2019-07-01T10:00,unplanned,,,",
            "line 3: end 2019-07-01T10:00 is the same as start 2019-07-01T10:00",
        ),
        (
            "dc,mail,webmail,2019-07-01T10:00,2019-07-01T11:00,unplanned,,,",
            "line 3: unknown area 'mail' (known: network_telephony, email, internet_web, servers)",
        ),
        (
            "depot,email,webmail,2019-07-01T10:00,2019-07-01T11:00,unplanned,,,",
            "line 3: unknown site 'depot' (known: ccc-guildhall, dc, hdc-pathfinder,"
            " scdc-cambourne)",
        ),
        (
            "dc,email,webmail,2019-07-01T10:00,2019-07-01T11:00,outage,,,",
            "line 3: kind 'outage' is not one of unplanned, planned, degraded",
        ),
        (
            "dc,email,webmail,1 July 2019 10:00,2019-07-01T11:00,unplanned,,,",
            "line 3: start '1 July 2019 10:00': not an ISO 8601 time",
        ),
        (
            "dc,email,webmail,2019-10-27T01:30,2019-10-27T03:00,unplanned,,,",
            "line 3: start '2019-10-27T01:30': happens twice in Europe/London (clocks went"
            " back); add an offset",
        ),
        (
            "dc,email,webmail,2019-03-31T01:30,2019-03-31T03:00,unplanned,,,",
            "line 3: start '2019-03-31T01:30': does not exist in Europe/London (clocks went"
            " forward); add an offset",
        ),
        (
            "dc,email,webmail,2019-07-01T10:00,,unplanned,,,",
            "line 3: end is empty",
        ),
        (
            "dc,email,webmail,2019-07-01T10:00",
            "line 3: expected 9 fields, found 4",
        ),
        (
            GOOD.strip(),
            "line 3: the same outage as line 2",
        ),
    ],
)
def test_bad_row_is_reported_and_nothing_imported(
    row: str, message: str, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text(HEADER + GOOD + row + "\n", encoding="utf-8")
    assert run("outages", "import", csv_file, "--config", config_file) == 1
    err = capsys.readouterr().err
    assert f"{csv_file}: {message}\n" in err
    assert "nothing imported: 1 bad row(s)" in err
    # Not even the good row before it went in.
    assert not (tmp_path / "cli.db").exists() or stored(tmp_path / "cli.db") == []


def test_every_bad_row_is_reported_with_its_line(estate: Estate) -> None:
    text = (
        HEADER
        + GOOD
        + 'dc,email,webmail,2019-07-02T10:00,2019-07-02T10:30,unplanned,"two\nlines",,\n'
        + "dc,nope,x,2019-07-03T10:00,2019-07-03T09:00,sometimes,,,\n"
        + "\n"
        + "dc,email,x,2019-07-04T10:00,2019-07-04T10:00,planned,,,\n"
    )
    parsed = parse_csv(text, estate)
    assert [str(e) for e in parsed.errors] == [
        "line 5: unknown area 'nope' (known: network_telephony, email, internet_web, servers)",
        "line 5: kind 'sometimes' is not one of unplanned, planned, degraded",
        "line 5: end 2019-07-03T09:00 is before start 2019-07-03T10:00",
        "line 7: end 2019-07-04T10:00 is the same as start 2019-07-04T10:00",
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("site,area,check,start,end,kind\n", "missing column(s) cause, provider, note"),
        (HEADER.strip() + ",owner\n", "unknown column(s) owner"),
    ],
)
def test_bad_header(header: str, message: str, estate: Estate) -> None:
    parsed = parse_csv(header, estate)
    assert len(parsed.errors) == 1
    assert str(parsed.errors[0]).startswith(f"line 1: bad header: {message}")


def test_local_times_and_offsets_mean_the_same_instant(estate: Estate) -> None:
    a = parse_csv(HEADER + GOOD, estate).rows[0]
    b = parse_csv(
        HEADER
        + GOOD.replace("2019-07-09T10:05", "2019-07-09T09:05:00Z").replace(
            "2019-07-09T11:17", "2019-07-09T12:17+02:00"
        ),
        estate,
    ).rows[0]
    assert (a["start"], a["end"]) == (b["start"], b["end"])
    assert a["start"] == "2019-07-09T09:05:00.000000+00:00"
    assert a["id"] == b["id"]
    # Columns in another order and a spreadsheet's byte-order mark are fine.
    shuffled = "\ufeffkind,site,area,check,start,end,cause,provider,note\n"
    shuffled += "unplanned,dc,email,webmail,2019-07-09T10:05,2019-07-09T11:17,DB failover,,\n"
    assert parse_csv(shuffled, estate).rows == [a]


def test_sites_are_free_when_the_config_lists_none() -> None:
    bare = parse_config({"name": "no sites"}, "test")
    parsed = parse_csv(HEADER + GOOD.replace("dc,", "old-depot,", 1), bare)
    assert parsed.errors == []
    assert parsed.rows[0]["site"] == "old-depot"


def test_import_twice_changes_nothing_and_a_correction_updates(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.db"
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    assert "12 outages: 12 new, 0 updated, 0 unchanged" in capsys.readouterr().out
    before = stored(db)
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    assert "12 outages: 0 new, 0 updated, 12 unchanged" in capsys.readouterr().out
    assert stored(db) == before
    corrected = tmp_path / "corrected.csv"
    corrected.write_text(
        SAMPLE.read_text(encoding="utf-8").replace("Router reboot after a power blip", "PSU"),
        encoding="utf-8",
    )
    assert run("outages", "import", corrected, "--config", config_file) == 0
    assert "12 outages: 0 new, 1 updated, 11 unchanged" in capsys.readouterr().out
    rows = stored(db)
    assert len(rows) == 12
    assert {r["cause"] for r in rows if r["site"] == "hdc-pathfinder"} >= {"PSU"}


def test_dry_run_stores_nothing(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("outages", "import", SAMPLE, "--dry-run", "--config", config_file) == 0
    assert "12 outages, all good (dry run" in capsys.readouterr().out
    assert not (tmp_path / "cli.db").exists()


def test_list_filters_by_period_area_and_site(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    capsys.readouterr()
    assert run("outages", "list", "--period", "FY2019Q2", "--config", config_file) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("12 outage(s) in FY2019Q2")
    assert "imp:" in out
    assert "BT Openreach" in out
    assert run("outages", "list", "--period", "2019-09", "--area", "email", "--json",
               "--config", config_file) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [(r["site"], r["check_name"], r["provider"]) for r in rows] == [
        ("dc", "smtp-relay", "Mimecast")
    ]
    assert run("outages", "list", "--from", "2019-06-01", "--to", "2019-06-30",
               "--site", "ccc-guildhall", "--json", "--config", config_file) == 0  # fmt: skip
    rows = json.loads(capsys.readouterr().out)
    assert [r["cause"] for r in rows] == ["Fibre cut at Trumpington exchange"]


#: The file server at the data centre, in the servers area.
FILES_CHECK = """
[[sites.dc.checks]]
name = "files"
type = "tcp"
target = "127.0.0.1:9"
area = "servers"
"""


def test_a_row_for_a_configured_check_must_give_the_checks_area(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report books a configured check's time to the check's area whatever a record
    says: a row giving another area is refused (naming the file, line, column, value and
    the check's area), and so is the whole file. A check the config does not list keeps the
    row's area."""
    config = write_config(tmp_path / "estate.toml", tmp_path / "cli.db", FILES_CHECK)
    csv_file = tmp_path / "in.csv"
    csv_file.write_text(
        HEADER
        + "dc,servers,files,2019-08-01T09:00,2019-08-01T09:30,unplanned,,,\n"
        + "dc,email,files,2019-08-01T10:00,2019-08-01T11:00,unplanned,,,\n"
        + "dc,email,other,2019-08-01T10:00,2019-08-01T11:00,unplanned,,,\n",
        encoding="utf-8",
    )
    assert run("outages", "import", csv_file, "--config", config) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{csv_file}: line 3: area 'email' is not the area of check 'files' at site 'dc'"
        " (the config puts it in 'servers')",
        "nothing imported: 1 bad row(s)",
    ]
    assert not (tmp_path / "cli.db").exists()
    csv_file.write_text(
        HEADER
        + "dc,servers,files,2019-08-01T09:00,2019-08-01T09:30,unplanned,,,\n"
        + "dc,email,other,2019-08-01T10:00,2019-08-01T11:00,unplanned,,,\n",
        encoding="utf-8",
    )
    assert run("outages", "import", csv_file, "--config", config) == 0
    assert {(r["check_name"], r["area"]) for r in stored(tmp_path / "cli.db")} == {
        ("files", "servers"),
        ("other", "email"),
    }


def test_list_by_area_lists_what_the_report_counts_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured check's record stored with another area (the check moved since, or an
    import from before imports were held to the check's area) is counted in the check's
    area: ``--area`` lists it there, as the report counts it, and says where it was
    recorded."""
    db = tmp_path / "cli.db"
    config = write_config(tmp_path / "estate.toml", db, FILES_CHECK)
    store = Store(db)
    try:
        store.import_outages(
            [
                {
                    "id": "imp:old",
                    "site": "dc",
                    "check_name": "files",
                    "area": "email",
                    "state": "down",
                    "start": "2019-08-01T09:00:00+00:00",
                    "end": "2019-08-01T10:00:00+00:00",
                    "planned": 0,
                }
            ]
        )
    finally:
        store.close()
    argv = ["outages", "list", "--period", "FY2019Q2", "--config", config]
    assert run(*argv, "--area", "email", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(*argv, "--area", "servers", "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["area"], row["report_area"]) == ("imp:old", "email", "servers")
    assert row["attribution"] == ["recorded in area email"]
    assert run(*argv, "--area", "servers") == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if x.startswith("imp:old")]
    assert line.split()[5:9] == ["60", "servers", "dc", "files"]
    assert line.endswith("recorded in area email")
    assert run("report", "--period", "FY2019Q2", "--format", "json", "--config", config) == 0
    areas = {a["id"]: a["downtime_minutes"] for a in json.loads(capsys.readouterr().out)["areas"]}
    assert (areas["servers"], areas["email"]) == (60, 0)


def test_annotate_records_cause_provider_and_planned(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    capsys.readouterr()
    db = tmp_path / "cli.db"
    target = next(r for r in stored(db) if r["check_name"] == "vm-cluster")
    assert target["planned"] == 0
    code = run(
        "outages", "annotate", str(target["id"]), "--cause", "Hypervisor patch overran",
        "--provider", "VMware", "--planned", "--config", config_file,
    )  # fmt: skip
    assert code == 0
    assert "planned; cause 'Hypervisor patch overran'; provider 'VMware'" in (
        capsys.readouterr().out
    )
    row = stored_one(db, str(target["id"]))
    assert (row["cause"], row["provider"], row["planned"]) == (
        "Hypervisor patch overran",
        "VMware",
        1,
    )
    # Fields not given keep their value.
    assert run("outages", "annotate", str(target["id"]), "--note", "CR-1090", "--config",
               config_file) == 0  # fmt: skip
    row = stored_one(db, str(target["id"]))
    assert (row["cause"], row["note"], row["planned"]) == ("Hypervisor patch overran", "CR-1090", 1)


def test_annotate_unknown_id_fails(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    assert run("outages", "annotate", "nope", "--cause", "x", "--config", config_file) == 2
    assert "no outage with id 'nope'" in capsys.readouterr().err


def test_annotation_survives_the_rebuild_of_agent_outages(store: Store) -> None:
    def event(seq: int, to: str, at: str) -> Event:
        t = datetime.fromisoformat(at).replace(tzinfo=LONDON)
        return Event.model_validate(
            {
                "id": f"a1:{seq}",
                "seq": seq,
                "site": "dc",
                "agent": "a1",
                "check": "webmail",
                "area": "email",
                "from": "up" if to == "down" else "down",
                "to": to,
                "at": t,
                "detected_at": t,
            }
        )

    now = datetime(2019, 8, 1, tzinfo=UTC)
    store.ingest([event(1, "down", "2019-07-09T10:00")], now)
    oid = store.outages()[0]["id"]
    store.annotate(oid, now, cause="Certificate expired", provider="Sectigo", planned=False)
    store.ingest([event(2, "up", "2019-07-09T10:40")], now)  # rebuilds the check's outages
    (row,) = store.outages()
    assert row["id"] == oid
    assert row["end"] is not None
    assert (row["cause"], row["provider"]) == ("Certificate expired", "Sectigo")


def test_list_defaults_to_this_quarter(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    period = quarter_containing(datetime.now(UTC), LONDON)
    start = period.start + timedelta(minutes=1)
    now_csv = tmp_path / "now.csv"
    now_csv.write_text(
        HEADER + f"dc,email,webmail,{start.isoformat()},"
        f"{(start + timedelta(minutes=30)).isoformat()},unplanned,This quarter's,,\n",
        encoding="utf-8",
    )
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0  # FY2019Q2
    assert run("outages", "import", now_csv, "--config", config_file) == 0
    capsys.readouterr()
    assert run("outages", "list", "--config", config_file) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"1 outage(s) in {period.id}"
    [row] = lines[1:-1]
    assert row.endswith("This quarter's")


def test_annotate_unplanned_undoes_planned(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    capsys.readouterr()
    db = tmp_path / "cli.db"
    target = next(r for r in stored(db) if r["check_name"] == "file-server")
    assert (target["planned"], target["cause"]) == (1, "Storage array firmware upgrade")
    code = run("outages", "annotate", str(target["id"]), "--unplanned", "--config", config_file)
    assert code == 0
    assert "): unplanned; cause 'Storage array firmware upgrade'" in capsys.readouterr().out
    row = stored_one(db, str(target["id"]))
    assert (row["planned"], row["cause"]) == (0, "Storage array firmware upgrade")


def test_db_overrides_the_configs_database(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere" / "other.db"
    assert run("outages", "import", SAMPLE, "--config", config_file, "--db", other) == 0
    assert f"(database {other})" in capsys.readouterr().out
    assert len(stored(other)) == 12
    assert not (tmp_path / "cli.db").exists()  # the config's database is left alone
    argv = ["report", "--period", "FY2019Q2", "--format", "json", "--config", config_file]
    assert run(*argv, "--db", other) == 0
    assert json.loads(capsys.readouterr().out)["combined"]["downtime_minutes"] == 2780
    assert run(*argv) == 3  # a database that is not there: a runtime failure
    assert f"no database at {tmp_path / 'cli.db'}" in capsys.readouterr().err


def test_config_comes_from_availmon_config(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AVAILMON_CONFIG", str(config_file))
    assert run("outages", "import", SAMPLE) == 0
    assert f"(database {tmp_path / 'cli.db'})" in capsys.readouterr().out
    assert run("report", "--period", "FY2019Q2", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["combined"]["downtime_minutes"] == 2780
    # --config still wins over the environment.
    monkeypatch.setenv("AVAILMON_CONFIG", str(tmp_path / "nope.toml"))
    assert run("outages", "list", "--period", "FY2019Q2", "--config", config_file) == 0
    assert capsys.readouterr().out.rstrip().endswith("12 outage(s) in FY2019Q2")
    assert run("outages", "list", "--period", "FY2019Q2") == 2
    assert "nope.toml: cannot read" in capsys.readouterr().err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """The last line of a usage error argparse reported (exit 2): the one naming the bad value."""
    with pytest.raises(SystemExit) as exited:
        run(*argv)
    assert exited.value.code == 2
    return capsys.readouterr().err.splitlines()[-1]


def test_list_refuses_an_area_or_site_nobody_knows(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped name listed "0 outage(s)" with exit 0: a quiet quarter, seemingly."""
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    capsys.readouterr()
    argv = ["outages", "list", "--period", "FY2019Q2", "--config", config_file]
    assert run(*argv, "--area", "nosuch") == 2
    assert capsys.readouterr().err.splitlines() == [
        "availmon: --area 'nosuch': no such area"
        " (known: email, internet_web, network_telephony, servers)"
    ]
    assert run(*argv, "--site", "") == 2
    assert capsys.readouterr().err.splitlines() == [
        "availmon: --site '': no such site"
        " (known: ccc-guildhall, dc, hdc-pathfinder, scdc-cambourne)"
    ]
    # A retired site, gone from the config, still has its outages in the database.
    retired = tmp_path / "retired.toml"
    text = config_file.read_text(encoding="utf-8")
    retired.write_text(text.replace('[sites.ccc-guildhall]\npartner = "CCC"\n', ""))
    assert "ccc-guildhall" not in load_config(retired).sites
    code = run("outages", "list", "--period", "FY2019Q2", "--site", "ccc-guildhall", "--json",
               "--config", retired)  # fmt: skip
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)) == 3


def test_annotate_refuses_what_the_board_would(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 120,000-character note was stored; the board and the API cap each field."""
    assert run("outages", "import", SAMPLE, "--config", config_file) == 0
    capsys.readouterr()
    db = tmp_path / "cli.db"
    oid = str(stored(db)[0]["id"])
    before = stored(db)
    for extra, message in [
        (["--note", "n" * 2001], "--note: longer than 2000 characters (2001)"),
        (["--cause", "c" * 501], "--cause: longer than 500 characters (501)"),
        (["--provider", "p" * 201], "--provider: longer than 200 characters (201)"),
        (
            ["--cause", "x", "--by", "b" * 65],
            f"--by '{'b' * 65}': expected a name of 1-64 printable characters",
        ),
        # Empty is a bad name, not "none given" (which is the login name).
        (["--cause", "x", "--by", ""], "--by '': expected a name of 1-64 printable characters"),
    ]:
        assert run("outages", "annotate", oid, *extra, "--config", config_file) == 2
        assert capsys.readouterr().err.splitlines() == [f"availmon: {message}"]
    assert stored(db) == before
    assert run("outages", "annotate", oid, "--note", "n" * 2000, "--config", config_file) == 0
    assert stored_one(db, oid)["note"] == "n" * 2000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["outages", "annotate", "ID", "--cause", "bad\udcff"], "argument --cause"),
        (["outages", "annotate", "ID", "--provider=x\udce9y"], "argument --provider"),
        (["outages", "annotate", "ID", "--note", "x", "--by", "\udcffdana"], "argument --by"),
        (["outages", "annotate", "bad\udcff", "--note", "x"], "argument id"),
        (["outages", "list", "--site", "bad\udcff"], "argument --site"),
        (
            [
                "maintenance",
                "add",
                "--start",
                "2099-01-01T10:00",
                "--end",
                "2099-01-01T11:00",
                "--reason",
                "bad\udcff",
            ],
            "argument --reason",
        ),
        (["maintenance", "cancel", "m:1", "--reason", "bad\udcff"], "argument --reason"),
    ],
)
def test_text_that_is_not_utf8_is_a_usage_error(
    argv: list[str],
    message: str,
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bytes that are not UTF-8 (Python keeps them as lone surrogates) could be neither
    stored nor printed: 'unexpected UnicodeEncodeError', exit 3."""
    bad = next(a for a in argv if not a.isascii()).split("=")[-1]
    shown = bad.replace("\udcff", "\\xff").replace("\udce9", "\\xe9")
    line = usage_error(capsys, *argv, "--config", config_file)
    assert line.endswith(f": error: {message}: not UTF-8: '{shown}'"), line
    assert not (tmp_path / "cli.db").exists()
