"""What a second photograph leaves in a verified pair and a digital copy does not: a smooth field
in the inliers' reprojection residuals, and shading no global gain explains.

Pure measurements on matched points and grey pixels (no keypoint matching of their own), so both
the verifier (`matching.verify`, on every pair it fits) and the dedup audit's view check
(`matching.view_check`) take them from here.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

FIELD_MIN_INLIERS = 30
"""Fewer inliers than this: no field is measured (too few to tell a field from noise)."""
FIELD_DEGREE = 3  # the smooth field: a polynomial of this degree in the query's coordinates
FIELD_NEIGHBOURS = 5
FIELD_RADIUS = (2.0, 60.0)  # px (detection scale): neighbours nearer are one blob's duplicates


def field_statistics(query_points: np.ndarray, reference_points: np.ndarray,
                     query_frame: tuple[float, float], reference_frame: tuple[float, float]
                     ) -> tuple[float, float]:
    """(log F, correlation) of the residual field of matched inlier points (detection-scale
    pixels; frames: (width, height) at detection scale). The points are refitted with a
    least-squares homography; a digital copy leaves white keypoint noise, a second photo a smooth
    field. log F: the F statistic of a degree-3 polynomial field fitted to the residual vectors
    (about 0 for white noise); correlation: mean dot product of each residual with its nearest
    neighbours' over its own squared length (about 0 for white noise). (0, 0) when fewer than
    `FIELD_MIN_INLIERS` points."""
    q = np.asarray(query_points, np.float64).reshape(-1, 2)
    r = np.asarray(reference_points, np.float64).reshape(-1, 2)
    if len(q) < FIELD_MIN_INLIERS:
        return 0.0, 0.0
    qn, _ = _normalized(q, query_frame)
    rn, rf = _normalized(r, reference_frame)
    h, _ = cv2.findHomography(qn, rn, 0)
    if h is None or not np.isfinite(h).all():
        return 0.0, 0.0
    e = (cv2.perspectiveTransform(qn.reshape(-1, 1, 2), h).reshape(-1, 2) - rn) * rf
    return _field_f(qn, e), _neighbour_correlation(q, e)


def _normalized(points: np.ndarray, frame: tuple[float, float]) -> tuple[np.ndarray, float]:
    """Points about the frame centre over its half diagonal; that factor."""
    w, h = frame
    f = 0.5 * math.hypot(w, h)
    return (points - [w / 2, h / 2]) / f, f


def _field_f(qn: np.ndarray, e: np.ndarray) -> float:
    """log F statistic of a polynomial field over the residual vectors `e` at `qn`."""
    u, v = qn[:, 0], qn[:, 1]
    x = np.stack([u ** a * v ** (t - a) for t in range(FIELD_DEGREE + 1) for a in range(t + 1)],
                 axis=1)
    fit = x @ np.linalg.lstsq(x, e, rcond=None)[0]
    terms = 2 * x.shape[1]
    free = max(1, 2 * len(e) - terms - 8)  # less the refitted homography's 8
    ss_res, ss_tot = float(((e - fit) ** 2).sum()), float((e ** 2).sum())
    f = ((ss_tot - ss_res) / terms) / max(ss_res / free, 1e-12)
    return float(np.clip(math.log(max(f, 1e-3)), -3.0, 5.0))


def _neighbour_correlation(points: np.ndarray, e: np.ndarray) -> float:
    """Mean e_i . e_j over neighbours j of i (`FIELD_RADIUS`), over the mean |e_i|^2."""
    sq = (points ** 2).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (points @ points.T)  # squared distances
    d[d < FIELD_RADIUS[0] ** 2] = np.inf
    k = min(FIELD_NEIGHBOURS, len(points) - 1)
    nn = np.argpartition(d, k - 1, axis=1)[:, :k]
    near = np.take_along_axis(d, nn, 1) < FIELD_RADIUS[1] ** 2
    dots = (e[:, None, :] * e[nn]).sum(axis=2)
    den = float(((e ** 2).sum(axis=1)[:, None] * near).sum())
    return float(np.clip((dots * near).sum() / den, -1.0, 1.0)) if den > 1e-12 else 0.0


def shading_residual(query: np.ndarray, other: np.ndarray, homography: np.ndarray, *,
                     block: int = 16) -> float:
    """How far the smoothed brightness of `other` warped onto `query` departs from one global
    gain and offset (robust fit over BLOCKxBLOCK means), relative to the query's contrast.

    A copy's colour edits are global, so what is left is its local edits (outliers of the
    robust fit); a second photo is lit differently across the object (shading, highlights),
    which no global gain explains."""
    a, b = _grey(query), _grey(other)
    h, w = a.shape
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(b, homography, (w, h), flags=flags | cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.ones_like(b), homography, (w, h),
                                flags=flags | cv2.INTER_NEAREST)
    return shading_of_warped(a, warped, valid, block=block)


def _grey(x: np.ndarray) -> np.ndarray:
    return (x if x.ndim == 2 else cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)).astype(np.float32)


def shading_of_warped(query: np.ndarray, warped: np.ndarray, valid: np.ndarray, *,
                      block: int = 16) -> float:
    """`shading_residual` of a query grey and the other image already warped onto it (`valid`:
    1 where the warp is defined), so the verifier reuses the warp it made for its pixel checks."""
    a, warped = _grey(query), _grey(warped)
    h, w = a.shape
    ny, nx = h // block, w // block
    if ny * nx == 0:
        return 1.0

    def means(x: np.ndarray) -> np.ndarray:
        return x[: ny * block, : nx * block].reshape(ny, block, nx, block).mean(axis=(1, 3))

    full = means(valid.astype(np.float32)) > 0.99
    ma = means(cv2.GaussianBlur(a, (0, 0), 3))[full].astype(np.float64)
    mb = means(cv2.GaussianBlur(warped, (0, 0), 3))[full].astype(np.float64)
    if len(ma) < 12:
        return 1.0
    design = np.c_[mb, np.ones_like(mb)]
    coef = np.linalg.lstsq(design, ma, rcond=None)[0]
    for _ in range(3):  # reweighted: local edits (text, pasted shapes) are outliers
        res = ma - design @ coef
        inl = np.abs(res) < 3 * 1.4826 * np.median(np.abs(res)) + 2
        coef = np.linalg.lstsq(design[inl], ma[inl], rcond=None)[0]
    return float(np.median(np.abs(ma - design @ coef)) / (ma.std() + 1e-6))
