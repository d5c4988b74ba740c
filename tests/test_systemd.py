"""The shipped units are valid and hardened as promised."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
AGENT = UNITS / "availmon-agent.service"
COLLECTOR = UNITS / "availmon-collector.service"


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart exists: point it at this checkout's availmon.
    exe = str(Path(sys.executable).parent / "availmon")
    for unit in (AGENT, COLLECTOR):
        text = unit.read_text().replace("/opt/availmon/bin/availmon", exe)
        (tmp_path / unit.name).write_text(text)
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


def test_only_the_agent_gets_raw_sockets() -> None:
    assert settings(AGENT)["AmbientCapabilities"] == "CAP_NET_RAW"
    assert settings(COLLECTOR)["AmbientCapabilities"] == ""
    assert settings(COLLECTOR)["CapabilityBoundingSet"] == ""
