"""Which estate config a command reads: ``--config``, else ``$AVAILMON_CONFIG``, else
``/etc/availmon/availmon.toml`` (where ``systemd/install.sh`` puts it).

Every command that reads the config says which file it used and why, so a report run from
the wrong folder or shell cannot silently count another estate.
"""

from __future__ import annotations

import os
from pathlib import Path

from availmon.errors import UsageError

ENV = "AVAILMON_CONFIG"
SYSTEM = Path("/etc/availmon/availmon.toml")


def find_config(given: str | os.PathLike[str] | None) -> tuple[Path, str]:
    """The config file to read and where its name came from; a :class:`UsageError` (exit 2)
    naming the three places tried when none gives one."""
    if given is not None:
        return Path(given), "--config"
    env = os.environ.get(ENV, "")
    if env:
        return Path(env), f"${ENV}"
    if SYSTEM.is_file():
        return SYSTEM, "default"
    raise UsageError(
        f"no config: tried --config (not given), ${ENV} (not set) and {SYSTEM} (no such file)"
    )


def describe(path: Path, source: str) -> str:
    """The line a command prints (or logs) about the config it reads."""
    return f"config {path} (from {source})"
