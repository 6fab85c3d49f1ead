"""Pixel-accurate registration of a query onto its original, for diffing them.

`matching.align` gives a keypoint homography that is good to a pixel or two in the downscaled
detection frame: enough to verify a copy, not enough to diff it (a 2-pixel error lights up
every edge). Here that fit is refined by ECC (enhanced correlation coefficient) on the
intensities themselves, and the refinement is kept only when it really raises the correlation
over the overlap, so a refinement pulled astray by a large edit cannot make things worse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from copytrace.matching.align import AlignConfig, align

log = logging.getLogger(__name__)


class AlignmentError(ValueError):
    """The query cannot be registered onto the original (too few agreeing keypoints)."""


@dataclass(frozen=True)
class RegisterConfig:
    align: AlignConfig = AlignConfig(max_side=640, max_features=2000)
    ecc_max_side: int = 768  # ECC runs on images downscaled so the query's longer side is this
    ecc_iterations: int = 60
    ecc_epsilon: float = 1e-5
    max_ecc_shift: float = 0.01  # reject refinements that move a corner by more than this x size
    max_keypoint_drift: float = 1.0  # ... or that move the keypoint inliers off their matches by more
    # than this many detection pixels (median) beyond the keypoint fit: on repetitive texture
    # ECC can lock onto the wrong period while raising the overall correlation


@dataclass(frozen=True)
class Registration:
    """Query -> original homography and how it was obtained."""

    homography: np.ndarray  # 3 x 3 float64, maps query pixels to original pixels
    inliers: int
    matches: int
    refined: bool  # ECC refinement accepted
    mirrored: bool  # the query is a left-right mirror image of the original
    correlation: float  # normalised correlation of the overlap after registration
    scale: float  # linear size of original pixels per query pixel (>1: query is a downscale)


def _gray_small(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    s = min(1.0, side / max(h, w))
    if s < 1:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return gray.astype(np.float32), s


def _scaled(H: np.ndarray, sq: float, sr: float) -> np.ndarray:
    """H (query->original) expressed between images scaled by sq and sr."""
    return np.diag([sr, sr, 1.0]) @ H @ np.diag([1 / sq, 1 / sq, 1.0])


def overlap_correlation(query_gray: np.ndarray, original_gray: np.ndarray, H: np.ndarray) -> float:
    """Pearson correlation of the query and the original warped into it, over their overlap."""
    h, w = query_gray.shape
    warped = cv2.warpPerspective(original_gray, np.linalg.inv(H), (w, h), flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.ones_like(original_gray, np.uint8), np.linalg.inv(H), (w, h),
                                flags=cv2.INTER_NEAREST) > 0
    if valid.sum() < 100:
        return -1.0
    a = query_gray[valid].astype(np.float64)
    b = warped[valid].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


def _keypoint_error(H: np.ndarray, query_points: np.ndarray, reference_points: np.ndarray) -> float:
    """Median distance (original pixels) between projected query inliers and their matches."""
    if len(query_points) == 0:
        return 0.0
    p = cv2.perspectiveTransform(query_points.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)
    return float(np.median(np.linalg.norm(p - reference_points, axis=1)))


def homography_scale(H: np.ndarray, width: int, height: int) -> float:
    """Linear scale of H at the query's centre (original pixels per query pixel)."""
    c = np.array([[[width / 2, height / 2]], [[width / 2 + 1, height / 2]], [[width / 2, height / 2 + 1]]],
                 np.float64)
    p = cv2.perspectiveTransform(c, H).reshape(3, 2)
    jac = np.stack([p[1] - p[0], p[2] - p[0]])
    return float(np.sqrt(abs(np.linalg.det(jac))))


def register(query: np.ndarray, original: np.ndarray, *,
             config: RegisterConfig = RegisterConfig()) -> Registration:
    """Homography mapping query pixels to original pixels, keypoint fit refined by ECC."""
    fit = align(query, original, config.align)
    mirrored = False
    if fit is None:  # SIFT is not mirror-invariant; mirrored copies are common
        fit = align(np.ascontiguousarray(query[:, ::-1]), original, config.align)
        mirrored = fit is not None
    if fit is None:
        raise AlignmentError("too few keypoint matches agree on one geometry")
    H0 = fit.homography.astype(np.float64)
    if mirrored:  # the fit maps the mirrored query; compose with the mirror
        H0 = H0 @ np.array([[-1.0, 0.0, query.shape[1] - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    qp = fit.query_points.astype(np.float64)
    if mirrored:
        qp = np.stack([query.shape[1] - 1.0 - qp[:, 0], qp[:, 1]], axis=1)
    qg, sq = _gray_small(query, config.ecc_max_side)
    # the original at the query's working resolution, so both have similar detail
    sr = min(1.0, sq / max(1e-6, homography_scale(H0, query.shape[1], query.shape[0])))
    og, sr = _gray_small(original, round(max(original.shape[:2]) * sr))
    Hs0 = _scaled(H0, sq, sr)
    corr0 = overlap_correlation(qg, og, Hs0)
    Hs, corr, refined = Hs0, corr0, False
    try:
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, config.ecc_iterations,
                    config.ecc_epsilon)
        warp = (Hs0 / Hs0[2, 2]).astype(np.float32)
        _, warp = cv2.findTransformECC(qg, og, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
        Hs1 = warp.astype(np.float64)
        h, w = qg.shape
        corners = np.array([[[0, 0]], [[w, 0]], [[w, h]], [[0, h]]], np.float64)
        moved = np.abs(cv2.perspectiveTransform(corners, Hs1) - cv2.perspectiveTransform(corners, Hs0)).max()
        corr1 = overlap_correlation(qg, og, Hs1)
        H1 = np.diag([1 / sr, 1 / sr, 1.0]) @ Hs1 @ np.diag([sq, sq, 1.0])
        drift = _keypoint_error(H1, qp, fit.reference_points) - _keypoint_error(H0, qp, fit.reference_points)
        detection_pixel = max(original.shape[:2]) / min(config.align.max_side, max(original.shape[:2]))
        if (moved <= config.max_ecc_shift * max(og.shape) and corr1 > corr0
                and drift <= config.max_keypoint_drift * detection_pixel):
            Hs, corr, refined = Hs1, corr1, True
        else:
            log.debug("ECC refinement rejected: corner shift %.1f px, keypoint drift %.2f px, "
                      "correlation %.4f -> %.4f", moved, drift, corr0, corr1)
    except cv2.error as exc:
        log.debug("ECC refinement failed: %s", str(exc).strip().splitlines()[-1])
    H = np.diag([1 / sr, 1 / sr, 1.0]) @ Hs @ np.diag([sq, sq, 1.0])
    H /= H[2, 2]
    return Registration(homography=H, inliers=fit.inliers, matches=fit.matches, refined=refined,
                        mirrored=mirrored,
                        correlation=corr, scale=homography_scale(H, query.shape[1], query.shape[0]))
