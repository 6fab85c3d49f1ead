"""Index scale benchmark: build time, size, query speed and recall of the FAISS choices.

Real descriptors of real photos are planted among synthetic distractors that share the real
descriptors' mean and covariance (random unit vectors would be far too easy: real descriptors
crowd a small cone). Queries are real descriptors of edited copies, so "recall" means what a
user sees: does the approximate index still return the true original that exact search returns.

    python -m copytrace.benchmarks.scale --bench /tmp/copytrace-dev/disc-dev --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from copytrace.descriptors.embed import Embedder, embed_files
from copytrace.descriptors.model import load_descriptor
from copytrace.indexing.budget import parse_size
from copytrace.indexing.index_spec import choose_index
from copytrace.indexing.shards import ShardedIndex, build_shards
from copytrace.indexing.sources import scan_folder


def _embed_folder(folder: Path, embedder: Embedder) -> dict[str, np.ndarray]:
    sources = scan_folder(folder)
    out: dict[str, np.ndarray] = {}
    for batch in embed_files([s.uri for s in sources], embedder):
        for item in batch:
            if item.vector is not None:
                out[sources[item.index].image_id] = item.vector
    return out


def synthetic_like(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors drawn from a Gaussian with the real descriptors' mean and covariance."""
    rng = np.random.default_rng(seed)
    mean = real.mean(axis=0)
    centred = real - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    scales = s / np.sqrt(max(1, len(real) - 1))
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        z = rng.standard_normal((m, len(scales))).astype(np.float32) * scales
        x = mean + z @ vt
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _build(spec: str, data: np.ndarray, folder: Path) -> list[Path]:
    sample = data[np.random.default_rng(0).permutation(len(data))[:200_000]]
    return build_shards(spec, data.shape[1], len(data), lambda a, b: data[a:b], lambda: sample,
                        folder, shard_size=len(data))


def run(bench: Path, sizes: list[int], *, model: str, budget: str, k: int = 10) -> list[dict]:
    embedder = Embedder(load_descriptor(model))
    refs = _embed_folder(bench / "references", embedder)
    queries = _embed_folder(bench / "queries", embedder)
    with open(bench / "gt.csv", newline="") as fh:
        gt = {r["query_id"]: r["reference_id"] for r in csv.DictReader(fh) if r["reference_id"]}
    qids = [q for q in gt if q in queries and gt[q] in refs]
    ref_ids = list(refs)
    real = np.stack([refs[r] for r in ref_ids])
    qmat = np.stack([queries[q] for q in qids])
    truth = np.array([ref_ids.index(gt[q]) for q in qids])
    rows = []
    for n in sizes:
        data = np.concatenate([real, synthetic_like(real, max(0, n - len(real)))])
        choice = choose_index(len(data), data.shape[1], parse_size(budget))
        specs = ["Flat"] + ([choice.spec] if choice.spec != "Flat" else [])
        exact_top = None
        for spec in specs:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                paths = _build(spec, data, Path(tmp))
                build_s = time.perf_counter() - t
                size_mb = sum(p.stat().st_size for p in paths) / 2**20
                index = ShardedIndex.load(paths, nprobe=choice.nprobe)
                index.search(qmat[:8], k)
                t = time.perf_counter()
                _, ids = index.search(qmat, k)
                qps = len(qmat) / (time.perf_counter() - t)
            if exact_top is None:
                exact_top = ids[:, 0]
            rows.append({
                "vectors": len(data), "dims": int(data.shape[1]), "spec": spec,
                "build_s": round(build_s, 1), "size_mib": round(size_mb, 1),
                "queries_per_s": round(qps, 1),
                "original_in_top10": round(float(np.mean([t in r for t, r in zip(truth, ids,
                                                                                 strict=True)])), 4),
                "top1_same_as_exact": round(float(np.mean(ids[:, 0] == exact_top)), 4),
                "faiss_threads": faiss.omp_get_max_threads(),
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True,
                        help="a make-disc folder (references/, queries/, gt.csv)")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--model", default="default")
    parser.add_argument("--memory-budget", default="4GB")
    args = parser.parse_args()
    rows = run(args.bench, [int(s) for s in args.sizes.split(",")], model=args.model,
               budget=args.memory_budget)
    print(json.dumps(rows, indent=2))
    print(f"\n{'vectors':>9} {'spec':<22} {'build s':>8} {'MiB':>8} {'q/s':>9} "
          f"{'orig@10':>8} {'top1=exact':>10}")
    for r in rows:
        print(f"{r['vectors']:>9} {r['spec']:<22} {r['build_s']:>8} {r['size_mib']:>8} "
              f"{r['queries_per_s']:>9} {r['original_in_top10']:>8} {r['top1_same_as_exact']:>10}")


if __name__ == "__main__":
    main()
