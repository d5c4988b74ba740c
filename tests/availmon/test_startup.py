"""Start-up stays cheap (issue 9): the command line loads only what the command needs.

No timing here (speed is measured in bench/); these tests pin what is imported.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from availmon.cli import COMMANDS, build_parser, command_in

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("pysnmp", "aiohttp", "dns", "icmplib", "prometheus_client", "collector", "aiomqtt")

SCRIPT = """
import json, sys
from availmon.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps([code, heavy]), file=sys.stderr)
"""


def loaded_by(*argv: str, heavy: tuple[str, ...] = HEAVY) -> tuple[int, list[str]]:
    """Run ``availmon ARGV`` in a fresh interpreter: its exit code and the modules of heavy
    packages it imported."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(argv=list(argv), heavy=heavy)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    code, heavy = json.loads(done.stderr.strip().splitlines()[-1])
    return code, heavy


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["config", "check", str(ROOT / "config" / "demo.toml")], 0),
        (["config", "check", str(ROOT / "tests" / "config" / "base.toml")], 0),
        (["probe", "tcp", "127.0.0.1:1", "--timeout", "1"], 1),
        (["report", "--help"], 0),  # help of a command: only its module, not its peers'
    ],
)
def test_commands_load_no_protocol_library_they_do_not_use(argv: list[str], code: int) -> None:
    got_code, heavy = loaded_by(*argv)
    assert got_code == code
    packages = {m.split(".")[0] for m in heavy}
    assert packages == ({"collector"} if argv[0] == "report" else set())


CHECKS = """
[sites.s]
partner = "p"
[[sites.s.checks]]
{}
"""
EVERY_TYPE = [
    'type = "icmp"\ntarget = "127.0.0.1"',
    'type = "http"\ntarget = "https://127.0.0.1/"\nexpect_status = [200]',
    'type = "tcp"\ntarget = "127.0.0.1:22"',
    'type = "dns"\ntarget = "127.0.0.1"\nquery_name = "example.test"\nrecord_type = "MX"',
    'type = "smtp"\ntarget = "127.0.0.1"',
    'type = "sip"\ntarget = "127.0.0.1"',
    'type = "snmp"\ntarget = "127.0.0.1"\ncommunity_env = "X"\ninterface = "eth0"',
]


def test_config_check_of_every_type_loads_no_client_library(tmp_path: Path) -> None:
    config = tmp_path / "every.toml"
    checks = "\n[[sites.s.checks]]\n".join(
        f'name = "c{i}"\narea = "servers"\n{body}' for i, body in enumerate(EVERY_TYPE)
    )
    config.write_text(CHECKS.format(checks))
    code, heavy = loaded_by("config", "check", str(config))
    assert code == 0
    # A dns check's name and record type are checked with dnspython's own parsers (dns.name,
    # dns.rdatatype); the query machinery (dns.asyncquery) and the rest stay unloaded.
    assert {m.split(".")[0] for m in heavy} <= {"dns"}
    assert "dns.asyncquery" not in heavy
    assert "dns.name" in heavy


def test_config_check_loads_neither_ssl_nor_sqlite() -> None:
    # OpenSSL's libraries (ssl) and sqlite3 cost start-up CPU; checking a config needs neither
    # (probes.tls holds the TLS code, availmon.cli names sqlite3 errors only if it was loaded).
    code, loaded = loaded_by(
        "config", "check", str(ROOT / "config" / "demo.toml"), heavy=("ssl", "_ssl", "sqlite3")
    )
    assert code == 0
    assert loaded == []


PLUGINS = """
import json, os, sys
from availmon.cli import main
code = main({argv!r})
import pydantic.plugin._loader as loader
print(json.dumps([code, loader._plugins is None, os.environ.get("PYDANTIC_DISABLE_PLUGINS")]))
"""


def test_config_check_does_not_look_for_pydantic_plugins() -> None:
    """The search reads every installed package's metadata; the command needs no plugin. The
    environment is as it was afterwards. (pydantic's ``_plugins`` stays None until a search:
    this fails if pydantic changes how it keeps them.)"""
    argv = ["config", "check", str(ROOT / "config" / "demo.toml")]
    done = subprocess.run(
        [sys.executable, "-c", PLUGINS.format(argv=argv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    code, never_searched, left = json.loads(done.stdout.splitlines()[-1])
    assert code == 0
    assert never_searched
    assert left is None


def test_probe_http_loads_aiohttp_only_when_it_runs() -> None:
    code, heavy = loaded_by("probe", "http", "http://127.0.0.1:1/", "--timeout", "1")
    assert code == 1
    assert "aiohttp" in heavy
    assert not any(m.startswith("pysnmp") for m in heavy)


def test_help_lines_match_the_modules() -> None:
    # The lazy listing carries each command's help; it must say what the module says.
    full = build_parser()
    sub = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    helps = {action.dest: action.help for action in sub._choices_actions}
    assert list(helps) == list(COMMANDS)
    assert helps == {name: text for name, (_module, text) in COMMANDS.items()}


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["--help"], None),
        (["--log-level", "DEBUG", "agent", "--site", "x"], "agent"),
        (["--log-format", "json", "collector"], "collector"),
        (["--log-level=DEBUG", "report", "FY2019Q2"], "report"),
        (["probe", "tcp", "127.0.0.1:1"], "probe"),
        ([], None),
    ],
)
def test_command_in(argv: list[str], command: str | None) -> None:
    assert command_in(argv) == command


def test_availmon_imports_nothing_from_agent_or_collector() -> None:
    # STYLE 12: availmon/'s shared modules import nothing from agent/ or collector/; only the
    # command wiring (cli, demo) sees everything, and cli only by module name.
    wiring = {"cli.py", "demo.py"}
    offenders = []
    for path in sorted((ROOT / "availmon").glob("*.py")):
        if path.name in wiring:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in ("agent", "collector")
            ]
    assert offenders == []


AGENT_IMPORTS = """
import json, sys
import agent.main, agent.traps, probes.http_io, probes.icmp_io, probes.snmp_io, probes.tcp_io
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("dns", "cryptography"))))
"""


def test_an_agent_without_dns_or_snmpv3_loads_neither_library() -> None:
    # Memory (issue 9): paho imports dnspython's resolver for SRV lookups availmon never makes,
    # and pysnmp imports cryptography for v3 privacy; availmon.imports keeps both out.
    done = subprocess.run(
        [sys.executable, "-c", AGENT_IMPORTS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    loaded = json.loads(done.stdout)
    assert not any(m.startswith("cryptography") for m in loaded)
    assert "dns.resolver" not in loaded


def test_a_database_error_is_still_named_as_one(capsys: pytest.CaptureFixture[str]) -> None:
    # cli no longer imports sqlite3 itself; an sqlite3 error (its module then loaded) keeps
    # its one line and exit code.
    import sqlite3

    from availmon.cli import report_failure
    from availmon.errors import EXIT_RUNTIME

    assert report_failure(sqlite3.DatabaseError("file is not a database")) == EXIT_RUNTIME
    assert capsys.readouterr().err == "availmon: database error: file is not a database\n"
