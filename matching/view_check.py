"""Copy, or another photo of the same flat object? The dedup audit's check on verified geometry.

A planar object (a book, a CD cover, a painting) photographed twice is related by a homography,
so verification finds hundreds of inliers and the calibrated score says "copy". What differs is
how the pair was made: a copy is a digital edit, so its inliers sit within a pixel of one
homography that is close to a similarity at a multiple of 90 degrees, and its pixels agree down
to fine texture; a second photo brings perspective, lens and lighting changes, a looser fit and
texture that no longer lines up, and a real camera leaves a smooth field in the inliers'
reprojection residuals (lens distortion differs per pose, a "flat" object is not quite flat) that
no homography absorbs, where a digital edit's residuals are keypoint noise. A logistic model
over those measurements (`VIEW_FEATURES`), fitted by `benchmarks.dedup_fit` on a planted FIT
split that shares no photo or object with the benchmark's TEST split, turns them into
P(copy | geometry); pairs below its cut are rejected as "another view". The fitted model ships
as `view_check.json` beside this module.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from copytrace.matching.align import AlignConfig, Keypoints, match_descriptors
from copytrace.matching.calibrate import fit_logistic
from copytrace.matching.residuals import (
    FIELD_MIN_INLIERS,
    field_statistics,
    shading_residual,
)
from copytrace.matching.verify import Verification, mirror_keypoints

__all__ = ["VIEW_FEATURES", "ViewCheck", "fit_view_check", "perspective", "residual_field",
           "shading_residual", "shipped_view_check", "view_features"]
from copytrace.util.atomic import write_json_atomic

VIEW_FEATURES = ("log_inliers", "inlier_ratio", "residual", "tight", "photometric", "detail",
                 "agreement", "distortion", "log_off_axis", "log_min_coverage", "content_coverage",
                 "log_perspective", "log_anisotropy", "log_shading", "log_field_f",
                 "field_correlation")


def perspective(v: Verification) -> tuple[float, float]:
    """How projective the homography is over the matched query box (its last row scaled by the
    box side: 0 for any affine map), and the anisotropy of its linear part (1 for a similarity).
    A digital copy is (almost) a similarity; a second photo of a flat object is seen from
    another camera position, so it is foreshortened."""
    h = np.asarray(v.homography, np.float64)
    if not np.isfinite(h).all() or abs(h[2, 2]) < 1e-9:
        return 1.0, 10.0
    h = h / h[2, 2]
    x0, y0, x1, y1 = v.query_box
    side = max(1.0, float(max(x1 - x0, y1 - y0)))
    sv = np.linalg.svd(h[:2, :2], compute_uv=False)
    return float(np.hypot(h[2, 0], h[2, 1]) * side), float(min(10.0, sv[0] / max(sv[1], 1e-9)))
SIGNS = (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1, -1)
"""Where a fitted weight must be >= 0 (1), <= 0 (-1) or is free (0). The fit split's other views
are well-textured objects with hundreds of inliers, so an unconstrained fit learns "more inliers
means another photo", which would push a large exact copy towards rejection: that feature is
dropped when its sign comes out wrong, as the engine's calibration does with wrong-signed
features. A smooth residual field (`residual_field`) can only speak for another photo."""
SHIPPED = Path(__file__).with_name("view_check.json")


def residual_field(query: Keypoints, reference: Keypoints, homography: np.ndarray, *,
                   mirrored: bool = False, config: AlignConfig | None = None
                   ) -> tuple[float, float]:
    """How much structure the verified pair's inlier residuals have: (log F, correlation).

    The inliers (descriptor matches within the alignment's threshold of `homography`) are
    refitted with a least-squares homography; a digital copy leaves white keypoint noise, a
    second photo a smooth field. log F: the F statistic of a degree-3 polynomial field fitted
    to the residual vectors (about 0 for white noise); correlation: mean dot product of each
    residual with its nearest neighbours' over its own squared length (about 0 for white noise).
    (0, 0) when fewer than `FIELD_MIN_INLIERS` inliers. `mirrored`: the verification matched
    the flipped query (its homography maps the query's own coordinates)."""
    q, r = _field_inliers(query, reference, homography, mirrored, config or AlignConfig())
    return field_statistics(q, r, (query.width * query.scale, query.height * query.scale),
                            (reference.width * reference.scale,
                             reference.height * reference.scale))


def _field_inliers(query: Keypoints, reference: Keypoints, homography: np.ndarray,
                   mirrored: bool, config: AlignConfig) -> tuple[np.ndarray, np.ndarray]:
    """Matched points (detection scale) within the alignment threshold of `homography`."""
    desc = mirror_keypoints(query).descriptors if mirrored else query.descriptors
    m = match_descriptors(desc, reference.descriptors, config.ratio)
    if len(m) < FIELD_MIN_INLIERS:
        return np.zeros((0, 2)), np.zeros((0, 2))
    src = query.points[m[:, 0]].astype(np.float64)
    dst = reference.points[m[:, 1]].astype(np.float64)
    projected = cv2.perspectiveTransform(src.reshape(-1, 1, 2), np.asarray(homography, np.float64))
    inl = ((projected.reshape(-1, 2) - dst) ** 2).sum(axis=1) < (
        config.ransac_threshold / min(query.scale, reference.scale)) ** 2
    return src[inl] * query.scale, dst[inl] * reference.scale


def view_features(v: Verification, coverage: float | None, shading: float | None = None,
                  residuals: tuple[float, float] | None = None) -> np.ndarray:
    """The measurements in `VIEW_FEATURES` order; `coverage` is the content check's agreeing
    share of the non-template overlap (0 when not checked), `shading` the `shading_residual`
    of the pair (0 when not measured), `residuals` its `residual_field` ((0, 0), white noise,
    when not measured)."""
    persp, aniso = perspective(v)
    residuals = residuals or (0.0, 0.0)
    return np.array([
        math.log1p(v.inliers), v.inliers / max(1, v.matches), min(8.0, v.residual), v.tight,
        max(0.0, v.photometric), max(0.0, v.detail), v.agreement, min(0.5, v.distortion),
        math.log1p(v.off_axis_degrees), math.log(min(v.query_coverage, v.reference_coverage) + 0.01),
        0.0 if coverage is None else coverage,
        math.log(min(1.0, persp) + 1e-3), math.log(aniso),
        math.log(min(1.0, shading or 0.0) + 1e-3), residuals[0], residuals[1],
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

    def probability(self, v: Verification, coverage: float | None,
                    shading: float | None = None, residuals: tuple[float, float] | None = None
                    ) -> float:
        if len(self.weights) != len(VIEW_FEATURES):
            raise ValueError(f"view check fitted on {len(self.weights)} features, "
                             f"this copytrace measures {len(VIEW_FEATURES)}: refit it")
        x = ((view_features(v, coverage, shading, residuals) - np.asarray(self.mean))
             / np.asarray(self.scale))
        z = float(np.dot(self.weights, x) + self.bias)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def is_copy(self, v: Verification, coverage: float | None,
                shading: float | None = None, residuals: tuple[float, float] | None = None
                ) -> bool:
        return self.probability(v, coverage, shading, residuals) >= self.cut

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path = SHIPPED) -> ViewCheck:
        d = json.loads(Path(path).read_text())
        return cls(**{**d, "weights": tuple(d["weights"]), "mean": tuple(d["mean"]),
                      "scale": tuple(d["scale"]), "features": tuple(d["features"])})


@functools.cache
def shipped_view_check() -> ViewCheck | None:
    """The fitted model shipped with copytrace, or None when it is absent (check off); read once
    per process."""
    return ViewCheck.load(SHIPPED) if SHIPPED.exists() else None


def fit_view_check(x: np.ndarray, y: np.ndarray, decides: np.ndarray | None = None, *,
                   keep_recall: float = 0.98, l2: float = 1.0, source: str = "") -> ViewCheck:
    """Fit on feature rows `x` (copies y=1, other photos y=0). The cut keeps `keep_recall` of the
    copies among the rows it `decides` (those the calibrated score would otherwise accept): a
    copy rejected here is a silent miss, so recall is fixed first and precision follows."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    decides = np.ones(len(y), bool) if decides is None else np.asarray(decides, bool)
    std = x.std(axis=0)
    mean, scale = x.mean(axis=0), np.where(std > 1e-6, std + 1e-6, 1.0)  # constant: left out
    z = (x - mean) / scale
    active = list(range(x.shape[1]))
    while True:
        wa, b = fit_logistic(z[:, active], y, l2=l2)
        wrong = [(abs(v), j) for v, j in zip(wa, active, strict=True) if SIGNS[j] * v < 0]
        if not wrong:
            break
        active.remove(max(wrong)[1])
    w = np.zeros(x.shape[1])
    w[active] = wa
    p = 1.0 / (1.0 + np.exp(-np.clip(z @ w + b, -50, 50)))
    pos = np.sort(p[(y == 1) & decides])
    cut = float(pos[int(math.floor((1.0 - keep_recall) * len(pos)))]) if len(pos) else 0.5
    both = decides & (p >= cut)
    return ViewCheck(tuple(round(float(v), 5) for v in w), round(float(b), 5),
                     tuple(round(float(v), 5) for v in mean), tuple(round(float(v), 5) for v in scale),
                     round(cut, 5), fitted_on={
                         "source": source, "rows": len(y), "copies": int(y.sum()),
                         "others": int((1 - y).sum()), "decided_rows": int(decides.sum()),
                         "keep_recall": keep_recall,
                         "decided_copies_kept": f"{int((both & (y == 1)).sum())}/{len(pos)}",
                         "decided_others_kept": f"{int((both & (y == 0)).sum())}/"
                                                f"{int((decides & (y == 0)).sum())}"})
