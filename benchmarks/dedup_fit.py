"""Fit the dedup audit's "copy or another view" check on the planted FIT split (never on TEST).

    python -m copytrace.benchmarks.dedup_fit --data ../shared/data --work /tmp/dedup-fit

Makes the FIT split (benchmarks.dedup_planted: other ImageNet references, other Caltech photos,
other UKBench objects than the TEST split dedup_bench reports on), audits it with the view check
off, and fits pipelines.dedup_views on the verified pairs that pass the content check: label 1
when both images are in one planted group (a copy), else 0 (mostly UKBench other views). Writes
the model (default: the shipped pipelines/dedup_views.json) and prints the fit split's pair
precision / recall with the check off and on (in-sample: the split it was fitted on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from copytrace.benchmarks.dedup_bench import score, truth
from copytrace.benchmarks.dedup_planted import Split, make_planted
from copytrace.pipelines.dedup import dedup
from copytrace.pipelines.dedup_score import ScoredPair
from copytrace.pipelines.dedup_views import SHIPPED, ViewCheck, fit_view_check, view_features

FIT_SET = dict(seed=1, references=200, screenshots=30, framed_others=40, watermarked=25,
               ukbench_groups=75, distractors=20)


def training_rows(candidates: list[ScoredPair], group: dict[str, str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of the verified pairs the view check decides (content check passed)."""
    rows = [p for p in candidates if p.verification is not None and p.reason in (
        "content match", "below threshold")]
    x = np.stack([view_features(p.verification, p.coverage) for p in rows])
    y = np.array([float(group.get(p.a) == group.get(p.b)) for p in rows])
    return x, y


def predicted(candidates: list[ScoredPair], exact: set[frozenset], check: ViewCheck | None,
              threshold: float = 0.5) -> set[frozenset]:
    keep = set(exact)
    for p in candidates:
        if not p.duplicate:
            continue
        if check is not None and p.verification is not None and not check.is_copy(
                p.verification, p.coverage):
            continue
        keep.add(frozenset((p.a, p.b)))
    return keep


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
    audit = dedup(folder / "images", work / "audit", view_check=False, report=False,
                  use_ray=False, show_progress=True)
    exact = {frozenset((p.a, p.b)) for p in audit.pairs if p.kind == "exact"}
    x, y = training_rows(audit.candidates, group)
    check = fit_view_check(x, y, keep_recall=args.keep_recall,
                           source=f"dedup_fit FIT split ({len(group)} images, seed 1)")
    check.save(args.out)
    off = score(predicted(audit.candidates, exact, None), group, true_pairs)
    on = score(predicted(audit.candidates, exact, check), group, true_pairs)
    summary = {"images": len(group), "true_pairs": len(true_pairs), "fitted_on": check.fitted_on,
               "cut": check.cut, "weights": dict(zip(check.features, check.weights, strict=True)),
               "view_check_off": dict(zip(("precision", "recall", "f1"), off, strict=True)),
               "view_check_on_in_sample": dict(zip(("precision", "recall", "f1"), on, strict=True))}
    print(json.dumps(summary, indent=1))
    print(f"\nFIT split (in-sample): precision / recall / F1  off {off[0]:.3f} / {off[1]:.3f} / "
          f"{off[2]:.3f}   on {on[0]:.3f} / {on[1]:.3f} / {on[2]:.3f}   model -> {args.out}")


if __name__ == "__main__":
    main()
