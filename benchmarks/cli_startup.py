"""CLI start-up: wall time and peak RSS of commands that should not load a model.

    python -m copytrace.benchmarks.cli_startup --index IDX [--rounds 3] [--json out.json]

Runs `copytrace --help`, `copytrace hash --help`, `copytrace index info IDX` and
`copytrace index sql IDX "SELECT count(*) FROM catalog"` as separate processes (the real
console script, tcmalloc re-exec included), interleaved round by round so a noisy machine hits
every command alike; reports the median wall time and the largest peak RSS (VmHWM of the
process tree, /proc). `--exe` measures another entry point (e.g. an older checkout's
`python path/to/cli.py`) on the same machine state for before/after comparisons.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

from copytrace.benchmarks.proc_peak import run_measured


def commands(index: Path) -> dict[str, list[str]]:
    return {"--help": ["--help"], "hash --help": ["hash", "--help"],
            "index info": ["index", "info", str(index)],
            "index sql": ["index", "sql", str(index), "SELECT count(*) AS n FROM catalog"]}


def measure(exe: list[str], index: Path, rounds: int) -> dict[str, dict]:
    runs: dict[str, list[tuple[int, float, float]]] = {name: [] for name in commands(index)}
    for _ in range(rounds):
        for name, args in commands(index).items():
            code, wall, peak, _ = run_measured([*exe, *args], interval=0.01)
            runs[name].append((code, wall, peak))
    return {name: {"exit": max(r[0] for r in rs), "wall_s": statistics.median(r[1] for r in rs),
                   "peak_rss_mib": max(r[2] for r in rs), "rounds": len(rs)}
            for name, rs in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, type=Path, help="an index folder")
    parser.add_argument("--exe", action="append", help="command to measure (repeatable; "
                        "default: the copytrace script beside this Python)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    exes = args.exe or [str(Path(sys.executable).with_name("copytrace"))]
    report = {exe: measure(shlex.split(exe), args.index, args.rounds) for exe in exes}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    print(f"{'command':16s} " + "  ".join(f"{'wall s':>8s} {'RSS MiB':>8s}" for _ in exes))
    for name in commands(args.index):
        print(f"{name:16s} " + "  ".join(f"{report[e][name]['wall_s']:8.2f} "
                                          f"{report[e][name]['peak_rss_mib']:8.0f}" for e in exes))
    for i, exe in enumerate(exes):
        print(f"column {i + 1}: {exe}")


if __name__ == "__main__":
    main()
