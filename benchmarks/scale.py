"""Scale benchmark: exact search vs copytrace's budgeted indexes (in RAM, and on disk under a
smaller budget) vs FAISS's own recipe and autofaiss, on real copy queries, up to 10M vectors.

    python -m copytrace.benchmarks.scale --n 1000000 --json OUT.json
    python -m copytrace.benchmarks.scale --sweep 100000,1000000 --json SWEEP.json
    nice python -m copytrace.benchmarks.scale --n 10000000 --indexes exact,ondisk,copytrace

References: the shipped model's descriptors of every dev photo (../shared/data), planted among
distractors drawn from a Gaussian fitted to those descriptors (`scale_data`; the output sets
their similarity to real queries beside that of real non-matching photos). The catalog is never
held whole: distractors are generated block by block, each time they are read (10M x 256 floats
would be 10 GB). Queries: copies of held-out photos made with `descriptors.augment`.
recall_at_10 = share of copy queries whose original is in the top 10.

Rows (`--indexes`), each built in its own process so its peak RSS (VmHWM of the whole process
tree, `proc_peak`) is its own:
- exact: brute force over all n vectors in streamed blocks of 200k, every query (no sampling);
  its q/s leaves out the time spent generating the blocks.
- copytrace: `choose_index` under `--memory-budget` (default a quarter of Flat's bytes), built
  shard by shard (`build_shards`), tuned by `tune_search` on separate copy queries to keep 0.97
  of exact recall.
- ondisk: the same under `--ondisk-budget` (default 1/16 of Flat's bytes), which sends the
  inverted lists to disk (`Storage.ONDISK`, memory-mapped): shards built one at a time, then
  merged into one lists file under one coarse quantizer (`indexing.ondisk`).
- ondisk-shards: the same index in the layout on-disk builds had before merging: every shard
  file keeps its own lists and its own copy of the quantizer, each memory-mapped.
- peer: FAISS's own guidance at this size, OPQ + IVF with an HNSW coarse quantizer + PQ
  (`--peer-spec`, default `OPQ32_128,IVF{nlist}_HNSW32,PQ32` with copytrace's nlist), tuned alike.
- autofaiss: its own choice in its own venv (its pins clash with ours).
- selfjoin: the dedup candidates' kNN self-join (k = 10) as a Ray job. The catalog gets the
  copy queries planted as rows after the real references, so each copy and its original are a
  real near-duplicate pair to find; the ondisk row's spec (its cached k-means, its shard size)
  is built over it as one merged on-disk index. First a sweep: the real rows searched at each
  `--selfjoin-sweep` nprobe and at the query-tuned one, the recall of the real pairs with exact
  cosine >= `--selfjoin-threshold` (found from either side). The job runs at
  `--selfjoin-nprobe`, by default the smallest swept nprobe within `--selfjoin-slack` of the
  query-tuned one's recall: near-duplicates sit close, the tuned nprobe is for heavily edited
  copies. Ray tasks (retried if a worker dies) each open the index memory-mapped, search one
  block of the catalog's own vectors (read in the task, never shipped) and return the pairs
  above the threshold; `--selfjoin-queries` caps how many catalog vectors are searched, and the
  row says how many it searched. `--selfjoin-sample N` searches instead every real row plus N
  rows drawn uniformly from the whole catalog (a join too long to run whole, measured on an
  honest sample); the job itself then reports the real pairs' recall at its nprobe.
Every built index is then served by a fresh process that opens the shard files as a user's
query would and answers all queries as one batch: its q/s, recall and resident memory
(VmRSS = RssAnon + RssFile: the mapped pages of on-disk lists it touched) are the row's.
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
from pathlib import Path

import faiss
import numpy as np

from copytrace.benchmarks.proc_peak import run_measured, status_kib
from copytrace.benchmarks.scale_data import (
    RealSet,
    SyntheticCatalog,
    load_real_set,
    load_tuning_set,
    similarity_quantiles,
)
from copytrace.descriptors import granted_cores
from copytrace.indexing import (
    ShardedIndex,
    Storage,
    build_shards,
    choose_index,
    exact_top_k,
    lists_path,
    nlist_for,
    parse_size,
    recall_at_k,
    train_template,
    tune_search,
)

log = logging.getLogger(__name__)

ROWS = ("exact", "copytrace", "ondisk", "ondisk-shards", "selfjoin", "peer", "autofaiss")
SAMPLE_SEED = 22  # the self-join's query sample (--selfjoin-sample)
BLOCK = 50_000  # vectors per exact-search block (its scores and ranks: ~0.5 GB at 575 queries)
TRAIN_POINTS = 200_000
MIB = 2**20

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


def _memory_mib() -> dict[str, float]:
    """This process's resident memory now (VmRSS = RssAnon + RssFile) and its peak (VmHWM)."""
    pid = os.getpid()
    return {f: round(status_kib(pid, f) / 1024, 1) for f in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}


def _timed_search(index, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, float]:
    index.search(queries[:16], k)
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, len(queries) / (time.perf_counter() - t)


def _spill_path(work: Path, n: int) -> Path:
    return work / f"distractors-{n}.f32"


def _catalog(real: RealSet, n: int, work: Path | None = None) -> SyntheticCatalog:
    """The catalog of size n; its distractors read back from the spill file when one was written."""
    return SyntheticCatalog(real.refs, n, spill=_spill_path(work, n) if work else None)


