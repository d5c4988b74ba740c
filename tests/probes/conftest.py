"""Shared fixtures for the probe tests (helpers in probe_peers.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from probe_peers import Certs, Peers, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA and leaf certificates, made once per run."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    """Peer processes for one test, each ended by its PID at teardown."""
    p = Peers(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()
