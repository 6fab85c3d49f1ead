"""Scale benchmark: exact search vs copytrace's budgeted index vs autofaiss, on real copy queries.

    python -m copytrace.benchmarks.scale --n 1000000 --json OUT.json
    python -m copytrace.benchmarks.scale --sweep 10000,100000,1000000 --json SWEEP.json

References: the shipped model's descriptors of every dev photo (../shared/data), planted among
distractors drawn from a Gaussian fitted to those descriptors (`scale_data`; the output sets
their similarity to real queries beside that of real non-matching photos). Queries: copies of
held-out photos made with `descriptors.augment`. recall_at_10 = share of copy queries whose
original is in the top 10. Each index gets the same memory budget (default: a quarter of what
Flat takes) and is timed the same way (all queries as one batch, FAISS threads = cores).
copytrace's index is chosen by `choose_index` and tuned by `tune_search` on separate copy
queries (of other catalog photos) to keep 0.97 of exact recall; autofaiss runs in its own venv
(its pins clash with ours) with `max_index_memory_usage` = the budget and its defaults otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from copytrace.benchmarks.scale_data import (
    RealSet,
    load_real_set,
    load_tuning_set,
    make_distractors,
    similarity_quantiles,
)
from copytrace.descriptors import granted_cores
from copytrace.indexing import (
    ShardedIndex,
    choose_index,
    exact_top_k,
    index_bytes,
    parse_size,
    recall_at_k,
    train_template,
    tune_search,
)

log = logging.getLogger(__name__)

AUTOFAISS_PYTHON = Path("/tmp/autofaiss-venv/bin/python")
_AUTOFAISS_SCRIPT = """
import json, logging, sys
from autofaiss import build_index
emb, index_path, infos_path, budget, cores, memory = sys.argv[1:7]
build_index(embeddings=emb, index_path=index_path, index_infos_path=infos_path,
            max_index_memory_usage=budget, current_memory_available=memory, metric_type="ip",
            nb_cores=int(cores), save_on_disk=True, verbose=logging.INFO)
