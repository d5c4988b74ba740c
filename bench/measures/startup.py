"""Target 7: CPU before anything happens, beside ``python -c 'import aiohttp'``."""

from __future__ import annotations

from bench.common import AVAILMON, PYTHON, ROOT, Ctx, Figure, Spread, run_timed
from bench.peers import nginx

LIMITS = {"start.help": 0.3, "start.config": 0.3, "start.probe": 0.5}


def run(ctx: Ctx) -> list[Figure]:
    with nginx(ctx.workdir) as (_proc, port):
        commands = {
            "start.help": [AVAILMON, "--help"],
            "start.config": [AVAILMON, "config", "check", str(ROOT / "config" / "demo.toml")],
            "start.probe": [AVAILMON, "probe", "tcp", f"127.0.0.1:{port}"],
        }
        peer = [PYTHON, "-c", "import aiohttp"]
        cpu: dict[str, list[float]] = {k: [] for k in commands}
        wall: dict[str, list[float]] = {k: [] for k in commands}
        peer_cpu: list[float] = []
        for _ in range(ctx.runs):
            peer_cpu.append(run_timed(peer)[1])
            for key, argv in commands.items():
                w, c, code = run_timed(argv, cwd=ROOT)
                if code != 0:
                    raise RuntimeError(f"{' '.join(argv)} exited {code}")
                cpu[key].append(c)
                wall[key].append(w)
    figures = []
    for key in commands:
        ratios = [c / p for c, p in zip(cpu[key], peer_cpu, strict=True)]
        value = Spread.of(cpu[key])
        figures.append(
            Figure(
                key,
                value,
                "CPU-s",
                value.median < LIMITS[key],
                peer="python -c 'import aiohttp'",
                peer_value=Spread.of(peer_cpu),
                ratio=Spread.of(ratios),
                note=f"wall {Spread.of(wall[key]).text()} s; availmon's modules byte-compiled"
                " first, as pip installs the wheel",
            )
        )
    return figures