def _exact_row(cat: SyntheticCatalog, real: RealSet, tune: tuple[np.ndarray, np.ndarray]) -> dict:
    """Exact top-10 of the benchmark and the tuning queries in one pass over streamed blocks."""
    generating = [0.0]

    def read(a: int, b: int) -> np.ndarray:
        t = time.perf_counter()
        out = cat.read_range(a, b)
        generating[0] += time.perf_counter() - t
        return out

    q = np.concatenate([real.queries, tune[0]])
    t = time.perf_counter()
    ids = exact_top_k(q, cat.n, read, k=10, block=BLOCK)
    total = time.perf_counter() - t
    nq = len(real.queries)
    return {"index_spec": f"Flat (exact, streamed blocks of {BLOCK:,}, all {len(q)} queries)",
            "recall_at_10": round(recall_at_k(ids[:nq], real.truth), 4),
            "tune_exact_recall": round(recall_at_k(ids[nq:], tune[1]), 4),
            "qps": round(len(q) / max(1e-9, total - generating[0]), 2),
            "disk_bytes": cat.n * cat.dims * 4, "resident_bytes": cat.n * cat.dims * 4,
            "build_seconds": 0.0, "generate_seconds": round(generating[0], 1),
            "search_seconds": round(total - generating[0], 1)}


def _exact_path(work: Path, n: int) -> Path:
    return work / f"exact-{n}.json"


def _tune_exact_recall(work: Path, cat: SyntheticCatalog, tune: tuple[np.ndarray, np.ndarray]
                       ) -> float:
    """The tuning queries' exact recall, from the exact row when it ran (10M: one pass saved)."""
    path = _exact_path(work, cat.n)
    if path.exists():
        return json.loads(path.read_text())["tune_exact_recall"]
    return recall_at_k(exact_top_k(tune[0], cat.n, cat.read_range, k=10, block=BLOCK), tune[1])


def _folder_bytes(paths: list[Path]) -> int:
    """The index files and, for a merged on-disk index, its lists file."""
    return sum(f.stat().st_size for p in paths for f in (p, lists_path(p)) if f.exists())


def _coarse_quantizer(cat: SyntheticCatalog, spec: str, work: Path
                     ) -> tuple[faiss.Index | None, float, bool]:
    """(quantizer, k-means seconds, reused): the IVF coarse quantizer of `spec` (k-means on the
    same sample a build trains on), trained once per catalog and shared by the rows whose specs
    use the same one (copytrace and ondisk at 10M: about half of each build). None for specs
    that rotate first (OPQ, PCA): their k-means runs in the rotated space."""
    m = re.match(r"(IVF\d+(?:_HNSW\d+)?),", spec)
    if not m:
        return None, 0.0, False
    path = work / f"quantizer-{cat.n}-{m.group(1)}.faiss"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return faiss.read_index(str(path)), json.loads(meta.read_text())["seconds"], True
    t = time.perf_counter()
    template = train_template(f"{m.group(1)},Flat", cat.dims, lambda: cat.sample(TRAIN_POINTS))
    seconds = time.perf_counter() - t
    quantizer = faiss.clone_index(faiss.downcast_index(faiss.extract_index_ivf(template).quantizer))
    faiss.write_index(quantizer, str(path))
    meta.write_text(json.dumps({"seconds": round(seconds, 1), "spec": m.group(1)}))
    return quantizer, seconds, False


def _built_row(name: str, cat: SyntheticCatalog, real: RealSet,
               tune: tuple[np.ndarray, np.ndarray], *, spec: str, storage: Storage,
               nprobe: int | None, shard_size: int, target: float, work: Path, reason: str,
               python: str, merge: bool = True) -> dict:
    """Build `spec` shard by shard from the streamed catalog, tune it, then serve it from a
    fresh process. On disk, `merge=False` keeps the shard files as they are (the layout before
    merging) and memory-maps each."""
    folder = work / f"{name}-{cat.n}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    quantizer, kmeans, shared = _coarse_quantizer(cat, spec, work)
    t = time.perf_counter()
    merged = storage is Storage.ONDISK and merge
    paths = build_shards(spec, cat.dims, cat.n, cat.read_range,
                         lambda: cat.sample(TRAIN_POINTS), folder, shard_size=shard_size,
                         quantizer=quantizer, storage=storage if merged else Storage.MEMORY)
    build = time.perf_counter() - t + kmeans  # k-means counted in every row that uses it
    built_mib = _memory_mib()
    exact = _tune_exact_recall(work, cat, tune)
    t = time.perf_counter()
    index = ShardedIndex.load(paths, nprobe=nprobe, use_gpu=False, storage=storage)
    tuned = tune_search(index, tune[0], tune[1], exact_recall=exact, target=target)
    tuning = time.perf_counter() - t
    del index
    served = _serve(paths, storage, tuned.nprobe, tuned.k_factor, real, folder, python)
    ivf = faiss.extract_index_ivf(faiss.read_index(str(paths[0]), faiss.IO_FLAG_MMAP))
    return {"index_spec": spec + (f" nprobe={tuned.nprobe}" if tuned.nprobe else "")
            + (f" k_factor={tuned.k_factor}" if tuned.k_factor else ""),
            "storage": storage.value, "shards": len(paths), "shard_size": shard_size,
            "layout": "merged" if merged else "shards",
            "built_shards": math.ceil(cat.n / shard_size),
            "recall_at_10": served["recall_at_10"], "qps": served["qps"],
            "disk_bytes": _folder_bytes(paths),
            "resident_bytes": int(served["memory_mib"]["after_search"]["VmRSS"] * MIB),
            "index_resident_bytes": int((served["memory_mib"]["after_search"]["VmRSS"]
                                         - served["memory_mib"]["after_import"]["VmRSS"]) * MIB),
            "build_seconds": round(build + tuning, 1), "build_only_seconds": round(build, 1),
            "tune_seconds": round(tuning, 1), "kmeans_seconds": round(kmeans, 1),
            "kmeans_shared_with_an_earlier_row": shared, "probed_share": round(tuned.nprobe / ivf.nlist, 4),
            "builder_memory_mib": built_mib, "serving": served, "reason": reason,
            "tuning": tuned.as_dict(), "folder": str(folder)}


