"""Target 4: 50 devices x 20 interfaces polled every 60 s, beside bare pysnmp; and the start
of an agent with 1,000 snmp checks.

The devices are one snmpd listening on 50 loopback addresses inside a namespace that has 20
dummy interfaces (so the interface checks are real ifTable rows). CPU per polling round is
measured, then expressed as a share of one core at one round per 60 s.
"""

from __future__ import annotations

import json
import subprocess

from bench.common import PYTHON, ROOT, Ctx, Figure, Spread, driver, run_timed
from bench.peers import COMMUNITY, netns_with_interfaces, snmpd

DEVICES = 50
INTERFACES = 20
INTERVAL = 60.0


def run(ctx: Ctx) -> list[Figure]:
    secret = ctx.workdir / "snmp-community"
    secret.write_text(COMMUNITY + "\n")
    secret.chmod(0o600)  # as an operator keeps it (the agent warns of one others can read)
    addresses = [f"127.0.1.{i + 1}" for i in range(DEVICES)]
    ours, theirs = [], []
    with netns_with_interfaces(INTERFACES) as ns, snmpd(ctx.workdir, addresses, ns) as (_p, port):
        inside = ["ip", "netns", "exec", ns]
        indexes = [
            int(read_in(inside, f"/sys/class/net/bench{i}/ifindex")) for i in range(INTERFACES)
        ]
        common = {"addresses": addresses, "port": port, "community_file": str(secret)}
        for _ in range(ctx.runs):
            mine = driver(
                "snmp_availmon", {**common, "interfaces": INTERFACES, "rounds": 1}, prefix=inside
            )
            ours.append(mine["rounds"][0])
            peer = driver("snmp_raw", {**common, "if_indexes": indexes, "rounds": 1}, prefix=inside)
            theirs.append(peer["rounds"][0])
    share = Spread.of([c / INTERVAL * 100 for c in ours])
    peer_share = Spread.of([c / INTERVAL * 100 for c in theirs])
    ratio = Spread.of([a / b for a, b in zip(ours, theirs, strict=True)])
    start_wall, start_cpu = [], []
    for _ in range(ctx.runs):
        args = json.dumps({"n": 1000, "community_file": str(secret)})
        wall, cpu, code = run_timed([PYTHON, "-m", "bench.drivers", "snmp_start", args], cwd=ROOT)
        if code != 0:
            raise RuntimeError(f"snmp_start exited {code}")
        start_wall.append(wall)
        start_cpu.append(cpu)
    start = Spread.of(start_wall)
    return [
        Figure(
            "snmp.cpu",
            share,
            "% of a core",
            share.median < 2.0,
            peer="bare pysnmp, one GET per device",
            peer_value=peer_share,
            ratio=ratio,
            note=f"{DEVICES} x {INTERFACES} interface checks; CPU of one round / {INTERVAL:g} s",
        ),
        Figure(
            "snmp.start",
            start,
            "s (wall)",
            start.median < 2.0,
            note="process start to config parsed and engine ready; "
            f"CPU {Spread.of(start_cpu).text()} s",
        ),
    ]


def read_in(prefix: list[str], path: str) -> str:
    """A file as seen inside the namespace (/sys/class/net is per namespace)."""
    return subprocess.run(
        [*prefix, "cat", path], capture_output=True, text=True, check=True
    ).stdout.strip()
