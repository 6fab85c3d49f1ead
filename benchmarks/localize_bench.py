"""Localization benchmark with a fit/report split, next to two baselines.

    nice python -m copytrace.benchmarks.localize_bench [--data ../shared/data] [--seed 0]

Pairs: `benchmarks.localize_cases` (MICC-F220, NoSo, and edits made here, all re-encoded the
way copies travel). Split: the hysteresis level (`LocalizeConfig.high`) and the per-region
confidence are FITTED on MICC-F220 (tampered pairs against the threshold-8 truth, and clean
copies of its originals), then
REPORTED with those fitted values on NoSo and made-edits, which the fit never saw. MICC-F220
rows are fit-set numbers and say so.

Fit objective: mean pixel F1 over the fit set's tampered pairs and its clean copies (a clean
copy scores 1 when nothing is flagged, 0 otherwise), so a lower threshold must pay for the
false alarms it raises. Confidence: logistic regression of "at least half of the region is a
true edit" on log(mean score) and log10(area share) of the fit set's regions at every threshold
of the sweep (clean-copy regions are all false).

copytrace runs as `copytrace query --localize` does on a pair it called a copy
(`assume_copy=True`): it must always produce a mask. `fail` counts pairs where it still raised;
the registration lines count the methods used (`best-guess`: nothing lined the pair up, so the
mask comes with a low confidence). s/pair is CPU seconds per pair (comparable under load).

Methods: `copytrace` (matching.localize), `aligned` (SIFT + RANSAC homography, grey absolute
difference, Otsu) and `naive` (original resized to the query, grey absolute difference, Otsu).
Region hits use copytrace's reported region boxes and the baselines' mask components.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from copytrace.benchmarks.localize_cases import (
    KIND_ACCEPTS,
    NO_TRAVEL,
    Case,
    Travel,
    made_edit_cases,
    micc_cases,
    noso_cases,
)
from copytrace.benchmarks.localize_eval import (
    MaskScore,
    Summary,
    box_iou,
    failed,
    mask_box,
    score_mask,
    summarize,
    summary_table,
)
from copytrace.matching import Analysis, Localization, LocalizeConfig, ObjectConfig, analyze, segment

log = logging.getLogger(__name__)

FIT_SET = "micc-f220"
# MICC pairs are pixel-identical outside the edit, so the low-threshold truth covers the whole
# pasted block; the README's threshold 28 misses where it resembles what it covers
FIT_VARIANT = "micc-f220-d8"
THRESHOLDS = (0.8, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0)


def _otsu(diff: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    values = diff[valid] if valid is not None else diff.ravel()
    t, _ = cv2.threshold(values.reshape(-1, 1).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    out = diff > t
    if valid is not None:
        out &= valid
    return np.where(out, 255, 0).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


def naive_baseline(query: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Original resized to the query, absolute grey difference, Otsu."""
    o = cv2.resize(original, (query.shape[1], query.shape[0]), interpolation=cv2.INTER_AREA)
    return _otsu(cv2.absdiff(_grey(query), _grey(o)))


def aligned_baseline(query: np.ndarray, original: np.ndarray) -> np.ndarray:
    """SIFT + ratio test + RANSAC homography, warp, absolute grey difference, Otsu in the overlap.

    Falls back to the naive baseline when no homography is found."""
    sift = cv2.SIFT_create()
    qg, og = _grey(query), _grey(original)
    kq, dq = sift.detectAndCompute(qg, None)
    ko, do = sift.detectAndCompute(og, None)
    H = None
    if dq is not None and do is not None and len(kq) >= 4 and len(ko) >= 4:
        pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(dq, do, k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
        if len(good) >= 8:
            src = np.float32([kq[m.queryIdx].pt for m in good])
            dst = np.float32([ko[m.trainIdx].pt for m in good])
            H, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
    if H is None:
        return naive_baseline(query, original)
    size = (query.shape[1], query.shape[0])
    inv = np.linalg.inv(H)
    warped = cv2.warpPerspective(og, inv, size, flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.full(og.shape, 255, np.uint8), inv, size, flags=cv2.INTER_NEAREST) > 0
    return _otsu(cv2.absdiff(qg, warped), valid)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "aligned": aligned_baseline, "naive": naive_baseline,
}


@dataclass
class Tally:
    """Everything one (variant, method) row of the report needs."""

    scores: list[MaskScore] = field(default_factory=list)
    registration: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)  # made edits: (kind, "regions"/"hit"/"named") counts


@dataclass(frozen=True)
class Job:
    """One pair to run: a case (by position in `_CASES`) and its travel draws."""

    index: int
    draw: Travel
    clean_draw: Travel | None  # the original travelled with no edit (once per original)


