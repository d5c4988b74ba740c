"""The shipped units are valid and hardened as promised."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
AGENT = UNITS / "availmon-agent.service"
COLLECTOR = UNITS / "availmon-collector.service"


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)
#: ``systemd-analyze security`` exposure (0 best, 10 worst) when issue 15 added resource
#: caps: hardening may only get better.
EXPOSURE = {AGENT: 1.9, COLLECTOR: 1.7}


def local_units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointed at this checkout's availmon (verify insists that it
    exists)."""
    exe = str(Path(sys.executable).parent / "availmon")
    for unit in (AGENT, COLLECTOR):
        text = unit.read_text().replace("/opt/availmon/bin/availmon", exe)
        (tmp_path / unit.name).write_text(text)
    return [tmp_path / AGENT.name, tmp_path / COLLECTOR.name]


@needs_systemd
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    local_units(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in sorted(tmp_path.glob("*.service")))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    problems = [line for line in result.stderr.splitlines() if "availmon" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


def settings(unit: Path) -> dict[str, str]:
    out = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


@pytest.mark.parametrize("unit", [AGENT, COLLECTOR], ids=["agent", "collector"])
def test_hardening(unit: Path) -> None:
    s = settings(unit)
    assert s["User"] == "availmon"
    assert s["Restart"] == "on-failure"
    assert s["ProtectSystem"] == "strict"
    assert s["NoNewPrivileges"] == "yes"
    assert s["StateDirectory"].startswith("availmon")


def test_only_the_agent_gets_raw_sockets_and_the_trap_port() -> None:
    """Raw sockets for ICMP; binding below 1024 for the trap receiver's default UDP 162,
    which a user without the capability cannot bind (ip_unprivileged_port_start 1024)."""
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        assert settings(AGENT)[key].split() == ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"]
    assert settings(COLLECTOR)["AmbientCapabilities"] == ""
    assert settings(COLLECTOR)["CapabilityBoundingSet"] == ""


@needs_systemd
@pytest.mark.parametrize("unit", [AGENT, COLLECTOR], ids=["agent", "collector"])
def test_exposure_is_no_worse(unit: Path, tmp_path: Path) -> None:
    local = dict(zip((AGENT, COLLECTOR), local_units(tmp_path), strict=True))[unit]
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(local)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= EXPOSURE[unit]


@pytest.mark.parametrize("unit", [AGENT, COLLECTOR], ids=["agent", "collector"])
def test_resources_are_capped(unit: Path) -> None:
    """A connection flood or a runaway allocation restarts the service instead of starving
    the host (issue 15: 1,100 idle connections exhausted the default descriptor limit)."""
    s = settings(unit)
    assert int(s["LimitNOFILE"]) >= 1024
    assert s["MemoryMax"].endswith(("M", "G"))
    assert int(s["TasksMax"]) > 0


def test_reload_is_sighup() -> None:
    """``systemctl reload`` sends SIGHUP, which both daemons take as "re-read the config"
    (tests/e2e/test_reload.py); without ExecReload, systemctl would refuse to reload."""
    for unit in (AGENT, COLLECTOR):
        assert settings(unit)["ExecReload"] == "/bin/kill -HUP $MAINPID"
