"""The documented install path (docs/operations.md) works: `make dist`'s wheel and
systemd/install.sh put an agent and a collector into a throwaway root, as they would on a
site's Debian host, and systemd itself accepts the result (`systemd-analyze verify --root`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "systemd" / "install.sh"
TOOLS = ("useradd", "systemctl", "systemd-analyze")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh sets owners: needs root"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason=f"needs {', '.join(TOOLS)} (Debian packages passwd and systemd)",
    ),
]


def run(*argv: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, REPO)
    (built,) = out.glob("availmon-*.whl")
    return built


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty filesystem root with what a Debian host brings: the account files (root
    only), systemd's own units, which `verify --root` needs to resolve dependencies, and
    /bin/kill (procps; the units' ExecReload), in Debian's merged-/usr layout."""
    root = tmp_path_factory.mktemp("root")
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\n")
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "bin").symlink_to("usr/bin")
    shutil.copy2("/usr/bin/kill", root / "usr/bin/kill")
    return root


def install(root: Path, wheel: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run("bash", INSTALL, *args, "--wheel", wheel, "--root", root, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_agent_then_collector_install_and_verify(root: Path, wheel: Path) -> None:
    (root / "etc/availmon/secrets").mkdir(parents=True)
    secret = root / "etc/availmon/secrets/mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)  # as copied by hand: install.sh must close it
    config = REPO / "config" / "demo.toml"

    done = install(root, wheel, "agent", "--config", str(config), "--site", "dc")
    assert done.returncode == 0, done.stderr
    assert "ok: 4 sites" in done.stdout  # the installed availmon checked the config

    passwd = (root / "etc/passwd").read_text()
    assert "availmon:x:" in passwd
    assert ":/usr/sbin/nologin" in passwd
    gid = next(
        int(line.split(":")[2])
        for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("availmon:")
    )
    etc = root / "etc/availmon"
    assert (mode(etc), etc.stat().st_uid, etc.stat().st_gid) == (0o750, 0, gid)
    assert mode(etc / "availmon.toml") == 0o640
    assert (mode(secret), secret.stat().st_gid) == (0o640, gid)
    assert (etc / "agent.env").read_text() == "AVAILMON_SITE=dc\n"
    wants = root / "etc/systemd/system/multi-user.target.wants/availmon-agent.service"
    assert os.readlink(wants) == "/etc/systemd/system/availmon-agent.service"
    assert run(root / "opt/availmon/bin/availmon", "config", "check", etc / "availmon.toml")
    # The unit's Documentation= is installed with it, the README's links to docs/ intact.
    installed = root / "etc/systemd/system/availmon-agent.service"
    [documentation] = [
        line for line in installed.read_text().splitlines() if line.startswith("Documentation=")
    ]
    pages = [word.removeprefix("file:") for word in documentation.split("=", 1)[1].split()]
    assert pages
    assert [page for page in pages if not (root / page.lstrip("/")).is_file()] == []
    readme = root / "opt/availmon/doc/README.md"
    linked = {part.split(")", 1)[0] for part in readme.read_text().split("](docs/")[1:]}
    assert linked
    assert [name for name in linked if not (readme.parent / "docs" / name).is_file()] == []

    # The collector beside it on the same host: same user and venv, the config kept.
    (etc / "availmon.toml").write_text(config.read_text() + "\n# local edit\n")
    done = install(root, wheel, "collector", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert "keeping the existing" in done.stdout
    assert (etc / "availmon.toml").read_text().endswith("# local edit\n")
    assert (root / "etc/passwd").read_text().count("availmon:x:") == 1

    for unit in ("availmon-agent.service", "availmon-collector.service"):
        verify = run(
            "systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit}",
            check=False,
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr


def test_a_site_missing_from_the_config_stops_the_install(root: Path, wheel: Path) -> None:
    unit = root / "etc/systemd/system/availmon-agent.service"
    before = unit.read_text() if unit.exists() else None
    done = install(root, wheel, "agent", "--site", "no-such-site")
    assert done.returncode == 2
    assert "no site 'no-such-site'" in done.stderr
    assert "fix the config above" in done.stderr
    assert (unit.read_text() if unit.exists() else None) == before


def test_usage_errors_exit_2_before_touching_anything(tmp_path: Path, wheel: Path) -> None:
    assert install(tmp_path, wheel, "agent").returncode == 2  # no --site
    assert run("bash", INSTALL, "router", check=False).returncode == 2
    assert list(tmp_path.iterdir()) == []