@dataclass
class Outcome:
    """One pair's results at every threshold (copytrace) and for each baseline."""

    dataset: str
    name: str
    kind: str | None
    method: str | None = None  # copytrace's registration method; None: it raised
    error: str = ""
    scores: dict[float, dict[str, MaskScore]] = field(default_factory=dict)  # high -> variant -> score
    kinds: dict[float, Counter] = field(default_factory=dict)
    features: dict[float, list] = field(default_factory=dict)  # fit set: region features per high
    clean: dict[float, float] = field(default_factory=dict)  # high -> flagged share of the clean copy
    baselines: dict[str, dict[str, MaskScore]] = field(default_factory=dict)
    baseline_clean: dict[str, float] = field(default_factory=dict)


_CASES: list[Case] = []  # set before the worker pool forks


def _region_features(loc: Localization, truth: np.ndarray | None) -> list[tuple[float, float, int]]:
    """(mean score, area share, is-true) per edit region, for the confidence fit."""
    out = []
    labels = loc.labels
    for n, r in enumerate(loc.regions, start=1):
        if not r.is_edit or labels is None:
            continue
        obj = labels == n
        mean = float(loc.heat[obj].mean()) if obj.any() else 0.0
        true = 0
        if truth is not None:
            t = cv2.resize(truth, obj.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
            true = int(t[obj].mean() >= 0.5) if obj.any() else 0
        out.append((mean, float(obj.mean()), true))
    return out


def fit_confidence(rows: list[tuple[float, float, int]], steps: int = 500) -> tuple[float, float, float]:
    """Logistic regression (Newton's method, a little L2) of is-true on the region features."""
    if len(rows) < 5 or len({r[2] for r in rows}) < 2:
        return ObjectConfig().confidence_weights
    a = np.array(rows, np.float64)
    X = np.c_[np.ones(len(a)), np.log(np.maximum(a[:, 0], 1e-3)), np.log10(np.maximum(a[:, 1], 1e-7))]
    y = a[:, 2]
    w = np.zeros(3)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - y) + 1e-3 * w
        h = X.T @ (X * (p * (1 - p))[:, None]) + 1e-3 * np.eye(3)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return tuple(round(float(v), 4) for v in w)


def _truth_boxes(case: Case, truth: np.ndarray) -> list[tuple[int, int, int, int]] | None:
    """A made edit is one object (a caption of two words is one region); dev sets: None."""
    if case.kind is None:
        return None
    box = mask_box(truth)
    return [box] if box is not None else []


def _kind_tally(loc: Localization, truth_boxes: list, kind: str) -> Counter:
    """Per made edit: was it hit (box IoU >= 0.5), and did the hitting region name its kind?"""
    tally: Counter = Counter()
    for g in truth_boxes:
        best = max(((box_iou(g, r.box), r) for r in loc.edit_regions), key=lambda t: t[0],
                   default=(0.0, None))
        tally[(kind, "regions")] += 1
        if best[0] >= 0.5:
            tally[(kind, "hit")] += 1
            tally[(kind, "named")] += int(best[1].kind in KIND_ACCEPTS[kind])
    return tally


def _timed_analysis(query: np.ndarray, original: np.ndarray) -> tuple[Analysis | None, float, str]:
    """Analysis as `copytrace query --localize` runs it (a known copy), with its CPU seconds."""
    start = time.process_time()
    try:
        an = analyze(query, original, config=LocalizeConfig(), assume_copy=True)
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        return None, time.process_time() - start, f"{type(exc).__name__}: {exc}"
    return an, time.process_time() - start, ""


def _run_job(job: Job) -> Outcome:
    """Run copytrace at every threshold and the baselines on one pair (and its clean copy)."""
    cv2.setNumThreads(1)
    case = _CASES[job.index]
    original, tampered, truths = case.load()
    query = job.draw.image(tampered)
    truths = {v: job.draw.mask(t) for v, t in truths.items()}
    out = Outcome(case.dataset, case.name, case.kind)
    an, seconds, out.error = _timed_analysis(query, original)
    for h in THRESHOLDS if an is not None else ():
        start = time.process_time()
        loc = segment(an, config=replace(LocalizeConfig(), high=h))
        cpu = seconds + time.process_time() - start
        out.method = loc.registration.method
        out.scores[h] = {}
        for variant, truth in truths.items():
            tb = _truth_boxes(case, truth)
            out.scores[h][variant] = score_mask(case.name, loc.mask, truth, cpu,
                                                boxes=[r.box for r in loc.edit_regions], truth_boxes=tb)
            if case.kind:
                out.kinds[h] = _kind_tally(loc, tb, case.kind)
        if case.dataset == FIT_SET:
            out.features[h] = _region_features(loc, truths[FIT_VARIANT])
    for m, fn in BASELINES.items():
        start = time.process_time()
        pred = fn(query, original)
        cpu = time.process_time() - start
        out.baselines[m] = {v: score_mask(case.name, pred, t, cpu, truth_boxes=_truth_boxes(case, t))
                            for v, t in truths.items()}
    if job.clean_draw is not None:
        clean = job.clean_draw.image(original)
        can, _, _ = _timed_analysis(clean, original)
        for h in THRESHOLDS:
            loc = segment(can, config=replace(LocalizeConfig(), high=h)) if can is not None else None
            out.clean[h] = 1.0 if loc is None else float((loc.mask > 0).mean())
            if case.dataset == FIT_SET and loc is not None:
                out.features[h] = out.features.get(h, []) + _region_features(loc, None)
        out.baseline_clean = {m: float((fn(clean, original) > 0).mean()) for m, fn in BASELINES.items()}
    return out


