"""Registration without keypoints: search the near-identity similarity transforms directly.

Most re-encoded copies are the original cropped a little, resized and maybe mirrored. When
SIFT finds too few agreeing matches (small, flat or heavily edited images), that family is small
enough to search outright: the image sizes bound the scale (the copy shows 80-100 % of the
original along each axis), and for each scale the shift is the peak of a normalised
cross-correlation of the thumbnails. `dense_search` covers what that misses (a larger crop, an
added border): grid patches of the query are matched into the original over a wide range of
scales, and a RANSAC similarity fit keeps the scale where most patches agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    side: int = 256  # coarse similarity search: the original's longer side, pixels
    fine_side: int = 512  # ... then refined at this size around the best scale
    max_crop: float = 0.2  # the copy may lose up to this share of each axis
    scale_step: float = 0.005  # relative step between scales tried (coarse pass)
    min_ncc: float = 0.5  # a similarity fit holds at this normalised cross-correlation
    dense_side: int = 240  # dense matching: the original's longer side, pixels
    dense_scales: int = 14  # scales tried, from 0.25 to 1.3 x "the copy shows the whole original"
    patch: int = 25  # grid patch side (pixels at the original's dense scale)
    grid: int = 7  # grid x grid patches
    patch_ncc: float = 0.75  # a patch match counts above this NCC
    min_inliers: int = 8  # a dense fit holds with this many agreeing patches ...
    min_inlier_share: float = 0.3  # ... that are at least this share of the textured patches


@dataclass(frozen=True)
class SimilarityFit:
    homography: np.ndarray  # 3 x 3, query pixels -> original pixels
    mirrored: bool
    score: float  # 0..1: NCC of the best placement, or share of agreeing patches
    accepted: bool  # the evidence is strong enough to call it registered
    inliers: int = 0
    candidates: int = 0


def _gray(image: np.ndarray) -> np.ndarray:
    g = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    return g.astype(np.float32)


def _shrink(gray: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    h, w = gray.shape
    s = min(1.0, side / max(h, w))
    small = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), 0.8), s


def _mirror(width: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _scale_range(q: tuple[int, int], o: tuple[int, int], max_crop: float) -> tuple[float, float]:
    """Original pixels per query pixel allowed by the sizes: crops of up to max_crop per axis."""
    kx, ky = o[0] / q[0], o[1] / q[1]
    lo, hi = max(kx, ky) * (1 - max_crop), min(kx, ky) * 1.02
    if lo > hi:  # aspect changed more than a crop explains (a border was added): be generous
        lo, hi = min(kx, ky) * (1 - max_crop), max(kx, ky) * 1.02
    return lo, hi


def _place(query: np.ndarray, original_small: np.ndarray, wo: float, k: float) -> tuple[float, np.ndarray]:
    """Best NCC placement of the query scaled by k (original px per query px) in the thumbnail."""
    qh, qw = query.shape
    oh, ow = original_small.shape
    tw, th = max(8, round(qw * k * wo)), max(8, round(qh * k * wo))
    tmpl = cv2.GaussianBlur(cv2.resize(query, (tw, th), interpolation=cv2.INTER_AREA), (0, 0), 0.8)
    cx0, cy0 = max(0, (tw - ow + 1) // 2), max(0, (th - oh + 1) // 2)  # too big: use its centre
    tmpl = tmpl[cy0:cy0 + min(th, oh), cx0:cx0 + min(tw, ow)]
    if tmpl.std() < 1e-3:
        return -1.0, np.eye(3)
    res = cv2.matchTemplate(original_small, tmpl, cv2.TM_CCOEFF_NORMED)
    _, best, _, (lx, ly) = cv2.minMaxLoc(res)
    sx, sy = tw / qw, th / qh
    H = np.array([[sx / wo, 0, (lx - cx0) / wo], [0, sy / wo, (ly - cy0) / wo], [0, 0, 1.0]])
    return float(best), H


def similarity_search(query: np.ndarray, original: np.ndarray, *,
                      config: SearchConfig = SearchConfig()) -> SimilarityFit | None:
    """The crop + resize (+ mirror) placement of `query` in `original` with the highest NCC."""
    qg, og = _gray(query), _gray(original)
    lo, hi = _scale_range(qg.shape[::-1], og.shape[::-1], config.max_crop)
    small, wo = _shrink(og, config.side)
    n = max(2, int(np.ceil(np.log(hi / lo) / np.log1p(config.scale_step))) + 1)
    best: tuple[float, float, bool] | None = None
    for mirrored in (False, True):
        q = np.ascontiguousarray(qg[:, ::-1]) if mirrored else qg
        for k in np.geomspace(lo, hi, n):
            score, _ = _place(q, small, wo, float(k))
            if best is None or score > best[0]:
                best = (score, float(k), mirrored)
    if best is None:
        return None
    _, k0, mirrored = best
    q = np.ascontiguousarray(qg[:, ::-1]) if mirrored else qg
    fine, wf = _shrink(og, config.fine_side)
    step = 1 + config.scale_step
    score, H = max((_place(q, fine, wf, float(k)) for k in np.geomspace(k0 / step, k0 * step, 5)),
                   key=lambda t: t[0])
    if mirrored:
        H = H @ _mirror(query.shape[1])
    log.debug("similarity search: scale %.4f mirrored %s NCC %.3f", k0, mirrored, score)
    return SimilarityFit(H, mirrored, max(0.0, score), score >= config.min_ncc)


def _grid_matches(q: np.ndarray, small: np.ndarray, wo: float, k: float,
                  config: SearchConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Patch centres in the query (query pixels) and their best match in the original (original
    pixels), for the query scaled by k; and how many patches had texture to match."""
    qh, qw = q.shape
    qs = cv2.resize(q, (max(1, round(qw * k * wo)), max(1, round(qh * k * wo))), interpolation=cv2.INTER_AREA)
    qs = cv2.GaussianBlur(qs, (0, 0), 0.8)
    p, r = config.patch, config.patch // 2
    h, w = qs.shape
    if h < p or w < p or small.shape[0] < p or small.shape[1] < p:
        return np.zeros((0, 2)), np.zeros((0, 2)), 0
    src, dst, textured = [], [], 0
    for cy in np.linspace(r, h - r - 1, config.grid).round().astype(int):
        for cx in np.linspace(r, w - r - 1, config.grid).round().astype(int):
            patch = qs[cy - r:cy + r + 1, cx - r:cx + r + 1]
            if patch.std() < 4.0:
                continue
            textured += 1
            _, best, _, (lx, ly) = cv2.minMaxLoc(cv2.matchTemplate(small, patch, cv2.TM_CCOEFF_NORMED))
            if best >= config.patch_ncc:
                src.append((cx * qw / w, cy * qh / h))
                dst.append(((lx + r) / wo, (ly + r) / wo))
    return np.array(src, np.float32).reshape(-1, 2), np.array(dst, np.float32).reshape(-1, 2), textured


