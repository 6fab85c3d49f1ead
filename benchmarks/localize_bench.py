"""Localization benchmark with a fit/report split, next to two baselines.

    nice python -m copytrace.benchmarks.localize_bench [--data ../shared/data] [--seed 0]

Pairs: `benchmarks.localize_cases` (MICC-F220, NoSo, and edits made here, all re-encoded the
way copies travel). Split: the hysteresis level (`LocalizeConfig.high`) and the per-region
confidence are FITTED on MICC-F220 (tampered pairs and clean copies of its originals), then
REPORTED with those fitted values on NoSo and made-edits, which the fit never saw. MICC-F220
rows are fit-set numbers and say so.

Fit objective: mean pixel F1 over the fit set's tampered pairs and its clean copies (a clean
copy scores 1 when nothing is flagged, 0 otherwise), so a lower threshold must pay for the
false alarms it raises. Confidence: logistic regression of "at least half of the region is a
true edit" on log(mean score) and log10(area share) of the fit set's regions.

copytrace runs as `copytrace query --localize` does on a pair it called a copy
(`assume_copy=True`): it must always produce a mask. `reg fail` counts pairs where it still
raised; `best guess` those no registration method could line up (a low-confidence mask).

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
from copytrace.matching.edit_objects import ObjectConfig
from copytrace.matching.localize import Analysis, Localization, LocalizeConfig, analyze, segment

log = logging.getLogger(__name__)

FIT_SET = "micc-f220"
FIT_VARIANT = "micc-f220"  # the dataset README's ground-truth recipe
THRESHOLDS = (0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0, 2.5)


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
    kinds: Counter = field(default_factory=Counter)  # made edits: (kind, "hit"/"named") counts


@dataclass(frozen=True)
class Pair:
    case: Case
    original: np.ndarray
    query: np.ndarray
    truths: dict[str, np.ndarray]
    clean: np.ndarray | None  # the original travelled with no edit (once per original)


def _pairs(cases: list[Case], rng: np.random.Generator, travel: bool, clean: bool):
    done: set[Path] = set()
    for case in cases:
        draw = Travel.draw(rng, **(case.travel or {})) if travel else NO_TRAVEL
        original, tampered, truths = case.load()
        query = draw.image(tampered)
        clean_query = None
        if clean and case.original not in done:
            done.add(case.original)
            clean_query = Travel.draw(rng, **(case.travel or {})).image(original) if travel else original
        yield Pair(case, original, query, {v: draw.mask(t) for v, t in truths.items()}, clean_query)


def _analyze(query: np.ndarray, original: np.ndarray,
             config: LocalizeConfig) -> tuple[Analysis | None, float, str]:
    start = time.perf_counter()
    try:
        an = analyze(query, original, config=config, assume_copy=True)
    except Exception as exc:  # noqa: BLE001 - a failure is a result here
        return None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
    return an, time.perf_counter() - start, ""


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


def _truth_boxes(pair: Pair, truth: np.ndarray) -> list[tuple[int, int, int, int]] | None:
    """A made edit is one object (a caption of two words is one region); dev sets: None."""
    if pair.case.kind is None:
        return None
    box = mask_box(truth)
    return [box] if box is not None else []


def _kind_tally(loc: Localization, truth_boxes: list, kind: str, tally: Counter) -> None:
    """Per made edit: was it hit (box IoU >= 0.5), and did the hitting region name its kind?"""
    for g in truth_boxes:
        best = max(((box_iou(g, r.box), r) for r in loc.edit_regions), key=lambda t: t[0],
                   default=(0.0, None))
        tally[(kind, "regions")] += 1
        if best[0] >= 0.5:
            tally[(kind, "hit")] += 1
            tally[(kind, "named")] += int(best[1].kind in KIND_ACCEPTS[kind])


def _fit(pairs, config: LocalizeConfig, tallies: dict, alarms: dict,
         verbose: bool) -> tuple[float, tuple[float, float, float], dict]:
    """Sweep the threshold on the fit set; keep the best one's rows; fit the confidence there."""
    per_h: dict[float, tuple[dict, dict, list]] = {h: ({}, {}, []) for h in THRESHOLDS}
    for pair in pairs:
        for which, query in (("tampered", pair.query), ("clean", pair.clean)):
            if query is None:
                continue
            an, seconds, error = _analyze(query, pair.original, config)
            truth = pair.truths[FIT_VARIANT] if which == "tampered" else None
            for h in THRESHOLDS:
                t, al, feats = per_h[h]
                loc = _score_copytrace(pair, which, an, seconds, error, replace(config, high=h), t, al,
                                       verbose and h == 1.0)
                if loc is not None:
                    feats += _region_features(loc, truth)
        _baselines(pair, tallies, alarms, verbose)
    sweep = {}
    for h, (t, al, _) in per_h.items():
        clean = [1.0 if x == 0 else 0.0 for x in al.get((FIT_SET, "copytrace"), [])]
        sweep[h] = round(float(np.mean([s.f1 for s in t[(FIT_VARIANT, "copytrace")].scores] + clean)), 4)
    best = max(THRESHOLDS, key=lambda h: (sweep[h], -abs(h - 1.0)))
    tallies.update(per_h[best][0])
    alarms.update(per_h[best][1])
    return best, fit_confidence(per_h[best][2]), sweep