"""
# How autofaiss is run, as a fair user would on this machine: its own index choice and search-time
# tuning (max_index_query_time_ms stays at its 10 ms default, make_direct_map off: we never
# reconstruct), every granted core for its build (nb_cores; earlier runs passed our 1 search
# thread, which also throttled its training; its search is timed with the same FAISS threads as
# ours), and the memory we allow ourselves (6 GiB) as current_memory_available, which sets how
# many vectors it trains on (up to 100 per IVF list: all 1M at 1M). Its log (per-phase times) is
# kept beside the JSON. Why it is slow here: at a quarter of Flat's bytes every key it ranks is
# OPQ{m}_{d},IVF{n}_HNSW32,PQ{m}x8 (100k: OPQ128_384,IVF1024_HNSW32,PQ128x8; 1M: IVF16384), and
# training OPQ128_384 (faiss default: 50 iterations, each re-training 128 sub-quantizers on
# 65,536 points) dominates. Measured one training iteration at a time (faiss 1.7.4, 2 threads,
# 100k vectors, load ~20): 2 OPQ iterations 741 s (about an hour for 50), IVF1024 k-means 7 s
# per iteration, PQ128x8 13 s per iteration. At 1M the IVF16384 k-means on 1M 384-d vectors
# adds ~160x that k-means. Its maintainers' answer to slow training is more cores
# (criteo/autofaiss#157); no option caps the OPQ iterations or the training-set size below 31
# points per list, so it is run as is, with a timeout.
AUTOFAISS_MEMORY = "6G"


@dataclass(frozen=True)
class Result:
    index_spec: str
    recall_at_10: float
    qps: float
    index_bytes: int
    build_seconds: float

    def as_dict(self) -> dict:
        return {"index_spec": self.index_spec, "recall_at_10": self.recall_at_10,
                "qps": self.qps, "index_bytes": self.index_bytes,
                "build_seconds": self.build_seconds}


def _timed_search(index, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, float]:
    index.search(queries[:16], k)
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, len(queries) / (time.perf_counter() - t)


def _exact(data: np.ndarray, real: RealSet) -> Result:
    t = time.perf_counter()
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    build = time.perf_counter() - t
    ids, qps = _timed_search(index, real.queries)
    return Result("Flat", round(recall_at_k(ids, real.truth), 4), round(qps, 1),
                  index_bytes(index), round(build, 2))


def _copytrace(data: np.ndarray, real: RealSet, tune: tuple[np.ndarray, np.ndarray],
               budget: int, target: float) -> tuple[Result, dict]:
    choice = choose_index(len(data), data.shape[1], budget)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    template = train_template(choice.spec, data.shape[1],
                              lambda: data[rng.permutation(len(data))[:200_000]])
    template.add(data)
    index = ShardedIndex([template], [0])
    tq, ttruth = tune
    exact = recall_at_k(exact_top_k(tq, len(data), lambda a, b: data[a:b]), ttruth)
    tuned = tune_search(index, tq, ttruth, exact_recall=exact, target=target)
    build = time.perf_counter() - t  # tuning is part of building the index
    ids, qps = _timed_search(index, real.queries)
    spec = choice.spec + (f" nprobe={tuned.nprobe}" if tuned.nprobe else "") + (
        f" k_factor={tuned.k_factor}" if tuned.k_factor else "")
    return (Result(spec, round(recall_at_k(ids, real.truth), 4), round(qps, 1),
                   index_bytes(template), round(build, 2)),
            {"choice_reason": choice.reason, "tuning": tuned.as_dict()})


def _autofaiss(emb_dir: Path, n: int, real: RealSet, budget: int, work: Path, python: Path,
               timeout: float | None = None) -> tuple[Result | None, dict]:
    """Build with autofaiss in its venv from `emb_dir` (one .npy part), then time its search here."""
    if not python.exists():
        return None, {"error": f"autofaiss venv not found at {python}"}
    folder = emb_dir.parent
    index_path, infos_path = folder / "knn.index", folder / "infos.json"
    log_path = work / f"autofaiss-{n}.log"
    cores = granted_cores()
    t = time.perf_counter()
    try:
        with log_path.open("w") as log_file:
            proc = subprocess.run([str(python), "-c", _AUTOFAISS_SCRIPT, str(emb_dir),
                                   str(index_path), str(infos_path), f"{budget}B", str(cores),
                                   AUTOFAISS_MEMORY], stdout=log_file, stderr=subprocess.STDOUT,
                                  timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": str(cores)})
    except subprocess.TimeoutExpired:
        shutil.rmtree(folder, ignore_errors=True)
        return None, {"error": f"autofaiss build did not finish in {timeout:.0f} s",
                      "log": str(log_path), "phases": _autofaiss_phases(log_path)}
    build = time.perf_counter() - t
    if proc.returncode != 0 or not index_path.exists():
        shutil.rmtree(folder, ignore_errors=True)
        tail = log_path.read_text().strip().splitlines()[-1:] or ["failed"]
        return None, {"error": tail, "exit_code": proc.returncode, "log": str(log_path),
                      "phases": _autofaiss_phases(log_path)}
    infos = json.loads(infos_path.read_text())
    index = faiss.read_index(str(index_path))
    if infos.get("index_param"):
        faiss.ParameterSpace().set_index_parameters(index, infos["index_param"])
    ids, qps = _timed_search(index, real.queries)
    size = index_path.stat().st_size
    shutil.rmtree(folder, ignore_errors=True)
    spec = f"{infos.get('index_key')} {infos.get('index_param', '')}".strip()
    return (Result(spec, round(recall_at_k(ids, real.truth), 4), round(qps, 1), size,
                   round(build, 2)),
            {"index_infos": {k: infos[k] for k in ("index_key", "index_param", "avg_search_speed_ms",
                                                    "size in bytes") if k in infos},
             "nb_cores": cores, "current_memory_available": AUTOFAISS_MEMORY,
             "log": str(log_path), "phases": _autofaiss_phases(log_path)})


def _autofaiss_phases(log_path: Path) -> dict[str, float]:
    """Seconds per phase from autofaiss's own timer lines ('>>> Finished "X" in S secs')."""
    found = re.findall(r'Finished "(.+?)" in ([0-9.]+) secs', log_path.read_text(errors="replace"))
    return {name.strip("-> ").strip(): round(float(sec), 1) for name, sec in found}


