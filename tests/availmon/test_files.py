"""``availmon.files.write_whole`` where the report's folder may not be written: the file is
written in place, as before whole-file writes (a shared reports folder its user may only
update). Run as a user other than root: root may write anywhere, so the fallback is never
taken by it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

WRITE = "import sys, pathlib; from availmon.files import write_whole;" \
    " write_whole(pathlib.Path(sys.argv[1]), sys.argv[2])"  # fmt: skip


def as_other_user(*argv: str) -> list[str]:
    """``argv`` as ``nobody`` when this is root (setpriv), else as this user."""
    if os.geteuid() != 0:
        return list(argv)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to run as another user")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder only its owner (root, or this user) may add to, that others can reach:
    pytest's own tmp_path is closed to other users."""
    folder = Path(tempfile.mkdtemp(prefix="availmon-files-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_a_report_in_a_folder_its_user_may_not_write_is_written_in_place(shared: Path) -> None:
    report = shared / "report.html"
    report.write_text("last quarter's report")
    report.chmod(0o666)  # the report is the user's to update, the folder is not
    shared.chmod(0o555)
    before = report.stat().st_ino
    try:
        done = subprocess.run(
            as_other_user(sys.executable, "-c", WRITE, str(report), "this quarter's report"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        shared.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert report.read_text() == "this quarter's report"
    assert report.stat().st_ino == before  # in place: there was nowhere to write beside it
    assert sorted(p.name for p in shared.iterdir()) == ["report.html"]


def test_a_report_in_a_folder_its_user_may_write_replaces_the_last_whole(shared: Path) -> None:
    report = shared / "report.html"
    report.write_text("last quarter's report")
    report.chmod(0o666)
    shared.chmod(0o777)  # the user may add to it: written beside, renamed over
    before = report.stat().st_ino
    done = subprocess.run(
        as_other_user(sys.executable, "-c", WRITE, str(report), "this quarter's report"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    shared.chmod(0o755)
    assert done.returncode == 0, done.stderr
    assert report.read_text() == "this quarter's report"
    assert report.stat().st_ino != before
    assert sorted(p.name for p in shared.iterdir()) == ["report.html"]