def _serve(paths: list[Path], storage: Storage, nprobe: int | None, k_factor: int | None,
           real: RealSet, folder: Path, python: str) -> dict:
    """Open the shard files in a fresh process and answer every query there (`--serve`)."""
    np.save(folder / "queries.npy", real.queries)
    np.save(folder / "truth.npy", real.truth)
    (folder / "serve.json").write_text(json.dumps(
        {"paths": [str(p) for p in paths], "storage": storage.value, "nprobe": nprobe,
         "k_factor": k_factor, "threads": faiss.omp_get_max_threads()}))
    rc, wall, peak, tail = run_measured([python, "-c", _SERVE_SCRIPT, str(folder)])
    if rc != 0:
        raise RuntimeError(f"serving {folder} failed: {tail}")
    out = json.loads((folder / "served.json").read_text())
    out["peak_rss_mib_tree"] = round(peak, 1)
    return out


_SERVE_SCRIPT = """
import json, os, sys, time
from pathlib import Path
import faiss, numpy as np
from copytrace.indexing import ShardedIndex
def memory():
    out = {}
    for line in open(f"/proc/{os.getpid()}/status"):
        key = line.split(":")[0]
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = round(int(line.split()[1]) / 1024, 1)
    return out
folder = Path(sys.argv[1])
args = json.loads((folder / "serve.json").read_text())
faiss.omp_set_num_threads(args["threads"])
mem = {"after_import": memory()}
index = ShardedIndex.load([Path(p) for p in args["paths"]], nprobe=args["nprobe"],
                          k_factor=args["k_factor"], use_gpu=False, storage=args["storage"])
mem["after_open"] = memory()
queries, truth = np.load(folder / "queries.npy"), np.load(folder / "truth.npy")
ladder = {}
nlist = faiss.extract_index_ivf(index.shards[0]).nlist
for probe in sorted({max(1, nlist // 256), max(1, nlist // 64), max(1, nlist // 16), args["nprobe"]}):
    index.set_search_params(nprobe=probe)
    index.search(queries[:1], 10)  # the same query probes a superset of the lists each step
    ladder[probe] = memory()["RssFile"]
index.set_search_params(nprobe=args["nprobe"])
mem["after_first_query"] = memory()
index.search(queries[:16], 10)
t = time.perf_counter()
_, ids = index.search(queries, 10)
qps = len(queries) / (time.perf_counter() - t)
mem["after_search"] = memory()
recall = float((ids == truth[:, None]).any(axis=1).mean())
(folder / "served.json").write_text(json.dumps(
    {"recall_at_10": round(recall, 4), "qps": round(qps, 1), "queries": len(queries),
     "memory_mib": mem, "nlist": nlist, "rss_file_mib_after_one_query_by_nprobe": ladder}))
"""
# The serving process imports only faiss, numpy and copytrace.indexing (no torch), so its
# resident memory is what a query process needs for the index, plus the interpreter. One query
# is first searched at growing nprobe: the file pages it maps (RssFile) are the lists it read,
# rounded up to pages (and the kernel's fault-around), so they follow the probed share.


def _selfjoin_block(paths: list[str], nprobe: int, refs: np.ndarray, planted: np.ndarray, n: int,
                    spill: Path | None, rows: np.ndarray, k: int, threshold: float) -> dict:
    """Ray task body: search the catalog vectors at sorted positions `rows` against the on-disk
    index; the pairs (low id, high id) scoring >= `threshold`, found from this side, and every
    top-k pair of the real rows among them (the planted pairs' recall at any score)."""
    faiss.omp_set_num_threads(1)
    index = ShardedIndex.load([Path(p) for p in paths], nprobe=nprobe, use_gpu=False,
                              storage=Storage.ONDISK)
    t = time.perf_counter()
    cat = SyntheticCatalog(refs, n, spill=spill, planted=planted)
    contiguous = rows[-1] - rows[0] + 1 == len(rows)
    vectors = cat.read_range(int(rows[0]), int(rows[-1]) + 1) if contiguous else cat.read_rows(rows)
    scores, ids = index.search(vectors, k)
    real = rows < len(cat.real)
    return {"pairs": _pairs(rows, scores, ids, threshold),
            "real_top_k": _pairs(rows[real], scores[real], ids[real], -np.inf),
            "queries": len(rows), "seconds": round(time.perf_counter() - t, 2),
            "pid": os.getpid(), "memory_mib": _memory_mib()}


