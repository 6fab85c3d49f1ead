"""Fixed overlapping grid tiles of the query, searched only for queries the first pass found
nothing confident for: the ISC2021 winners' "query crops" (D²LV).

`small_copies` finds a small copy by its straight borders; a paste without clean borders, or of
low contrast against its background, gets no rectangle there, and the whole-image descriptor
sees mostly the background. A tile of a fixed grid needs no border: wherever the paste is, some
tile holds most of it. `tile_views` is the third family of the engine's one second pass
(`extra_views.second_pass`, prefix "tile", threshold `ExpandConfig.tile_confident`): a query's
candidates change only where a tile finds the top match with a global score over that threshold.

Off by default (`ExpandConfig.tile_grids=()`): on the hidden-copies set (45 pastes at 3-10 %)
a 3 x 3 grid of 0.4-side tiles put no paste into the top 10 that was not there already (30 of
45 either way, 350 references) for 9 more descriptor passes per unsure query. A tile holding a small
paste sees mostly background: it often ranks the original first at 350 references, but with a
calibrated global score of 0.01-0.3, so at the other families' 0.5 the tiles never changed a
candidate list (0 of 45); their own threshold is 0.1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from copytrace.matching.calibrate import Calibration
from copytrace.matching.expand import Box, ExpandConfig, new_boxes
from copytrace.matching.extra_views import ExtraViews, ViewFamily, unconfident
from copytrace.matching.rank import Candidate, QueryViews
from copytrace.matching.small_copies import region_squares

DEFAULT = ExpandConfig()


def tile_boxes(width: int, height: int, *, grids: Sequence[tuple[int, float]]) -> list[Box]:
    """For each (n, side) of `grids`: n x n tiles, each `side` of the query's width and height,
    spread evenly from edge to edge (they overlap where n * side > 1), row by row."""
    out: list[Box] = []
    for n, side in grids:
        tw, th = max(1, round(side * width)), max(1, round(side * height))
        xs = [round(c * (width - tw) / (n - 1)) if n > 1 else (width - tw) // 2 for c in range(n)]
        ys = [round(r * (height - th) / (n - 1)) if n > 1 else (height - th) // 2
              for r in range(n)]
        out += [(x, y, x + tw, y + th) for y in ys for x in xs]
    return out


def tile_views(ranked: Sequence[Sequence[Candidate]], views: Sequence[QueryViews], *,
               pixels: Callable[[int], np.ndarray], model_size: int, calibration: Calibration,
               config: ExpandConfig = DEFAULT) -> ViewFamily:
    """The grid tiles ("tile2-0", ...: grid size, then position) of the unconfident queries (by
    `config.tile_confident`); tiles under `config.min_side_px` or nearly one of the query's
    first-pass views are left out. `pixels(i)`: query i's full-resolution RGB pixels."""
    family = ViewFamily("tile", config.tile_confident, [], merge=config.tile_merge)
    if not config.tile_grids:
        return family
    for i in unconfident(ranked, calibration, confident=config.tile_confident):
        image = pixels(i)
        h, w = image.shape[:2]
        names, boxes = [], []
        for n, side in config.tile_grids:
            for j, box in enumerate(tile_boxes(w, h, grids=[(n, side)])):
                if new_boxes([box], views[i].boxes, min_side=config.min_side_px):
                    names.append(f"tile{n}-{j}")
                    boxes.append(box)
        if boxes:
            family.views.append(ExtraViews(i, names, boxes,
                                           region_squares(image, boxes, size=model_size)))
    return family
