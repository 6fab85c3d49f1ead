"""Edit masks to edit objects: the regions a person would point at, each with a kind.

A detector sees pixels; a person sees "a caption was added", "the boat was removed". Fragments
of one edit (the letters of a caption, the pieces of a pasted object split by a stretch that
happens to match the original) are merged when they lie within a small gap of each other, or a
little further apart but share a colour model (same mean colour in the copy). Each object then
gets a tight box from its pixels, a kind where the pixels can tell it, and a confidence.

Kinds, from the copy vs the registered original over the object:
- `text`: many small, thin, single-coloured strokes laid out in a wide box (captions, watermarks);
- `lighting`: the same structure under other light (glare, a shadow, exposure): the copy's local
  pattern follows the original's, only brighter or darker, in patches thicker than lettering. A
  glossy object photographed twice differs like this, and it used to read as `text`;
- `removed`: the copy is what inpainting its surroundings predicts there, much more so than the
  original is (inpainting, clone-out leave content that continues the surroundings);
- `added`: the copy carries much more structure there, or content that its surroundings do
  not predict at all (a pasted object);
- `replaced`: different content of similar texture (copy-move, swapped patches).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from copytrace.matching.clusters import connected_groups


class EditKind(str, Enum):
    ADDED = "added"
    REMOVED = "removed"
    REPLACED = "replaced"
    TEXT = "text"
    LIGHTING = "lighting"


@dataclass(frozen=True)
class ObjectConfig:
    gap: float = 0.012  # fragments closer than 2 x this x longer side are one object
    colour_gap: float = 0.04  # ... or closer than 2 x this and of the same colour model
    colour_tolerance: float = 12.0  # Delta E between the fragments' mean colours in the copy
    predicted: float = 0.75  # copy / original inpainting residual below this: removed
    busier: float = 1.8  # copy / original gradient energy above this: added ...
    unpredicted: float = 2.5  # ... or inpainting residual ratio above this
    text_min_strokes: int = 3  # text: at least this many stroke components ...
    text_max_stroke: float = 0.22  # ... no thicker than this share of the box height ...
    text_min_aspect: float = 1.4  # ... in a box at least this much wider than high ...
    text_max_colour_std: float = 18.0  # ... of one colour (std of L*, stroke pixels of the copy)
    # lighting: median local structure correlation of L* (SSIM's structure term, sigma 2 px)
    # over the object at least this, and patches thicker than this share of the longer side
    # (UKBench glare 0.77-0.89 and 0.06-0.11 vs drawn captions <= 0.53 and <= 0.026)
    lighting_min_structure: float = 0.7
    lighting_min_width: float = 0.04
    # per-object confidence: logistic of (1, log(mean score), log10(area share)); fitted by
    # benchmarks/localize_bench.py on MICC-F220's regions (799, 770 true; see LocalizeConfig.high)
    confidence_weights: tuple[float, float, float] = (3.6262, 12.5111, 2.0757)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _touching(labels: np.ndarray, n: int, radius: int) -> list[tuple[int, int]]:
    """Pairs of components (1..n-1) whose dilations by `radius` overlap."""
    if radius < 1 or n <= 2:
        return []
    fg = (labels > 0).astype(np.uint8)
    near = cv2.dilate(fg, _disk(radius))
    m, joined = cv2.connectedComponents(near, connectivity=8)
    pairs = []
    for j in range(1, m):
        ids = np.unique(labels[(joined == j) & (labels > 0)])
        pairs += [(int(ids[0]), int(b)) for b in ids[1:]]
    return pairs


def group_fragments(mask: np.ndarray, query_lab: np.ndarray, *,
                    config: ObjectConfig = ObjectConfig()) -> tuple[np.ndarray, int]:
    """Label map (0 = background, 1..n-1) of the edit objects in a binary mask, and n."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return labels, n
    side = max(mask.shape)
    pairs = _touching(labels, n, max(1, round(config.gap * side)))
    means = np.zeros((n, 3))
    for i in range(1, n):
        means[i] = query_lab[labels == i].mean(axis=0)
    pairs += [(a, b) for a, b in _touching(labels, n, max(1, round(config.colour_gap * side)))
              if np.linalg.norm(means[a] - means[b]) < config.colour_tolerance]
    root = np.arange(n)  # each fragment's group is named by its smallest member
    for group in connected_groups(pairs):
        root[group] = group[0]
    _, dense = np.unique(root, return_inverse=True)  # root 0 (background) stays 0
    return dense[labels].astype(np.int32), int(dense.max()) + 1


def _gradient_energy(gray: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


@dataclass(frozen=True)
class Evidence:
    """What the classifier looks at, at analysis resolution."""

    query: np.ndarray  # RGB uint8 copy
    original: np.ndarray  # RGB uint8 registered original
    query_lab: np.ndarray  # H x W x 3 float32 Lab of the copy
    original_lab: np.ndarray  # ... of the registered original
    query_energy: np.ndarray  # gradient magnitude of the copy (grey 0..255)
    original_energy: np.ndarray  # ... of the registered original

    @staticmethod
    def of(query: np.ndarray, original: np.ndarray) -> Evidence:
        lab = [cv2.cvtColor(x.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab) for x in (query, original)]
        grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) for x in (query, original)]
        return Evidence(query, original, lab[0], lab[1], _gradient_energy(grey[0]), _gradient_energy(grey[1]))


