"""Views for a copy shown small inside the query, searched only for queries the first pass found
nothing confident for.

A photo shown at 3-40 % of a social-media screenshot or pasted small into another photo leaves
the whole-image descriptor (and the first pass's centre crop and large edge-bounded regions)
looking mostly at something else: on a held-out set 7 of 9 never-retrieved copies were
screenshots. Such a photo almost always has four straight borders: pixel steps against a flat
frame or against the photo it was pasted into. `small_regions` finds them as in
`expand.pasted_regions`, but picks its border candidates from long straight step runs only (a
morphological opening with a line kernel), so a short border of a small paste is not outvoted by
the many scattered steps of a textured background; the query's own edges count as borders, for a
photo that fills the width of its frame.

`small_copy_views` is `rotations.rotation_views`'s twin (the engine searches both families in
one `extra_views.second_pass`): a query whose best candidate already has a confident global score
pays nothing; the others pay for finding the rectangles (a few ms) and one descriptor pass per
rectangle (and per turned rectangle, with `ExpandConfig.small_turns`), and the rectangles' views
join their first-pass views (`ExpandConfig.small_merge`; verification re-ranks the candidates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from copytrace.descriptors.decode import to_model_square
from copytrace.matching.calibrate import Calibration
from copytrace.matching.expand import Box, ExpandConfig, RotateConfig, iou, new_boxes
from copytrace.matching.extra_views import ExtraViews, Search, ViewFamily, second_pass, unconfident
from copytrace.matching.rank import Candidate, QueryViews
from copytrace.matching.rotations import rotated_squares

WORK_SIDE = 320  # px: the longer side the rectangles are looked for at
DEFAULT = ExpandConfig()
TURNS = RotateConfig()


def _step_maps(gray: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels next to a vertical (rows) and a horizontal (columns) intensity step."""
    g = cv2.GaussianBlur(gray, (3, 3), 0).astype(np.int16)
    h, w = g.shape
    step_y = np.zeros((h, w), np.uint8)
    step_y[1:] = np.abs(g[1:] - g[:-1]) > threshold
    step_y[:-1] |= step_y[1:].copy()
    step_x = np.zeros((h, w), np.uint8)
    step_x[:, 1:] = np.abs(g[:, 1:] - g[:, :-1]) > threshold
    step_x[:, :-1] |= step_x[:, 1:].copy()
    # The query's own edges are borders too: a photo as wide as its frame has no step there.
    step_y[0] = step_y[-1] = 1
    step_x[:, 0] = step_x[:, -1] = 1
    return step_y, step_x


def _lines(step: np.ndarray, length: int, axis: int, n: int) -> list[int]:
    """The `n` rows (axis 1) or columns (axis 0) with the most pixels on straight step runs of at
    least `length` px, at least 3 apart."""
    kernel = np.ones((1, length) if axis == 1 else (length, 1), np.uint8)
    runs = cv2.morphologyEx(step, cv2.MORPH_OPEN, kernel).sum(axis=axis).astype(np.int64)
    order = np.argsort(-runs, kind="stable")
    out: list[int] = []
    for i in order:
        if runs[i] == 0:
            break
        if all(abs(int(i) - j) > 2 for j in out):
            out.append(int(i))
        if len(out) >= n:
            break
    return out


def _work_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    """`image` with its longer side at most WORK_SIDE, and the scale applied."""
    h, w = image.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    if scale >= 1:
        return image, scale
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA), scale


