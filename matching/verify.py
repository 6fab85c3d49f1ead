"""Local verification of a candidate match: does one geometry explain the query as a copy?

Global descriptors say two images *look* alike; verification checks that one homography maps
many local features of the query onto the reference (built on `matching.align`), then measures
what only a real copy has: near-exact pixel agreement of the aligned regions (a different photo
of the same object, even a planar one, differs in lighting, parallax and lens) and which image
holds the other. The record it returns is the evidence a person can check: inliers, the
homography, and the matched box in both images.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from copytrace.matching.align import AlignConfig, Alignment, Keypoints, align_keypoints, detect
from copytrace.matching.residuals import field_statistics, shading_of_warped
from copytrace.util.worker_guard import exit_with_parent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyConfig:
    """How many candidates to verify per query and how to align them."""

    top_k: int = 10
    align: AlignConfig = field(default_factory=AlignConfig)
    try_mirror: bool = True  # also match the mirrored query when the direct fit is weak (flip edits)
    mirror_below_inliers: int = 15
    mirror_below_coverage: float = 0.1  # ... or when its inliers cover less of the query than this
    border_band: int = 3  # px (detection scale) on each side of the projected reference border
    extends_min_margin: float = 0.08  # query must show this much (fraction of side) beyond a border
    seam_max: float = 1.0  # below: no pixel step at the reference border (the scene continues)
    border_agreement_min: float = 0.7  # NCC query vs reference on a strip inside every inner border


@dataclass(frozen=True)
class Prepared:
    """An image ready for verification: keypoints plus its grey thumbnail for pixel checks."""

    keypoints: Keypoints
    gray: np.ndarray  # uint8, the detection-scale grey image
    mirrored: Keypoints | None = None  # keypoints of the horizontally flipped image (queries only)


@dataclass(frozen=True)
class Unavailable:
    """A pair that could not be checked because an image could not be read (moved, deleted,
    unreadable). It is no evidence either way: the score falls back to the global similarity
    and the result says `verified: unavailable` with this reason."""

    reason: str


@dataclass(frozen=True)
class Verification:
    """Geometric and photometric evidence for one (query, reference) pair."""

    inliers: int
    matches: int
    homography: np.ndarray  # 3 x 3, query pixels -> reference pixels (original resolution)
    query_box: tuple[int, int, int, int]
    reference_box: tuple[int, int, int, int]
    query_coverage: float  # inlier hull area / query area
    reference_coverage: float
    residual: float  # median inlier reprojection error, px at detection scale
    photometric: float  # NCC of query vs warped reference over the inlier hull, in [-1, 1]
    detail: float  # the same NCC on band-passed images: fine texture must line up too
    tight: float  # share of inliers within 1 px (detection scale) of the fitted homography
    agreement: float  # share of the whole overlap (not just the inlier hull) whose pixels agree
    reference_in_query: float  # area of the reference frame projected into the query / query area
    seam: float  # pixel step across the projected reference border vs next to it (paste evidence)
    query_extends: bool  # the query shows the scene beyond the reference frame, without a seam
    mirrored: bool = False
    # The median inlier error in units of the inliers' keypoint size (`residual_per_size`):
    # blur and pixelation leave only large keypoints, located less precisely, so a blurred copy's
    # error in pixels looks like another photo's while its error per size stays small.
    residual_per_size: float = 0.0
    # What a second photograph leaves (`matching.residuals`; the view check reads them): shading
    # no global gain explains, and the inliers (detection-scale query x, y, reference x, y) and
    # both frames (detection-scale w, h of query and reference) behind the residual field, which
    # is measured on first use only (`field_f`): most pairs never need it.
    shading: float = 0.0
    field_points: np.ndarray | None = field(default=None, repr=False, compare=False)
    field_frames: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @functools.cached_property
    def _field(self) -> tuple[float, float]:
        if self.field_points is None:
            return 0.0, 0.0
        f = self.field_frames
        return field_statistics(self.field_points[:, :2], self.field_points[:, 2:], f[:2], f[2:])

    @property
    def field_f(self) -> float:
        """log F of the inlier residuals' smooth field (0 below `FIELD_MIN_INLIERS` inliers)."""
        return self._field[0]

    @property
    def field_correlation(self) -> float:
        """Neighbour correlation of the inlier residuals (0 below `FIELD_MIN_INLIERS`)."""
        return self._field[1]

    @property
    def _similarity_fit(self) -> tuple[float, float]:
        """Rotation (degrees) of the closest similarity transform to the homography over the
        matched query box, and how far the homography departs from it (share of the box's
        mapped diagonal). Copies are mostly similarity transforms at multiples of 90 degrees;
        handheld photos of the same object are rotated a few degrees and in perspective."""
        x0, y0, x1, y1 = self.query_box
        src = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
        dst = cv2.perspectiveTransform(src.reshape(-1, 1, 2), self.homography).reshape(-1, 2)
        if not np.isfinite(dst).all():
            return 0.0, 1.0
        a, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32))
        if a is None:
            return 0.0, 1.0
        fitted = np.c_[src, np.ones(4)] @ a.T
        diag = float(np.linalg.norm(dst.max(axis=0) - dst.min(axis=0))) + 1e-6
        return float(np.degrees(np.arctan2(a[1, 0], a[0, 0]))), float(
            np.abs(fitted - dst).max() / diag)

    @property
    def off_axis_degrees(self) -> float:
        """Rotation away from the nearest multiple of 90 degrees."""
        r = abs(self._similarity_fit[0]) % 90.0
        return min(r, 90.0 - r)

    @property
    def distortion(self) -> float:
        return self._similarity_fit[1]

    def as_evidence(self) -> dict:
        """JSON-ready fields for `Match.evidence`."""
        return {
            "inliers": self.inliers, "matches": self.matches,
            "homography": [[round(float(v), 6) for v in row] for row in self.homography],
            "query_box": list(self.query_box), "reference_box": list(self.reference_box),
            "query_coverage": round(self.query_coverage, 4),
            "reference_coverage": round(self.reference_coverage, 4),
            "residual_px": round(self.residual, 3),
            "residual_per_size": round(self.residual_per_size, 4),
            "photometric": round(self.photometric, 4),
            "detail": round(self.detail, 4), "tight": round(self.tight, 4),
            "agreement": round(self.agreement, 4),
            "rotation_off_axis_deg": round(self.off_axis_degrees, 2),
            "distortion": round(self.distortion, 4),
            "reference_in_query": round(self.reference_in_query, 4),
            "seam": round(self.seam, 3), "query_extends": self.query_extends,
            "mirrored": self.mirrored, "shading": round(self.shading, 4),
        }


