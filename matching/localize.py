"""Manipulation-diff localization: where a copy was edited relative to its original.

Register the query onto the original (keypoints + ECC, `matching.register`), warp the original
into the query's frame, score each pixel against redistribution noise (`matching.diffmap`),
then hysteresis threshold, morphological clean-up and connected regions. Query pixels that the
original's frame does not cover (padding, borders, captions outside the picture) are not edits
of the original: they are reported separately as added content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from copytrace.matching.diffmap import DiffConfig, DiffMaps, difference_maps
from copytrace.matching.register import AlignmentError, RegisterConfig, Registration, register

log = logging.getLogger(__name__)

__all__ = ["AlignmentError", "LocalizeConfig", "Localization", "Region", "localize", "overlay"]


@dataclass(frozen=True)
class LocalizeConfig:
    register: RegisterConfig = field(default_factory=RegisterConfig)
    diff: DiffConfig = field(default_factory=DiffConfig)
    max_side: int = 1024  # the diff runs with the query's longer side at most this
    high: float = 1.0  # hysteresis: a region needs a pixel at >= high ...
    low: float = 0.6  # ... and grows over pixels >= low (score units, see diffmap)
    border: int = 3  # pixels along the original's frame edge that are not compared
    min_area: float = 3e-4  # smallest edit region, as a fraction of the query
    min_added_area: float = 5e-3  # smallest added-content region, as a fraction of the query
    refine: bool = True  # tighten each region to where the pixel-level colour difference is real
    refine_k: float = 4.0  # pixel colour difference >= median + refine_k * robust sigma ...
    refine_floor: float = 6.0  # ... and >= this Delta E
    refine_band: int = 6  # rim (analysis pixels) that must show a colour change: ~3 sigma of blur + SSIM


@dataclass(frozen=True)
class Region:
    kind: str  # "edit" (differs from the original) or "added" (no counterpart in the original)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in query pixels (x1, y1 exclusive)
    area: int  # pixels of the query
    score: float  # 0..1, how far beyond redistribution noise; 1.0 for added content


@dataclass(frozen=True)
class Localization:
    mask: np.ndarray  # query-sized uint8, 255 where the query is an edit of the original
    added: np.ndarray  # query-sized uint8, 255 where the original has no counterpart
    heat: np.ndarray  # float32 score map at analysis resolution (>= 1: edit-level)
    regions: tuple[Region, ...]
    edited: float  # 0..1, the strongest edit region's score (0: no edit found)
    registration: Registration

    @property
    def edited_fraction(self) -> float:
        return float((self.mask > 0).mean())

    @property
    def added_fraction(self) -> float:
        return float((self.added > 0).mean())

    def to_json(self) -> dict:
        reg = self.registration
        return {
            "edited": round(self.edited, 4),
            "edited_fraction": round(self.edited_fraction, 5),
            "added_fraction": round(self.added_fraction, 5),
            "size": {"width": int(self.mask.shape[1]), "height": int(self.mask.shape[0])},
            "regions": [{"kind": r.kind, "box": list(r.box), "area": r.area, "score": round(r.score, 4),
                         **({"original_box": list(original_box(r.box, reg.homography))}
                            if r.kind == "edit" else {})}
                        for r in self.regions],
            "registration": {"homography": np.round(reg.homography, 8).tolist(), "inliers": reg.inliers,
                             "matches": reg.matches, "refined": reg.refined, "mirrored": reg.mirrored,
                             "correlation": round(reg.correlation, 4), "scale": round(reg.scale, 4)},
        }


def original_box(box: tuple[int, int, int, int], homography: np.ndarray) -> tuple[int, int, int, int]:
    """A query-pixel box mapped into the original: the bounding box of its projected corners."""
    x0, y0, x1, y1 = box
    corners = np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], np.float64)
    p = cv2.perspectiveTransform(corners, homography).reshape(4, 2)
    return (int(np.floor(p[:, 0].min())), int(np.floor(p[:, 1].min())),
            int(np.ceil(p[:, 0].max())), int(np.ceil(p[:, 1].max())))


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-6:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def warp_original(original: np.ndarray, H: np.ndarray, size: tuple[int, int],
                  pixels_per_pixel: float) -> tuple[np.ndarray, np.ndarray]:
    """The original resampled into a (w, h) frame by H (frame -> original) and its coverage.

    When the frame is coarser than the original, the original is first area-downscaled to
    about the frame's resolution so the warp does not alias (a copy was made the same way).
    """
    f = 1.0
    if pixels_per_pixel > 1.25:
        f = 1.0 / pixels_per_pixel
        original = _resize(original, f)
    Hf = np.diag([f, f, 1.0]) @ H
    inv = np.linalg.inv(Hf)
    warped = cv2.warpPerspective(original, inv, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ones = np.full(original.shape[:2], 255, np.uint8)
    valid = cv2.warpPerspective(ones, inv, size, flags=cv2.INTER_NEAREST, borderValue=0) > 0
    return warped, valid


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def hysteresis(score: np.ndarray, low: float, high: float) -> np.ndarray:
    """Components of score >= low that contain at least one pixel >= high."""
    n, labels = cv2.connectedComponents((score >= low).astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(score.shape, bool)
    seeded = np.zeros(n, bool)
    seeded[np.unique(labels[score >= high])] = True
    seeded[0] = False
    return seeded[labels]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes (a pasted object's flat interior is part of the object)."""
    m = mask.astype(np.uint8)
    h, w = m.shape
    flood = np.pad(m, 1) * 255
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 128)
    return (flood[1:-1, 1:-1] != 128)