def framed_regions(image: np.ndarray, *, min_area: float = 0.02, max_area: float = 0.6,
                   tolerance: int = 24, limit: int = 2) -> list[Box]:
    """Boxes of the solid blobs of a query whose edges are one flat colour (a screenshot frame):
    what differs from that colour, with thin strokes (text, icon outlines) opened away and the
    photo's own frame-coloured patches closed; nothing when the edges are not flat."""
    h, w = image.shape[:2]
    small, scale = _work_copy(image)
    sh, sw = small.shape[:2]
    ring = np.concatenate([small[:2].reshape(-1, 3), small[-2:].reshape(-1, 3),
                           small[:, :2].reshape(-1, 3), small[:, -2:].reshape(-1, 3)])
    colour = np.median(ring, axis=0)
    if (np.abs(ring.astype(np.int16) - colour).max(axis=1) <= tolerance).mean() < 0.7:
        return []
    mask = (np.abs(small.astype(np.int16) - colour).max(axis=2) > tolerance).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    found = []
    for x, y, bw, bh, count in stats[1:n]:
        frac = bw * bh / float(sw * sh)
        if min_area <= frac <= max_area and count >= 0.5 * bw * bh:
            found.append((int(count), (round(x / scale), round(y / scale),
                                       min(w, round((x + bw) / scale)),
                                       min(h, round((y + bh) / scale)))))
    found.sort(key=lambda t: -t[0])
    return [box for _, box in found[:limit]]


