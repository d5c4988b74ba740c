"""Target 3: one ICMP round over 1,000 loopback addresses, beside ``fping -i 0``."""

from __future__ import annotations

from bench.common import Ctx, Figure, Spread, driver, run_timed
from bench.peers import FPING

TARGETS = [f"127.0.{10 + i // 250}.{i % 250 + 1}" for i in range(1000)]


def run(ctx: Ctx) -> list[Figure]:
    ours, theirs = [], []
    for _ in range(ctx.runs):
        [cpu] = driver("icmp_availmon", {"targets": TARGETS, "rounds": 1})["rounds"]
        ours.append(cpu)
        _wall, fping_cpu, code = run_timed(
            [FPING, "-q", "-i", "0", "-c", "1", "-t", "2000", *TARGETS]
        )
        if code != 0:
            raise RuntimeError(f"fping exited {code}")
        theirs.append(fping_cpu)
    ratio = Spread.of([a / b for a, b in zip(ours, theirs, strict=True)])
    return [
        Figure(
            "icmp.cpu",
            Spread.of(ours),
            "CPU-s/round",
            ratio.median <= 2.0,
            peer="fping -i 0 -c 1",
            peer_value=Spread.of(theirs),
            ratio=ratio,
            note="availmon: the round inside a warm process; fping: its whole process",
        )
    ]
