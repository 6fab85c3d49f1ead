"""Matching ablation on the dev benchmark: what each stage of `copytrace query` adds, and costs.

    python -m copytrace.benchmarks.matching_bench --data ../shared/data --work /tmp/ct-match
    python -m copytrace.benchmarks.matching_bench --fit-calibration   # refit the fused score

Stages (cumulative): global descriptor only; + background score normalization; + query
expansion (crops of the query); + local verification with the calibrated fused score (the
default of `copytrace query`). PDQ is the peer baseline. Prints JSON, then a table.

The evaluation benchmark is the lead's dev benchmark (last 300 ImageNet samples + all UKBench
groups as hard negatives). `--fit-calibration` fits the fused score on a separate calibration
benchmark (first 300 ImageNet samples, seed 1, even UKBench groups only), writes it to
`WORK/calibration.json` (copy it into an index folder to make `copytrace query` use it) and
evaluates with it; odd UKBench groups are never seen by the fit, and the hard-negative rate is
also reported on them alone.

Query embeddings and verification results are cached in WORK (keyed by settings), so a rerun
re-scores without recomputing; their timings are those of the run that computed them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import pickle
import time
from pathlib import Path

import numpy as np

from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.disc_eval import metrics_table
from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.make_disc import hard_negative_sources, make_disc
from copytrace.benchmarks.metrics import Metrics, PredictedMatch, evaluate
from copytrace.benchmarks.pdq import pdq_predictions
from copytrace.descriptors.model import load_descriptor
from copytrace.indexing.sources import list_sources
from copytrace.indexing.store import CopyIndex
from copytrace.matching.calibrate import (
    Calibration,
    fit_calibration,
    global_score_only,
    load_calibration,
)
from copytrace.matching.expand import ExpandConfig
from copytrace.matching.normalize import load_background
from copytrace.matching.rank import MatchConfig, QueryViews, candidates, finalize
from copytrace.matching.verify import VerifyConfig, prepare, verify_prepared
from copytrace.pipelines.build import build_index
from copytrace.pipelines.query import (
    _embed_views,
    _embed_whole,
    _verify,
    index_model,
    reference_uris,
)

log = logging.getLogger(__name__)

THRESHOLD = 0.5
VERIFY_CACHE_VERSION = 2  # bump when `Verification` gains fields (cached pickles go stale)


def ensure_calibration_benchmark(data: Path, work: Path) -> Path:
    """First 300 ImageNet samples (seed 1) + the even UKBench groups as hard negatives."""
    bench = work / "disc-calib"
    if (bench / "gt.csv").exists():
        return bench
    groups = work / "ukbench-even.csv"
    with open(data / "ukbench" / "groups.csv", newline="") as fh, open(groups, "w") as out:
        writer = csv.writer(out)
        writer.writerow(["file", "group"])
        for row in csv.DictReader(fh):
            if int(row["group"]) % 2 == 0:
                writer.writerow([str(data / "ukbench" / row["file"]), row["group"]])
    make_disc(data / "photos" / "imagenet-sample", bench, seed=1, skip=0, limit=300,
              hard_negatives=groups)
    return bench


def ensure_index(references: Path, index: Path, model: str) -> Path:
    if not (index / "manifest.json").exists():
        build_index(references, index, model=model, use_ray=False, show_progress=False)
    return index


def _hard_negatives(bench: Path, data: Path) -> dict[str, int]:
    """Hard-negative query id -> its UKBench group."""
    group_of = {}
    with open(data / "ukbench" / "groups.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            group_of[row["file"]] = int(row["group"])
    return {qid: group_of[src.name] for qid, src in hard_negative_sources(bench).items()}


def _embeddings(bench: Path, index: Path, work: Path, expand: ExpandConfig
                ) -> tuple[dict, dict, dict, float, float]:
    """Whole-image and view vectors of every query (cached in `work`), with their timings."""
    key = hashlib.sha256(repr(expand).encode()).hexdigest()[:10]
    cache = work / f"views-{bench.name}-{key}.npz"
    copy_index = CopyIndex.open(index)
    descriptor = index_model(copy_index)
    sources = list_sources(bench / "queries")
    if cache.exists():
        z = np.load(cache, allow_pickle=True)
        vectors, views = z["vectors"].item(), z["views"].item()
        return vectors, views, {}, float(z["t_whole"]), float(z["t_views"])
    for other in sorted(work.glob(f"views-{bench.name}*.npz")):
        # A cache made with more views: the views this config makes are among them, with the
        # same vectors (views are deterministic). Used to refit without re-embedding; its
        # timings belong to the other config, so they are reported as unknown (nan).
        z = np.load(other, allow_pickle=True)
        vectors, views = _subset(z["vectors"].item(), z["views"].item(), expand)
        if vectors is not None:
            log.warning("using views from %s (timings unknown)", other.name)
            return vectors, views, {}, float("nan"), float("nan")
    t = time.perf_counter()
    _embed_whole(sources, copy_index, descriptor, model=None, batch_size=32, chunk_size=512,
                 device="cpu", use_ray=False, ray_address=None, show_progress=False)
    t_whole = time.perf_counter() - t
    t = time.perf_counter()
    vectors, views, errors = _embed_views(sources, descriptor, expand, batch_size=32, device="cpu",
                                          show_progress=False)
    t_views = time.perf_counter() - t
    np.savez(cache, vectors=np.array(vectors, dtype=object), views=np.array(views, dtype=object),
             t_whole=t_whole, t_views=t_views)
    return vectors, views, errors, t_whole, t_views


def _subset(vectors: dict, views: dict, expand: ExpandConfig) -> tuple[dict | None, dict]:
    """Keep the views `expand` makes, when the cached views are a superset of them."""
    quadrants = {"top-left", "top-right", "bottom-left", "bottom-right"}
    wanted = {"full", "trimmed", *(f"centre{f:g}" for f in expand.centre_crops)}
    if expand.quadrants:
        wanted |= quadrants

    def keep(name: str) -> bool:
        return name in wanted or (name.startswith("region")
                                  and int(name[6:]) < expand.pasted_regions)

    made = {n for v in views.values() for n in v.names}
    if not made >= wanted - quadrants - {"trimmed"} or expand.quadrant_side != 0.6:
        return None, {}
    out_v, out_q = {}, {}
    for q, v in views.items():
        sel = [i for i, n in enumerate(v.names) if keep(n)]
        out_v[q] = vectors[q][sel]
        out_q[q] = QueryViews([v.names[i] for i in sel], [v.boxes[i] for i in sel])
    return out_v, out_q


def _predictions(ranked, ids, score) -> list[PredictedMatch]:
    return [PredictedMatch(q, c.reference_id, float(score(c))) for q, row in zip(ids, ranked,
                                                                                strict=True)
            for c in row]


def _hard_rate(preds: list[PredictedMatch], hard: dict[str, int], groups: str = "all") -> float:
    keep = {q for q, g in hard.items() if groups == "all" or (g % 2 == 1) == (groups == "odd")}
    top: dict[str, float] = {}
    for p in preds:
        if p.query in keep:
            top[p.query] = max(top.get(p.query, -1.0), p.score)
    return sum(s >= THRESHOLD for s in top.values()) / max(1, len(keep))


def run(bench: Path, index: Path, work: Path, data: Path, *, k: int = 10,
        calibration: Calibration | None = None, limit: int | None = None,
        ray_verify: bool = True) -> dict:
    """Every stage on one benchmark; returns predictions per stage plus timings."""
    expand = ExpandConfig()
    vectors, views, _, t_whole, t_views = _embeddings(bench, index, work, expand)
    copy_index = CopyIndex.open(index)
    calibration = calibration or load_calibration(index)
    gt, queries = read_ground_truth(bench / "gt.csv")
    ids = sorted(q for q in queries if q in vectors)[:limit]
    n = len(ids)
    full_only = [QueryViews(["full"], [views[q].boxes[0]]) for q in ids]
    full_matrix = np.stack([vectors[q][0] for q in ids])
    all_views = [views[q] for q in ids]
    all_matrix = np.concatenate([vectors[q] for q in ids])
    base = MatchConfig(k=k, search_k=max(20, 2 * k), verify=None)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    ranked_global = candidates(copy_index, full_matrix, full_only, config=base)
    timings["search"] = time.perf_counter() - t
    t = time.perf_counter()
    background = load_background(index)
    ranked_norm = candidates(copy_index, full_matrix, full_only, background=background, config=base)
    timings["normalize"] = time.perf_counter() - t - timings["search"]
    t = time.perf_counter()
    ranked_exp = candidates(copy_index, all_matrix, all_views, background=background, config=base)
    timings["expand_search"] = time.perf_counter() - t

    verify = VerifyConfig(top_k=k)
    vkey = hashlib.sha256(repr((VERIFY_CACHE_VERSION, verify, expand,
                                [[c.reference_id for c in row] for row in
                                                 ranked_exp])).encode()).hexdigest()[:10]
    vcache = work / f"verified-{bench.name}-{vkey}.pkl"
    if vcache.exists():  # same candidates, same settings: reuse (timing from the run that made it)
        verified, timings["verify"] = pickle.loads(vcache.read_bytes())
    else:
        t = time.perf_counter()
        sources = list_sources(bench / "queries")
        by_id = {s.image_id: s for s in sources}
        verified = _verify(copy_index, [by_id[q] for q in ids], ranked_exp, verify,
                           use_ray=ray_verify, ray_address=None)
        timings["verify"] = time.perf_counter() - t
        vcache.write_bytes(pickle.dumps((verified, timings["verify"])))
    pairs = sum(len(v) for v in verified)

    preds = {
        "global": _predictions(ranked_global, ids, lambda c: c.similarity),
        "+normalize": _predictions(ranked_norm, ids,
                                   lambda c: global_score_only(c.global_score,
                                                               calibration=calibration)),
        "+expand": _predictions(ranked_exp, ids,
                                lambda c: global_score_only(c.global_score,
                                                            calibration=calibration)),
    }
    full = []
    for q, cands, ver in zip(ids, ranked_exp, verified, strict=True):
        full.extend(PredictedMatch(q, m.reference_id, m.score)
                    for m in finalize(cands, ver, calibration=calibration))
    preds["+verify (default)"] = full
    return {"ids": ids, "n": n, "preds": preds, "gt": [g for g in gt if g.query in set(ids)],
            "ranked": ranked_exp, "verified": verified, "pairs": pairs,
            "timings": {**timings, "embed_whole": t_whole * n / len(vectors),
                        "embed_views": t_views * n / len(vectors)},
            "views_per_query": float(np.mean([len(views[q].names) for q in ids]))}


def pair_cost(bench: Path, index: Path, ranked, ids, *, queries: int = 20, k: int = 10) -> dict:
    """Single-core ms per verified pair, split into reference preparation and matching."""
    copy_index = CopyIndex.open(index)
    config = VerifyConfig(top_k=k)
    uris = reference_uris(copy_index, {c.reference_id for row in ranked[:queries] for c in row})
    from copytrace.matching.verify import load_rgb

    t_prep = t_match = 0.0
    n_prep = n_pairs = 0
    for q, row in zip(ids[:queries], ranked[:queries], strict=True):
        t = time.perf_counter()
        pq = prepare(load_rgb(str(bench / "queries" / f"{q}.jpg")), config=config,
                     with_mirror=True)
        refs = [prepare(load_rgb(uris[c.reference_id]), config=config) for c in row[:k]]
        t_prep += time.perf_counter() - t
        n_prep += 1 + len(refs)
        t = time.perf_counter()
        for r in refs:
            verify_prepared(pq, r, config=config)
        t_match += time.perf_counter() - t
        n_pairs += len(refs)
    return {"prepare_ms_per_image": 1000 * t_prep / max(1, n_prep),
            "match_ms_per_pair": 1000 * t_match / max(1, n_pairs),
            "uncached_ms_per_pair": 1000 * (t_prep + t_match) / max(1, n_pairs)}


def fit(data: Path, work: Path, model: str, k: int, out: Path) -> Calibration:
    bench = ensure_calibration_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-calib", model)
    r = run(bench, index, work, data, k=k)
    gt = {(g.query, g.reference) for g in r["gt"]}
    scores, vers, labels = [], [], []
    for q, cands, ver in zip(r["ids"], r["ranked"], r["verified"], strict=True):
        for c, v in zip(cands, ver, strict=False):
            scores.append(c.global_score)
            vers.append(v)
            labels.append((q, c.reference_id) in gt)
    cal = fit_calibration(np.array(scores), vers, np.array(labels),
                          source=f"fitted on {bench} (imagenet-sample[:300] seed 1 + even UKBench "
                                 f"groups), model {model}")
    cal.save(out)
    return cal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-matching", help="work folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--limit", type=int, help="only the first N queries (quick runs)")
    parser.add_argument("--fit-calibration", action="store_true",
                        help="fit the fused score on the calibration benchmark first and use it")
    parser.add_argument("--no-ray", action="store_true", help="verify in-process")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("COPYTRACE_LOG", "WARNING").upper())
    data = dev_data_root(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    calibration = None
    if args.fit_calibration:
        calibration = fit(data, work, args.model, args.k, work / "calibration.json")
    bench = ensure_dev_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-dev", args.model)
    if calibration is None:  # what `copytrace query` uses: index file > model card > defaults
        calibration = load_calibration(index, load_descriptor(args.model).card)
    r = run(bench, index, work, data, k=args.k, calibration=calibration, limit=args.limit,
            ray_verify=not args.no_ray)
    hard = _hard_negatives(bench, data)
    rows: dict[str, Metrics] = {}
    report: dict = {"benchmark": str(bench), "queries": r["n"], "k": args.k,
                    "views_per_query": round(r["views_per_query"], 2),
                    "calibration": calibration.source, "stages": {}}
    t = time.perf_counter()
    pdq = pdq_predictions(bench / "queries", bench / "references", k=args.k)
    t_pdq = time.perf_counter() - t
    ids = set(r["ids"])
    rows["PDQ"] = evaluate(r["gt"], [p for p in pdq if p.query in ids])
    report["stages"]["PDQ"] = {**rows["PDQ"].as_dict(), "ms_per_query": 1000 * t_pdq / r["n"]}
    tm, n = r["timings"], r["n"]
    added = {"global": (tm["embed_whole"] + tm["search"]) / n,
             "+normalize": tm["normalize"] / n,
             "+expand": (tm["embed_views"] - tm["embed_whole"] + tm["expand_search"]
                         - tm["search"] - tm["normalize"]) / n,
             "+verify (default)": tm["verify"] / n}
    for name, preds in r["preds"].items():
        rows[name] = evaluate(r["gt"], preds)
        stage = {**rows[name].as_dict(), "added_ms_per_query": round(1000 * added[name], 1)}
        if name != "global":  # raw cosine has no calibrated threshold
            stage["hard_negative_rate"] = _hard_rate(preds, hard)
            stage["hard_negative_rate_odd_groups"] = _hard_rate(preds, hard, "odd")
        report["stages"][name] = stage
    pos = {(g.query, g.reference) for g in r["gt"]}
    default = r["preds"]["+verify (default)"]
    report["positives_above_threshold"] = sum(
        p.score >= THRESHOLD for p in default if (p.query, p.reference) in pos) / max(1, len(pos))
    report["false_positives_above_threshold"] = sum(
        p.score >= THRESHOLD for p in default if (p.query, p.reference) not in pos)
    report["verification"] = {
        "pairs": r["pairs"], "wall_ms_per_query_2_cores": round(1000 * tm["verify"] / n, 1),
        **{key: round(v, 1) for key, v in pair_cost(bench, index, r["ranked"], r["ids"],
                                                    k=args.k).items()}}
    print(json.dumps(report, indent=2, default=float))
    print(metrics_table(rows))
    print(f"{'stage':<20} added ms/query  hard-neg rate (all / odd groups)")
    for name, stage in report["stages"].items():
        if name == "PDQ":
            continue
        rate = (f"{stage['hard_negative_rate']:.3f} / {stage['hard_negative_rate_odd_groups']:.3f}"
                if "hard_negative_rate" in stage else "n/a (raw cosine)")
        print(f"{name:<20} {stage['added_ms_per_query']:>14.1f}  {rate}")


if __name__ == "__main__":
    main()