def clean_mask(mask: np.ndarray, min_pixels: int, radius: int) -> np.ndarray:
    """Open away specks, close gaps, fill holes, drop components smaller than min_pixels."""
    m = mask.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(1))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(radius))
    m = fill_holes(m).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return keep[labels]


def refine_mask(mask: np.ndarray, colour: np.ndarray, valid: np.ndarray, *, radius: int, min_pixels: int,
                config: LocalizeConfig) -> np.ndarray:
    """Trim the rim that detection adds around each region, keeping its interior.

    Detection pools over SSIM windows and a coarser scale, which makes it robust but spreads
    every region by a few pixels beyond the edit. Within `refine_band` pixels of a region's
    border only pixels whose own colour difference (tolerant of a one-pixel misregistration,
    no spatial pooling) is beyond noise are kept; deeper inside the region everything is
    kept, so a subtle texture change is not torn apart.
    """
    v = colour[valid] if valid.any() else colour.ravel()
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med))) * 1.4826
    strong = colour >= max(config.refine_floor, med + config.refine_k * mad)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = np.zeros(mask.shape, bool)
    band = _disk(config.refine_band)
    for i in range(1, n):
        x, y, w, h, _ = (int(t) for t in stats[i])
        pad = radius + config.refine_band
        x0, y0 = max(0, x - pad), max(0, y - pad)
        x1, y1 = min(mask.shape[1], x + w + pad), min(mask.shape[0], y + h + pad)
        region = (labels[y0:y1, x0:x1] == i).astype(np.uint8)
        inner = cv2.erode(region, band) > 0
        near = (region > 0) & (cv2.dilate(strong[y0:y1, x0:x1].astype(np.uint8), _disk(1)) > 0)
        kept = cv2.morphologyEx((inner | near).astype(np.uint8), cv2.MORPH_CLOSE, _disk(radius)) > 0
        kept = fill_holes(kept) & (region > 0)
        out[y0:y1, x0:x1] |= kept if kept.sum() >= min_pixels else region > 0
    return out


def _regions(mask: np.ndarray, heat: np.ndarray | None, kind: str, scale: float,
             full_size: tuple[int, int], min_pixels: int) -> list[Region]:
    """Connected regions of an analysis-resolution mask, boxes and areas in query pixels."""
    w_full, h_full = full_size
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_pixels:
            continue
        score = 1.0 if heat is None else float(1.0 - np.exp(-heat[labels == i].mean()))
        box = (max(0, int(np.floor(x / scale))), max(0, int(np.floor(y / scale))),
               min(w_full, int(np.ceil((x + w) / scale))), min(h_full, int(np.ceil((y + h) / scale))))
        out.append(Region(kind=kind, box=box, area=int(round(area / scale ** 2)), score=score))
    return sorted(out, key=lambda r: (-r.score, -r.area))


def _to_query_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[::-1] == size:
        return np.where(mask, 255, 0).astype(np.uint8)
    up = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.where(up >= 0.5, 255, 0).astype(np.uint8)


