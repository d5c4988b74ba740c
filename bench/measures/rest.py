"""Target 2: a real agent process at rest with 300 checks, beside blackbox_exporter asked for
the same probes at the same rates over the same window; and the agent's RSS with 1,000.

Checks (a quarter of each type): ICMP every 10 s to loopback addresses, HTTP and TCP every
60 s to nginx, SNMP every 60 s to snmpd on five loopback addresses. blackbox_exporter has no
SNMP prober, so its share is ICMP, HTTP and TCP only; Mosquitto takes the agent's heartbeats.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.common import AVAILMON, PYTHON, Ctx, Figure, Spread, proc_cpu, proc_rss_mb
from bench.peers import COMMUNITY, Process, blackbox, mosquitto, nginx, snmpd

SNMP_DEVICES = [f"127.0.3.{i + 1}" for i in range(5)]
SNMP_OIDS = [
    "1.3.6.1.2.1.1.1.0",
    "1.3.6.1.2.1.1.2.0",
    "1.3.6.1.2.1.1.3.0",
    "1.3.6.1.2.1.1.4.0",
    "1.3.6.1.2.1.1.5.0",
    "1.3.6.1.2.1.1.6.0",
    "1.3.6.1.2.1.1.8.0",
    "1.3.6.1.2.1.2.1.0",
    "1.3.6.1.2.1.2.2.1.4.1",
    "1.3.6.1.2.1.2.2.1.5.1",
    "1.3.6.1.2.1.2.2.1.10.1",
    "1.3.6.1.2.1.2.2.1.11.1",
    "1.3.6.1.2.1.2.2.1.16.1",
    "1.3.6.1.2.1.2.2.1.17.1",
]
WARM_UP = 15.0


def checks(per_type: int, http_port: int, snmp_port: int, secret: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(per_type):
        out.append(
            {"name": f"icmp{i}", "type": "icmp", "target": f"127.0.2.{i % 250 + 1}",
             "area": "network_telephony", "interval": 10, "timeout": 2}
        )  # fmt: skip
        out.append(
            {"name": f"http{i}", "type": "http", "target": f"http://127.0.0.1:{http_port}/c{i}",
             "area": "internet_web", "interval": 60}
        )  # fmt: skip
        out.append(
            {"name": f"tcp{i}", "type": "tcp", "target": f"127.0.0.1:{http_port}",
             "area": "servers", "interval": 60}
        )  # fmt: skip
        device = SNMP_DEVICES[i % len(SNMP_DEVICES)]
        n = i // len(SNMP_DEVICES)
        snmp: dict[str, Any] = {"name": f"snmp{i}", "type": "snmp",
                                "target": f"{device}:{snmp_port}", "area": "network_telephony",
                                "interval": 60, "community_file": str(secret)}  # fmt: skip
        if n % (len(SNMP_OIDS) + 1) == 0:
            snmp["interface"] = "lo"
        else:
            snmp["oid"] = SNMP_OIDS[n % (len(SNMP_OIDS) + 1) - 1]
        out.append(snmp)
    return out


def blackbox_jobs(per_type: int, http_port: int) -> list[tuple[str, str, float]]:
    jobs: list[tuple[str, str, float]] = []
    for i in range(per_type):
        jobs.append((f"127.0.2.{i % 250 + 1}", "icmp", 10.0))
        jobs.append((f"http://127.0.0.1:{http_port}/c{i}", "http_2xx", 60.0))
        jobs.append((f"127.0.0.1:{http_port}", "tcp_connect", 60.0))
    return jobs


def write_config(ctx: Ctx, name: str, mqtt_port: int, check_list: list[dict[str, Any]]) -> Path:
    state = ctx.workdir / f"state-{name}"
    state.mkdir(exist_ok=True)
    estate = {
        "broker": {"host": "127.0.0.1", "port": mqtt_port},
        "agent": {"state_dir": str(state)},
        "partners": {"p": {"name": "P"}},
        "sites": {"rest": {"partner": "p", "checks": check_list}},
    }
    toml = ctx.workdir / f"{name}.toml"
    toml.write_text(_toml(estate))
    return toml


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for an estate config: scalars, tables and arrays of tables."""
    scalars, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            arrays.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(scalars) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + _toml(value, name + ".")
    for key, items in arrays:
        for item in items:
            out += f"\n[[{prefix}{key}]]\n" + _toml(item, f"{prefix}{key}.")
    return out


