"""``make bench``: every measure with its peer in the same run, one table, one JSON file.

    .venv/bin/python -m bench.run [--runs 5] [--only http,icmp] [--rest-seconds 300]

Prints the table (median of the runs, min–max beside it, ratio against the peer measured in
the same run, met / not met per target) and writes ``bench/results/latest.json``. A measure
that fails is reported as such in the table; this command never fails the build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, TARGETS, Ctx, Figure, as_json, compile_bytecode
from bench.measures import MEASURES
from bench.peers import missing_tools


def table(figures: dict[str, Figure], errors: dict[str, str]) -> str:
    rows = [("target", "goal", "availmon", "peer (same runs)", "ratio", "verdict")]
    for t in TARGETS:
        f = figures.get(t.key)
        if f is None:
            verdict = "error" if t.key in errors else "not measured yet"
            rows.append((t.title, t.goal, errors.get(t.key, "")[:40], "", "", verdict))
            continue
        peer = f"{f.peer}: {f.peer_value.text()}" if f.peer and f.peer_value else ""
        verdict = "met" if f.met else "not met" if f.met is not None else "—"
        rows.append(
            (
                t.title,
                t.goal,
                f"{f.availmon.text()} {f.unit}",
                peer,
                f.ratio.text("{:.2f}") + "x" if f.ratio else "",
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    notes = [f"  {f.key}: {f.note}" for f in figures.values() if f.note]
    return "\n".join(lines + (["", "notes:", *notes] if notes else []))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every peer and agent started so far is stopped."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per measure (5)")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(MEASURES)}")
    parser.add_argument(
        "--rest-seconds", type=float, default=300.0, help="agent-at-rest window per run (300)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args(argv)
    chosen = [m for m in args.only.split(",") if m] or list(MEASURES)
    unknown = [m for m in chosen if m not in MEASURES]
    if unknown:
        parser.error(f"unknown measure(s): {', '.join(unknown)}")
    figures: dict[str, Figure] = {}
    errors: dict[str, str] = {}
    started = time.time()
    missing = missing_tools()
    compile_bytecode()  # availmon as installed from its wheel: see compile_bytecode
    with tempfile.TemporaryDirectory(prefix="availmon-bench-") as tmp:
        for name in chosen:
            ctx = Ctx(runs=args.runs, workdir=Path(tmp) / name, rest_seconds=args.rest_seconds)
            ctx.workdir.mkdir()
            ctx.say(f"bench: {name} ({args.runs} runs)")
            t0 = time.time()
            try:
                if missing:
                    raise RuntimeError(f"missing peers: {', '.join(missing)} (make bench-debs)")
                for figure in MEASURES[name](ctx):
                    figures[figure.key] = figure
            except Exception as exc:  # a failed measure is reported, never fatal
                traceback.print_exc()
                for t in TARGETS:
                    if t.key.split(".")[0] == name:
                        errors[t.key] = f"{type(exc).__name__}: {exc}"
            ctx.say(f"bench: {name} took {time.time() - t0:.0f} s")
    text = table(figures, errors)
    print(text)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started),
        "host": {
            "cpus": os.cpu_count(),
            "load_avg_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "argv": sys.argv[1:],
        "runs": args.runs,
        "rest_seconds": args.rest_seconds,
        "figures": as_json(list(figures.values())),
        "errors": errors,
        "not_measured": [t.key for t in TARGETS if t.key not in figures and t.key not in errors],
        "targets": [{"key": t.key, "title": t.title, "goal": t.goal} for t in TARGETS],
        "table": text,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