def _write_parts(data: np.ndarray, work: Path) -> Path:
    """The vectors as autofaiss reads them (a folder of .npy parts)."""
    folder = work / f"autofaiss-{len(data)}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "emb").mkdir(parents=True)
    np.save(folder / "emb" / "part-0.npy", data)
    return folder / "emb"


def run_one(n: int, real: RealSet, tune: tuple[np.ndarray, np.ndarray], *, budget: int | None,
            target: float, work: Path, autofaiss_python: Path,
            autofaiss_timeout: float | None = None,
            indexes: tuple[str, ...] = ("exact", "copytrace", "autofaiss")) -> dict:
    """One size: n references (the real ones + n - real distractors), up to three indexes."""
    distractors = make_distractors(real.refs, max(0, n - len(real.refs)))
    data = np.ascontiguousarray(np.concatenate([real.refs, distractors])[:n])
    del distractors
    budget = budget or len(data) * data.shape[1] * 4 // 4
    n, dims = data.shape
    exact = _exact(data, real) if "exact" in indexes else None
    ours, ours_extra = (_copytrace(data, real, tune, budget, target) if "copytrace" in indexes
                        else (None, {}))
    theirs, theirs_extra = None, {"error": "not run (--indexes)"}
    if "autofaiss" in indexes:
        emb_dir = _write_parts(data, work)
        del data  # autofaiss reads the parts in its own process: keep one copy in RAM, not two
        theirs, theirs_extra = _autofaiss(emb_dir, n, real, budget, work, autofaiss_python,
                                          autofaiss_timeout)
    return {
        "n": n, "dims": int(dims), "queries": len(real.queries),
        "exact": exact.as_dict() if exact else None,
        "copytrace": ours.as_dict() if ours else None,
        "autofaiss": theirs.as_dict() if theirs else None,
        "memory_budget_bytes": budget, "copytrace_details": ours_extra,
        "autofaiss_details": theirs_extra, "faiss_threads": faiss.omp_get_max_threads(),
    }


def projection(rows: list[dict], sizes: tuple[int, ...] = (100_000_000, 1_000_000_000), *,
               machine_ram: int = 64 * 2**30, shard_ram: int = 16 * 2**30) -> list[dict]:
    """Extrapolate copytrace's index from the measured sizes: bytes and build time grow linearly
    with n (measured slope between the two largest runs), query cost grows like sqrt(n) at fixed
    nprobe (lists of n/nlist vectors, nlist ~ 4 sqrt(n)), shards of `shard_ram`."""
    rows = sorted(rows, key=lambda r: r["n"])
    a, b = (rows[-2], rows[-1]) if len(rows) > 1 else (None, rows[-1])
    ours = b["copytrace"]
    per_vec = ours["index_bytes"] / b["n"]
    if a:
        build_slope = (ours["build_seconds"] - a["copytrace"]["build_seconds"]) / (b["n"] - a["n"])
    else:
        build_slope = ours["build_seconds"] / b["n"]
    out = []
    for n in sizes:
        ram = per_vec * n
        shards = max(1, math.ceil(ram / shard_ram))
        out.append({
            "n": n, "index_bytes": int(ram), "shards": shards,
            "machines": max(1, math.ceil(ram * 1.3 / machine_ram)),
            "build_seconds_one_machine": round(build_slope * n),
            "qps_one_machine": round(ours["qps"] / math.sqrt(n / b["n"]), 1),
            "raw_vectors_bytes": n * b["dims"] * 4,
        })
    return out


