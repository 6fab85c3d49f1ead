"""Global-local query expansion: the views of a query that are each searched on their own.

A global descriptor of the whole query is dominated by whatever fills most of it. When the copy
is only part of the query (image-in-image, a meme frame or padding, a big overlay) the original
is better found from a view that holds mostly the copied part. The views are cheap geometric
guesses: centre crops, overlapping quadrants, the query with uniform borders trimmed, and the
largest rectangles bounded by strong straight edges (a pasted photo has a border). Each view is
searched and a reference keeps its best normalized score over views.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in query pixels


@dataclass(frozen=True)
class ExpandConfig:
    centre_crops: tuple[float, ...] = (0.6,)  # side fractions of centred crops
    # Four overlapping corner crops: on the calibration benchmark they added 3 top-1 hits of 225
    # for 4 more descriptor passes per query, so they are off by default.
    quadrants: bool = False
    quadrant_side: float = 0.6
    trim_borders: bool = True  # drop near-uniform bands (padding, meme captions)
    pasted_regions: int = 2  # at most this many edge-bounded rectangles
    min_region_area: float = 0.08  # of the query area
    max_region_area: float = 0.8
    min_side_px: int = 32  # views smaller than this are useless to the descriptor
    # Second pass (`matching.small_copies`), only for queries without a confident match: up to
    # this many smaller rectangles closed by straight steps (a photo in a screenshot frame or
    # pasted small into another photo), the first also turned by the rotation angles.
    small_regions: int = 2
    small_min_area: float = 0.02
    small_max_area: float = 0.6
    small_turns: bool = True
    small_confident: float = 0.5  # calibrated global score that skips (and that keeps) the pass
    # The rectangles' views join an unconfident query's first-pass views (`ViewFamily.merge`)
    # instead of replacing its candidates only when one is confident: at 50k references it took
    # the hidden set's small pastes in the top 10 from 17 to 30 of 45 (dev µAP 0.939 -> 0.947,
    # other views >= 0.5 unchanged; one run each).
    small_merge: bool = True
    # Second pass (`matching.grid_tiles`), only for queries without a confident match: for each
    # (n, side), n x n overlapping grid tiles of `side` of the query, for a paste without
    # straight borders. Off by default (empty): on the hidden-copies set they put no more small
    # pastes in the top 10 (30 of 45 either way, 350 references) for 9 more descriptor passes
    # per unsure query; `((3, 0.4),)` turns them on. A tile holding a small paste rarely reaches
    # a calibrated global score of 0.5 (0 of 45 hidden pastes), so their own threshold is lower.
    tile_grids: tuple[tuple[int, float], ...] = ()
    tile_confident: float = 0.1
    # The tiles' views join an unsure query's views, as `small_merge`. Off: at 50,350 references
    # it lost a dev copy from the top 10 (212 vs 213; µAP 0.9205 vs 0.9248): tiles crowd the pool.
    tile_merge: bool = False


@dataclass(frozen=True)
class RotateConfig:
    """Rotated whole-image views for queries without a confident match (`matching.rotations`)."""

    angles: tuple[int, ...] = (90, 180, 270)  # degrees, multiples of 90 (counter-clockwise)
    confident: float = 0.5  # calibrated global score of the top candidate that skips rotations


@dataclass(frozen=True)
class View:
    name: str
    box: Box


def _clip(box: Box, w: int, h: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(w, x1), min(h, y1)


def trimmed_box(image: np.ndarray, *, tolerance: float = 6.0) -> Box:
    """The image without near-uniform rows/columns at its edges (padding, caption bands)."""
    gray = image.mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    h, w = gray.shape
    row_flat = gray.std(axis=1) < tolerance
    col_flat = gray.std(axis=0) < tolerance

    def run(flags: np.ndarray) -> int:
        n = 0
        for f in flags:
            if not f:
                break
            n += 1
        return n

    top, bottom = run(row_flat), run(row_flat[::-1])
    left, right = run(col_flat), run(col_flat[::-1])
    return _clip((left, top, w - right, h - bottom), w, h)


def _candidates(strength: np.ndarray, n: int) -> list[int]:
    """The `n` rows with the most step pixels, at least 3 rows apart."""
    order = np.argsort(-strength, kind="stable")
    out: list[int] = []
    for i in order:
        if all(abs(int(i) - j) > 2 for j in out):
            out.append(int(i))
        if len(out) >= n:
            break
    return out


def pasted_regions(image: np.ndarray, *, limit: int = 2, min_area: float = 0.08,
                   max_area: float = 0.8, min_side_cover: float = 0.75) -> list[Box]:
    """Axis-aligned rectangles whose four sides are straight pixel steps: a pasted photo.

    Rows (columns) with many vertical (horizontal) steps are border candidates; every
    combination of two rows and two columns is scored by how much of each of its four sides is
    a step (cumulative sums make each test O(1)). Textured content rarely closes four aligned
    sides; a pasted photo does, unless it blends into the background along a whole side.
    """
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    scale = min(1.0, 256 / max(h, w))
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else gray
    g = cv2.GaussianBlur(small, (3, 3), 0).astype(np.int16)
    sh, sw = g.shape
    step_y = np.zeros((sh, sw), bool)  # a step between row y-1 and row y (or y and y+1)
    step_y[1:] = np.abs(g[1:] - g[:-1]) > 8
    step_y[:-1] |= step_y[1:].copy()
    step_x = np.zeros((sh, sw), bool)
    step_x[:, 1:] = np.abs(g[:, 1:] - g[:, :-1]) > 8
    step_x[:, :-1] |= step_x[:, 1:].copy()
    rows = _candidates(step_y.sum(axis=1), 14)
    cols = _candidates(step_x.sum(axis=0), 14)
    row_cum = np.concatenate([np.zeros((sh, 1)), np.cumsum(step_y, axis=1)], axis=1)
    col_cum = np.concatenate([np.zeros((1, sw)), np.cumsum(step_x, axis=0)], axis=0)

    def cover_row(y: int, a: int, b: int) -> float:
        return (row_cum[y, b] - row_cum[y, a]) / max(1, b - a)

    def cover_col(x: int, a: int, b: int) -> float:
        return (col_cum[b, x] - col_cum[a, x]) / max(1, b - a)

    found: list[tuple[float, float, Box]] = []
    for top in rows:
        for bottom in rows:
            if bottom - top < 8:
                continue
            for left in cols:
                for right in cols:
                    if right - left < 8:
                        continue
                    frac = (right - left) * (bottom - top) / float(sw * sh)
                    if not (min_area <= frac <= max_area):
                        continue
                    cover = min(cover_row(top, left, right), cover_row(bottom, left, right),
                                cover_col(left, top, bottom), cover_col(right, top, bottom))
                    if cover >= min_side_cover:
                        box = _clip((round(left / scale), round(top / scale),
                                     round(right / scale), round(bottom / scale)), w, h)
                        found.append((cover, frac, box))
    found.sort(key=lambda t: (-round(t[0], 1), -t[1]))
    out: list[Box] = []
    for _, _, box in found:
        if all(iou(box, b) < 0.5 for b in out):
            out.append(box)
        if len(out) >= limit:
            break
    return out


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def new_boxes(boxes: Sequence[Box], seen: Sequence[Sequence[int]], *, min_side: int
              ) -> list[Box]:
    """The `boxes` worth a second-pass view: at least `min_side` px on both sides and not nearly
    (IoU >= 0.8) one of the `seen` first-pass views."""
    return [b for b in boxes if b[2] - b[0] >= min_side and b[3] - b[1] >= min_side
            and all(iou(b, tuple(v)) < 0.8 for v in seen)]


def query_views(image: np.ndarray, *, config: ExpandConfig = ExpandConfig()) -> list[View]:
    """The whole query first, then distinct crops worth searching on their own."""
    h, w = image.shape[:2]
    views = [View("full", (0, 0, w, h))]
    for f in config.centre_crops:
        cw, ch = round(w * f), round(h * f)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        views.append(View(f"centre{f:g}", (x0, y0, x0 + cw, y0 + ch)))
    if config.quadrants:
        qw, qh = round(w * config.quadrant_side), round(h * config.quadrant_side)
        for name, (x0, y0) in {"top-left": (0, 0), "top-right": (w - qw, 0),
                               "bottom-left": (0, h - qh), "bottom-right": (w - qw, h - qh)}.items():
            views.append(View(name, (x0, y0, x0 + qw, y0 + qh)))
    if config.trim_borders:
        box = trimmed_box(image)
        area = (box[2] - box[0]) * (box[3] - box[1])
        if 0 < area < 0.95 * w * h:
            views.append(View("trimmed", box))
    if config.pasted_regions:
        for i, box in enumerate(pasted_regions(image, limit=config.pasted_regions,
                                               min_area=config.min_region_area,
                                               max_area=config.max_region_area)):
            views.append(View(f"region{i}", box))
    kept: list[View] = []
    for v in views:
        x0, y0, x1, y1 = v.box
        if x1 - x0 < config.min_side_px or y1 - y0 < config.min_side_px:
            continue
        if all(iou(v.box, k.box) < 0.9 for k in kept):
            kept.append(v)
    return kept


def crop_views(image: np.ndarray, views: list[View]) -> list[np.ndarray]:
    return [np.ascontiguousarray(image[y0:y1, x0:x1]) for x0, y0, x1, y1 in (v.box for v in views)]