def start_agent(ctx: Ctx, config: Path, name: str) -> Process:
    p = Process(
        [AVAILMON, "agent", "--config", str(config), "--site", "rest"],
        ctx.workdir / f"{name}.log",
    )
    p.start()
    return p


def run(ctx: Ctx) -> list[Figure]:
    secret = ctx.workdir / "rest-community"
    secret.write_text(COMMUNITY + "\n")
    secret.chmod(0o600)  # as an operator keeps it (the agent warns of one others can read)
    window = ctx.rest_seconds
    ours, theirs, rss300, rss1000 = [], [], [], []
    downs: list[str] = []
    with (
        nginx(ctx.workdir) as (_ng, http_port),
        mosquitto(ctx.workdir) as (_mq, mqtt_port),
        snmpd(ctx.workdir, SNMP_DEVICES) as (_sd, snmp_port),
        blackbox(ctx.workdir) as (bb, bb_port),
    ):
        rest300 = checks(75, http_port, snmp_port, secret)
        for run_no in range(ctx.runs):
            # A spool of its own per run: the last run's unconfirmed events (no collector
            # confirms here) would be this one's backlog.
            config = write_config(ctx, f"rest300-{run_no}", mqtt_port, rest300)
            ctx.say(f"  rest: run {run_no + 1}/{ctx.runs}, {WARM_UP:g} s warm-up + {window:g} s")
            agent = start_agent(ctx, config, f"agent300-{run_no}")
            jobs = ctx.workdir / "blackbox-jobs.json"
            jobs.write_text(json.dumps(blackbox_jobs(75, http_port)))
            load = Process(
                [PYTHON, "-m", "bench.drivers", "rest_blackbox",
                 json.dumps({"port": bb_port, "duration": window + WARM_UP + 5,
                             "jobs_file": str(jobs)})],
                ctx.workdir / f"rest-load-{run_no}.log",
            )  # fmt: skip
            load.start()
            try:
                time.sleep(WARM_UP)
                _alive(agent)
                a0, b0 = proc_cpu(agent.pid), proc_cpu(bb.pid)
                time.sleep(window)
                _alive(agent)
                a1, b1 = proc_cpu(agent.pid), proc_cpu(bb.pid)
                rss300.append(proc_rss_mb(agent.pid))
            finally:
                agent.stop()
                load.stop()
            downs += _downs(agent)
            ours.append((a1 - a0) / window * 100)
            theirs.append((b1 - b0) / window * 100)
        # 65 s: every check (60 s at most) has run once; shorter windows say so in the note.
        settle = 65.0 if window >= 60 else max(WARM_UP, window)
        rest1000 = checks(250, http_port, snmp_port, secret)
        for run_no in range(ctx.runs):
            big = write_config(ctx, f"rest1000-{run_no}", mqtt_port, rest1000)
            agent = start_agent(ctx, big, f"agent1000-{run_no}")
            try:
                time.sleep(settle)
                _alive(agent)
                rss1000.append(proc_rss_mb(agent.pid))
                downs += _downs(agent)
            finally:
                agent.stop()
    ratio = Spread.of([a / b for a, b in zip(ours, theirs, strict=True)])
    cpu = Spread.of(ours)
    rss = Spread.of(rss1000)
    return [
        Figure(
            "rest.cpu",
            cpu,
            "% of a core",
            cpu.median <= 3.0,
            peer="blackbox_exporter (no SNMP)",
            peer_value=Spread.of(theirs),
            ratio=ratio,
            note=f"{window:g} s window per run (target: 300 s); RSS with 300 checks "
            f"{Spread.of(rss300).text()} MB; checks that went down: {len(downs)}"
            + (f" (first: {downs[0]})" if downs else ""),
        ),
        Figure(
            "rest.rss",
            rss,
            "MB",
            rss.median <= 60.0,
            note=f"{settle:g} s after start"
            + (" (every check has run once)" if settle >= 60 else " (not every check has run)"),
        ),
    ]


def _downs(p: Process) -> list[str]:
    """Transitions to down in the agent's log: at rest against healthy peers, none."""
    return [line for line in p.log.read_text(errors="replace").splitlines() if "-> down" in line]


def _alive(p: Process) -> None:
    assert p.proc is not None
    if p.proc.poll() is not None:
        raise RuntimeError(f"agent exited {p.proc.returncode}: {p.log.read_text()[-1500:]}")