def dense_search(query: np.ndarray, original: np.ndarray, *,
                 config: SearchConfig = SearchConfig()) -> SimilarityFit | None:
    """Similarity fit from grid-patch matches over a wide range of scales (and the mirror)."""
    qg, og = _gray(query), _gray(original)
    small, wo = _shrink(og, config.dense_side)
    full = max(og.shape[1] / qg.shape[1], og.shape[0] / qg.shape[0])
    best: SimilarityFit | None = None
    for mirrored in (False, True):
        q = np.ascontiguousarray(qg[:, ::-1]) if mirrored else qg
        for k in np.geomspace(0.25 * full, 1.3 * full, config.dense_scales):
            src, dst, textured = _grid_matches(q, small, wo, float(k), config)
            if len(src) < 3:
                continue
            A, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                 ransacReprojThreshold=2.5 / wo, maxIters=2000)
            if A is None:
                continue
            n = int(inl.sum())
            scale = float(np.sqrt(abs(np.linalg.det(A[:, :2]))))
            share = n / max(1, textured)
            accepted = (n >= config.min_inliers and share >= config.min_inlier_share
                        and abs(np.log(scale / k)) < 0.15)
            if best is None or (accepted, share) > (best.accepted, best.score):
                H = np.vstack([A, [0, 0, 1.0]])
                if mirrored:
                    H = H @ _mirror(query.shape[1])
                best = SimilarityFit(H, mirrored, share, accepted, n, len(src))
        if best is not None and best.accepted:
            break
    return best