def _small_gray(image: np.ndarray, config: AlignConfig) -> np.ndarray:
    gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image),
                                                      cv2.COLOR_RGB2GRAY)
    h, w = gray.shape[:2]
    scale = min(1.0, config.max_side / max(h, w))
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(gray)


def prepare(image: np.ndarray, *, config: VerifyConfig = VerifyConfig(),
            with_mirror: bool = False) -> Prepared:
    """Detect keypoints once per image; queries also get mirrored keypoints when asked."""
    kp = detect(image, config.align)
    return Prepared(kp, _small_gray(image, config.align), mirror_keypoints(kp) if with_mirror
                    else None)


def _mirror_permutation() -> np.ndarray:
    """SIFT descriptor bins (4 x 4 cells x 8 orientations, OpenCV's order) of the mirrored patch:
    mirroring the image about its vertical axis reverses the cell rows of the keypoint's
    oriented frame and negates the orientation bins."""
    idx = np.arange(128).reshape(4, 4, 8)
    return idx[::-1][:, :, (-np.arange(8)) % 8].reshape(-1)


MIRROR_PERMUTATION = _mirror_permutation()


def mirror_keypoints(kp: Keypoints) -> Keypoints:
    """The keypoints of the horizontally flipped image, without detecting again.

    Kept in the flipped image's coordinates (x -> width - x): USAC rejects orientation-reversing
    samples, so the reflection is composed into the homography after the fit (`_unflip`). The
    permuted descriptors match those OpenCV computes on the flipped image (median cosine 0.987
    on a dev query; detection is mirror-symmetric) at half the cost of a query's keypoints.
    """
    points = kp.points.copy()
    points[:, 0] = kp.width - points[:, 0]
    return Keypoints(points, np.ascontiguousarray(kp.descriptors[:, MIRROR_PERMUTATION]),
                     kp.width, kp.height, kp.scale, kp.sizes)


