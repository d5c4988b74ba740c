"""``availmon collector`` and ``availmon agent`` as real subprocesses, for the fault tests
(issue 5): a test can ``kill -9`` one by PID, read its log file afterwards, and teardown
always ends it.

A subprocess offers no event to await, so readiness and progress are taken by polling what it
exposes (``/healthz``, ``/metrics``, its SQLite files read-only) against a bounded deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from availmon.config import Estate, load_config

T = TypeVar("T")


def _availmon() -> list[str]:
    """The venv's console script, else the same entry point through this interpreter."""
    script = Path(sys.executable).with_name("availmon")
    return [str(script)] if script.exists() else [sys.executable, "-m", "availmon.cli"]


AVAILMON = _availmon()

#: Only guards a hung test; every wait returns as soon as its condition holds.
DEADLINE = 60.0
POLL = 0.05


# -- config -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as an inline TOML value")


def _toml_table(path: list[str], table: dict[str, Any], out: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v)}
    if path and (scalars or not table):
        out.append(f"[{'.'.join(path)}]")
    for key, value in scalars.items():
        out.append(f"{key} = {_toml_value(value)}")
    if scalars:
        out.append("")
    for key, value in table.items():
        if isinstance(value, dict):
            _toml_table([*path, key], value, out)
        elif _is_table(value):
            for item in value:
                out.append(f"[[{'.'.join([*path, key])}]]")
                for k, v in item.items():
                    out.append(f"{k} = {_toml_value(v)}")
                out.append("")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def write_config(path: Path, data: dict[str, Any]) -> Estate:
    """Write ``data`` (``tests.peers.estate_data``) as TOML and load it back the way the
    subprocess will, so a config the command would refuse fails here, not in its log."""
    lines: list[str] = []
    _toml_table([], data, lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path)


# -- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """One ``availmon`` subprocess; its stdout and stderr go to ``log`` (appended across
    restarts, so a test that fails shows every life of the process)."""

    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    lives: int = 0
    pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- life {self.lives + 1}: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.lives += 1
        self.pids.append(self.proc.pid)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def kill9(self) -> int:
        """``kill -9`` by PID and reap it; returns the exit status (-9)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        code = await asyncio.to_thread(self.proc.wait, DEADLINE)
        self.proc = None
        return code

    async def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM (the daemons shut down in order), then SIGKILL if it overstays ``grace``."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                return await asyncio.to_thread(proc.wait, grace)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                return await asyncio.to_thread(proc.wait, DEADLINE)
        return proc.returncode

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def collector(config: Path, log: Path) -> Proc:
    return Proc([*AVAILMON, "collector", "--config", str(config)], log)


def agent(config: Path, site: str, log: Path) -> Proc:
    return Proc([*AVAILMON, "agent", "--config", str(config), "--site", site], log)


@contextlib.asynccontextmanager
async def running(*procs: Proc) -> AsyncIterator[tuple[Proc, ...]]:
    """Start ``procs``; whatever happens in the test, stop every one of them by PID."""
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            await p.stop()


# -- polling what a subprocess exposes ----------------------------------------------------


async def poll_until(
    probe: Callable[[], Any],
    done: Callable[[Any], bool] = bool,
    *,
    timeout: float = DEADLINE,
    what: str = "condition",
    alive: Proc | None = None,
) -> Any:
    """Call ``probe`` (sync or async) until ``done(value)``; return that value.

    For subprocesses only, which offer nothing to await. ``alive`` fails fast (with its log)
    if that process exits while we wait.
    """
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if asyncio.iscoroutine(last):
            last = await last
        if done(last):
            return last
        if alive is not None and not alive.running():
            raise AssertionError(f"process exited waiting for {what}:\n{alive.text()[-4000:]}")
        if time.monotonic() > end:
            raise TimeoutError(f"no {what} within {timeout:.0f} s (last: {last!r})")
        await asyncio.sleep(POLL)  # polling interval of a subprocess, not a synchronisation


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a database another process writes (WAL readers never
    block the writer)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def query(path: Path, sql: str, *params: Any) -> list[sqlite3.Row]:
    """Rows from a database another process owns; [] while it does not exist yet."""
    if not path.exists():
        return []
    try:
        with read_only(path) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the owner has not created it yet
            return []
        raise


def count(path: Path, table: str = "events") -> int:
    rows = query(path, f"SELECT count(*) FROM {table}")
    return int(rows[0][0]) if rows else 0


async def http_get(url: str) -> tuple[int, str] | None:
    """Status and body, or None while nothing answers on that port."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(url) as resp,
        ):
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_collector_ready(proc: Proc, port: int) -> None:
    """The collector's /healthz says 200 once its MQTT session is subscribed."""
    await poll_until(
        lambda: http_get(f"http://127.0.0.1:{port}/healthz"),
        lambda r: r is not None and r[0] == 200,
        what="collector /healthz 200",
        alive=proc,
    )


async def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The collector's /metrics as ``{(sample name, sorted labels): value}``."""
    got = await http_get(f"http://127.0.0.1:{port}/metrics")
    assert got is not None, "nothing answers on the metrics port"
    assert got[0] == 200, got
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(got[1]):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)
