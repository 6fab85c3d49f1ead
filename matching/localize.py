"""Manipulation-diff localization: where a copy was edited relative to its original.

Register the query onto the original (`matching.register`: keypoints, then a crop/resize search,
then dense patches; a pair known to be a copy always registers), warp the original into the
query's frame, score each pixel against redistribution noise (`matching.diffmap`), threshold
(hysteresis at a level fitted once on the dev forgery sets, see `LocalizeConfig.high`), clean up,
and turn the mask into edit objects with a kind and a confidence (`matching.edit_objects`).
Query pixels that the original's frame does not cover (padding, borders, captions outside the
picture) are not edits of the original: they are reported as `added-outside` regions.

`analyze` does the expensive part once; `segment` thresholds it, so a threshold can be fitted
without recomputing the difference maps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from copytrace.matching.diffmap import DiffConfig, difference_maps
from copytrace.matching.edit_objects import (
    EditKind,
    Evidence,
    ObjectConfig,
    classify,
    group_fragments,
    object_confidence,
)
from copytrace.matching.register import AlignmentError, RegisterConfig, Registration, register

log = logging.getLogger(__name__)

__all__ = ["OUTSIDE", "AlignmentError", "Analysis", "EditKind", "LocalizeConfig", "Localization", "Region",
           "analyze", "localize", "segment"]

OUTSIDE = "added-outside"  # region kind: query content beyond the original's frame


@dataclass(frozen=True)
class LocalizeConfig:
    register: RegisterConfig = field(default_factory=RegisterConfig)
    diff: DiffConfig = field(default_factory=DiffConfig)
    objects: ObjectConfig = field(default_factory=ObjectConfig)
    max_side: int = 1024  # the diff runs with the query's longer side at most this
    # hysteresis: a region needs a pixel at >= high and grows over pixels >= low_ratio * high
    # (score units, see diffmap: 1 = the noise ceiling). `high` is fitted by
    # benchmarks/localize_bench.py on MICC-F220 (the fit set: best mean F1 over its 110 pairs and
    # 11 clean copies among 0.8-2.0) and reported on NoSo and the made edits; the score is in
    # units of each pair's own noise, so one value serves every set.
    high: float = 1.0
    low_ratio: float = 0.6
    border: int = 3  # pixels along the original's frame edge that are not compared
    min_area: float = 3e-4  # smallest edit region, as a fraction of the query
    min_added_area: float = 5e-3  # smallest added-outside region, as a fraction of the query
    outside_band: int = 8  # analysis pixels next to added-outside content that are not edits (a JPEG block)
    fill_objects: bool = True  # close each (non-text) object over its own gaps and fill it
    refine: bool = True  # tighten each region to where the pixel-level colour difference is real
    refine_k: float = 4.0  # pixel colour difference >= median + refine_k * robust sigma ...
    refine_floor: float = 6.0  # ... and >= this Delta E
    refine_band: int = 6  # rim (analysis pixels) that must show a colour change: ~3 sigma of blur + SSIM

    @property
    def low(self) -> float:
        return self.low_ratio * self.high


@dataclass(frozen=True)
class Region:
    kind: str  # an EditKind value (an edit of the original's content) or OUTSIDE
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in query pixels (x1, y1 exclusive), tight
    area: int  # pixels of the query
    score: float  # 0..1, how far beyond redistribution noise; 1.0 for added-outside content
    confidence: float = 1.0  # 0..1, how likely this is a real edit (registration confidence included)

    @property
    def is_edit(self) -> bool:
        return self.kind != OUTSIDE


@dataclass(frozen=True)
class Localization:
    mask: np.ndarray  # query-sized uint8, 255 where the query is an edit of the original
    added: np.ndarray  # query-sized uint8, 255 where the original has no counterpart
    heat: np.ndarray  # float32 score map at analysis resolution (>= 1: edit-level)
    regions: tuple[Region, ...]
    edited: float  # 0..1, the strongest edit region's score (0: no edit found)
    registration: Registration
    labels: np.ndarray | None = None  # analysis-resolution object ids (1.. in `regions` order)

    @property
    def edit_regions(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.is_edit)

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
                         "confidence": round(r.confidence, 4),
                         **({"original_box": list(original_box(r.box, reg.homography))} if r.is_edit else {})}
                        for r in self.regions],
            "registration": reg.to_json(),
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


def _to_query_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape[::-1] == size:
        return np.where(mask, 255, 0).astype(np.uint8)
    up = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.where(up >= 0.5, 255, 0).astype(np.uint8)


def _query_box(x: int, y: int, w: int, h: int, a: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """An analysis-pixel box (x, y, w, h) in query pixels (x1, y1 exclusive)."""
    return (max(0, int(np.floor(x / a))), max(0, int(np.floor(y / a))),
            min(size[0], int(np.ceil((x + w) / a))), min(size[1], int(np.ceil((y + h) / a))))


@dataclass(frozen=True)
class Analysis:
    """Everything up to thresholding, at analysis resolution (query scaled by `scale`)."""

    registration: Registration
    scale: float  # analysis pixels per query pixel
    size: tuple[int, int]  # query (width, height)
    query: np.ndarray  # the query at analysis resolution (RGB uint8)
    warped: np.ndarray  # the original warped into it
    frame: np.ndarray  # bool: where the original has content
    valid: np.ndarray  # bool: frame minus its border, where pixels are compared
    heat: np.ndarray  # float32 difference score (>= 1: beyond redistribution noise)
    colour: np.ndarray  # Delta E per pixel after colour matching


def analyze(query: np.ndarray, original: np.ndarray, *, config: LocalizeConfig = LocalizeConfig(),
            initial: np.ndarray | None = None, assume_copy: bool = False) -> Analysis:
    """Register and compute the difference maps (see `localize` for the arguments)."""
    reg = register(query, original, config=config.register, initial=initial, assume_copy=assume_copy)
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
    maps = difference_maps(inside, warped, valid, config=config.diff)
    return Analysis(reg, a, (qw, qh), qa, warped, frame, valid, maps.score, maps.colour)


def _edit_mask(an: Analysis, config: LocalizeConfig) -> tuple[np.ndarray, int, int]:
    """The cleaned binary edit mask, the smallest region (pixels) and the clean-up radius."""
    wa, ha = an.heat.shape[::-1]
    min_pixels = max(4, round(config.min_area * wa * ha))
    radius = max(1, round(max(wa, ha) / 300))
    edits = clean_mask(hysteresis(an.heat, config.low, config.high), min_pixels, radius) & an.frame
    if config.refine:
        edits = refine_mask(edits, an.colour, an.valid, radius=radius, min_pixels=min_pixels, config=config)
    return edits, min_pixels, radius


def _filled(obj: np.ndarray, frame: np.ndarray, rect: tuple[int, int, int, int], gap: int) -> np.ndarray:
    """An object closed over its own gaps (up to 2 x gap) and filled, within the frame."""
    x, y, w, h = rect
    x0, y0 = max(0, x - 2 * gap), max(0, y - 2 * gap)
    x1, y1 = min(obj.shape[1], x + w + 2 * gap), min(obj.shape[0], y + h + 2 * gap)
    sub = cv2.morphologyEx(obj[y0:y1, x0:x1].astype(np.uint8), cv2.MORPH_CLOSE, _disk(gap))
    out = obj.copy()
    out[y0:y1, x0:x1] |= fill_holes(sub) & frame[y0:y1, x0:x1]
    return out


def _objects(an: Analysis, config: LocalizeConfig, outside: np.ndarray) -> tuple[np.ndarray, list[Region]]:
    """Edit objects: the final analysis-resolution mask (object ids) and their regions.

    Pixels next to added-outside content are left out: JPEG blocks straddling a pad or a border
    ring inside the picture, which is the pad's doing, not an edit of the original."""
    edits, min_pixels, _ = _edit_mask(an, config)
    if outside.any():
        edits &= cv2.dilate(outside.astype(np.uint8), _disk(config.outside_band)) == 0
    ev = Evidence.of(an.query, an.warped)
    labels, n = group_fragments(edits, ev.query_lab, config=config.objects)
    gap = max(1, round(config.objects.gap * max(edits.shape)))
    out = np.zeros(edits.shape, np.int32)
    found: list[tuple[Region, np.ndarray]] = []
    for i in range(1, n):
        obj = labels == i
        if obj.sum() < min_pixels:
            continue
        x, y, w, h = cv2.boundingRect(obj.astype(np.uint8))
        kind = classify(obj, ev, (x, y, x + w, y + h), config.objects)
        if config.fill_objects and kind != EditKind.TEXT:
            obj = _filled(obj, an.frame, (x, y, w, h), gap)
            x, y, w, h = cv2.boundingRect(obj.astype(np.uint8))
        mean = float(an.heat[obj].mean())
        area = int(obj.sum())
        conf = object_confidence(mean, area / obj.size, config.objects)
        conf *= min(1.0, 0.5 + an.registration.confidence)
        found.append((Region(kind.value, _query_box(x, y, w, h, an.scale, an.size),
                             int(round(area / an.scale ** 2)), float(1.0 - np.exp(-mean)), conf), obj))
    found.sort(key=lambda t: (-t[0].confidence, -t[0].area))
    for j, (_, obj) in enumerate(found, start=1):
        out[obj & (out == 0)] = j
    return out, [r for r, _ in found]


