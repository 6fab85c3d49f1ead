"""The view check's residual-field measurement and its sign constraints, on real photos."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from copytrace.matching.verify import prepare, verify_prepared
from copytrace.matching.view_check import (
    SIGNS,
    VIEW_FEATURES,
    fit_view_check,
    residual_field,
)

from photos import jpeg_bytes, photo


def _jpeg(a: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(a, 90))).convert("RGB"))


def _lens(img: np.ndarray, k: float) -> np.ndarray:
    """`img` seen through a radial lens (k1 = k about the centre, over the half diagonal)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, f = w / 2, h / 2, 0.5 * np.hypot(w, h)
    u, v = (xx - cx) / f, (yy - cy) / f
    r2 = u * u + v * v
    return cv2.remap(img, (cx + u * (1 + k * r2) * f).astype(np.float32),
                     (cy + v * (1 + k * r2) * f).astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _pose(w: int, h: int) -> np.ndarray:
    m = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 7, 0.9), [0, 0, 1]])
    m[2, :2] = [2e-5, -1e-5]
    return m


def _field(a: np.ndarray, b: np.ndarray) -> tuple[tuple[float, float], bool]:
    qa, qb = prepare(a, with_mirror=True), prepare(b)
    v = verify_prepared(qa, qb)
    assert v is not None and v.inliers >= 100
    return residual_field(qa.keypoints, qb.keypoints, v.homography, mirrored=v.mirrored), v.mirrored


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_a_digital_warp_leaves_white_residuals_a_second_pose_through_a_lens_does_not(name):
    """A copy warped by a homography (rotation, scale, perspective): residuals are keypoint
    noise. The same pose change seen through one lens from two positions (undistort, move,
    distort again): the lens bends the two images differently, a smooth field remains."""
    a = photo(name)
    h, w = a.shape[:2]
    pose = _pose(w, h)
    copy = _jpeg(cv2.warpPerspective(a, pose, (w, h), borderMode=cv2.BORDER_REFLECT))
    other = _jpeg(_lens(cv2.warpPerspective(_lens(a, -0.06), pose, (w, h),
                                            borderMode=cv2.BORDER_REFLECT), 0.06))
    (copy_f, copy_corr), _ = _field(a, copy)
    (other_f, other_corr), _ = _field(a, other)
    assert abs(copy_f) < 1.5 and abs(copy_corr) < 0.06, (copy_f, copy_corr)
    assert other_f > 2.0 and other_corr > 0.2, (other_f, other_corr)


def test_a_mirrored_copy_is_measured_on_the_mirrored_keypoints():
    a = photo("chelsea")
    (f, corr), mirrored = _field(a, _jpeg(a[:, ::-1].copy()))
    assert mirrored
    assert (f, corr) != (0.0, 0.0), "the flipped copy's inliers should be found"
    assert abs(f) < 1.5 and abs(corr) < 0.06, (f, corr)


def test_too_few_inliers_measure_nothing():
    a = prepare(photo("astronaut"))
    b = prepare(photo("coins"))
    assert residual_field(a.keypoints, b.keypoints, np.eye(3)) == (0.0, 0.0)


def test_a_residual_field_weight_never_speaks_for_a_copy():
    """Rows where a structured residual field comes with copies (the wrong way round): the fit
    drops those features instead of learning that structure means a copy."""
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.5).astype(float)
    x = rng.normal(size=(n, len(VIEW_FEATURES)))
    for name in ("log_field_f", "field_correlation"):
        x[:, VIEW_FEATURES.index(name)] += 2.0 * y  # larger field for copies: wrong sign
    x[:, VIEW_FEATURES.index("tight")] += 1.0 * y
    check = fit_view_check(x, y)
    for name in ("log_field_f", "field_correlation"):
        j = VIEW_FEATURES.index(name)
        assert SIGNS[j] == -1
        assert check.weights[j] == 0.0
    assert check.weights[VIEW_FEATURES.index("tight")] > 0
