"""What every measure shares: the targets of issue 9, a figure with its spread, CPU readings.

A measure is one module in ``bench/measures/`` with ``run(ctx) -> list[Figure]`` and one line
in ``bench.measures.MEASURES``. Each figure is the median of ``ctx.runs`` runs with min and
max beside it, and each ratio is taken against the peer measured in the same run.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
AVAILMON = str(Path(sys.executable).parent / "availmon")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def compile_bytecode() -> None:
    """Byte-compile availmon's own modules, as ``pip install`` of the wheel does (install.sh).

    The development venv installs availmon editable, and where ``PYTHONDONTWRITEBYTECODE`` is
    set no ``.pyc`` is ever written, so every process would compile availmon's modules from
    source: about 0.13 G instructions, 13% of ``config check``, a cost no installed agent or
    command pays, while the peer (``import aiohttp``) reads its installed bytecode.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    packages = [str(ROOT / p) for p in ("availmon", "agent", "collector", "probes")]
    subprocess.run(
        [PYTHON, "-m", "compileall", "-q", *packages],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Target:
    """One of issue 9's targets: what is measured and the bound it must meet."""

    key: str
    title: str
    goal: str


#: Every target of issue 9, in table order. Measures fill figures in by ``key``; a target no
#: measure reports on is printed as "not measured yet", never with a made-up figure.
TARGETS: tuple[Target, ...] = (
    Target("http.rate", "HTTP probes/s, 50 in flight vs blackbox_exporter", ">= 1x blackbox"),
    Target("http.cpu", "HTTP CPU-ms per probe", "<= 0.6 ms"),
    Target("rest.cpu", "agent at rest, 300 checks: % of a core", "<= 3 %"),
    Target("rest.rss", "agent RSS with 1,000 checks", "<= 60 MB"),
    Target("icmp.cpu", "ICMP round of 1,000 targets: CPU vs fping -i0", "<= 2x fping"),
    Target("snmp.cpu", "SNMP 50 devices x 20 interfaces / 60 s: % of a core", "< 2 %"),
    Target("snmp.start", "1,000 SNMP checks: start-up", "< 2 s"),
    Target("report.cpu", "quarter report over 1,000,000 outage rows: CPU", "<= 2 CPU-s"),
    Target("report.rss", "quarter report over 1,000,000 outage rows: memory", "<= 300 MB"),
    Target(
        "report.again.cpu",
        "the same report after a late note on its last day: CPU",
        "<= 2 CPU-s",
    ),
    Target(
        "report.again.rss",
        "the same report after a late note on its last day: memory",
        "<= 300 MB",
    ),
    Target("status.p99", "/api/v1/status p99, 20 clients, while ingesting", "<= 50 ms"),
    Target("metrics.p99", "/metrics p99, 20 clients, while ingesting", "<= 100 ms"),
    Target(
        "ingest.rate",
        "ingest, confirmed after commit, 50 agents' batches (end-to-end delivery issue)",
        ">= 20,000 events/s",
    ),
    Target("start.help", "availmon --help", "< 0.3 s"),
    Target("start.config", "availmon config check", "< 0.3 s"),
    Target("start.probe", "availmon probe tcp", "< 0.5 s"),
)


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    runs: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values), tuple(values))

    def text(self, fmt: str = "{:.3g}") -> str:
        if len(self.runs) == 1:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}–{fmt.format(self.high)})"


@dataclass
class Figure:
    """A measured figure for one target, its peer's figure in the same runs, and the verdict."""

    key: str
    availmon: Spread
    unit: str
    met: bool | None
    peer: str | None = None
    peer_value: Spread | None = None
    ratio: Spread | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    """What a measure may use: how many runs, how long, where to put its files."""

    runs: int
    workdir: Path
    rest_seconds: float = 300.0
    log: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)
        self.log.append(text)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def run_timed(argv: Sequence[str], timeout: float = 120, **kw: Any) -> tuple[float, float, int]:
    """Run a command to its end: (wall seconds, CPU seconds user+system, exit code)."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.002)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def driver(
    name: str, args: dict[str, Any], timeout: float = 600, prefix: Sequence[str] = ()
) -> Any:
    """Run ``bench.drivers <name>`` in its own process (its CPU is its own): its JSON."""
    done = subprocess.run(
        [*prefix, PYTHON, "-m", "bench.drivers", name, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"driver {name} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def as_json(figures: Sequence[Figure]) -> list[dict[str, Any]]:
    return [asdict(f) for f in figures]


def quiet_sites(agents: int, checks: int) -> dict[str, Any]:
    """``sites`` of an estate whose agents ``s0``.. each have checks ``c0``.. in one area: the
    checks bench-made events name must be in the config (an invented check is refused), and
    nothing probes them here."""
    return {
        f"s{i}": {
            "partner": "P",
            "checks": [
                {"name": f"c{c}", "type": "tcp", "target": "127.0.0.1:9", "area": "email"}
                for c in range(checks)
            ],
        }
        for i in range(agents)
    }