def _jobs(sets: dict[str, list[Case]], rng: np.random.Generator, travel: bool, clean: bool) -> list[Job]:
    """Cases in order with their travel draws (drawn here, in order, so the seed fixes them)."""
    global _CASES
    _CASES = [c for cases in sets.values() for c in cases]
    jobs, done = [], set()
    for i, case in enumerate(_CASES):
        draw = Travel.draw(rng, **(case.travel or {})) if travel else NO_TRAVEL
        clean_draw = None
        if clean and case.original not in done:
            done.add(case.original)
            clean_draw = Travel.draw(rng, **(case.travel or {})) if travel else NO_TRAVEL
        jobs.append(Job(i, draw, clean_draw))
    return jobs


def _fit(outcomes: list[Outcome]) -> tuple[float, tuple[float, float, float], dict]:
    """The threshold with the best mean F1 over the fit set's pairs and clean copies (a clean copy
    scores 1 when nothing is flagged), and the region confidence fitted at it."""
    fit = [o for o in outcomes if o.dataset == FIT_SET]
    sweep = {}
    for h in THRESHOLDS:
        f1 = [o.scores[h][FIT_VARIANT].f1 if h in o.scores else 0.0 for o in fit]
        f1 += [1.0 if o.clean[h] == 0 else 0.0 for o in fit if o.clean]
        sweep[h] = round(float(np.mean(f1)), 4) if f1 else 0.0
    sweep = {str(h): v for h, v in sweep.items()}
    best = max(THRESHOLDS, key=lambda h: (sweep[str(h)], -abs(h - 1.0)))
    # regions from every threshold of the sweep: at the best one nearly all are true, and the
    # weak ones the lower thresholds add are what the confidence must learn to doubt
    rows = [r for o in fit for h in THRESHOLDS for r in o.features.get(h, [])]
    sweep["confidence_rows"] = [len(rows), sum(r[2] for r in rows)]
    return best, fit_confidence(rows), sweep


def _tallies(outcomes: list[Outcome], high: float) -> tuple[dict, dict]:
    tallies: dict[tuple[str, str], Tally] = {}
    alarms: dict[tuple[str, str], list[float]] = {}
    for o in outcomes:
        if o.scores:
            for variant, s in o.scores[high].items():
                t = tallies.setdefault((variant, "copytrace"), Tally())
                t.scores.append(s)
                t.registration[o.method] += 1
                t.kinds.update(o.kinds.get(high, Counter()))
        for m, per in o.baselines.items():
            for variant, s in per.items():
                tallies.setdefault((variant, m), Tally()).scores.append(s)
        if not o.scores:  # copytrace raised: every variant of this pair fails
            for variant in next(iter(o.baselines.values()), {}):
                t = tallies.setdefault((variant, "copytrace"), Tally())
                t.scores.append(failed(o.name, o.error))
                t.registration["failed"] += 1
        if o.clean:
            alarms.setdefault((o.dataset, "copytrace"), []).append(o.clean[high])
        for m, v in o.baseline_clean.items():
            alarms.setdefault((o.dataset, m), []).append(v)
    return tallies, alarms


