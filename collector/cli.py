"""Subcommands for the service manager: outage import/list/annotate and reports (issue 3)."""

from __future__ import annotations

from typing import Any


def add_parser(sub: Any) -> None:
    """Registers the reporting commands; filled in by the accounting work."""
