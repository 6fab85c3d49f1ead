"""Pixel-accurate registration of a query onto its original, for diffing them.

Registration never gives up on a true copy: hypotheses are tried in order and the first that
holds is refined and used, its `method` recorded.

1. `given`: a homography the caller already has (the verifier's, from `copytrace query`);
2. `keypoints`: SIFT + MAGSAC homography (`matching.align`), mirrored too;
3. `similarity`: a search over the near-identity similarity transforms that most re-encoded
   copies are (crop + resize + shift, maybe mirrored), at the scales the two image sizes allow,
   by normalised cross-correlation of the thumbnails (`matching.similarity_search`);
4. `dense`: grid patches of the query matched into the original over a wide range of scales,
   then a RANSAC similarity fit (`matching.similarity_search`);
5. `best-guess` (only when the caller asserts the pair is a copy): the best of 3 and 4 even
   though it did not pass, with a low confidence.

Then ECC (enhanced correlation coefficient) refines the fit on the intensities; the refinement
is kept only when it really raises the correlation over the overlap (and, for keypoint fits,
keeps the inliers on their matches), so a refinement pulled astray by an edit cannot make
things worse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from copytrace.matching.align import AlignConfig, align
from copytrace.matching.similarity_search import SearchConfig, SimilarityFit, dense_search, similarity_search

log = logging.getLogger(__name__)


class AlignmentError(ValueError):
    """The query cannot be registered onto the original by any method (not a copy?)."""


class Method(str, Enum):
    GIVEN = "given"
    KEYPOINTS = "keypoints"
    SIMILARITY = "similarity"
    DENSE = "dense"
    BEST_GUESS = "best-guess"


@dataclass(frozen=True)
class RegisterConfig:
    align: AlignConfig = AlignConfig(max_side=640, max_features=2000)
    search: SearchConfig = field(default_factory=SearchConfig)
    ecc_max_side: int = 768  # ECC runs on images downscaled so the query's longer side is this
    ecc_iterations: int = 60
    ecc_epsilon: float = 1e-5
    max_ecc_shift: float = 0.01  # reject refinements that move a corner by more than this x size
    max_fallback_shift: float = 0.025  # ... the same for the coarser search fits
    max_keypoint_drift: float = 1.0  # ... or that move the keypoint inliers off their matches by more
    # than this many detection pixels (median) beyond the keypoint fit: on repetitive texture
    # ECC can lock onto the wrong period while raising the overall correlation


@dataclass(frozen=True)
class Registration:
    """Query -> original homography and how it was obtained."""

    homography: np.ndarray  # 3 x 3 float64, maps query pixels to original pixels
    inliers: int  # keypoint inliers (or agreeing grid patches for `dense`)
    matches: int
    refined: bool  # ECC refinement accepted
    mirrored: bool  # the query is a left-right mirror image of the original
    correlation: float  # normalised correlation of the overlap after registration
    scale: float  # linear size of original pixels per query pixel (>1: query is a downscale)
    method: str = Method.KEYPOINTS.value
    confidence: float = 1.0  # 0..1: how sure the geometry is; low for a best guess
    tried: tuple[str, ...] = ()  # the methods tried before the one used

    def to_json(self) -> dict:
        return {"method": self.method, "confidence": round(self.confidence, 3), "tried": list(self.tried),
                "homography": np.round(self.homography, 8).tolist(), "inliers": self.inliers,
                "matches": self.matches, "refined": self.refined, "mirrored": self.mirrored,
                "correlation": round(self.correlation, 4), "scale": round(self.scale, 4)}


@dataclass(frozen=True)
class _Hypothesis:
    method: Method
    homography: np.ndarray
    mirrored: bool = False
    inliers: int = 0
    matches: int = 0
    query_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    reference_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    support: float = 1.0  # the search's own 0..1 evidence (NCC, share of agreeing patches)


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


def _mirror(width: int) -> np.ndarray:
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _keypoint_hypothesis(query: np.ndarray, original: np.ndarray,
                         config: RegisterConfig) -> _Hypothesis | None:
    fit = align(query, original, config.align)
    mirrored = False
    if fit is None:  # SIFT is not mirror-invariant; mirrored copies are common
        fit = align(np.ascontiguousarray(query[:, ::-1]), original, config.align)
        mirrored = fit is not None
    if fit is None:
        return None
    H = fit.homography.astype(np.float64)
    qp = fit.query_points.astype(np.float64)
    if mirrored:  # the fit maps the mirrored query; compose with the mirror
        H = H @ _mirror(query.shape[1])
        qp = np.stack([query.shape[1] - 1.0 - qp[:, 0], qp[:, 1]], axis=1)
    return _Hypothesis(Method.KEYPOINTS, H, mirrored, fit.inliers, fit.matches, qp,
                       fit.reference_points.astype(np.float64))


def _search_hypothesis(method: Method, fit: SimilarityFit | None) -> _Hypothesis | None:
    if fit is None:
        return None
    return _Hypothesis(method, fit.homography, fit.mirrored, fit.inliers, fit.candidates, support=fit.score)


def _hypotheses(query: np.ndarray, original: np.ndarray, config: RegisterConfig,
                initial: np.ndarray | None, assume_copy: bool) -> tuple[_Hypothesis, list[str]]:
    """The first hypothesis that holds, in the module's order, and the methods tried before it."""
    tried: list[str] = []
    if initial is not None:
        H = np.asarray(initial, np.float64).reshape(3, 3)
        if np.isfinite(H).all() and abs(np.linalg.det(H[:2, :2])) > 1e-9:
            # the verifier composes a mirror into its homography: a reflection has det < 0
            H = H / H[2, 2]
            return _Hypothesis(Method.GIVEN, H, mirrored=bool(np.linalg.det(H[:2, :2]) < 0)), tried
        tried.append(Method.GIVEN.value)
    hyp = _keypoint_hypothesis(query, original, config)
    if hyp is not None:
        return hyp, tried
    tried.append(Method.KEYPOINTS.value)
    guesses: list[_Hypothesis] = []
    for method, search in ((Method.SIMILARITY, similarity_search), (Method.DENSE, dense_search)):
        fit = search(query, original, config=config.search)
        hyp = _search_hypothesis(method, fit)
        if hyp is not None and fit.accepted:
            return hyp, tried
        tried.append(method.value)
        if hyp is not None:
            guesses.append(hyp)
    if not assume_copy or not guesses:
        raise AlignmentError("no geometry found: too few keypoint matches agree, and neither a "
                             "crop/resize search nor dense patch matching lines the images up")
    best = guesses[0]  # the similarity search's placement: always a sane crop + resize
    return _Hypothesis(Method.BEST_GUESS, best.homography, best.mirrored, best.inliers, best.matches,
                       support=best.support), tried


