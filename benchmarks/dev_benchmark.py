"""Development benchmark: PDQ vs copytrace's descriptor on a DISC-style set, in one run.

    python -m copytrace.benchmarks.dev_benchmark --data ../shared/data --work /tmp/ct-dev

Builds the benchmark from the shared dev photos (last 300 ImageNet samples as references and
copies, UKBench hard negatives), then prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from copytrace.benchmarks.disc_eval import eval_disc, metrics_table, score_predictions
from copytrace.benchmarks.make_disc import make_disc


def dev_data_root(explicit: str | None = None) -> Path:
    root = Path(explicit or os.environ.get("COPYTRACE_DEV_DATA") or "../shared/data")
    if not (root / "photos" / "imagenet-sample").is_dir():
        raise SystemExit(f"dev data not found at '{root}' (set --data or COPYTRACE_DEV_DATA)")
    return root.resolve()


def ensure_dev_benchmark(data: Path, work: Path, *, seed: int = 0) -> Path:
    bench = work / "disc-dev"
    if not (bench / "gt.csv").exists():
        make_disc(data / "photos" / "imagenet-sample", bench, seed=seed, skip=700,
                  hard_negatives=data / "ukbench" / "groups.csv")
    return bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-dev", help="work folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from copytrace.benchmarks.pdq import pdq_predictions  # pdqhash: only this command needs it

    work = Path(args.work)
    bench = ensure_dev_benchmark(dev_data_root(args.data), work, seed=args.seed)
    gt = bench / "gt.csv"
    rows, times = {}, {}
    t = time.perf_counter()
    rows["PDQ"] = score_predictions(pdq_predictions(bench / "queries", bench / "references"), gt)
    times["PDQ"] = time.perf_counter() - t
    t = time.perf_counter()
    result = eval_disc(gt, queries=bench / "queries", references=bench / "references",
                       work=work / f"run-{args.model.replace('/', '_')}", model=args.model,
                       show_progress=False)
    rows[f"copytrace ({args.model})"] = result.metrics
    times[f"copytrace ({args.model})"] = time.perf_counter() - t
    report = {name: {**m.as_dict(), "seconds": round(times[name], 1)} for name, m in rows.items()}
    print(json.dumps({"benchmark": str(bench), "results": report}, indent=2))
    print(metrics_table(rows))


if __name__ == "__main__":
    main()
