"""What agent and collector share for SIGHUP: re-read the config file, refuse a bad one, and
name every changed setting that only a restart can apply.

A reload is all or nothing: a new config with an error, or one that changes a setting the
running daemon cannot change (the broker it is connected to, its database, its listening
port), is refused as a whole and the running config stays in force, as Prometheus does; the
log says which file, key and value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from availmon.config import Estate, load_config
from availmon.errors import ConfigError
from availmon.text import one_line


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}.{key}"))
        return out or {prefix: {}}
    return {prefix: value}


def _get(estate: Estate, path: str) -> Any:
    value: Any = estate
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def restart_only(old: Estate, new: Estate, paths: Iterable[str]) -> list[str]:
    """Each setting under ``paths`` that differs, as ``key: old -> new``."""
    changed = []
    for path in paths:
        before, after = _leaves(_get(old, path), path), _leaves(_get(new, path), path)
        for key in sorted(before.keys() | after.keys()):
            if before.get(key) != after.get(key):
                changed.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return changed


def read_new(
    path: Path, current: Estate, paths: Iterable[str], log: logging.Logger
) -> Estate | None:
    """The new config, or None (refused, every reason logged) to keep ``current``."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            log.error("config reload refused: %s", one_line(str(issue)))
        log.error("config reload failed: %s has errors; the running config stays", path)
        return None
    changed = restart_only(current, new, paths)
    for line in changed:
        log.error("config reload refused: %s: %s needs a restart", path, line)
    if changed:
        log.error(
            "config reload failed: %s changes settings only a restart applies; the running"
            " config stays (restart to apply them)",
            path,
        )
        return None
    return new