def _confidence(hyp: _Hypothesis, correlation: float) -> float:
    """0..1 from how well the registered images correlate (an edit lowers it a little, a wrong
    geometry a lot) and how the geometry was found; a best guess stays below 0.3."""
    base = float(np.clip((correlation - 0.2) / 0.6, 0.0, 1.0))
    if hyp.method in (Method.GIVEN, Method.KEYPOINTS):
        base = max(base, min(1.0, hyp.inliers / 60)) if hyp.inliers else base
    elif hyp.method == Method.BEST_GUESS:
        base = min(0.3, 0.5 * base)
    return round(base, 3)


def register(query: np.ndarray, original: np.ndarray, *, config: RegisterConfig = RegisterConfig(),
             initial: np.ndarray | None = None, assume_copy: bool = False) -> Registration:
    """Homography mapping query pixels to original pixels (RGB uint8 both), ECC-refined.

    `initial`: a query -> original homography already known (the verifier's) to start from.
    `assume_copy`: the caller knows the pair is a copy, so a best guess beats no answer
    (never raises then, unless an image is empty). Raises AlignmentError otherwise.
    """
    hyp, tried = _hypotheses(query, original, config, initial, assume_copy)
    H0 = hyp.homography / hyp.homography[2, 2]
    qg, sq = _gray_small(query, config.ecc_max_side)
    # the original at the query's working resolution, so both have similar detail
    sr = min(1.0, sq / max(1e-6, homography_scale(H0, query.shape[1], query.shape[0])))
    og, sr = _gray_small(original, round(max(original.shape[:2]) * sr))
    Hs0 = _scaled(H0, sq, sr)
    corr0 = overlap_correlation(qg, og, Hs0)
    keypoints = hyp.method == Method.KEYPOINTS
    max_shift = config.max_ecc_shift if keypoints or hyp.method == Method.GIVEN else config.max_fallback_shift
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
        qp, rp = hyp.query_points, hyp.reference_points
        drift = _keypoint_error(H1, qp, rp) - _keypoint_error(H0, qp, rp)
        detection_pixel = max(original.shape[:2]) / min(config.align.max_side, max(original.shape[:2]))
        if (moved <= max_shift * max(og.shape) and corr1 > corr0
                and drift <= config.max_keypoint_drift * detection_pixel):
            Hs, corr, refined = Hs1, corr1, True
        else:
            log.debug("ECC refinement rejected: corner shift %.1f px, keypoint drift %.2f px, "
                      "correlation %.4f -> %.4f", moved, drift, corr0, corr1)
    except cv2.error as exc:
        log.debug("ECC refinement failed: %s", str(exc).strip().splitlines()[-1])
    H = np.diag([1 / sr, 1 / sr, 1.0]) @ Hs @ np.diag([sq, sq, 1.0])
    H /= H[2, 2]
    if hyp.method != Method.KEYPOINTS:
        log.info("registered by %s after %s failed (correlation %.3f)", hyp.method.value,
                 ", ".join(tried) or "nothing", corr)
    return Registration(homography=H, inliers=hyp.inliers, matches=hyp.matches, refined=refined,
                        mirrored=hyp.mirrored, correlation=corr,
                        scale=homography_scale(H, query.shape[1], query.shape[0]),
                        method=hyp.method.value, confidence=_confidence(hyp, corr), tried=tuple(tried))