def _scale_matrix(s: float) -> np.ndarray:
    return np.diag([s, s, 1.0])


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-6 else 0.0


def _warp_reference(query: Prepared, reference: Prepared,
                    h_small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference grey warped into the query frame, and where it is defined."""
    qh, qw = query.gray.shape
    inv = np.linalg.inv(h_small)
    warped = cv2.warpPerspective(reference.gray, inv, (qw, qh), flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.full(reference.gray.shape, 255, np.uint8), inv, (qw, qh),
                                flags=cv2.INTER_NEAREST)
    return warped, valid


def _photometric(query: Prepared, blurred: tuple[np.ndarray, np.ndarray], overlap: np.ndarray,
                 hull_q: np.ndarray) -> tuple[float, float]:
    """NCC inside the query's inlier hull between the query and the reference warped onto it.

    Both are blurred a little first (`_blurred`) so JPEG and resampling noise do not count; NCC
    ignores brightness/contrast edits. A copy scores high; another photo of the same object
    scores lower (lighting, parallax), even when a homography fits its keypoints.
    """
    qh, qw = query.gray.shape
    mask = np.zeros((qh, qw), np.uint8)
    cv2.fillConvexPoly(mask, hull_q.astype(np.int32), 255)
    mask &= overlap
    sel = mask > 0
    if sel.sum() < 64:
        return 0.0, 0.0
    a, b = blurred
    # Band-pass (difference of Gaussians): a copy's fine texture lands on the same pixels;
    # another photo of the same planar object matches only the coarse layout.
    da = a - cv2.GaussianBlur(a, (0, 0), 2.5)
    db = b - cv2.GaussianBlur(b, (0, 0), 2.5)
    return _ncc(a[sel], b[sel]), _ncc(da[sel], db[sel])


def _blurred(query: Prepared, warped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query and warped reference, lightly blurred (float32): shared by the pixel checks."""
    return (cv2.GaussianBlur(query.gray, (0, 0), 1.5).astype(np.float32),
            cv2.GaussianBlur(warped, (0, 0), 1.5).astype(np.float32))


def _agreement(query: Prepared, blurred: tuple[np.ndarray, np.ndarray], overlap_mask: np.ndarray,
               hull_q: np.ndarray, block: int = 16) -> float:
    """Share of the blocks of the overlap (the reference frame inside the query) that agree.

    A copy agrees wherever it was not overlaid; another photo of a planar object agrees only on
    the object, because the homography that maps the object does not map the rest of the scene.
    Intensities are matched with one gain/offset fitted inside the inlier hull (colour edits);
    a block agrees when its mean difference is small or its texture correlates.
    """
    qh, qw = query.gray.shape
    overlap = overlap_mask > 0
    hull = np.zeros((qh, qw), np.uint8)
    cv2.fillConvexPoly(hull, hull_q.astype(np.int32), 255)
    inner = (hull > 0) & overlap
    if inner.sum() < 64:
        return 0.0
    a, b = blurred
    gain, offset = np.polyfit(b[inner], a[inner], 1)
    b = gain * b + offset
    ny, nx = qh // block, qw // block
    if ny == 0 or nx == 0:
        return 0.0

    def blocks(image: np.ndarray) -> np.ndarray:  # (blocks, pixels), row-major block order
        return image[: ny * block, : nx * block].reshape(ny, block, nx, block).swapaxes(
            1, 2).reshape(ny * nx, block * block).astype(np.float64)

    # All blocks at once (a Python loop over ~800 blocks was most of `_measure`): masked
    # means, standard deviations and NCC per block over the overlap pixels.
    m = blocks(overlap)
    count = m.sum(axis=1)
    used = count >= 0.75 * block * block
    if not used.any():
        return 0.0
    m, count = m[used], count[used]
    pa, pb = blocks(a)[used], blocks(b)[used]
    diff = (np.abs(pa - pb) * m).sum(axis=1) / count
    ca = (pa - (pa * m).sum(axis=1, keepdims=True) / count[:, None]) * m
    cb = (pb - (pb * m).sum(axis=1, keepdims=True) / count[:, None]) * m
    va, vb = (ca * ca).sum(axis=1), (cb * cb).sum(axis=1)
    den = np.sqrt(va * vb)
    ncc = np.where(den > 1e-6, (ca * cb).sum(axis=1) / np.maximum(den, 1e-12), 0.0)
    textured = (np.sqrt(va / count) > 4) & (np.sqrt(vb / count) > 4) & (ncc > 0.8)
    return float(((diff < 10.0) | textured).mean())


def _border_geometry(query: Prepared, reference: Prepared, h_small: np.ndarray,
                     warped: np.ndarray, config: VerifyConfig) -> tuple[float, float, bool]:
    """How the reference frame sits in the query: its area share, the seam, and extension.

    When the whole reference frame lands inside the query and the query has content beyond it,
    either the reference was pasted into the query (image-in-image, padding, meme frame: there is
    a pixel step along the border) or the reference is itself a crop of a larger scene the query
    shows (the query agrees with the reference right up to its border, and the content continues
    across it with no step). Only the first is a copy of the reference.
    """
    qh, qw = query.gray.shape
    rh, rw = reference.gray.shape
    corners = np.array([[0, 0], [rw, 0], [rw, rh], [0, rh]], np.float32).reshape(-1, 1, 2)
    proj = cv2.perspectiveTransform(corners, np.linalg.inv(h_small)).reshape(-1, 2)
    query_poly = np.array([[0, 0], [qw, 0], [qw, qh], [0, qh]], np.float32)
    inter, _ = cv2.intersectConvexConvex(proj.astype(np.float32), query_poly)
    share = float(min(1.0, inter / max(1.0, qw * qh)))
    band = config.border_band
    margin_x, margin_y = config.extends_min_margin * qw, config.extends_min_margin * qh
    steps, nexts, agree = [], [], []
    for i in range(4):
        p, q = proj[i], proj[(i + 1) % 4]
        mid = (p + q) / 2
        horizontal = abs(q[0] - p[0]) >= abs(q[1] - p[1])
        inside = (margin_y <= mid[1] <= qh - margin_y) if horizontal else \
            (margin_x <= mid[0] <= qw - margin_x)
        if not inside:
            continue
        profile = _edge_profile(query.gray, warped, p, q, proj.mean(axis=0), band)
        if profile is not None:
            steps.append(profile[0])
            nexts.append(profile[1])
            agree.append(profile[2])
    if not steps:
        return share, 0.0, False
    seam = float(np.median(steps) / (np.median(nexts) + 2.0))
    extends = seam < config.seam_max and min(agree) > config.border_agreement_min
    return share, seam, extends


def _edge_profile(gray: np.ndarray, warped: np.ndarray, p: np.ndarray, q: np.ndarray,
                  centre: np.ndarray, band: int) -> tuple[float, float, float] | None:
    """Along segment p-q: mean |step| across it, mean |step| just inside it, and the NCC of the
    query and the warped reference on a strip just inside (does the reference reach the edge?)."""
    h, w = gray.shape
    length = float(np.hypot(*(q - p)))
    if length < 8:
        return None
    t = np.linspace(0.1, 0.9, max(8, int(length * 0.8)))
    pts = p[None] + t[:, None] * (q - p)[None]
    normal = np.array([-(q - p)[1], (q - p)[0]]) / length
    if np.dot(centre - (p + q) / 2, normal) < 0:
        normal = -normal  # point inwards (towards the reference content)

    def sample(image: np.ndarray, offset: float) -> np.ndarray:
        xy = pts + offset * normal[None]
        x = np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1)
        y = np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1)
        return image[y, x].astype(np.float32)

    outside, inside, deeper = sample(gray, -band), sample(gray, band), sample(gray, 3 * band)
    strip = np.concatenate([sample(gray, o) for o in (2 * band, 4 * band)])
    strip_ref = np.concatenate([sample(warped, o) for o in (2 * band, 4 * band)])
    return (float(np.mean(np.abs(outside - inside))), float(np.mean(np.abs(inside - deeper))),
            _ncc(strip, strip_ref))


