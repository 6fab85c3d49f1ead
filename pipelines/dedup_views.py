"""Copy, or another photo of the same flat object? The dedup audit's check on verified geometry.

A planar object (a book, a CD cover, a painting) photographed twice is related by a homography,
so verification finds hundreds of inliers and the calibrated score says "copy". What differs is
how the pair was made: a copy is a digital edit, so its inliers sit within a pixel of one
homography that is close to a similarity at a multiple of 90 degrees, and its pixels agree down
to fine texture; a second photo brings perspective, lens and lighting changes, a looser fit and
texture that no longer lines up. A logistic model over those measurements (`VIEW_FEATURES`),
fitted by `benchmarks.dedup_fit` on a planted FIT split that shares no photo or object with the
benchmark's TEST split, turns them into P(copy | geometry); pairs below its cut are rejected as
"another view". The fitted model ships as `dedup_views.json` beside this module.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from copytrace.indexing.atomic import write_json_atomic
from copytrace.matching.calibrate import fit_logistic
from copytrace.matching.verify import Verification

VIEW_FEATURES = ("log_inliers", "inlier_ratio", "residual", "tight", "photometric", "detail",
                 "agreement", "distortion", "log_off_axis", "log_min_coverage", "content_coverage")
SHIPPED = Path(__file__).with_name("dedup_views.json")


def view_features(v: Verification, coverage: float | None) -> np.ndarray:
    """The measurements in `VIEW_FEATURES` order; `coverage` is the content check's agreeing
    share of the non-template overlap (0 when not checked)."""
    return np.array([
        math.log1p(v.inliers), v.inliers / max(1, v.matches), min(8.0, v.residual), v.tight,
        max(0.0, v.photometric), max(0.0, v.detail), v.agreement, min(0.5, v.distortion),
        math.log1p(v.off_axis_degrees), math.log(min(v.query_coverage, v.reference_coverage) + 0.01),
        0.0 if coverage is None else coverage,
    ], np.float64)


@dataclass(frozen=True)
class ViewCheck:
    """Standardized logistic model; `cut` on its probability, chosen on the fit split."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    cut: float
    features: tuple[str, ...] = VIEW_FEATURES
    fitted_on: dict = field(default_factory=dict)

    def probability(self, v: Verification, coverage: float | None) -> float:
        x = (view_features(v, coverage) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = float(np.dot(self.weights, x) + self.bias)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def is_copy(self, v: Verification, coverage: float | None) -> bool:
        return self.probability(v, coverage) >= self.cut

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path = SHIPPED) -> ViewCheck:
        d = json.loads(Path(path).read_text())
        return cls(**{**d, "weights": tuple(d["weights"]), "mean": tuple(d["mean"]),
                      "scale": tuple(d["scale"]), "features": tuple(d["features"])})


def shipped_view_check() -> ViewCheck | None:
    """The fitted model shipped with copytrace, or None when it is absent (check off)."""
    return ViewCheck.load(SHIPPED) if SHIPPED.exists() else None


def fit_view_check(x: np.ndarray, y: np.ndarray, *, keep_recall: float = 0.98,
                   l2: float = 1.0, source: str = "") -> ViewCheck:
    """Fit on feature rows `x` (copies y=1, other views y=0); the cut keeps `keep_recall` of the
    fit split's copies (a copy rejected here is a silent miss, so recall is fixed first)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    w, b = fit_logistic((x - mean) / scale, y, l2=l2)
    p = 1.0 / (1.0 + np.exp(-np.clip(((x - mean) / scale) @ w + b, -50, 50)))
    pos = np.sort(p[y == 1])
    cut = float(pos[int(math.floor((1.0 - keep_recall) * len(pos)))]) if len(pos) else 0.5
    kept_neg = int((p[y == 0] >= cut).sum())
    return ViewCheck(tuple(round(float(v), 5) for v in w), round(float(b), 5),
                     tuple(round(float(v), 5) for v in mean), tuple(round(float(v), 5) for v in scale),
                     round(cut, 5), fitted_on={
                         "source": source, "copies": int(y.sum()), "other_views": int((1 - y).sum()),
                         "keep_recall": keep_recall,
                         "copies_kept": int((p[y == 1] >= cut).sum()),
                         "other_views_kept": kept_neg})