def _score_copytrace(pair: Pair, which: str, an: Analysis | None, seconds: float, error: str,
                     config: LocalizeConfig, tallies: dict, alarms: dict,
                     verbose: bool) -> Localization | None:
    """Segment at `config`, add the pair's rows; the localization (None when it failed)."""
    loc, extra = None, 0.0
    if an is not None:
        start = time.perf_counter()
        loc = segment(an, config=config)
        extra = time.perf_counter() - start
    if which == "clean":
        alarms.setdefault((pair.case.dataset, "copytrace"), []).append(
            1.0 if loc is None else float((loc.mask > 0).mean()))
        return loc
    for variant, truth in pair.truths.items():
        t = tallies.setdefault((variant, "copytrace"), Tally())
        if loc is None:
            t.scores.append(failed(pair.case.name, error))
            t.registration["failed"] += 1
            continue
        truth_boxes = _truth_boxes(pair, truth)
        t.scores.append(score_mask(pair.case.name, loc.mask, truth, seconds + extra,
                                   boxes=[r.box for r in loc.edit_regions], truth_boxes=truth_boxes))
        t.registration[loc.registration.method] += 1
        if pair.case.kind:
            _kind_tally(loc, truth_boxes, pair.case.kind, t.kinds)
    if verbose:
        s = tallies[(next(iter(pair.truths)), "copytrace")].scores[-1]
        method = loc.registration.method if loc else "FAILED"
        print(f"{pair.case.name:<28} copytrace  f1 {s.f1:.3f} iou {s.iou:.3f} hits {s.hits}/{s.regions} "
              f"{method} {seconds:.2f}s {error}", file=sys.stderr)
    return loc


def _baselines(pair: Pair, tallies: dict, alarms: dict, verbose: bool) -> None:
    for m, fn in BASELINES.items():
        start = time.perf_counter()
        pred = fn(pair.query, pair.original)
        seconds = time.perf_counter() - start
        for variant, truth in pair.truths.items():
            tallies.setdefault((variant, m), Tally()).scores.append(
                score_mask(pair.case.name, pred, truth, seconds, truth_boxes=_truth_boxes(pair, truth)))
        if pair.clean is not None:
            flagged = float((fn(pair.clean, pair.original) > 0).mean())
            alarms.setdefault((pair.case.dataset, m), []).append(flagged)


def run(data: Path, *, seed: int = 0, travel: bool = True, clean: bool = True, limit: int | None = None,
        made: int = 60, verbose: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    sets = {"micc-f220": micc_cases(data), "noso": noso_cases(data),
            "made-edits": made_edit_cases(data, pairs=made, seed=seed)}
    if limit:
        sets = {k: v[:limit] for k, v in sets.items()}
    tallies: dict[tuple[str, str], Tally] = {}
    alarms: dict[tuple[str, str], list[float]] = {}
    config = LocalizeConfig()
    high, weights, sweep = _fit(_pairs(sets[FIT_SET], rng, travel, clean), config, tallies, alarms, verbose)
    fitted = replace(config, high=high, objects=replace(config.objects, confidence_weights=weights))
    for name, cases in sets.items():
        if name == FIT_SET:
            continue
        for pair in _pairs(cases, rng, travel, clean):
            for which, query in (("tampered", pair.query), ("clean", pair.clean)):
                if query is not None:
                    an, seconds, error = _analyze(query, pair.original, fitted)
                    _score_copytrace(pair, which, an, seconds, error, fitted, tallies, alarms, verbose)
            _baselines(pair, tallies, alarms, verbose)
    return _report(seed, travel, high, weights, sweep, tallies, alarms)


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
                    "sweep_mean_f1": {str(h): v for h, v in sweep.items()}},
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
    print(f"\n{report['cpus']} CPUs, load average {report['load_average']} at the end (s/pair is wall time "
          f"under that load, decoding excluded)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_default_data())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-travel", action="store_true", help="Score the tampered images as shipped.")
    ap.add_argument("--no-clean", action="store_true", help="Skip the false-alarm run on clean copies.")
    ap.add_argument("--limit", type=int, default=None, help="At most N pairs per set.")
    ap.add_argument("--made", type=int, default=60, help="Pairs in the made-edits set.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the full JSON (with per image).")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args(argv)
    if not (args.data / "forgery").is_dir():
        raise SystemExit(f"error: no forgery data under '{args.data}' (set --data or $COPYTRACE_DEV_DATA)")
    cv2.setNumThreads(1)
    report = run(args.data.resolve(), seed=args.seed, travel=not args.no_travel, clean=not args.no_clean,
                 limit=args.limit, made=args.made, verbose=args.verbose)
    if args.json:
        from copytrace.indexing.atomic import write_json_atomic

        write_json_atomic(args.json, report)
    print(json.dumps({k: v for k, v in report.items() if k != "per_image"}, indent=1))
    print()
    _print(report)


if __name__ == "__main__":
    main()