def verify_prepared(query: Prepared, reference: Prepared | Unavailable, *,
                    config: VerifyConfig = VerifyConfig()) -> Verification | Unavailable | None:
    """Align query onto reference and measure the fit; None when no geometry is supported, the
    reference's `Unavailable` when it could not be read."""
    if isinstance(reference, Unavailable):
        return reference
    best = align_keypoints(query.keypoints, reference.keypoints, config.align)
    mirrored = False
    if config.try_mirror and query.mirrored is not None and _weak(best, config):
        alt = align_keypoints(query.mirrored, reference.keypoints, config.align)
        if alt is not None and (best is None or alt.inliers > best.inliers):
            best, mirrored = _unflip(alt, query.keypoints.width), True
    if best is None:
        return None
    return _measure(query, reference, best, mirrored, config)


def _weak(a: Alignment | None, config: VerifyConfig) -> bool:
    """A direct fit weak enough that a mirrored copy may explain the query better: few inliers,
    or inliers on a sliver of the query. A mirrored photo's direct fit can lock onto a small
    mirror-symmetric strip with plenty of inliers (15 on a box's printed edge, 1.7 % of the
    query), and the mirror attempt must not be skipped then."""
    return (a is None or a.inliers < config.mirror_below_inliers
            or a.query_coverage < config.mirror_below_coverage)


