"""Fit the dedup audit's "copy or another view" check on the planted FIT split (never on TEST).

    python -m copytrace.benchmarks.dedup_fit --data ../shared/data --work /tmp/dedup-fit

Makes the FIT split (benchmarks.dedup_planted: other ImageNet references, other Caltech photos,
other UKBench objects than the TEST split dedup_bench reports on) and audits it with the view
check off (an existing WORK/audit is reused). Every candidate pair with verified geometry is then
verified both ways (the audit tries either direction), and pipelines.dedup_views is fitted on the
directions that pass the content check: label 1 when both images are in one planted group (a
copy), else 0 (mostly UKBench other views); its cut keeps --keep-recall of the copies among the
directions the calibrated score accepts. Writes the model (default: the shipped
pipelines/dedup_views.json) and prints the fit split's pair precision / recall with the check off
and on (in-sample: the split it was fitted on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from copytrace.benchmarks.dedup_bench import score, truth
from copytrace.benchmarks.dedup_planted import Split, make_planted
from copytrace.matching.calibrate import load_calibration
from copytrace.matching.templates import TemplateConfig
from copytrace.matching.verify import VerifyConfig
from copytrace.pipelines.dedup import dedup
from copytrace.pipelines.dedup_score import ScoreJob, score_jobs
from copytrace.pipelines.dedup_views import SHIPPED, ViewCheck, fit_view_check, view_features

FIT_SET = dict(seed=1, references=200, screenshots=30, framed_others=40, watermarked=25,
               ukbench_groups=75, distractors=20)


def training_rows(work: Path, folder: Path, group: dict[str, str]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[frozenset]]:
    """Features, labels, "the score accepts it" and the pair of both directions of every
    candidate with verified geometry whose content check passes (cached in WORK/fit-rows.npz)."""
    cache = work / "fit-rows.npz"
    if cache.exists():
        d = np.load(cache)
        return d["x"], d["y"], d["decides"], [frozenset(p) for p in d["pairs"].tolist()]
    cands = [c for c in pq.read_table(work / "audit" / "candidates.parquet").to_pylist()
             if c["inliers"] is not None]
    uri = {i: str(folder / "images" / f"{i}.jpg") for i in group}
    jobs = [ScoreJob(q, uri[q], [(o, uri[o], g)]) for c in cands for q, o, g in (
        (c["image_id_a"], c["image_id_b"], c["similarity"]),
        (c["image_id_b"], c["image_id_a"], c["similarity"]))]
    rows = [(view_features(ev["verification"], ev["check"].coverage, ev.get("shading")),
             float(group[q] == group[o]), score >= 0.5, (q, o))
            for q, o, score, ev in score_jobs(jobs, {}, verify_config=VerifyConfig(),
                                              calibration=load_calibration(),
                                              template_config=TemplateConfig())
            if ev.get("verification") is not None and ev["check"] is not None
            and ev["check"].passed]
    x = np.stack([r[0] for r in rows])
    y, decides = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    pairs = np.array([r[3] for r in rows])
    np.savez(cache, x=x, y=y, decides=decides, pairs=pairs)
    return x, y, decides, [frozenset(p) for p in pairs.tolist()]


def predicted(candidates: list[dict], check: ViewCheck | None, x: np.ndarray,
              pairs: list[frozenset]) -> set[frozenset]:
    """The audit's duplicate pairs, less those whose every verified direction (rows `x` of
    `pairs`) the view check rejects."""
    passed: dict[frozenset, bool] = {}
    if check is not None:
        for row, pair in zip(x, pairs, strict=True):
            z = (row - np.asarray(check.mean)) / np.asarray(check.scale)
            p = 1.0 / (1.0 + np.exp(-(float(np.dot(check.weights, z)) + check.bias)))
            passed[pair] = passed.get(pair, False) or p >= check.cut
    return {pair for c in candidates if c["duplicate"]
            and passed.get(pair := frozenset((c["image_id_a"], c["image_id_b"])), True)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--work", default="/tmp/dedup-fit")
    ap.add_argument("--out", default=str(SHIPPED), help="where the fitted model is written")
    ap.add_argument("--keep-recall", type=float, default=0.98,
                    help="share of the fit split's verified copies the cut must keep")
    args = ap.parse_args(argv)
    work = Path(args.work)
    folder = work / "planted"
    if not (folder / "groups.csv").exists():
        make_planted(args.data, folder, split=Split.FIT, **FIT_SET)
    group, true_pairs = truth(folder)
    if not (work / "audit" / "candidates.parquet").exists():
        dedup(folder / "images", work / "audit", view_check=False, report=False, use_ray=False,
              show_progress=True)
    x, y, decides, pairs = training_rows(work, folder, group)
    cands = pq.read_table(work / "audit" / "candidates.parquet").to_pylist()
    # only pairs the view check would decide: the audit's content check (with the templates
    # learned from the whole split) passed; verified again, a pair sharing only a frame may pass
    # the template-free check
    content = {frozenset((c["image_id_a"], c["image_id_b"])) for c in cands
               if c["reason"] in ("content match", "below threshold")}
    keep = np.array([p in content for p in pairs])
    x, y, decides, pairs = x[keep], y[keep], decides[keep], [p for p, k in zip(pairs, keep,
                                                                                 strict=True) if k]
    check = fit_view_check(x, y, decides, keep_recall=args.keep_recall,
                           source=f"dedup_fit FIT split ({len(group)} images, seed 1)")
    check.save(args.out)
    exact = pq.read_table(work / "audit" / "pairs.parquet").to_pylist()
    cands += [{**p, "duplicate": True} for p in exact if p["kind"] == "exact"]
    off = score(predicted(cands, None, x, pairs), group, true_pairs)
    on = score(predicted(cands, check, x, pairs), group, true_pairs)
    summary = {"images": len(group), "true_pairs": len(true_pairs), "fitted_on": check.fitted_on,
               "cut": check.cut, "weights": dict(zip(check.features, check.weights, strict=True)),
               "view_check_off": dict(zip(("precision", "recall", "f1"), off, strict=True)),
               "view_check_on_in_sample": dict(zip(("precision", "recall", "f1"), on, strict=True))}
    print(json.dumps(summary, indent=1))
    print(f"\nFIT split (in-sample): precision / recall / F1  off {off[0]:.3f} / {off[1]:.3f} / "
          f"{off[2]:.3f}   on {on[0]:.3f} / {on[1]:.3f} / {on[2]:.3f}   model -> {args.out}")


if __name__ == "__main__":
    main()