def run(data: Path, *, seed: int = 0, travel: bool = True, clean: bool = True, limit: int | None = None,
        made: int = 60, workers: int = 1, verbose: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    sets = {"micc-f220": micc_cases(data), "noso": noso_cases(data),
            "made-edits": made_edit_cases(data, pairs=made, seed=seed)}
    if limit:
        sets = {k: v[:limit] for k, v in sets.items()}
    jobs = _jobs(sets, rng, travel, clean)
    outcomes: list[Outcome] = []
    if workers > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for o in pool.imap_unordered(_run_job, jobs):
                outcomes.append(o)
                _progress(o, len(outcomes), len(jobs), verbose)
    else:
        for job in jobs:
            outcomes.append(_run_job(job))
            _progress(outcomes[-1], len(outcomes), len(jobs), verbose)
    outcomes.sort(key=lambda o: (o.dataset, o.name))
    high, weights, sweep = _fit(outcomes)
    tallies, alarms = _tallies(outcomes, high)
    return _report(seed, travel, high, weights, sweep, tallies, alarms)


def _progress(o: Outcome, done: int, total: int, verbose: bool) -> None:
    if verbose:
        s = next(iter(o.scores.get(1.0, {}).values()), None)
        line = f"f1 {s.f1:.3f} hits {s.hits}/{s.regions} cpu {s.seconds:.2f}s" if s else o.error
        print(f"[{done}/{total}] {o.dataset:<10} {o.name:<28} {o.method} {line}", file=sys.stderr, flush=True)


def _report(seed: int, travel: bool, high: float, weights: tuple, sweep: dict, tallies: dict,
            alarms: dict) -> dict:
    results = {}
    order = sorted(tallies.items(), key=lambda kv: (kv[0][0], kv[0][1] != "copytrace", kv[0][1]))
    for (variant, m), t in order:
        row = summarize(t.scores).as_dict()
        row["role"] = "fit" if variant.startswith(FIT_SET) else "report"
        if m == "copytrace":
            row["registration"] = dict(t.registration)
        if t.kinds:
            row["kinds"] = {f"{k}/{w}": v for (k, w), v in sorted(t.kinds.items())}
        results[f"{variant}/{m}"] = row
    false_alarms = {f"{d}/{m}": {"clean_copies": len(v),
                                 "flagged_any": round(float(np.mean([x > 0 for x in v])), 4),
                                 "mean_flagged_fraction": round(float(np.mean(v)), 5)}
                    for (d, m), v in sorted(alarms.items())}
    return {"seed": seed, "travel": travel,
            "fit": {"set": FIT_SET, "variant": FIT_VARIANT, "high": high, "confidence_weights": list(weights),
                    "confidence_rows_true": sweep.pop("confidence_rows"), "sweep_mean_f1": sweep},
            "results": results, "clean": false_alarms,
            "per_image": {k: [s.__dict__ for s in t.scores] for k, t in
                          ((f"{v}/{m}", t) for (v, m), t in tallies.items())},
            "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2)}


def _default_data() -> Path:
    env = os.environ.get("COPYTRACE_DEV_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _print(report: dict) -> None:
    fit = report["fit"]
    print(f"fit on {fit['set']} ({fit['variant']} truth + clean copies): high = {fit['high']}, confidence "
          f"weights {fit['confidence_weights']}; reported on the other sets with these values")
    rows = {f"{k} [{v['role']}]": Summary(**{f: v[f] for f in Summary.__dataclass_fields__})
            for k, v in report["results"].items()}
    print()
    print(summary_table(rows))
    print(f"\n{'copytrace registration':<40} methods (pairs)")
    for k, v in report["results"].items():
        if "registration" in v:
            print(f"{k:<40} " + ", ".join(f"{m} {n}" for m, n in sorted(v["registration"].items())))
    for k, v in report["results"].items():
        if "kinds" in v:
            print(f"\nedit kinds on {k}: " + ", ".join(f"{n} {c}" for n, c in v["kinds"].items()))
    print(f"\n{'clean copies (no edit)':<32} {'n':>4} {'flagged any':>11} {'mean flagged area':>18}")
    for k, v in report["clean"].items():
        print(f"{k:<32} {v['clean_copies']:>4} {v['flagged_any']:>11.3f} {v['mean_flagged_fraction']:>18.5f}")
    print(f"\n{report['cpus']} CPUs, load average {report['load_average']} at the end; s/pair is CPU seconds "
          f"of one process per pair (single-threaded OpenCV, decoding excluded), steady under load")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_default_data())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-travel", action="store_true", help="Score the tampered images as shipped.")
    ap.add_argument("--no-clean", action="store_true", help="Skip the false-alarm run on clean copies.")
    ap.add_argument("--limit", type=int, default=None, help="At most N pairs per set.")
    ap.add_argument("--made", type=int, default=60, help="Pairs in the made-edits set.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the full JSON (with per image).")
    ap.add_argument("--workers", type=int, default=1, help="Pairs run in this many processes.")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    if not (args.data / "forgery").is_dir():
        raise SystemExit(f"error: no forgery data under '{args.data}' (set --data or $COPYTRACE_DEV_DATA)")
    cv2.setNumThreads(1)
    report = run(args.data.resolve(), seed=args.seed, travel=not args.no_travel, clean=not args.no_clean,
                 limit=args.limit, made=args.made, workers=args.workers, verbose=args.verbose)
    if args.json:
        from copytrace.util import write_json_atomic

        write_json_atomic(args.json, report)
    print(json.dumps({k: v for k, v in report.items() if k != "per_image"}, indent=1))
    print()
    _print(report)


if __name__ == "__main__":
    main()