def _unflip(a: Alignment, width: int) -> Alignment:
    """An alignment of the mirrored query, expressed in the query's own pixel coordinates."""
    flip = np.array([[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pts = a.query_points.copy()
    pts[:, 0] = width - pts[:, 0]
    x0, y0, x1, y1 = a.query_box
    return replace(a, homography=a.homography @ flip, query_points=pts,
                   query_box=(width - x1, y0, width - x0, y1))


def _measure(query: Prepared, reference: Prepared, a: Alignment, mirrored: bool,
             config: VerifyConfig) -> Verification:
    sq, sr = query.keypoints.scale, reference.keypoints.scale
    h_small = _scale_matrix(sr) @ a.homography @ np.linalg.inv(_scale_matrix(sq))
    q_small = a.query_points * sq
    r_small = a.reference_points * sr
    projected = cv2.perspectiveTransform(q_small.reshape(-1, 1, 2).astype(np.float64),
                                         h_small).reshape(-1, 2)
    errors = np.linalg.norm(projected - r_small, axis=1)
    residual = float(np.median(errors))
    tight = float((errors < 1.0).mean())
    per_size = residual_per_size(errors, a, query.keypoints, reference.keypoints)
    # A mirrored fit's homography already includes the reflection (mirrored keypoints are
    # stored in the query's own coordinates), so the pixel checks need no special case.
    hull_q = cv2.convexHull(q_small.astype(np.float32)).reshape(-1, 2)
    warped, valid = _warp_reference(query, reference, h_small)
    overlap = cv2.erode(valid, np.ones((5, 5), np.uint8))  # away from the warped border
    blurred = _blurred(query, warped)
    photometric, detail = _photometric(query, blurred, overlap, hull_q)
    agreement = _agreement(query, blurred, overlap, hull_q)
    share, seam, extends = _border_geometry(query, reference, h_small, warped, config)
    shading = shading_of_warped(query.gray, warped, valid > 0)
    qk, rk = query.keypoints, reference.keypoints
    return Verification(
        inliers=a.inliers, matches=a.matches, homography=a.homography,
        query_box=a.query_box, reference_box=a.reference_box,
        query_coverage=a.query_coverage, reference_coverage=a.reference_coverage,
        residual=residual, residual_per_size=per_size, photometric=photometric, detail=detail,
        tight=tight, agreement=agreement,
        reference_in_query=share, seam=seam,
        query_extends=extends, mirrored=mirrored, shading=shading,
        field_points=np.hstack([q_small, r_small]).astype(np.float64),
        field_frames=(qk.width * qk.scale, qk.height * qk.scale, rk.width * rk.scale,
                      rk.height * rk.scale),
    )


TYPICAL_KEYPOINT_SIZE = 3.0
"""Median inlier keypoint diameter (px at detection scale) of sharp images (2.3-4 on dev copies
and other views; 6-13 on blurred or pixelated copies): the size assumed when sizes are unknown."""


def residual_per_size(errors: np.ndarray, a: Alignment, query: Keypoints,
                      reference: Keypoints) -> float:
    """Median of each inlier's reprojection error over its keypoint size (geometric mean of the
    query's and the reference's diameter, detection scale). SIFT locates a keypoint to a share of
    its size, so this is the error a copy is expected to have whatever its blur; a second
    photograph adds parallax and lens error on top, which sharp (small) keypoints expose."""
    if a.pairs is None or query.sizes is None or reference.sizes is None or not len(errors):
        return float(np.median(errors)) / TYPICAL_KEYPOINT_SIZE if len(errors) else 0.0
    size = np.sqrt(np.maximum(query.sizes[a.pairs[:, 0]], 0.5)
                   * np.maximum(reference.sizes[a.pairs[:, 1]], 0.5))
    return float(np.median(errors / size))


class PreparedCache:
    """Bounded LRU of prepared references, so a reference shared by many queries is detected once.

    With `disk` (a writable folder, e.g. inside the index), prepared references are also stored
    there as small .npz files, so a later process (or a worker of a pool) does not detect them
    again. Keys are reference URIs; the file name also depends on the alignment settings and on
    the file's size and modification time, so a file replaced at the same path is detected anew
    instead of being verified against the keypoints of what used to be there.
    """

    def __init__(self, loader: Callable[[str], np.ndarray], *,
                 config: VerifyConfig = VerifyConfig(), capacity: int = 512,
                 disk: str | Path | None = None) -> None:
        self.loader = loader
        self.config = config
        self.capacity = capacity
        self.disk = Path(disk) if disk is not None else None
        self._items: OrderedDict[str, Prepared | None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Prepared | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
        path = self._disk_path(key)
        item = self._from_disk(path)
        if item is None:
            try:
                item = prepare(self.loader(key), config=self.config)
            except Exception as exc:  # noqa: BLE001 - an unreadable reference just cannot be verified
                log.warning("cannot verify against '%s': %s", key, exc)
                item = Unavailable(f"cannot read reference '{key}': {exc}")
            else:
                self._to_disk(path, item)
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item

    def __len__(self) -> int:
        return len(self._items)

    def _disk_path(self, key: str) -> Path | None:
        if self.disk is None:
            return None
        try:
            stat = os.stat(key)
        except (OSError, ValueError):
            return None  # unreadable now: the loader says why; nothing stale is served
        version = (stat.st_size, stat.st_mtime_ns)
        # CACHE_FORMAT: files written before keypoint sizes were kept are not read.
        digest = hashlib.sha1(repr((key, version, self.config.align, CACHE_FORMAT)).encode()
                              ).hexdigest()
        return self.disk / digest[:2] / f"{digest}.npz"

    def _from_disk(self, path: Path | None) -> Prepared | None:
        if path is None or not path.exists():
            return None
        try:
            with np.load(path) as z:
                w, h, scale = z["frame"]
                kp = Keypoints(z["points"], z["descriptors"], int(w), int(h), float(scale),
                               z["sizes"])
                return Prepared(kp, z["gray"])
        except (OSError, ValueError, KeyError) as exc:
            log.info("ignoring unreadable keypoint cache file '%s': %s", path, exc)
            return None

    def _to_disk(self, path: Path | None, item: Prepared) -> None:
        if path is None:
            return
        kp = item.keypoints
        # A re-creatable cache: write-then-rename (never a torn file), but no fsync per file.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, points=kp.points, descriptors=kp.descriptors, sizes=kp.sizes,
                         gray=item.gray,
                         frame=np.array([kp.width, kp.height, kp.scale], np.float64))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a read-only index folder still verifies, from memory only
            log.info("keypoint cache disabled: cannot write '%s': %s", path, exc)
            self.disk = None


def load_rgb(uri: str) -> np.ndarray:
    """Full-resolution RGB pixels (EXIF orientation applied), as the catalog saw the file."""
    from copytrace.descriptors.decode import decode_file

    return decode_file(uri).pixels


def verify_batch(jobs: Sequence[tuple[str | np.ndarray | Prepared, Sequence[str]]], *,
                 config: VerifyConfig = VerifyConfig(),
                 cache: PreparedCache | None = None) -> list[list[Verification | None]]:
    """Verify each query (a path, RGB pixels or prepared keypoints) against its candidate
    reference paths.

    References are prepared once per batch (`PreparedCache`); a query or reference that cannot
    be read gives None for its pairs rather than failing the batch. Runs as one Ray task.
    """
    cache = cache or PreparedCache(load_rgb, config=config)
    out: list[list[Verification | None]] = []
    for query, refs in jobs:
        try:
            if isinstance(query, Prepared):
                prepared = query
            else:
                pixels = load_rgb(query) if isinstance(query, str) else query
                prepared = prepare(pixels, config=config, with_mirror=config.try_mirror)
        except Exception as exc:  # noqa: BLE001 - one unreadable query must not sink the batch
            log.warning("cannot verify query '%s': %s", query if isinstance(query, str) else "",
                        exc)
            out.append([None] * len(refs))
            continue
        out.append(_verify_row(prepared, refs, cache, config))
    return out


def _verify_row(prepared: Prepared, refs: Sequence[str], cache: PreparedCache,
                config: VerifyConfig) -> list:
    """One prepared query against its references (prepared through `cache`)."""
    row = []
    for ref in refs:
        ref_prepared = cache.get(ref)
        row.append(None if ref_prepared is None
                   else verify_prepared(prepared, ref_prepared, config=config))
    return row


CACHE_FORMAT = 2  # bump when `Prepared` gains arrays: old keypoint cache files are then ignored

_worker_cache: PreparedCache | None = None
_blas_controller = None
_blas_limited = False


def one_blas_thread() -> contextlib.AbstractContextManager:
    """Descriptor matching (one GEMM per pair) with BLAS on one thread, restored on exit.

    A pair's distance matrix is too small for BLAS threads to pay off even on an idle box, and
    on a busy one (other processes, or pool workers already on every core) OpenBLAS's spinning
    threads made matching about 3x slower (13.7 vs 4.0 ms a pair, load ~3 on 2 cores)."""
    global _blas_controller
    from threadpoolctl import ThreadpoolController

    if _blas_controller is None:  # finding the loaded libraries takes ms: once per process
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _one_blas_thread_here() -> None:
    """This worker process (pool or Ray) matches on one BLAS thread from now on."""
    global _blas_limited
    if not _blas_limited:
        one_blas_thread()  # not used as a context: the limit stays for the process
        _blas_limited = True


def _task_cache(config: VerifyConfig, capacity: int, disk: str | None) -> PreparedCache:
    """The worker's cache (kept across tasks), or one for this task (a Ray task). Not `or`: an
    empty cache is falsy (`__len__`), which made every pool task start a cache of its own."""
    if _worker_cache is not None:
        return _worker_cache
    return PreparedCache(load_rgb, config=config, capacity=capacity, disk=disk)


def init_worker(config: VerifyConfig, capacity: int, disk: str | None) -> None:
    """Process-pool initializer: one reference cache per worker, one OpenCV thread; the worker
    ends with its parent."""
    global _worker_cache
    import cv2

    exit_with_parent()
    cv2.setNumThreads(1)
    _one_blas_thread_here()
    _worker_cache = PreparedCache(load_rgb, config=config, capacity=capacity, disk=disk)


def verify_jobs(items: list[tuple[Prepared | object, Sequence[str]]], config: VerifyConfig,
                 capacity: int = 512, disk: str | None = None,
                 ) -> list[tuple[Prepared | None, list[Verification | None]]]:
    """Prepare each query (pixels, unless prepared already) and verify it against its references;
    returns the prepared query with its row. The task a worker process or Ray task runs (this
    module imports no torch, FAISS or Arrow, so workers start fast and small)."""
    _one_blas_thread_here()
    cache = _task_cache(config, capacity, disk)
    out = []
    for query, refs in items:
        try:
            prepared = query if isinstance(query, Prepared) else prepare(
                query, config=config, with_mirror=config.try_mirror)
        except Exception as exc:  # noqa: BLE001 - one bad query must not sink the task
            log.warning("cannot prepare a query for verification: %s", exc)
            out.append((None, [None] * len(refs)))
            continue
        out.append((prepared, _verify_row(prepared, refs, cache, config)))
    return out


def prepare_references(uris: Sequence[str], config: VerifyConfig, capacity: int = 512,
                       disk: str | None = None) -> int:
    """Prepare the keypoints of these references ahead of queries (into the worker's cache and
    the on-disk cache, which every process reads); returns how many could not be read."""
    cache = _task_cache(config, capacity, disk)
    return sum(isinstance(cache.get(uri), Unavailable) for uri in uris)
