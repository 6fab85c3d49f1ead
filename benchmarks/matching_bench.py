"""Matching ablation on the dev benchmark: what each stage of `copytrace query` adds, and costs.

    python -m copytrace.benchmarks.matching_bench --data ../shared/data --work /tmp/ct-match
    python -m copytrace.benchmarks.matching_bench --fit-calibration   # refit the fused score

Stages (cumulative): global descriptor only; + background score normalization; + query
expansion (crops of the query); + turned views and + small-region views (only for queries
without a confident match); + local verification with the calibrated fused score (the
default of `copytrace query`), once with every top candidate verified and once with only the
candidates the decision band leaves undecided (the default). PDQ is the peer baseline. Prints
JSON, then a table. `--retune` adds the knobs (verified top-k, query crops, normalization);
`--bench DIR` runs on any DISC-style folder instead of the dev benchmark.

The evaluation benchmark is the dev benchmark (last 300 ImageNet samples + all UKBench groups as
hard negatives). `--fit-calibration` fits the fused score and the decision band on a separate
calibration benchmark (first 300 ImageNet samples, seed 1, even UKBench groups only), writes them
to `WORK/calibration.json` (put it in an index folder, or in a model card's `calibration`, for
`copytrace query` to use) and evaluates with it; odd UKBench groups are never seen by the fit,
and the hard-negative rate is also reported on them alone.

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
from dataclasses import replace
from pathlib import Path

import numpy as np

from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.disc_eval import metrics_table
from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.edit_families import family_dicts, family_table, family_text, query_families
from copytrace.benchmarks.make_disc import hard_negative_sources, make_disc
from copytrace.benchmarks.metrics import Metrics, PredictedMatch, evaluate
from copytrace.benchmarks.pdq import pdq_predictions
from copytrace.descriptors import load_descriptor
from copytrace.indexing import list_sources
from copytrace.matching import (
    Calibration,
    Decision,
    ExpandConfig,
    MatchConfig,
    NormalizeConfig,
    QueryViews,
    VerifyConfig,
    candidates,
    finalize,
    fit_band,
    fit_calibration,
    fused_score,
    global_score_only,
    load_calibration,
    load_rgb,
    rotation_pass,
    shipped_view_check,
    small_copy_pass,
    verify_prepared,
)
from copytrace.matching import prepare_for_verify as prepare
from copytrace.pipelines import QueryEngine, Verifier, VerifyBackend, VerifyJob, build_index

log = logging.getLogger(__name__)

THRESHOLD = 0.5
VERIFY_CACHE_VERSION = 6  # bump when `Verification` gains fields or the verifier changes (lazy field)


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


EMBED_CHUNK = 64
"""Queries decoded and embedded together (bounds the pixels held in memory)."""


def _embed_all(engine: QueryEngine, paths: list[Path], expand: ExpandConfig | None
               ) -> tuple[dict, dict, dict]:
    """View vectors, views and decode errors per query id, through the public engine API."""
    config = MatchConfig(expand=expand)
    vectors, views, errors = {}, {}, {}
    for start in range(0, len(paths), EMBED_CHUNK):
        images = []
        for path in paths[start : start + EMBED_CHUNK]:
            try:
                images.append(engine.decode(path, query_id=path.stem, config=config))
            except ValueError as exc:  # DecodeError: reported, the batch carries on
                errors[path.stem] = str(exc)
        for image, vecs in zip(images, engine.embed(images), strict=True):
            vectors[image.query_id] = vecs
            views[image.query_id] = image.views
    return vectors, views, errors


def _embeddings(bench: Path, index: Path, work: Path, expand: ExpandConfig
                ) -> tuple[dict, dict, dict, float, float]:
    """Whole-image and view vectors of every query (cached in `work`), with their timings."""
    key = hashlib.sha256(repr(expand).encode()).hexdigest()[:10]
    cache = work / f"views-{bench.name}-{key}.npz"
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
    paths = [Path(s.uri) for s in list_sources(bench / "queries")]
    with QueryEngine.open(index, device="cpu") as engine:
        t = time.perf_counter()
        _embed_all(engine, paths, None)
        t_whole = time.perf_counter() - t
        t = time.perf_counter()
        vectors, views, errors = _embed_all(engine, paths, expand)
        t_views = time.perf_counter() - t
    np.savez(cache, vectors=np.array(vectors, dtype=object), views=np.array(views, dtype=object),
             t_whole=t_whole, t_views=t_views)
    return vectors, views, errors, t_whole, t_views


def _verify(index: Path, bench: Path, ids: list[str], ranked, config: VerifyConfig, *,
            ray: bool) -> list:
    """Verify each query against its top candidates (process pool, or Ray tasks)."""
    backend = VerifyBackend.RAY if ray else VerifyBackend.PROCESSES
    with QueryEngine.open(index, device="cpu") as engine:
        uris = engine.reference_uris({c.reference_id for row in ranked
                                      for c in row[: config.top_k]})
        verifier = Verifier(config, backend=backend)
        out = []
        try:
            for start in range(0, len(ids), EMBED_CHUNK):
                jobs = [VerifyJob(engine.decode(bench / "queries" / f"{q}.jpg", query_id=q,
                                                config=MatchConfig(expand=None)),
                                  [uris.get(c.reference_id, "") for c in row[: config.top_k]])
                        for q, row in zip(ids[start : start + EMBED_CHUNK],
                                          ranked[start : start + EMBED_CHUNK], strict=True)]
                out.extend(verifier.verify(jobs))
        finally:
            verifier.close()
    return out


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
    gt, queries = read_ground_truth(bench / "gt.csv")
    ids = sorted(q for q in queries if q in vectors)[:limit]
    with QueryEngine.open(index, device="cpu") as engine:
        calibration = calibration or engine.calibration
        ranked, timings = _search_stages(engine, ids, vectors, views, k=k)
    verify = VerifyConfig(top_k=k)
    verified_plain, timings["verify"] = _cached_verify(work, bench, index, ids, ranked["+expand"],
                                                       verify, expand, ray=ray_verify)
    with QueryEngine.open(index, device="cpu") as engine:
        t = time.perf_counter()
        ranked["+rotate"], timings["rotated_views"] = rotation_pass(
            ranked["+expand"], [vectors[q] for q in ids], [views[q] for q in ids],
            model_pixels=lambda i: engine.decode(bench / "queries" / f"{ids[i]}.jpg",
                                                 config=MatchConfig(expand=None)).model_pixels,
            embed=engine.embedder.embed_pixels, calibration=calibration,
            search=lambda v, qv: candidates(engine.index, v, qv, background=engine.background(
                MatchConfig()), config=MatchConfig(k=k, search_k=max(20, 2 * k), verify=None)))
        timings["rotate"] = time.perf_counter() - t
        t = time.perf_counter()
        ranked["+small"], timings["small_views"] = small_copy_pass(
            ranked["+rotate"], [vectors[q] for q in ids], [views[q] for q in ids],
            pixels=lambda i: engine.decode(bench / "queries" / f"{ids[i]}.jpg",
                                           config=MatchConfig(expand=None)).pixels,
            model_size=engine.embedder.image_size, embed=engine.embedder.embed_pixels,
            calibration=calibration, config=expand, rotate=MatchConfig().rotate,
            search=lambda v, qv: candidates(engine.index, v, qv, background=engine.background(
                MatchConfig()), config=MatchConfig(k=k, search_k=max(20, 2 * k), verify=None)))
        timings["small"] = time.perf_counter() - t
    # Only the queries whose candidates the turned or small views changed are verified again.
    changed = [i for i, (a, b) in enumerate(zip(ranked["+expand"], ranked["+small"],
                                                strict=True))
               if [c.reference_id for c in a[:k]] != [c.reference_id for c in b[:k]]]
    verified = list(verified_plain)
    if changed:
        again, t_again = _cached_verify(work, bench, index, [ids[i] for i in changed],
                                        [ranked["+small"][i] for i in changed], verify, expand,
                                        ray=ray_verify)
        for i, row in zip(changed, again, strict=True):
            verified[i] = row
        timings["verify"] += t_again
    timings["rotate_changed_queries"] = len(changed)
    preds = {
        "global": _predictions(ranked["global"], ids, lambda c: c.similarity),
        **{name: _predictions(ranked[name], ids, lambda c: global_score_only(
            c.global_score, calibration=calibration))
           for name in ("+normalize", "+expand", "+rotate", "+small")},
        "+verify (full)": _finalized(ids, ranked["+small"], verified, calibration),
        "+verify (banded default)": _finalized(ids, ranked["+small"], verified, calibration,
                                               banded=True),
        "+verify (banded, no view check)": _finalized(ids, ranked["+small"], verified,
                                                      calibration, banded=True, view_check=False),
        "+verify (banded, no turned or small views)": _finalized(ids, ranked["+expand"], verified_plain,
                                                     calibration, banded=True),
    }
    n = len(ids)
    return {"ids": ids, "n": n, "preds": preds, "gt": [g for g in gt if g.query in set(ids)],
            "ranked": ranked["+small"], "verified": verified,
            "pairs": sum(len(v) for v in verified),
            "pairs_banded": _banded_pairs(ranked["+small"], calibration, k),
            "vectors": vectors, "views": views, "all_ranked": ranked,
            "timings": {**timings, "embed_whole": t_whole * n / len(vectors),
                        "embed_views": t_views * n / len(vectors)},
            "views_per_query": float(np.mean([len(views[q].names) for q in ids]))}


def _cached_verify(work: Path, bench: Path, index: Path, ids: list[str], ranked,
                   verify: VerifyConfig, expand: ExpandConfig, *, ray: bool) -> tuple[list, float]:
    """`_verify`, cached in `work` by settings and candidates (the timing is the computing run's)."""
    vkey = hashlib.sha256(repr((VERIFY_CACHE_VERSION, verify, expand,
                                [[c.reference_id for c in row] for row in
                                 ranked])).encode()).hexdigest()[:10]
    vcache = work / f"verified-{bench.name}-{vkey}.pkl"
    if vcache.exists():
        return pickle.loads(vcache.read_bytes())
    t = time.perf_counter()
    verified = _verify(index, bench, ids, ranked, verify, ray=ray)
    out = (verified, time.perf_counter() - t)
    vcache.write_bytes(pickle.dumps(out))
    return out


def _search_stages(engine: QueryEngine, ids: list[str], vectors: dict, views: dict, *,
                   k: int, normalize: NormalizeConfig | None = None,
                   expand_names: set[str] | None = None) -> tuple[dict, dict]:
    """Candidates per stage: raw global search, + background normalization, + query crops."""
    full_only = [QueryViews(["full"], [views[q].boxes[0]]) for q in ids]
    full_matrix = np.stack([vectors[q][0] for q in ids])
    keep = {q: [i for i, n in enumerate(views[q].names) if expand_names is None or n == "full"
                or n in expand_names or (n.startswith("region") and "region" in expand_names)]
            for q in ids}
    all_views = [QueryViews([views[q].names[i] for i in keep[q]],
                            [views[q].boxes[i] for i in keep[q]]) for q in ids]
    all_matrix = np.concatenate([vectors[q][keep[q]] for q in ids])
    config = MatchConfig(k=k, search_k=max(20, 2 * k), verify=None,
                         normalize=normalize or NormalizeConfig())
    background = engine.background(config)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    ranked = {"global": candidates(engine.index, full_matrix, full_only, config=config)}
    timings["search"] = time.perf_counter() - t
    t = time.perf_counter()
    ranked["+normalize"] = candidates(engine.index, full_matrix, full_only, background=background,
                                      config=config)
    timings["normalize"] = time.perf_counter() - t - timings["search"]
    t = time.perf_counter()
    ranked["+expand"] = candidates(engine.index, all_matrix, all_views, background=background,
                                   config=config)
    timings["expand_search"] = time.perf_counter() - t
    return ranked, timings


def _finalized(ids, ranked, verified, calibration: Calibration, *, banded: bool = False,
               verify_k: int | None = None, view_check: bool = True) -> list[PredictedMatch]:
    """Scores as `copytrace query` gives them: every top candidate verified, or only those the
    decision band leaves undecided (`banded`), or only the top `verify_k`; the view check
    (another photo of the same object capped below 0.5) on unless `view_check` is False."""
    check = shipped_view_check() if view_check else None
    band = calibration.decision_band()
    out = []
    for q, cands, ver in zip(ids, ranked, verified, strict=True):
        decisions = None
        if banded:
            decisions = [band.decide(global_score_only(c.global_score, calibration=calibration))
                         for c in cands[: len(ver)]]
        out.extend(PredictedMatch(q, m.reference_id, m.score) for m in finalize(
            cands, ver, calibration=calibration, decisions=decisions,
            verified_count=min(len(ver), verify_k) if verify_k else None, view_check=check))
    return out


def _banded_pairs(ranked, calibration: Calibration, k: int) -> int:
    """Pairs the decision band leaves to verification."""
    band = calibration.decision_band()
    return sum(band.decide(global_score_only(c.global_score, calibration=calibration))
               is Decision.VERIFY for row in ranked for c in row[:k])


def pair_cost(bench: Path, index: Path, ranked, ids, *, queries: int = 20, k: int = 10) -> dict:
    """Single-core ms per verified pair, split into reference preparation and matching."""
    config = VerifyConfig(top_k=k)
    with QueryEngine.open(index, device="cpu") as engine:
        uris = engine.reference_uris({c.reference_id for row in ranked[:queries] for c in row})

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


def _labelled_pairs(r: dict) -> tuple[np.ndarray, list, np.ndarray]:
    """(global score, verification, is-a-copy) of every verified (query, candidate) pair."""
    gt = {(g.query, g.reference) for g in r["gt"]}
    scores, vers, labels = [], [], []
    for q, cands, ver in zip(r["ids"], r["ranked"], r["verified"], strict=True):
        for c, v in zip(cands, ver, strict=False):
            scores.append(c.global_score)
            vers.append(v)
            labels.append((q, c.reference_id) in gt)
    return np.array(scores), vers, np.array(labels)


def fit(data: Path, work: Path, model: str, k: int, out: Path) -> Calibration:
    """Fit the fused score, then the decision band on the same calibration pairs."""
    bench = ensure_calibration_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-calib", model)
    r = run(bench, index, work, data, k=k)
    scores, vers, labels = _labelled_pairs(r)
    name = load_descriptor(model).model_id
    cal = fit_calibration(scores, vers, labels,
                          source=f"fitted on {bench.name} (imagenet-sample[:300] seed 1 + even "
                                 f"UKBench groups), model {name}")
    g = np.array([global_score_only(s, calibration=cal) for s in scores])
    v = np.array([fused_score(s, ver, calibration=cal) for s, ver in zip(scores, vers, strict=True)])
    band = fit_band(g, v, labels, source=f"fit_band on {len(labels)} pairs of {bench.name}, "
                                         f"model {name}")
    # The view check's cap and cut are not fitted here (`--fit-view-cut` fits the cut): keep the
    # card's, or the refit would be evaluated, and saved, without the view check's cut.
    card = load_calibration(None, load_descriptor(model).card)
    cal = replace(cal, band=band, other_view_cap=card.other_view_cap,
                  other_view_cut=card.other_view_cut)
    cal.save(out)
    return cal


def fit_view_cut(data: Path, work: Path, model: str, k: int, *, keep_recall: float = 0.99
                 ) -> dict:
    """The view check's cut for the query path, on the calibration benchmark: among its verified
    pairs scored a copy, the probability that keeps `keep_recall` of the true copies (a copy
    capped below 0.5 is a silent miss, so recall is fixed first, as `fit_view_check` does)."""
    bench = ensure_calibration_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-calib", model)
    r = run(bench, index, work, data, k=k)
    with QueryEngine.open(index, device="cpu") as engine:
        calibration = engine.calibration
    check = shipped_view_check()
    truth = {(g.query, g.reference) for g in r["gt"]}
    probs, labels = [], []
    for q, cands, ver in zip(r["ids"], r["ranked"], r["verified"], strict=True):
        for c, v in zip(cands, ver, strict=False):
            if getattr(v, "inliers", None) is None or fused_score(
                    c.global_score, v, calibration=calibration) < THRESHOLD:
                continue
            probs.append(check.probability(v, v.agreement, v.shading,
                                           (v.field_f, v.field_correlation)))
            labels.append((q, c.reference_id) in truth)
    probs, labels = np.array(probs), np.array(labels, bool)
    pos = np.sort(probs[labels])
    cut = float(pos[int(np.floor((1.0 - keep_recall) * len(pos)))]) if len(pos) else check.cut
    return {"cut": round(cut, 5), "keep_recall": keep_recall,
            "copies_kept": f"{int((probs[labels] >= cut).sum())}/{int(labels.sum())}",
            "others_rejected": f"{int((probs[~labels] < cut).sum())}/{int((~labels).sum())}",
            "source": f"fit_view_cut on the verified pairs scored >= 0.5 of {bench.name}"}


def retune(r: dict, index: Path, calibration: Calibration, k: int) -> dict[str, Metrics]:
    """What each knob buys on the evaluation set: verified top-k (full pipeline, from the cached
    verifications), query crops and normalization settings (global stage, no verification)."""
    rows: dict[str, Metrics] = {}
    for vk in (1, 3, 5):
        rows[f"verify_k={vk}"] = evaluate(r["gt"], _finalized(
            r["ids"], r["ranked"], r["verified"], calibration, verify_k=vk))
    score = lambda c: global_score_only(c.global_score, calibration=calibration)  # noqa: E731
    with QueryEngine.open(index, device="cpu") as engine:
        for label, names in (("whole image only", set()), ("+centre crop", {"centre0.6"}),
                             ("+trimmed", {"trimmed"}), ("+pasted regions", {"region"}),
                             ("+centre +trimmed", {"centre0.6", "trimmed"})):
            ranked, _ = _search_stages(engine, r["ids"], r["vectors"], r["views"], k=k,
                                       expand_names=names)
            rows[f"crops: {label}"] = evaluate(r["gt"], _predictions(ranked["+expand"], r["ids"],
                                                                     score))
        for nk, beta in ((5, 1.0), (20, 1.0), (10, 0.5), (10, 1.5)):
            ranked, _ = _search_stages(engine, r["ids"], r["vectors"], r["views"], k=k,
                                       normalize=NormalizeConfig(k=nk, beta=beta))
            rows[f"normalize k={nk} beta={beta:g}"] = evaluate(
                r["gt"], _predictions(ranked["+expand"], r["ids"], score))
    return rows


def _report(r: dict, calibration: Calibration, hard: dict, pdq: list, t_pdq: float,
            k: int) -> tuple[dict, dict[str, Metrics]]:
    """Metrics, added cost and hard-negative rate per stage."""
    tm, n = r["timings"], r["n"]
    ids = set(r["ids"])
    rows = {"PDQ": evaluate(r["gt"], [p for p in pdq if p.query in ids])}
    report: dict = {"queries": n, "k": k, "views_per_query": round(r["views_per_query"], 2),
                    "calibration": calibration.source,
                    "band": [calibration.decision_band().reject, calibration.decision_band().accept],
                    "stages": {"PDQ": {**rows["PDQ"].as_dict(), "ms_per_query": 1000 * t_pdq / n}}}
    share = r["pairs_banded"] / max(1, r["pairs"])
    added = {"global": (tm["embed_whole"] + tm["search"]) / n,
             "+normalize": tm["normalize"] / n,
             "+expand": (tm["embed_views"] - tm["embed_whole"] + tm["expand_search"]
                         - tm["search"] - tm["normalize"]) / n,
             "+rotate": tm["rotate"] / n,
             "+small": tm["small"] / n,
             "+verify (full)": tm["verify"] / n,
             "+verify (banded default)": share * tm["verify"] / n,
             "+verify (banded, no view check)": share * tm["verify"] / n,
             "+verify (banded, no turned or small views)": share * tm["verify"] / n}
    for name, preds in r["preds"].items():
        rows[name] = evaluate(r["gt"], preds)
        stage = {**rows[name].as_dict(), "added_ms_per_query": round(1000 * added[name], 1)}
        if name != "global":  # raw cosine has no calibrated threshold
            stage["hard_negative_rate"] = _hard_rate(preds, hard)
            stage["hard_negative_rate_odd_groups"] = _hard_rate(preds, hard, "odd")
        report["stages"][name] = stage
    report["rotations"] = {"views_embedded": tm["rotated_views"],
                           "small_views_embedded": tm["small_views"],
                           "queries_with_changed_candidates": tm["rotate_changed_queries"]}
    report["verification"] = {"pairs_full": r["pairs"], "pairs_banded": r["pairs_banded"],
                              "wall_ms_per_query_2_cores": round(1000 * tm["verify"] / n, 1)}
    no_verify = sum(added[s] for s in ("global", "+normalize", "+expand", "+rotate", "+small"))
    report["cost_vs_no_verify"] = {s: round((no_verify + added[s]) / no_verify, 2)
                                   for s in ("+verify (full)", "+verify (banded default)")}
    return report, rows


FAMILY_STAGES = ("+small", "+verify (full)", "+verify (banded default)")
"""Stages with a per-edit-family table: `--no-verify`, full verification, the default."""


def families(r: dict, bench: Path) -> dict[str, list]:
    """Per stage, the per-edit-family rows (`benchmarks.edit_families`)."""
    fams = {q: f for q, f in query_families(bench).items() if q in set(r["ids"])}
    return {stage: family_table(r["gt"], r["preds"][stage], fams) for stage in FAMILY_STAGES}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-matching", help="work folder")
    parser.add_argument("--model", default="default")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--limit", type=int, help="only the first N queries (quick runs)")
    parser.add_argument("--fit-calibration", action="store_true",
                        help="fit the fused score and decision band on the calibration benchmark "
                             "first and use them")
    parser.add_argument("--fit-view-cut", action="store_true",
                        help="fit the view check's cut for the query path on the calibration "
                             "benchmark first and use it")
    parser.add_argument("--retune", action="store_true",
                        help="also report verify_k, query-crop and normalization variants")
    parser.add_argument("--no-ray", action="store_true", help="verify in a process pool")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--bench", help="evaluate this DISC-style folder (`copytrace bench "
                                        "make-disc`) instead of the dev benchmark")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("COPYTRACE_LOG", "WARNING").upper())
    data = None if args.bench and not args.fit_calibration else dev_data_root(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    calibration = None
    if args.fit_calibration:
        calibration = fit(data, work, args.model, args.k, work / "calibration.json")
    bench = Path(args.bench) if args.bench else ensure_dev_benchmark(data, work)
    index = ensure_index(bench / "references", work / "idx-dev", args.model)
    if calibration is None:  # what `copytrace query` uses: index file > model card > defaults
        calibration = load_calibration(index, load_descriptor(args.model).card)
    view_cut = None
    if args.fit_view_cut:
        view_cut = fit_view_cut(dev_data_root(args.data), work, args.model, args.k)
        calibration = replace(calibration, other_view_cut=view_cut["cut"])
    r = run(bench, index, work, data, k=args.k, calibration=calibration, limit=args.limit,
            ray_verify=not args.no_ray)
    t = time.perf_counter()
    pdq = pdq_predictions(bench / "queries", bench / "references", k=args.k)
    hard = _hard_negatives(bench, data) if data is not None else {}
    report, rows = _report(r, calibration, hard, pdq,
                           time.perf_counter() - t, args.k)
    report["benchmark"] = str(bench)
    if view_cut is not None:
        report["view_cut"] = view_cut
    fam = families(r, bench)
    report["families"] = {stage: family_dicts(rows) for stage, rows in fam.items()}
    report["model"] = load_descriptor(args.model).model_id
    if args.retune:
        tuned = retune(r, index, calibration, args.k)
        report["retune"] = {name: m.as_dict() for name, m in tuned.items()}
    report["verification"].update({key: round(v, 1) for key, v in pair_cost(
        bench, index, r["ranked"], r["ids"], k=args.k).items()})
    print(json.dumps(report, indent=2, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    print(metrics_table(rows))
    print(f"{'stage':<26} added ms/query  hard-neg rate (all / odd groups)")
    for name, stage in report["stages"].items():
        if name == "PDQ":
            continue
        rate = (f"{stage['hard_negative_rate']:.3f} / {stage['hard_negative_rate_odd_groups']:.3f}"
                if "hard_negative_rate" in stage else "n/a (raw cosine)")
        print(f"{name:<26} {stage['added_ms_per_query']:>14.1f}  {rate}")
    print(f"cost vs --no-verify (ms/query ratio): {report['cost_vs_no_verify']}")
    for stage in FAMILY_STAGES[1:]:
        print("\n" + family_text(fam[stage], title=f"per edit family: {stage}"))
    if args.retune:
        print("\nre-tuning (verify_k: full pipeline; crops, normalize: global stage only)")
        print(metrics_table(tuned))
    return report

if __name__ == "__main__":
    main()