def _table(rows: list[dict]) -> str:
    head = f"{'n':>9} {'index':<10} {'spec':<46} {'recall@10':>9} {'q/s':>9} {'MiB':>8} {'build s':>8}"
    lines = [head]
    for r in rows:
        for name in ("exact", "copytrace", "autofaiss"):
            x = r[name]
            if x is None:
                why = r["autofaiss_details"] if name == "autofaiss" else "not run (--indexes)"
                lines.append(f"{r['n']:>9} {name:<10} (not measured: {why})")
                continue
            lines.append(f"{r['n']:>9} {name:<10} {x['index_spec'][:46]:<46} {x['recall_at_10']:>9.4f} "
                         f"{x['qps']:>9.0f} {x['index_bytes'] / 2**20:>8.1f} {x['build_seconds']:>8.1f}")
        e, c = r["exact"], r["copytrace"]
        if not (e and c):
            continue
        lines.append(f"{'':>9} copytrace / exact: recall {c['recall_at_10'] / e['recall_at_10']:.3f}, "
                     f"bytes {c['index_bytes'] / e['index_bytes']:.3f}, q/s {c['qps'] / e['qps']:.1f}x")
    return "\n".join(lines)


def _quantile_table(q: dict) -> str:
    keys = list(q["real_non_matching"])
    lines = [f"{'query-to-reference cosine':<26}" + "".join(f"{k:>12}" for k in keys)]
    for name, row in q.items():
        lines.append(f"{name:<26}" + "".join(f"{row[k]:>12.4f}" for k in keys))
    return "\n".join(lines)


def _summary(rows: list[dict], quantiles: dict, real: RealSet,
             tune: tuple[np.ndarray, np.ndarray]) -> dict:
    out = dict(rows[-1])
    out["similarity_quantiles"] = quantiles
    out["real_references"] = len(real.refs)
    out["tuning_queries"] = len(tune[0])
    if len(rows) > 1:
        out["sweep"] = rows
        if all(r["copytrace"] for r in rows):
            out["projection"] = projection(rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--sweep", default=None, help="sizes, e.g. 10000,100000,1000000")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--memory-budget", default=None,
                        help="e.g. 256MB; default: a quarter of the Flat index's bytes")
    parser.add_argument("--target-recall", type=float, default=0.97)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("out/scale-cache"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--autofaiss-python", type=Path, default=AUTOFAISS_PYTHON)
    parser.add_argument("--autofaiss-timeout", type=float, default=3600)
    parser.add_argument("--indexes", default="exact,copytrace,autofaiss",
                        help="which of exact,copytrace,autofaiss to build")
    parser.add_argument("--threads", type=int, default=1,
                        help="FAISS threads for every index (autofaiss too); 1 keeps a shared "
                             "machine's timings comparable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    faiss.omp_set_num_threads(args.threads)
    real = load_real_set(args.data, args.cache, model=args.model)
    tune = load_tuning_set(args.data, args.cache, real, model=args.model)
    quantiles = similarity_quantiles(real, make_distractors(real.refs, len(real.refs)))
    budget = parse_size(args.memory_budget) if args.memory_budget else None
    sizes = [int(s) for s in args.sweep.split(",")] if args.sweep else [args.n]
    rows = []
    for n in sizes:
        rows.append(run_one(n, real, tune, budget=budget, target=args.target_recall,
                            work=args.cache, autofaiss_python=args.autofaiss_python,
                            autofaiss_timeout=args.autofaiss_timeout,
                            indexes=tuple(args.indexes.split(","))))
        print(_table(rows[-1:]), flush=True)
        out = _summary(rows, quantiles, real, tune)
        if args.json:  # after every size: a long sweep leaves what it measured so far
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(_quantile_table(quantiles))
    print(_table(rows))
    if "projection" in out:
        for p in out["projection"]:
            print(f"projected n={p['n']:.0e}: {p['index_bytes'] / 2**30:.1f} GiB index, "
                  f"{p['shards']} shards, {p['machines']} machines of 64 GiB, build "
                  f"{p['build_seconds_one_machine'] / 3600:.1f} h on one such machine, "
                  f"{p['qps_one_machine']:.0f} q/s per replica")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
