"""One calibrated score in [0, 1] from global and local evidence; 0.5 is the decision threshold.

The score is a logistic regression over a handful of features a person can read off the
evidence: the background-normalized global similarity, whether a geometry was found, how many
keypoints agree with it (log), what share of the putative matches agree, the median
reprojection error (a copy is an exact warp: sub-pixel; another photo of the same object is
not), the pixel agreement of the aligned regions (NCC), and the matched area. Weights are fitted
on labelled (query, candidate) pairs from a calibration benchmark disjoint from the evaluation
one (`fit_calibration`; `copytrace.benchmarks.matching_bench --fit-calibration`), so 0.5 means
"more likely a copy than not" on data like that. One hard rule sits on top: when the query shows
the reference's scene beyond the reference's frame with no paste seam, the reference is a crop
of the query's scene, not its original, and the score is capped below the threshold.

A new descriptor changes the scale of the global similarity: refit, and store the result with
the index (`calibration.json`), which then overrides the defaults below.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from copytrace.indexing.atomic import write_json_atomic
from copytrace.matching.verify import Verification

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
FEATURES = ("global", "verified", "log_inliers", "inlier_ratio", "residual", "photometric",
            "log_area")
RESIDUAL_CAP = 3.0  # px; also the value used when there is no geometry


@dataclass(frozen=True)
class Calibration:
    """Logistic weights, in `FEATURES` order, plus the global-only model for --no-verify."""

    weights: tuple[float, ...] = (9.0, 0.0, 1.2, 2.0, -1.5, 2.0, 0.3)
    bias: float = -6.0
    global_weight: float = 20.0  # --no-verify: sigmoid(global_bias + global_weight * global)
    global_bias: float = -3.0
    extends_cap: float = 0.2  # max score when the reference is a crop of the query's scene
    source: str = "hand-set defaults (not fitted)"
    fitted_on: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        d = json.loads(Path(path).read_text())
        d["weights"] = tuple(d["weights"])
        return cls(**d)


def load_calibration(index_root: str | Path | None = None) -> Calibration:
    """The index's fitted calibration when it has one, else the packaged defaults."""
    if index_root is not None and (Path(index_root) / CALIBRATION_FILE).exists():
        return Calibration.load(Path(index_root) / CALIBRATION_FILE)
    return DEFAULT_CALIBRATION


def features(global_score: float, verification: Verification | None) -> np.ndarray:
    if verification is None:
        return np.array([global_score, 0.0, 0.0, 0.0, RESIDUAL_CAP, 0.0, math.log(0.01)],
                        np.float64)
    v = verification
    area = max(v.query_coverage, v.reference_coverage)
    return np.array([
        global_score, 1.0, math.log1p(v.inliers), v.inliers / max(1, v.matches),
        min(RESIDUAL_CAP, v.residual), max(0.0, v.photometric), math.log(area + 0.01),
    ], np.float64)


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def fused_score(global_score: float, verification: Verification | None, *,
                calibration: Calibration | None = None) -> float:
    """P(copy) for a verified candidate (or a candidate whose verification found no geometry)."""
    c = calibration or DEFAULT_CALIBRATION
    z = c.bias + float(np.dot(c.weights, features(global_score, verification)))
    p = _sigmoid(z)
    if verification is not None and verification.query_extends:
        p = min(p, c.extends_cap)
    return p


def global_score_only(global_score: float, *, calibration: Calibration | None = None) -> float:
    """P(copy) from the normalized global similarity alone (no verification)."""
    c = calibration or DEFAULT_CALIBRATION
    return _sigmoid(c.global_bias + c.global_weight * global_score)


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2,
                 iterations: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularized logistic regression (Newton / IRLS)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0  # do not shrink the bias
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg
        step = np.linalg.solve(hess + 1e-9 * np.eye(len(w)), grad)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w[:-1], float(w[-1])


# The direction each feature may push the score (0: free). Collinear features otherwise get
# fitted signs a person could not defend (more inliers lowering the score), which would not
# generalize beyond the calibration set; a feature whose fitted sign is wrong is dropped.
SIGNS = (1, 0, 1, 1, -1, 1, 1)


def fit_calibration(global_scores: np.ndarray, verifications: list[Verification | None],
                    labels: np.ndarray, *, source: str = "", l2: float = 1e-2) -> Calibration:
    """Fit both models on labelled (query, candidate) pairs; label 1 = the pair is a copy."""
    x = np.stack([features(float(g), v) for g, v in zip(global_scores, verifications,
                                                         strict=True)])
    y = np.asarray(labels, np.float64)
    active = list(range(x.shape[1]))
    while True:
        w_active, b = fit_logistic(x[:, active], y, l2=l2)
        wrong = [(abs(wi), j) for wi, j in zip(w_active, active, strict=True)
                 if SIGNS[j] and np.sign(wi) != SIGNS[j]]
        if not wrong:
            break
        active.remove(max(wrong)[1])
        log.info("calibration: dropped feature %s (wrong sign)", FEATURES[max(wrong)[1]])
    w = np.zeros(x.shape[1])
    w[active] = w_active
    gw, gb = fit_logistic(np.asarray(global_scores, np.float64)[:, None], y, l2=l2)
    return Calibration(
        weights=tuple(round(float(v), 4) for v in w), bias=round(b, 4),
        global_weight=round(float(gw[0]), 4), global_bias=round(gb, 4), source=source,
        fitted_on={"pairs": len(y), "positives": int(y.sum())},
    )


DEFAULT_CALIBRATION = Calibration()
