"""Fixtures for the collector's accounting, import and report tests (builders in helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from availmon.config import Estate
from collector.store import Store
from tests.collector.helpers import make_estate, write_config


@pytest.fixture
def estate() -> Estate:
    """Four partners, four sites, default areas and accounting settings."""
    return make_estate()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "collector.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """The test estate as TOML, its database in tmp_path."""
    return write_config(tmp_path / "estate.toml", tmp_path / "cli.db")
