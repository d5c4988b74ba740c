"""Issue 13, operating it: ``--version``, help that says what things are for, a probe type's
options, structured logs, and where the config comes from. Real ``availmon`` processes, run
from a folder other than the checkout."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from availmon import configpath
from availmon.config import load_config
from availmon.logs import formatter
from probes.registry import REGISTRY
from tests.e2e.procs import AVAILMON, write_config
from tests.peers import estate_data, free_port, web_check

#: Only guards a hung test.
DEADLINE = 60.0


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != configpath.ENV}
    full.update(env or {})
    return subprocess.run(
        [*AVAILMON, *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


@pytest.fixture
def estate_file(tmp_path: Path) -> Path:
    """A one-site estate with absolute paths, its broker port closed (nothing listens)."""
    path = tmp_path / "conf" / "estate.toml"
    checks = [web_check(f"http://127.0.0.1:{free_port()}/", expect_status=200)]
    write_config(path, estate_data(tmp_path, free_port(), checks))
    return path


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    done = run("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.strip() == f"availmon {version('availmon')}"


def test_help_says_what_the_tool_and_each_command_are_for(tmp_path: Path) -> None:
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "availability monitoring for a shared ICT service" in done.stdout
    assert "--log-format {text,json,logfmt}" in done.stdout
    assert re.search(r"report\s+the quarterly availability report", done.stdout)


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_probe_type_help_lists_its_options(kind: str, tmp_path: Path) -> None:
    done = run("probe", kind, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = re.findall(r"^  --([a-z0-9-]+)  \(", done.stdout, re.MULTILINE)
    fields = [name.replace("_", "-") for name in REGISTRY[kind].options.model_fields]
    assert listed == fields


def test_probe_http_help_gives_type_default_and_description(tmp_path: Path) -> None:
    out = run("probe", "http", "--help", cwd=tmp_path).stdout
    assert "  --expect-status  (list of integer, default ())\n" in out
    assert "      Accepted status codes; empty means any 2xx." in out
    assert "  --method  (text, default 'GET')" in out


def test_expect_status_may_be_one_code(estate_file: Path) -> None:
    check = load_config(estate_file).sites["hq"].checks[0]
    assert check.parsed_options().expect_status == (200,)


def test_structured_formatters_keep_stable_keys_and_extras() -> None:
    record = logging.LogRecord(
        "agent.main", logging.WARNING, __file__, 1, 'a "b"\n%s', ("c",), None
    )
    record.site = "hq"
    doc = json.loads(formatter("json").format(record))
    assert list(doc)[:4] == ["ts", "level", "logger", "msg"]
    assert (doc["level"], doc["logger"]) == ("WARNING", "agent.main")
    assert (doc["msg"], doc["site"]) == ('a "b"\nc', "hq")
    line = formatter("logfmt").format(record)
    assert parse_logfmt(line) == {
        "ts": doc["ts"],
        "level": "WARNING",
        "logger": "agent.main",
        "msg": 'a "b"\nc',
        "site": "hq",
    }


def parse_logfmt(line: str) -> dict[str, str]:
    out = {}
    for key, quoted, bare in re.findall(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))', line):
        out[key] = json.loads(f'"{quoted}"') if quoted or not bare else bare
    return out


def agent_records(
    estate_file: Path,
    cwd: Path,
    fmt: str,
    want: str,
    command: tuple[str, ...] = ("agent", "--site", "hq"),
) -> list[str]:
    """Start a real agent (or ``command``) with the config from $AVAILMON_CONFIG; its stderr
    lines up to the one containing ``want``; then stop it."""
    env = {k: v for k, v in os.environ.items() if k != configpath.ENV}
    env[configpath.ENV] = str(estate_file)
    proc = subprocess.Popen(
        [*AVAILMON, "--log-format", fmt, *command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    end = time.monotonic() + DEADLINE
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # ends when the process does: the deadline is checked per line
            lines.append(line.rstrip("\n"))
            if want in line or time.monotonic() > end:
                break
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(DEADLINE)
    assert any(want in line for line in lines), lines
    return lines


def test_agent_logs_json_and_says_which_config(estate_file: Path, tmp_path: Path) -> None:
    lines = agent_records(estate_file, tmp_path, "json", "checks")
    docs = [json.loads(line) for line in lines]
    assert all(list(d)[:4] == ["ts", "level", "logger", "msg"] for d in docs)
    assert {"level": "INFO", "logger": "agent.main"}.items() <= docs[0].items()
    assert docs[0]["msg"] == f"config {estate_file} (from $AVAILMON_CONFIG)"
    assert docs[-1]["msg"] == "agent hq for site hq: 1 checks"


def test_agent_logs_logfmt(estate_file: Path, tmp_path: Path) -> None:
    lines = agent_records(estate_file, tmp_path, "logfmt", "checks")
    parsed = [parse_logfmt(line) for line in lines]
    assert all(list(p)[:4] == ["ts", "level", "logger", "msg"] for p in parsed), lines
    assert parsed[-1]["msg"] == "agent hq for site hq: 1 checks"


def test_collector_logs_json(estate_file: Path, tmp_path: Path) -> None:
    lines = agent_records(estate_file, tmp_path, "json", "metrics http", ("collector",))
    docs = [json.loads(line) for line in lines]
    assert all(list(d)[:4] == ["ts", "level", "logger", "msg"] for d in docs)
    assert docs[0]["msg"] == f"config {estate_file} (from $AVAILMON_CONFIG)"
    assert docs[-1]["logger"] == "collector.main"
    assert docs[-1]["msg"].startswith("board http://127.0.0.1:")


def test_config_from_the_environment_in_another_folder(estate_file: Path, tmp_path: Path) -> None:
    env = {configpath.ENV: str(estate_file)}
    done = run("config", "check", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 1 sites, 1 checks")
    assert done.stderr == f"availmon: config {estate_file} (from $AVAILMON_CONFIG)\n"
    listed = run("outages", "list", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 3  # found the config, and says there is no database yet
    assert (
        listed.stderr.splitlines()[0] == f"availmon: config {estate_file} (from $AVAILMON_CONFIG)"
    )
    assert "no database at" in listed.stderr
    # --config wins, and is not said back.
    done = run(
        "config", "check", "--config", str(estate_file), cwd=tmp_path, env={configpath.ENV: "/nope"}
    )
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.skipif(configpath.SYSTEM.exists(), reason=f"{configpath.SYSTEM} exists on this host")
@pytest.mark.parametrize(
    "command",
    [
        ["report", "--period", "2019Q3"],
        ["config", "check"],
        ["agent", "--site", "hq"],
        ["collector"],
    ],
)
def test_no_config_anywhere_is_exit_2_naming_the_three_places(
    command: list[str], tmp_path: Path
) -> None:
    done = run(*command, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "availmon: no config: tried --config (not given), $AVAILMON_CONFIG (not set) and"
        " /etc/availmon/availmon.toml (no such file)\n"
    )


def test_the_system_config_is_the_last_resort(
    estate_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(configpath.ENV, raising=False)
    monkeypatch.setattr(configpath, "SYSTEM", estate_file)
    assert configpath.find_config(None) == (estate_file, "default")
    monkeypatch.setenv(configpath.ENV, "/elsewhere.toml")
    assert configpath.find_config(None) == (Path("/elsewhere.toml"), "$AVAILMON_CONFIG")
    assert configpath.find_config("given.toml") == (Path("given.toml"), "--config")