def localize(query: np.ndarray, original: np.ndarray, *,
             config: LocalizeConfig = LocalizeConfig()) -> Localization:
    """Where `query` (RGB uint8) was edited relative to `original` (RGB uint8).

    Raises AlignmentError when the two cannot be registered (not a copy, or too little overlap).
    """
    reg = register(query, original, config=config.register)
    qh, qw = query.shape[:2]
    a = min(1.0, config.max_side / max(qh, qw))
    qa = _resize(query, a)
    ha, wa = qa.shape[:2]
    Ha = reg.homography @ np.diag([1 / a, 1 / a, 1.0])  # analysis pixels -> original pixels
    warped, frame = warp_original(original, Ha, (wa, ha), reg.scale / a)
    valid = cv2.erode(frame.astype(np.uint8), _disk(config.border)) > 0
    # outside the frame the query shows the original, so pads and borders cannot bleed into
    # the blurred comparison of the pixels just inside the frame
    inside = np.where(frame[..., None], qa, warped)
    maps: DiffMaps = difference_maps(inside, warped, valid, config=config.diff)
    heat = maps.score
    min_pixels = max(4, round(config.min_area * wa * ha))
    radius = max(1, round(max(wa, ha) / 300))
    edits = clean_mask(hysteresis(heat, config.low, config.high), min_pixels, radius) & frame
    if config.refine:
        edits = refine_mask(edits, maps.colour, valid, radius=radius, min_pixels=min_pixels, config=config)
    added = cv2.morphologyEx((~frame).astype(np.uint8), cv2.MORPH_OPEN, _disk(2)) > 0
    min_added = max(16, round(config.min_added_area * wa * ha))
    regions = (_regions(edits, heat, "edit", a, (qw, qh), min_pixels)
               + _regions(added, None, "added", a, (qw, qh), min_added))
    edited = max((r.score for r in regions if r.kind == "edit"), default=0.0)
    log.debug("localize: %d regions, edited %.3f, inliers %d, ECC %s", len(regions), edited, reg.inliers,
              reg.refined)
    added_kept = np.zeros_like(added)
    for r in regions:
        if r.kind == "added":
            x0, y0, x1, y1 = (round(v * a) for v in r.box)
            added_kept[y0:y1, x0:x1] |= added[y0:y1, x0:x1]
    return Localization(mask=_to_query_size(edits, (qw, qh)), added=_to_query_size(added_kept, (qw, qh)),
                        heat=heat, regions=tuple(regions), edited=edited, registration=reg)


def overlay(query: np.ndarray, original: np.ndarray, result: Localization, *,
            height: int = 480) -> np.ndarray:
    """original | query | heatmap, side by side (RGB uint8), for a person to check the result.

    The original shows the query's frame (where the copy was cut from) and the edit boxes mapped
    back onto it; the heatmap panel shows the score over the query with edits outlined in red
    and added content tinted blue.
    """
    def fit(img: np.ndarray) -> tuple[np.ndarray, float]:
        s = height / img.shape[0]
        return cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA), s

    o, so = fit(original)
    q, sq = fit(query)
    qh, qw = query.shape[:2]
    H = result.registration.homography
    corners = np.array([[[0, 0]], [[qw, 0]], [[qw, qh]], [[0, qh]]], np.float64)
    frame = cv2.perspectiveTransform(corners, H) * so
    o = o.copy()
    cv2.polylines(o, [np.round(frame).astype(np.int32)], True, (255, 255, 0), 2)
    heat = cv2.resize(np.clip(result.heat / 2.0, 0, 1), (q.shape[1], q.shape[0]),
                      interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    grey = cv2.cvtColor(cv2.cvtColor(q, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    panel = (0.45 * grey + 0.55 * colour).astype(np.uint8)
    added = cv2.resize(result.added, (q.shape[1], q.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    panel[added] = (0.5 * panel[added] + 0.5 * np.array([40, 80, 255])).astype(np.uint8)
    edits = cv2.resize(result.mask, (q.shape[1], q.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(edits, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(panel, contours, -1, (255, 0, 0), 2)
    q = q.copy()
    for r in result.regions:
        if r.kind != "edit":
            continue
        x0, y0, x1, y1 = r.box
        cv2.rectangle(q, (round(x0 * sq), round(y0 * sq)), (round(x1 * sq), round(y1 * sq)), (255, 0, 0), 2)
        box = np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], np.float64)
        back = np.round(cv2.perspectiveTransform(box, H) * so).astype(np.int32)
        cv2.polylines(o, [back], True, (255, 0, 0), 2)
    gap = np.full((height, 8, 3), 255, np.uint8)
    return np.concatenate([o, gap, q, gap, panel], axis=1)