def _outside(an: Analysis, config: LocalizeConfig) -> tuple[np.ndarray, list[Region]]:
    """Query content beyond the original's frame (padding, borders, outside captions)."""
    added = cv2.morphologyEx((~an.frame).astype(np.uint8), cv2.MORPH_OPEN, _disk(2)) > 0
    wa, ha = added.shape[::-1]
    min_added = max(16, round(config.min_added_area * wa * ha))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(added.astype(np.uint8), connectivity=8)
    kept = np.zeros_like(added)
    regions = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_added:
            continue
        kept |= labels == i
        regions.append(Region(OUTSIDE, _query_box(x, y, w, h, an.scale, an.size),
                              int(round(area / an.scale ** 2)), 1.0, an.registration.confidence))
    return kept, sorted(regions, key=lambda r: -r.area)


def segment(an: Analysis, *, config: LocalizeConfig = LocalizeConfig()) -> Localization:
    """Threshold an analysis into edit objects and added-outside regions."""
    added, outside = _outside(an, config)
    labels, edits = _objects(an, config, added)
    edited = max((r.score for r in edits), default=0.0)
    log.debug("localize: %d edit objects, edited %.3f, registered by %s", len(edits), edited,
              an.registration.method)
    return Localization(mask=_to_query_size(labels > 0, an.size), added=_to_query_size(added, an.size),
                        heat=an.heat, regions=tuple(edits + outside), edited=edited,
                        registration=an.registration, labels=labels)


def localize(query: np.ndarray, original: np.ndarray, *, config: LocalizeConfig = LocalizeConfig(),
             initial: np.ndarray | None = None, assume_copy: bool = False) -> Localization:
    """Where `query` (RGB uint8) was edited relative to `original` (RGB uint8).

    `initial`: a query -> original homography already known (the verifier's), tried first.
    `assume_copy`: the pair is known to be a copy (the query pipeline said so), so a mask is
    always produced, with low confidences when the geometry is a best guess. Without it,
    raises AlignmentError when no registration method lines the two up (not a copy?).
    """
    return segment(analyze(query, original, config=config, initial=initial, assume_copy=assume_copy),
                   config=config)