def _pairs(rows: np.ndarray, scores: np.ndarray, ids: np.ndarray, threshold: float) -> np.ndarray:
    """Unordered pairs (low, high) of the neighbours scoring >= threshold, never a row itself."""
    keep = (ids >= 0) & (ids != rows[:, None]) & (scores >= threshold)
    r = np.broadcast_to(rows[:, None], ids.shape)[keep]
    return np.stack([np.minimum(r, ids[keep]), np.maximum(r, ids[keep])], axis=1).astype(np.int64)


def _unique_pairs(parts: list[np.ndarray]) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.unique(np.concatenate(parts + [np.zeros((0, 2),
                                                                                    np.int64)]),
                                                   axis=0)}


def _planted_catalog(real: RealSet, n: int, work: Path) -> SyntheticCatalog:
    """The catalog with the copy queries planted as rows after the real references: each copy
    and its original are a real near-duplicate pair the self-join must find. The distractors
    are the unplanted catalog's (its spill file, when written, is read as is)."""
    spill = _spill_path(work, n)
    return SyntheticCatalog(real.refs, n, spill=spill if spill.exists() else None,
                            planted=real.queries)


def _planted_index(cat: SyntheticCatalog, built: dict, work: Path) -> tuple[list[Path], float]:
    """(paths, build seconds): the ondisk row's spec (same cached k-means, same shard size)
    built as one merged on-disk index over the planted catalog; kept between runs."""
    folder = work / f"selfjoin-{cat.n}"
    done = folder / "built.json"
    if done.exists():
        meta = json.loads(done.read_text())
        return [Path(p) for p in meta["paths"]], meta["seconds"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = built["index_spec"].split(" ")[0]
    quantizer, _, _ = _coarse_quantizer(cat, spec, work)
    t = time.perf_counter()
    paths = build_shards(spec, cat.dims, cat.n, cat.read_range, lambda: cat.sample(TRAIN_POINTS),
                         folder, shard_size=built["shard_size"], quantizer=quantizer,
                         storage=Storage.ONDISK)
    seconds = round(time.perf_counter() - t, 1)
    # the builder's own memory (VmHWM includes the list pages the merge mapped) and the bytes
    # on disk, kept with the index: a later run that reuses it reports the build as measured
    done.write_text(json.dumps({"paths": [str(p) for p in paths], "seconds": seconds,
                                "builder_memory_mib": _memory_mib(),
                                "disk_bytes": _folder_bytes(paths)}))
    return paths, seconds


def _real_pair_truth(cat: SyntheticCatalog, real: RealSet, threshold: float
                     ) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(every pair of real rows with exact cosine >= threshold, every planted copy-original pair)."""
    rows = cat.real
    sims = np.triu(rows @ rows.T, 1)
    above = {(int(a), int(b)) for a, b in zip(*np.nonzero(sims >= threshold), strict=True)}
    r = len(real.refs)
    planted = {(int(t), r + i) for i, t in enumerate(real.truth)}
    return above, planted


def _selfjoin_sweep(paths: list[Path], cat: SyntheticCatalog, real: RealSet, nprobes: list[int],
                    k: int, threshold: float) -> list[dict]:
    """Recall of the real near-duplicate pairs at each nprobe: the real rows (references and
    planted copies) searched against the whole index, a pair found from either side."""
    above, planted = _real_pair_truth(cat, real, threshold)
    rows = np.arange(len(cat.real))
    index = ShardedIndex.load(paths, nprobe=nprobes[0], use_gpu=False, storage=Storage.ONDISK)
    out = []
    for nprobe in nprobes:
        index.set_search_params(nprobe=nprobe)
        index.search(cat.real[:16], k)
        t = time.perf_counter()
        scores, ids = index.search(cat.real, k)
        seconds = time.perf_counter() - t
        found = _unique_pairs([_pairs(rows, scores, ids, threshold)])
        anyscore = _unique_pairs([_pairs(rows, scores, ids, -np.inf)])
        out.append({"nprobe": nprobe, "queries": len(rows), "qps": round(len(rows) / seconds, 1),
                     "ms_per_query": round(1000 * seconds / len(rows), 3),
                     "pairs_at_or_above": len(above),
                     "recall_pairs_at_or_above": round(len(found & above) / max(1, len(above)), 4),
                     "planted_pairs": len(planted),
                     "recall_planted_at_or_above": round(
                         len(found & planted & above) / max(1, len(planted & above)), 4),
                     "recall_planted_any_score": round(len(anyscore & planted) / len(planted), 4)})
        log.info("selfjoin sweep %s", out[-1])
    return out


def _chosen_nprobe(sweep: list[dict], tuned: int, slack: float) -> int:
    """The smallest nprobe whose recall of the real pairs >= threshold is within `slack` of the
    query-tuned nprobe's."""
    best = next(s for s in sweep if s["nprobe"] == tuned)["recall_pairs_at_or_above"]
    return min(s["nprobe"] for s in sweep if s["recall_pairs_at_or_above"] >= best - slack)


def _selfjoin_rows(cat: SyntheticCatalog, args: argparse.Namespace) -> list[np.ndarray]:
    """The job's query rows, in blocks. Default: `--selfjoin-queries` rows in contiguous blocks
    spread over the catalog. With `--selfjoin-sample N`: every real row (both ends of every
    truth pair) and N rows drawn uniformly without replacement from the whole catalog (seed
    `SAMPLE_SEED`), sorted, so a job too long to run whole is measured on an honest sample."""
    if args.selfjoin_sample is not None:
        drawn = np.random.default_rng(SAMPLE_SEED).choice(cat.n, min(args.selfjoin_sample, cat.n),
                                                          replace=False)
        rows = np.union1d(np.arange(len(cat.real)), drawn)
        return np.array_split(rows, max(1, math.ceil(len(rows) / args.selfjoin_block)))
    total = min(cat.n, args.selfjoin_queries)
    step = max(1, cat.n // max(1, total // args.selfjoin_block))  # blocks spread over the catalog
    starts = list(range(0, cat.n, step))[: max(1, total // args.selfjoin_block)]
    return [np.arange(a, min(cat.n, a + args.selfjoin_block)) for a in starts]


def _selfjoin_row(cat: SyntheticCatalog, real: RealSet, args: argparse.Namespace) -> dict:
    import ray

    ondisk = args.cache / f"row-ondisk-{cat.n}.json"
    if not ondisk.exists():
        raise FileNotFoundError(f"{ondisk} not found: run the ondisk row first")
    built = json.loads(ondisk.read_text())
    tuned = built["tuning"]["nprobe"]
    cat = _planted_catalog(real, cat.n, args.cache)
    paths, build_seconds = _planted_index(cat, built, args.cache)
    # the query-tuned nprobe is swept only to choose against (at 10M it is minutes per sweep)
    nprobes = sorted({int(p) for p in args.selfjoin_sweep.split(",") if p}
                     | (set() if args.selfjoin_nprobe else {tuned}))
    sweep = _selfjoin_sweep(paths, cat, real, nprobes, 10, args.selfjoin_threshold)
    nprobe = args.selfjoin_nprobe or _chosen_nprobe(sweep, tuned, args.selfjoin_slack)
    blocks = _selfjoin_rows(cat, args)
    # a Ray of its own ("local"): on a shared machine another user's cluster may be running
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=args.selfjoin_workers, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    task = ray.remote(num_cpus=1, max_retries=3)(_selfjoin_block)
    refs, copies = ray.put(real.refs), ray.put(real.queries)  # once, not once per task
    t = time.perf_counter()
    done = ray.get([task.remote([str(p) for p in paths], nprobe, refs, copies, cat.n,
                                cat.spill, rows, 10, args.selfjoin_threshold) for rows in blocks])
    wall = time.perf_counter() - t
    ray.shutdown()
    searched = sum(d["queries"] for d in done)
    pairs = _unique_pairs([d["pairs"] for d in done])
    top_k = _unique_pairs([d["real_top_k"] for d in done])
    above, planted = _real_pair_truth(cat, real, args.selfjoin_threshold)
    real_searched = sum(int((d_rows < len(cat.real)).sum()) for d_rows in blocks)
    workers: dict[int, float] = {}
    memory: dict[int, dict] = {}  # each worker's memory after its last task: VmHWM counts the
    for d in done:                # list pages it mapped (RssFile), page cache, not RssAnon
        workers[d["pid"]] = max(workers.get(d["pid"], 0), d["memory_mib"]["VmHWM"])
        if d["memory_mib"]["VmHWM"] >= memory.get(d["pid"], {}).get("VmHWM", 0):
            memory[d["pid"]] = d["memory_mib"]
    return {"index_spec": f"self-join k=10 over {built['index_spec'].split(' ')[0]} (on disk, "
                          f"merged) at nprobe {nprobe} (query-tuned: {tuned})",
            "nprobe": nprobe, "query_tuned_nprobe": tuned, "sweep": sweep,
            "planted_copies": len(real.queries), "planted_index_build_seconds": build_seconds,
            "queries_searched": searched, "of_catalog": cat.n, "blocks": len(done),
            "block": args.selfjoin_block, "ray_workers": args.selfjoin_workers,
            "pairs_at_or_above": args.selfjoin_threshold, "pairs": len(pairs),
            "real_pairs_found": len(pairs & above), "real_pairs": len(above),
            "planted_pairs_found": len(pairs & planted),
            "sample": args.selfjoin_sample, "sample_seed": SAMPLE_SEED if args.selfjoin_sample
            is not None else None, "real_rows_searched": real_searched,
            "recall_pairs_at_or_above": round(len(pairs & above) / max(1, len(above)), 4),
            "recall_planted_any_score": (round(len(top_k & planted) / len(planted), 4)
                                         if real_searched == len(cat.real) else None),
            "wall_seconds_job": round(wall, 1), "queries_per_second": round(searched / wall, 1),
            "peak_rss_mib_per_worker": sorted(workers.values()),
            "worker_memory_mib_after_last_task": [memory[p] for p in sorted(memory)],
            "hours_for_whole_catalog_at_this_rate": round(cat.n / (searched / wall) / 3600, 2),
            "planted_index": _planted_meta(paths)}


def _planted_meta(paths: list[Path]) -> dict:
    """What the planted index's build recorded (seconds, builder memory, bytes on disk)."""
    done = paths[0].parent / "built.json"
    return json.loads(done.read_text()) if done.exists() else {}


def _choice_row(name: str, cat: SyntheticCatalog, real: RealSet,
                tune: tuple[np.ndarray, np.ndarray], budget: int, args: argparse.Namespace,
                merge: bool = True) -> dict:
    choice = choose_index(cat.n, cat.dims, budget)
    shard_size = min(args.shard_size, choice.max_shard_size or args.shard_size)
    row = _built_row(name, cat, real, tune, spec=choice.spec, storage=choice.storage,
                     nprobe=choice.nprobe, shard_size=shard_size, target=args.target_recall,
                     work=args.cache, reason=choice.reason, python=sys.executable, merge=merge)
    row["memory_budget_bytes"] = budget
    return row


def run_row(name: str, n: int, args: argparse.Namespace) -> dict:
    """One row, in this process (the parent measures it from outside)."""
    real = load_real_set(args.data, args.cache, model=args.model)
    tune = load_tuning_set(args.data, args.cache, real, model=args.model)
    cat = _catalog(real, n, args.cache if args.spill else None)
    flat = n * cat.dims * 4
    if name == "exact":
        row = _exact_row(cat, real, tune)
        _exact_path(args.cache, n).write_text(json.dumps(row))
        return row
    if name == "copytrace":
        budget = parse_size(args.memory_budget) if args.memory_budget else flat // 4
        return _choice_row(name, cat, real, tune, budget, args)
    if name in ("ondisk", "ondisk-shards"):
        budget = parse_size(args.ondisk_budget) if args.ondisk_budget else flat // 16
        return _choice_row(name, cat, real, tune, budget, args, merge=name == "ondisk")
    if name == "selfjoin":
        return _selfjoin_row(cat, real, args)
    if name == "peer":
        nlist = nlist_for(n)
        spec = args.peer_spec or f"OPQ32_128,IVF{nlist}_HNSW32,PQ32"
        return _built_row(name, cat, real, tune, spec=spec, storage=Storage.MEMORY,
                          nprobe=max(8, nlist // 32), shard_size=args.shard_size,
                          target=args.target_recall, work=args.cache, python=sys.executable,
                          reason="FAISS's guidance at this size (OPQ + IVF/HNSW + PQ)")
    if name == "autofaiss":
        budget = parse_size(args.memory_budget) if args.memory_budget else flat // 4
        theirs, extra = _autofaiss(_write_parts(cat, args.cache), n, real, budget, args.cache,
                                   args.autofaiss_python, args.autofaiss_timeout)
        return {**(theirs or {}), "details": extra}
    raise ValueError(f"unknown row '{name}': use {', '.join(ROWS)}")


def measured_row(name: str, n: int, args: argparse.Namespace, argv: list[str]) -> dict:
    """Run one row in a child process; add its wall time and its tree's peak RSS."""
    out = args.cache / f"row-{name}-{n}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "copytrace.benchmarks.scale", *argv, "--row", name,
           "--n", str(n), "--row-json", str(out)]
    rc, wall, peak, tail = run_measured(cmd, timeout=args.row_timeout)
    row = json.loads(out.read_text()) if rc == 0 and out.exists() else {"error": tail.strip()[-500:]}
    row.update(name=name, n=n, wall_seconds=round(wall, 1), peak_rss_mib_tree=round(peak, 1),
               exit_code=rc)
    log.info("row %s n=%d: %s", name, n, {k: row.get(k) for k in
                                          ("index_spec", "recall_at_10", "qps", "wall_seconds")})
    return row


def _autofaiss(emb_dir: Path, n: int, real: RealSet, budget: int, work: Path, python: Path,
               timeout: float | None = None) -> tuple[dict | None, dict]:
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
    return ({"index_spec": spec, "recall_at_10": round(recall_at_k(ids, real.truth), 4),
             "qps": round(qps, 1), "disk_bytes": size, "build_seconds": round(build, 2)},
            {"index_infos": {k: infos[k] for k in ("index_key", "index_param", "avg_search_speed_ms",
                                                    "size in bytes") if k in infos},
             "nb_cores": cores, "current_memory_available": AUTOFAISS_MEMORY,
             "log": str(log_path), "phases": _autofaiss_phases(log_path)})


def _autofaiss_phases(log_path: Path) -> dict[str, float]:
    """Seconds per phase from autofaiss's own timer lines ('>>> Finished "X" in S secs')."""
    found = re.findall(r'Finished "(.+?)" in ([0-9.]+) secs', log_path.read_text(errors="replace"))
    return {name.strip("-> ").strip(): round(float(sec), 1) for name, sec in found}


def _write_parts(cat: SyntheticCatalog, work: Path) -> Path:
    """The vectors as autofaiss reads them (a folder of .npy parts), written block by block."""
    folder = work / f"autofaiss-{cat.n}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "emb").mkdir(parents=True)
    out = np.lib.format.open_memmap(folder / "emb" / "part-0.npy", mode="w+", dtype=np.float32,
                                    shape=(cat.n, cat.dims))
    for a in range(0, cat.n, BLOCK):
        out[a : min(cat.n, a + BLOCK)] = cat.read_range(a, a + BLOCK)
    out.flush()
    del out
    return folder / "emb"


def projection(rows: list[dict], name: str,
               sizes: tuple[int, ...] = (100_000_000, 1_000_000_000), *,
               machine_ram: int = 64 * 2**30, shard_ram: int = 16 * 2**30,
               ondisk_shard: int = 2_000_000) -> list[dict]:
    """Extrapolate row `name` from the two largest measured sizes: disk bytes and build time grow
    linearly with n (slopes between those sizes), q/s like 1/sqrt(n) at the same probed share
    (lists of n/nlist vectors, nlist ~ 4 sqrt(n)). RAM: in-memory indexes hold their bytes; an
    on-disk one holds one coarse quantizer per shard (`ondisk_shard` vectors each, a ~1.1 GB
    build budget at 256-d), scaled from what the serving process held once the index was open
    (above the bare interpreter) at the largest measured size, or one quantizer in all for a
    merged row (`layout`); the list pages a query maps are page cache the kernel can drop, not
    counted: `list_bytes_read_per_query` is what a query at the same probed share reads."""
    have = sorted((r for r in rows if r.get("name") == name and "recall_at_10" in r),
                  key=lambda r: r["n"])
    if not have:
        return []
    b = have[-1]
    a = have[-2] if len(have) > 1 else None
    def slope(key: str) -> float:
        if a is None or b["n"] == a["n"]:
            return b[key] / b["n"]
        return (b[key] - a[key]) / (b["n"] - a["n"])
    disk, build = slope("disk_bytes"), slope("build_seconds")
    out = []
    for n in sizes:
        on_disk = disk * n
        if b.get("storage") == "ondisk":
            mem = b["serving"]["memory_mib"]  # opened, before any list is paged in
            opened = (mem["after_open"]["VmRSS"] - mem["after_import"]["VmRSS"]) * MIB
            # one quantizer when merged; else one copy per shard
            copies = (1, 1) if b.get("layout") == "merged" else (math.ceil(n / ondisk_shard),
                                                                  b["shards"])
            resident = opened * copies[0] * nlist_for(n) / (copies[1] * nlist_for(b["n"]))
        else:
            resident = on_disk
        out.append({
            "row": name, "n": n, "from_n": [r["n"] for r in have[-2:]],
            "disk_bytes": int(on_disk), "resident_bytes": int(resident),
            "shards": (1 if b.get("layout") == "merged"
                       else math.ceil(n / ondisk_shard) if b.get("storage") == "ondisk"
                       else max(1, math.ceil(on_disk / shard_ram))),
            "list_bytes_read_per_query": (int(on_disk * b["probed_share"])
                                          if b.get("storage") == "ondisk" else 0),
            "machines": max(1, math.ceil(resident * 1.3 / machine_ram)),
            "build_seconds_one_machine": round(build * n),
            "qps_one_machine": round(b["qps"] / math.sqrt(n / b["n"]), 2),
            "raw_vectors_bytes": n * 256 * 4,
        })
    return out


def _table(rows: list[dict]) -> str:
    head = (f"{'n':>9} {'row':<13} {'spec':<52} {'R@10':>6} {'/exact':>6} {'q/s':>8} "
            f"{'disk MiB':>9} {'RSS open/1q/all':>16} {'peak RSS':>9} {'build s':>8}")
    lines = [head]
    exact = {r["n"]: r["recall_at_10"] for r in rows if r.get("name") == "exact" and "recall_at_10" in r}
    for r in rows:
        if r.get("name") == "selfjoin" and "pairs" in r:
            sampled = (f" (all {r['real_rows_searched']:,} real rows + a seeded uniform sample "
                       f"of {r['sample']:,})" if r.get("sample") is not None else "")
            lines.append(f"{r['n']:>9} selfjoin  {r['queries_searched']:,} of {r['n']:,} searched"
                         f"{sampled} as a Ray job at nprobe {r.get('nprobe')}: "
                         f"{r['wall_seconds_job']} s, {r['queries_per_second']} q/s, "
                         f"{r['pairs']} pairs >= {r['pairs_at_or_above']}, real pairs "
                         f"{r['real_pairs_found']}/{r['real_pairs']}, planted in top 10 "
                         f"{r.get('recall_planted_any_score')}, peak RSS per worker "
                         f"{r['peak_rss_mib_per_worker']} MiB, tree {r['peak_rss_mib_tree']:.0f} "
                         f"MiB; whole catalog projected {r['hours_for_whole_catalog_at_this_rate']}"
                         f" h at this rate")
            continue
        if "recall_at_10" not in r:
            lines.append(f"{r['n']:>9} {r['name']:<13} (not measured: {r.get('error') or r.get('details')})")
            continue
        share = r["recall_at_10"] / exact[r["n"]] if exact.get(r["n"]) else float("nan")
        mem = r.get("serving", {}).get("memory_mib", {})
        opened = mem.get("after_open", {}).get("VmRSS")
        first = mem.get("after_first_query", {}).get("VmRSS")
        last = mem.get("after_search", {}).get("VmRSS")
        serve = f"{opened:.0f}/{first:.0f}/{last:.0f}" if opened and first and last else "-"
        lines.append(f"{r['n']:>9} {r['name']:<13} {r['index_spec'][:52]:<52} "
                     f"{r['recall_at_10']:>6.3f} {share:>6.3f} {r['qps']:>8.1f} "
                     f"{r['disk_bytes'] / MIB:>9.1f} {serve:>16} "
                     f"{r['peak_rss_mib_tree']:>9.0f} {r['build_seconds']:>8.0f}")
    return "\n".join(lines)


def _quantile_table(q: dict) -> str:
    keys = list(q["real_non_matching"])
    lines = [f"{'query-to-reference cosine':<26}" + "".join(f"{k:>12}" for k in keys)]
    for name, row in q.items():
        lines.append(f"{name:<26}" + "".join(f"{row[k]:>12.4f}" for k in keys))
    return "\n".join(lines)


def _summary(rows: list[dict], quantiles: dict, real: RealSet,
             tune: tuple[np.ndarray, np.ndarray], args: argparse.Namespace) -> dict:
    out = {"rows": rows, "similarity_quantiles": quantiles, "real_references": len(real.refs),
           "queries": len(real.queries), "tuning_queries": len(tune[0]),
           "faiss_threads": args.threads, "target_recall": args.target_recall}
    out["projection"] = [p for name in ("copytrace", "ondisk", "ondisk-shards")
                         for p in projection(rows, name)]
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--sweep", default=None, help="sizes, e.g. 100000,1000000")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--memory-budget", default=None,
                        help="copytrace row, e.g. 256MB; default: a quarter of Flat's bytes")
    parser.add_argument("--ondisk-budget", default=None,
                        help="ondisk row; default: 1/16 of Flat's bytes (lists go to disk)")
    parser.add_argument("--shard-size", type=int, default=2_000_000)
    parser.add_argument("--peer-spec", default=None,
                        help="peer row's FAISS spec; default OPQ32_128,IVF{nlist}_HNSW32,PQ32")
    parser.add_argument("--target-recall", type=float, default=0.97)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=Path("out/scale-cache"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--autofaiss-python", type=Path, default=AUTOFAISS_PYTHON)
    parser.add_argument("--autofaiss-timeout", type=float, default=3600)
    parser.add_argument("--row-timeout", type=float, default=4 * 3600)
    parser.add_argument("--indexes", default="exact,copytrace,ondisk",
                        help=f"rows, of {','.join(ROWS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="FAISS threads for every index (autofaiss too); 1 keeps a shared "
                             "machine's timings comparable")
    parser.add_argument("--selfjoin-queries", type=int, default=100_000)
    parser.add_argument("--selfjoin-sample", type=int, default=None,
                        help="search every real row plus this many rows drawn uniformly "
                             "(seeded) from the whole catalog, instead of --selfjoin-queries "
                             "contiguous rows")
    parser.add_argument("--selfjoin-block", type=int, default=10_000)
    parser.add_argument("--selfjoin-workers", type=int, default=2)
    parser.add_argument("--selfjoin-threshold", type=float, default=0.8)
    parser.add_argument("--selfjoin-nprobe", type=int, default=None,
                        help="nprobe of the whole self-join (default: the smallest of "
                             "--selfjoin-sweep within --selfjoin-slack of the query-tuned "
                             "nprobe's recall of the real pairs)")
    parser.add_argument("--selfjoin-sweep", default="1,2,4,8,16,64,256",
                        help="nprobes whose recall of the real pairs is measured (the "
                             "query-tuned nprobe is added unless --selfjoin-nprobe is given)")
    parser.add_argument("--selfjoin-slack", type=float, default=0.01)
    parser.add_argument("--spill", action=argparse.BooleanOptionalAction, default=True,
                        help="write the distractors once to out/scale-cache (n x dims x 4 bytes "
                             "of disk) and read them back, instead of generating them per row")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row-json", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    faiss.omp_set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.row:
        row = run_row(args.row, args.n, args)
        args.row_json.write_text(json.dumps(row, indent=2, default=str) + "\n")
        return
    real = load_real_set(args.data, args.cache, model=args.model)
    tune = load_tuning_set(args.data, args.cache, real, model=args.model)
    quantiles = similarity_quantiles(real, _catalog(real, 2 * len(real.refs)).read_range(
        len(real.refs), 2 * len(real.refs)))
    passed = [a for a in sys.argv[1:]]
    for flag in ("--n", "--sweep", "--json", "--indexes"):  # the parent's own choices
        while flag in passed:
            i = passed.index(flag)
            del passed[i : i + 2]
    sizes = [int(s) for s in args.sweep.split(",")] if args.sweep else [args.n]
    rows: list[dict] = []
    generated: dict[int, float] = {}
    for n in sizes:
        spill = _spill_path(args.cache, n)
        if args.spill and not spill.exists():
            generated[n] = round(_catalog(real, n).write_spill(spill), 1)
            log.info("distractors for n=%d written to %s in %.0f s", n, spill, generated[n])
        for name in args.indexes.split(","):
            rows.append(measured_row(name, n, args, passed))
            print(_table(rows[-1:]), flush=True)
            out = _summary(rows, quantiles, real, tune, args)
            out["distractors_written_seconds"] = generated
            if args.json:  # after every row: a long run leaves what it measured so far
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(_quantile_table(quantiles))
    print(_table(rows))
    for p in out["projection"]:
        print(f"projected {p['row']} n={p['n']:.0e} (from n={p['from_n']}): "
              f"{p['disk_bytes'] / 2**30:.1f} GiB on disk, {p['resident_bytes'] / 2**30:.2f} GiB "
              f"resident, {p['shards']} shards, {p['machines']} machines of 64 GiB, build "
              f"{p['build_seconds_one_machine'] / 3600:.1f} h on one such machine, "
              f"{p['qps_one_machine']:.1f} q/s per replica")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
