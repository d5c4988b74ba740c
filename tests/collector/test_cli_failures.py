"""Every CLI failure is one line and a documented exit code, never a traceback (issue 15):
bad paths, corrupt or locked databases, unreadable or hostile CSV files."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from availmon.cli import main
from availmon.errors import EXIT_FAIL, EXIT_RUNTIME, EXIT_USAGE, FileFailure
from collector import cli as collector_cli
from collector.outage_csv import read_csv_file

HEADER = "site,area,check,start,end,kind,cause,provider,note\n"
GOOD = "dc,email,webmail,2019-07-09T10:05,2019-07-09T11:17,unplanned,DB failover,,\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "in.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("row", "message"),
    [
        # Year 1 overflowed on the way to UTC: a traceback.
        (
            "dc,email,x,0001-01-01T00:00+14:00,2019-07-09T11:17,unplanned,,,\n",
            "line 2: start '0001-01-01T00:00+14:00': outside the years 1990 to 2100",
        ),
        (
            "dc,email,x,2019-07-09T10:05,9999-12-31T23:59,unplanned,,,\n",
            "line 2: end '9999-12-31T23:59': outside the years 1990 to 2100",
        ),
        (
            f"dc,email,x,2019-07-09T10:05,2019-07-09T11:17,unplanned,{'c' * 2001},,\n",
            "line 2: cause is longer than 2000 characters",
        ),
        # Over csv's own field limit: a traceback.
        (
            f'dc,email,x,2019-07-09T10:05,2019-07-09T11:17,unplanned,"{"n" * 131_073}",,\n',
            "line 2: unreadable CSV: a field is longer than 131072 characters",
        ),
        # Stored as it came: SQLite's length() stopped at it, the CSV report wrote it out.
        (
            "dc,email,x,2019-07-09T10:05,2019-07-09T11:17,unplanned,x\x00y,,\n",
            "line 2: unreadable CSV: a NUL byte (is it a text file?)",
        ),
    ],
)
def test_bad_rows_are_reported_with_their_line(
    row: str, message: str, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD + row)
    code, err = run(capsys, "outages", "import", path, "--config", config_file)
    assert code == EXIT_FAIL
    assert "Traceback" not in err
    assert err.splitlines() == [f"{path}: {message.replace('line 2', 'line 3')}",
                                "nothing imported: 1 bad row(s)"]  # fmt: skip


def test_dev_zero_is_refused_not_read_forever(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(capsys, "outages", "import", "/dev/zero", "--config", config_file)
    assert code == EXIT_RUNTIME
    assert one_line(err) == "availmon: cannot read /dev/zero: not a regular file"


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)
    with pytest.raises(FileFailure, match=r"not a regular file$"):
        read_csv_file(fifo)


def test_files_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD * 10)
    with pytest.raises(FileFailure, match=r"larger than 100 bytes \(split it\)"):
        read_csv_file(path, limit=100)
    assert read_csv_file(path, limit=10_000).startswith(HEADER)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read {path}: No such file or directory"),
        (b"site,area\n\xff\xfe", "cannot read {path}: not UTF-8 (byte 10); save it as UTF-8 CSV"),
    ],
)
def test_unreadable_files(
    content: bytes | None,
    message: str,
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    code, err = run(capsys, "outages", "import", path, "--config", config_file)
    assert code == EXIT_RUNTIME
    assert one_line(err) == "availmon: " + message.format(path=path)


def test_report_out_to_a_bad_path(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "outages", "import", write(tmp_path, GOOD), "--config", config_file)[0] == 0
    out = tmp_path / "no" / "such" / "dir" / "report.html"
    code, err = run(capsys, "report", "--period", "FY2019Q2", "--out", out, "--config", config_file)
    assert code == EXIT_RUNTIME
    assert one_line(err) == f"availmon: cannot write {out}: No such file or directory"


def test_a_report_replaces_the_last_one_whole(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Written beside the last one and renamed over it, so a disk that fills meanwhile
    leaves the last whole report, never half of the new one; keeping its permissions. A
    device is written in place: renaming over /dev/null would replace it with a file."""
    assert run(capsys, "outages", "import", write(tmp_path, GOOD), "--config", config_file)[0] == 0
    out = tmp_path / "report.html"
    out.write_text("last quarter's report")
    out.chmod(0o640)
    before = out.stat().st_ino
    code, _ = run(capsys, "report", "--period", "FY2019Q2", "--out", out, "--config", config_file)
    assert code == 0
    assert out.stat().st_ino != before
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert "<html" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    devnull = Path("/dev/null")
    code, _ = run(
        capsys, "report", "--period", "FY2019Q2", "--out", devnull, "--config", config_file
    )
    assert code == 0
    assert devnull.is_char_device()


