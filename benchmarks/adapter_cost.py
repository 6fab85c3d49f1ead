"""Query cost of adapters: ms/query with `--adapter none`, one adapter and `all`, interleaved.

    nice -n 10 python -m copytrace.benchmarks.adapter_cost --index IDX \
        --queries DIR [DIR ...] --settings none,halftone,all [--limit 100] [--verify off,banded]

Each setting (an `--adapter` value) gets its own engine, opened and warmed on one query before
the clock runs. The queries (round-robin over the folders, then the first `--limit`) go in
chunks of `--chunk`; each chunk runs through every (setting, verification mode) in turn, the
first of them rotating from chunk to chunk, so the load of a shared box falls on all alike.
Reports per setting and mode: ms/query over all chunks, the median chunk's ms/query, the ratio
to the first setting, and the 1-minute load average before and after. Prints JSON and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

from copytrace.indexing import list_sources
from copytrace.pipelines import QueryEngine


def query_files(folders: list[Path], limit: int) -> list[Path]:
    """Round-robin over the folders' images (each sorted), the first `limit`."""
    lists = [[Path(s.uri) for s in list_sources(f)] for f in folders]
    mixed = [files[i] for i in range(max(map(len, lists), default=0)) for files in lists
             if i < len(files)]
    return mixed[:limit]


def run(index: Path, files: list[Path], *, settings: list[str], modes: list[str], chunk: int,
        repeats: int, k: int = 10) -> dict:
    import torch

    load_before = os.getloadavg()[0]
    order = [(s, m) for m in modes for s in settings]
    seconds: dict[tuple[str, str], list[float]] = {o: [] for o in order}
    with ExitStack() as stack:
        engines = {s: stack.enter_context(QueryEngine.open(index, device="cpu", adapters=s))
                   for s in settings}
        for s, m in order:  # model, caches and verifier warm before the clock runs
            engines[s].query(files[:1], k=k, verify=m)
        chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
        for r in range(repeats):
            for c, part in enumerate(chunks):
                shift = (c + r) % len(order)
                for s, m in order[shift:] + order[:shift]:
                    t = time.perf_counter()
                    engines[s].query(part, k=k, verify=m)
                    seconds[(s, m)].append((time.perf_counter() - t) / len(part))
        filters = {s: [a.card.input_filter or "(map only)" for a in e.adapters]
                   for s, e in engines.items()}
    rows = []
    for m in modes:
        base = sum(seconds[(settings[0], m)])
        for s in settings:
            per = seconds[(s, m)]
            rows.append({"setting": s, "verify": m, "adapters": filters[s],
                         "ms_per_query": round(1000 * sum(per) / len(per), 1),
                         "median_chunk_ms_per_query": round(1000 * statistics.median(per), 1),
                         "ratio": round(sum(per) / base, 3)})
    return {"index": str(index), "queries": len(files), "chunk": chunk, "repeats": repeats,
            "torch_threads": torch.get_num_threads(), "load_before": round(load_before, 2),
            "load_after": round(os.getloadavg()[0], 2), "rows": rows}


def table(report: dict) -> str:
    lines = [f"{'verify':<7} {'setting':<14} {'ms/query':>9} {'median chunk':>12} {'ratio':>6}  "
             "filters"]
    for r in report["rows"]:
        lines.append(f"{r['verify']:<7} {r['setting']:<14} {r['ms_per_query']:>9.1f} "
                     f"{r['median_chunk_ms_per_query']:>12.1f} {r['ratio']:>6.3f}  "
                     f"{', '.join(r['adapters']) or '-'}")
    lines.append(f"{report['queries']} queries x {report['repeats']}, chunks of {report['chunk']}, "
                 f"torch threads {report['torch_threads']}, load average "
                 f"{report['load_before']} -> {report['load_after']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--queries", nargs="+", required=True, help="query folders (mixed)")
    parser.add_argument("--settings", default="none,all", help="--adapter values, first = base")
    parser.add_argument("--verify", default="off,banded", help="verification modes")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (a busy 2-core box: 1)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    files = query_files([Path(q) for q in args.queries], args.limit)
    if not files:
        parser.error(f"no images in {', '.join(args.queries)}")
    report = run(Path(args.index), files, settings=args.settings.split(","),
                 modes=args.verify.split(","), chunk=args.chunk, repeats=args.repeats)
    print(json.dumps(report, indent=2))
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