def small_regions(image: np.ndarray, *, limit: int = 2, min_area: float = 0.02,
                  max_area: float = 0.6, min_side_cover: float = 0.8,
                  lines: int = 16) -> list[Box]:
    """Where a photo shown small inside the query is: the solid blobs of a flat-coloured frame
    (`framed_regions`) first, then axis-aligned rectangles closed by straight steps (a photo
    pasted into another photo), best closed first; boxes in `image` pixels."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    h, w = gray.shape
    small, scale = _work_copy(gray)
    sh, sw = small.shape
    step_y, step_x = _step_maps(small, 8)
    length = max(6, round(0.04 * max(sh, sw)))
    rows = _lines(step_y, length, 1, lines)
    cols = _lines(step_x, length, 0, lines)
    row_cum = np.concatenate([np.zeros((sh, 1)), np.cumsum(step_y, axis=1)], axis=1)
    col_cum = np.concatenate([np.zeros((1, sw)), np.cumsum(step_x, axis=0)], axis=0)
    r = np.array(rows)
    c = np.array(cols)
    top, bottom = np.meshgrid(r, r, indexing="ij")
    left, right = np.meshgrid(c, c, indexing="ij")
    ok_r, ok_c = (bottom - top >= 8).ravel(), (right - left >= 8).ravel()
    top, bottom = top.ravel()[ok_r][:, None], bottom.ravel()[ok_r][:, None]  # R x 1
    left, right = left.ravel()[ok_c][None, :], right.ravel()[ok_c][None, :]  # 1 x C
    width, height = right - left + 1, bottom - top + 1
    cover = np.minimum.reduce([
        (row_cum[top, right + 1] - row_cum[top, left]) / width,
        (row_cum[bottom, right + 1] - row_cum[bottom, left]) / width,
        (col_cum[bottom + 1, left] - col_cum[top, left]) / height,
        (col_cum[bottom + 1, right] - col_cum[top, right]) / height])
    frac = width * height / float(sw * sh)
    good = (cover >= min_side_cover) & (frac >= min_area) & (frac <= max_area)
    # Sides on the query's own edges are free: a box needs two opposite sides that are real steps
    # and is ranked after every box with more real sides.
    real_tb = (top > 0).astype(int) + (bottom < sh - 1)
    real_lr = (left > 0).astype(int) + (right < sw - 1)
    good &= (real_tb == 2) | (real_lr == 2)
    real = real_tb + real_lr
    found: list[tuple[int, float, float, Box]] = []
    for i, j in zip(*np.nonzero(good), strict=True):
        t, b, lf, rt = int(top[i, 0]), int(bottom[i, 0]), int(left[0, j]), int(right[0, j])
        box = (round(lf / scale), round(t / scale), min(w, round((rt + 1) / scale)),
               min(h, round((b + 1) / scale)))
        found.append((int(real[i, j]), float(cover[i, j]), float(frac[i, j]), box))
    found.sort(key=lambda t: (-t[0], -round(t[1], 1), -t[2]))
    out: list[Box] = []
    for box in [*framed_regions(image, min_area=min_area, max_area=max_area, limit=limit),
                *(f[-1] for f in found)]:
        if all(iou(box, b) < 0.5 for b in out):
            out.append(box)
        if len(out) >= limit:
            break
    return out


def region_squares(pixels: np.ndarray, boxes: Sequence[Box], *, size: int,
                   turns: Sequence[int] = ()) -> np.ndarray:
    """The model's input for each box (the crop squashed to `size`), then each turned by `turns`
    degrees: len(boxes) * (1 + len(turns)) x size x size x 3."""
    out = []
    for x0, y0, x1, y1 in boxes:
        square = np.asarray(to_model_square(Image.fromarray(
            np.ascontiguousarray(pixels[y0:y1, x0:x1])), size))
        out.append(square)
        if turns:
            out.extend(rotated_squares(square, config=RotateConfig(angles=tuple(turns))))
    return np.stack(out)


def _query_boxes(image: np.ndarray, first: QueryViews, config: ExpandConfig) -> list[Box]:
    """Up to `config.small_regions` small rectangles of one query, none of them one of its
    first-pass views again."""
    boxes = small_regions(image, limit=config.small_regions + 2, min_area=config.small_min_area,
                          max_area=config.small_max_area)
    return new_boxes(boxes, first.boxes, min_side=config.min_side_px)[: config.small_regions]


def _region_views(i: int, image: np.ndarray, boxes: list[Box], *, model_size: int,
                  turns: tuple[int, ...]) -> ExtraViews:
    """Views named small0, its turns small0-rot90, ..., then small1: the first box also turned."""
    names, out_boxes = [], []
    for j, box in enumerate(boxes):
        names.append(f"small{j}")
        out_boxes.append(box)
        for a in turns if j == 0 else ():
            names.append(f"small{j}-rot{a}")
            out_boxes.append(box)
    squares = region_squares(image, boxes[:1], size=model_size, turns=turns)
    if len(boxes) > 1:
        squares = np.concatenate([squares, region_squares(image, boxes[1:], size=model_size)])
    return ExtraViews(i, names, out_boxes, squares)


def small_copy_views(ranked: Sequence[Sequence[Candidate]], views: Sequence[QueryViews], *,
                     pixels: Callable[[int], np.ndarray], model_size: int,
                     calibration: Calibration, config: ExpandConfig = DEFAULT,
                     rotate: RotateConfig | None = TURNS) -> ViewFamily:
    """The small-region views of the unconfident queries (by `config.small_confident`).

    `pixels(i)`: query i's full-resolution RGB pixels. With `rotate`, the first rectangle is also
    turned by `rotate.angles` (`config.small_turns`)."""
    family = ViewFamily("small", config.small_confident, [], merge=config.small_merge)
    if config.small_regions <= 0:
        return family
    turns = tuple(rotate.angles) if rotate is not None and config.small_turns else ()
    for i in unconfident(ranked, calibration, confident=config.small_confident):
        image = pixels(i)
        boxes = _query_boxes(image, views[i], config)
        if boxes:
            family.views.append(_region_views(i, image, boxes, model_size=model_size,
                                              turns=turns))
    return family


def small_copy_pass(ranked: list[list[Candidate]], vectors: Sequence[np.ndarray],
                    views: Sequence[QueryViews], *, pixels: Callable[[int], np.ndarray],
                    model_size: int, embed: Callable[[np.ndarray], np.ndarray], search: Search,
                    calibration: Calibration, config: ExpandConfig = DEFAULT,
                    rotate: RotateConfig | None = TURNS
                    ) -> tuple[list[list[Candidate]], int]:
    """The small-region views alone as a second pass (`extra_views.second_pass`): the new
    candidate lists and how many views were embedded."""
    family = small_copy_views(ranked, views, pixels=pixels, model_size=model_size,
                              calibration=calibration, config=config, rotate=rotate)
    return second_pass(ranked, vectors, views, families=[family], embed=embed, search=search,
                       calibration=calibration)