def _strokes(obj: np.ndarray, ev: Evidence, box: tuple[int, int, int, int]) -> np.ndarray:
    """Changed pixels of the object's dominant new colour (lettering is drawn in one colour)."""
    x0, y0, x1, y1 = box
    q, o = ev.query_lab[y0:y1, x0:x1], ev.original_lab[y0:y1, x0:x1]
    changed = obj[y0:y1, x0:x1] & (np.linalg.norm(q - o, axis=2) > 20.0)
    if changed.sum() < 20:
        return changed
    ink = np.median(q[changed], axis=0)
    return changed & (np.linalg.norm(q - ink, axis=2) < 20.0)


def _looks_like_text(obj: np.ndarray, ev: Evidence, box: tuple[int, int, int, int],
                     config: ObjectConfig) -> bool:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if h < 6 or w < config.text_min_aspect * h:
        return False
    strokes = _strokes(obj, ev, box).astype(np.uint8)
    if strokes.sum() < 20:
        return False
    n, _, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    big = int((stats[1:, cv2.CC_STAT_AREA] >= 4).sum())
    contours, _ = cv2.findContours(strokes, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    thickness = 2.0 * float(strokes.sum()) / max(1.0, perimeter / 2.0) / 2.0  # area / half-perimeter
    lightness = ev.query_lab[y0:y1, x0:x1, 0][strokes > 0]
    return (big >= config.text_min_strokes and thickness <= config.text_max_stroke * h
            and float(lightness.std()) <= config.text_max_colour_std)


def _structure(ev: Evidence, obj: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Median over the object of the local correlation of the two lightness images: near 1 where
    the copy shows the original's pattern, only lit differently; low where new strokes cover it."""
    x0, y0, x1, y1 = box
    pad = 6
    x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
    x1, y1 = min(obj.shape[1], x1 + pad), min(obj.shape[0], y1 + pad)
    q = np.ascontiguousarray(ev.query_lab[y0:y1, x0:x1, 0])
    o = np.ascontiguousarray(ev.original_lab[y0:y1, x0:x1, 0])

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (0, 0), 2.0)

    mq, mo = blur(q), blur(o)
    vq, vo = np.maximum(blur(q * q) - mq * mq, 0), np.maximum(blur(o * o) - mo * mo, 0)
    corr = (blur(q * o) - mq * mo + 1.0) / np.sqrt(vq * vo + 1.0)
    return float(np.median(corr[obj[y0:y1, x0:x1]]))


def _looks_like_lighting(obj: np.ndarray, ev: Evidence, box: tuple[int, int, int, int],
                         config: ObjectConfig) -> bool:
    strokes = _strokes(obj, ev, box).astype(np.uint8)
    if strokes.sum() < 20:
        return False
    width = 2.0 * float(np.percentile(cv2.distanceTransform(strokes, cv2.DIST_L2, 3)[strokes > 0], 90))
    return (width >= config.lighting_min_width * max(obj.shape)
            and _structure(ev, obj, box) >= config.lighting_min_structure)


def inpainting_residual(image: np.ndarray, obj: np.ndarray, side: int = 96) -> float:
    """Mean absolute difference between an image and its own inpainting over the object: how
    little of the object its surroundings predict (small for inpainted content)."""
    x, y, w, h = cv2.boundingRect(obj.astype(np.uint8))
    p = max(4, w // 4, h // 4)
    x0, y0 = max(0, x - p), max(0, y - p)
    x1, y1 = min(obj.shape[1], x + w + p), min(obj.shape[0], y + h + p)
    sub, m = image[y0:y1, x0:x1], obj[y0:y1, x0:x1].astype(np.uint8) * 255
    s = min(1.0, side / max(sub.shape[:2]))
    if s < 1:
        sub = cv2.resize(sub, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        m = cv2.resize(m, (sub.shape[1], sub.shape[0]), interpolation=cv2.INTER_NEAREST)
    if not m.any():
        return 0.0
    filled = cv2.inpaint(np.ascontiguousarray(sub), m, 3, cv2.INPAINT_TELEA)
    return float(np.abs(sub.astype(np.float32) - filled)[m > 0].mean())


def classify(obj: np.ndarray, ev: Evidence, box: tuple[int, int, int, int],
             config: ObjectConfig = ObjectConfig()) -> EditKind:
    """The kind of one object (bool mask at analysis resolution, box in the same pixels)."""
    if _looks_like_text(obj, ev, box, config):
        return EditKind.LIGHTING if _looks_like_lighting(obj, ev, box, config) else EditKind.TEXT
    residual = (inpainting_residual(ev.query, obj) + 1.0) / (inpainting_residual(ev.original, obj) + 1.0)
    if residual < config.predicted:
        return EditKind.REMOVED
    energy = ((float(np.median(ev.query_energy[obj])) + 2.0)
              / (float(np.median(ev.original_energy[obj])) + 2.0))
    if energy > config.busier or residual > config.unpredicted:
        return EditKind.ADDED
    return EditKind.REPLACED


def object_confidence(mean_score: float, area_share: float, config: ObjectConfig = ObjectConfig()) -> float:
    """Probability-like 0..1 that an object is a real edit (logistic, fitted on the fit set)."""
    b, w_score, w_area = config.confidence_weights
    z = b + w_score * np.log(max(mean_score, 1e-3)) + w_area * np.log10(max(area_share, 1e-7))
    return float(1.0 / (1.0 + np.exp(-z)))
