"""The README documents every command the CLI has; the docs cannot fall behind the code."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from availmon.cli import build_parser

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()


def commands(parser: argparse.ArgumentParser, prefix: str = "availmon") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}"
                nested = commands(sub, full)
                out.extend(nested or [full])
    return out


def test_every_command_is_in_the_readme() -> None:
    missing = [c for c in commands(build_parser()) if f"`{c}" not in README]
    assert missing == []


def test_quick_start_is_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("```", 2)[1]
    assert [line.split("#")[0].strip() for line in quick.splitlines()[1:] if line.strip()] == [
        "make demo",
        "make test",
    ]


REPO = Path(__file__).resolve().parent.parent.parent


def test_nothing_points_outside_the_repository() -> None:
    """The product documents itself: no file of it (docs, code comments, the configs it
    renders) points at the team's design notes, which users never have."""
    tracked = (
        subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    outside = ("../shared", "DESIGN.md", "shared/DESIGN")
    pointing = []
    for name in tracked:
        path = REPO / name
        if not name or path == Path(__file__) or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # not text
        pointing += [name for word in outside if word in text][:1]
    assert pointing == []


def test_readme_links_to_docs_that_exist() -> None:
    linked = {part.split(")", 1)[0] for part in README.split("](docs/")[1:]}
    assert {"architecture.md", "operations.md"} <= linked
    assert [name for name in linked if not (REPO / "docs" / name).is_file()] == []


# -- the README's commands, run as written ----------------------------------------------------

#: Commands of the README's ``sh`` blocks meant for another host, with where they are tested;
#: here only their options are checked (they must parse).
ELSEWHERE = {
    "availmon broker": "writes /etc/mosquitto on the broker host: tests/availmon/test_broker.py",
}


def sh_blocks(text: str) -> list[list[str]]:
    """The commands of each fenced ``sh`` block (continuation lines joined)."""
    blocks = []
    for part in text.split("```sh\n")[1:]:
        body = part.split("```", 1)[0].replace("\\\n", " ")
        blocks.append([line.strip() for line in body.splitlines() if line.strip()])
    return blocks


def readme_script() -> tuple[list[str], list[str]]:
    """The commands to run after the quick start, in README order, and those run elsewhere."""
    blocks = sh_blocks(README)
    assert blocks[0][0].startswith("make demo")  # the quick start: test_quick_start_...
    run, elsewhere = [], []
    for block in blocks[1:]:
        for command in block:
            if any(command.startswith(prefix) for prefix in ELSEWHERE):
                elsewhere.append(command)
            else:
                run.append(command)
    return run, elsewhere


def readme_output(after: str) -> list[str]:
    """The lines of the plain fenced block that follows ``after`` in the README."""
    return README.split(after, 1)[1].split("```\n", 2)[1].splitlines()


def test_readme_commands_work_as_written(tmp_path: Path) -> None:
    """After ``make demo`` (its venv, the shipped config and sample records; here a fresh
    state folder rather than the demo's live one), each ``sh`` command of the README runs
    as written, from the checkout's folder, and prints what the README says it prints."""
    run, _ = readme_script()
    assert run[:2] == [
        ". .venv/bin/activate                       # puts availmon on PATH (or type"
        " .venv/bin/availmon)",
        "export AVAILMON_CONFIG=config/demo.toml    # the config every command reads"
        " (or --config FILE)",
    ]
    assert all(c.split()[0] in {".", "export", "availmon"} for c in run), run
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "config").symlink_to(REPO / "config")
    env = {k: v for k, v in os.environ.items() if k not in {"AVAILMON_CONFIG", "VIRTUAL_ENV"}}
    env["PATH"] = "/usr/bin:/bin"  # no availmon on it until the README's own first line
    script = "set -eu\n" + "".join(f"echo '$ {c.split('#')[0].strip()}'\n{c}\n" for c in run)
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    printed = readme_output("which prints\n")
    assert (
        printed
        == out[out.index("$ availmon outages import config/sample-outages-FY2019Q2.csv") + 1 :][
            :3:2
        ]
    )
    assert (tmp_path / "report.html").is_file()
    assert (tmp_path / "report.md").read_text().count("FY2019Q2") >= 1


def test_readme_commands_for_other_hosts_parse() -> None:
    _, elsewhere = readme_script()
    assert elsewhere, "ELSEWHERE lists a command the README no longer has"
    for command in elsewhere:
        argv = shlex.split(command)[1:]
        args, extra = build_parser(argv).parse_known_args(argv)
        assert extra == []
        assert args.command in {c.split()[1] for c in ELSEWHERE}


def test_make_demo_says_first_how_to_run_the_command_line() -> None:
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    first = dry.split("availmon demo", 1)[0]
    assert ". .venv/bin/activate" in first
    assert "AVAILMON_CONFIG=config/demo.toml" in first