def corrupt(db: Path) -> None:
    db.write_bytes(b"this is not an sqlite database, whatever its name says" * 100)


@pytest.mark.parametrize(
    "argv",
    [
        ["outages", "list", "--period", "FY2019Q2"],
        ["outages", "annotate", "imp:1", "--cause", "x"],
        ["report", "--period", "FY2019Q2", "--format", "json"],
        ["outages", "import", "IMPORT"],
    ],
    ids=["list", "annotate", "report", "import"],
)
def test_a_corrupt_database(
    argv: list[str], config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.db"
    corrupt(db)
    csv_file = write(tmp_path, GOOD)
    argv = [str(csv_file) if a == "IMPORT" else a for a in argv]
    code, err = run(capsys, *argv, "--config", config_file)
    assert code == EXIT_RUNTIME
    assert one_line(err).startswith(f"availmon: database {db} is corrupt or not an availmon")


def test_the_collector_on_a_corrupt_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.db"
    corrupt(db)
    config = tmp_path / "c.toml"
    config.write_text(f'[collector]\ndatabase = "{db}"\n[web]\nport = 0\n', encoding="utf-8")
    code, err = run(capsys, "collector", "--config", config)
    assert code == EXIT_RUNTIME
    assert one_line(err).startswith(f"availmon: database {db} is corrupt")


def test_import_while_the_database_is_locked(
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    csv_file = write(tmp_path, GOOD)
    assert run(capsys, "outages", "import", csv_file, "--config", config_file)[0] == 0
    monkeypatch.setattr(collector_cli, "BUSY_TIMEOUT", 0.2)
    holder = sqlite3.connect(tmp_path / "cli.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        fix = write(tmp_path, GOOD.replace("DB failover", "DB failover (corrected)"))
        code, err = run(capsys, "outages", "import", fix, "--config", config_file)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == EXIT_RUNTIME
    assert "is locked by another process" in one_line(err)
    # Nothing was half-done: the retry, once the lock is gone, updates the row.
    code, err = run(capsys, "outages", "import", fix, "--config", config_file)
    assert code == 0, err


def test_usage_errors_exit_2(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "outages", "annotate", "x", "--config", config_file)
    assert code == EXIT_USAGE
    assert one_line(err).startswith("availmon: nothing to record")


def test_no_traceback_from_the_real_command(tmp_path: Path, config_file: Path) -> None:
    """The installed entry point, as a person runs it."""
    db = tmp_path / "cli.db"
    corrupt(db)
    cases = [
        (["outages", "list", "--config", str(config_file)], EXIT_RUNTIME),
        (["outages", "import", "/dev/zero", "--config", str(config_file)], EXIT_RUNTIME),
        (["report", "--period", "FY0001Q1", "--config", str(config_file)], EXIT_USAGE),
        (["config", "check", str(tmp_path / "missing.toml")], EXIT_USAGE),
        (["--log-level", "LOUD", "config", "check", "x"], EXIT_USAGE),
    ]
    for argv, code in cases:
        done = subprocess.run(
            [sys.executable, "-m", "availmon.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == code, (argv, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
