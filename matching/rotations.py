"""Rotated query views, searched only for queries the first pass found nothing confident for.

The global descriptor is not rotation invariant: a copy turned by 90, 180 or 270 degrees can
fall out of the top candidates, most of all in a large catalog (held-out, 50k references: 10 of
40 rotated copies). Keypoint verification needs no help (SIFT is rotation invariant), so only
retrieval gets the extra views: the whole-image model input turned by each angle (the input is
the image squashed to a square, so turning it equals squashing the turned image; no decode, no
resize). A query whose best candidate already has a calibrated global score of at least
`confident` pays nothing; the others pay `len(angles)` more descriptor passes, and their
candidates are searched again over all their views, merged as crops are (`rank.candidates`: a
reference keeps its best normalized score over views), where a turned view finds a confident
match; otherwise the first pass's candidates stand. The query engine searches these views in one
second pass with the small-region views (`extra_views.second_pass`); `rotation_pass` runs them alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from copytrace.matching.calibrate import Calibration
from copytrace.matching.expand import RotateConfig
from copytrace.matching.extra_views import ExtraViews, Search, ViewFamily, second_pass, unconfident
from copytrace.matching.rank import Candidate, QueryViews

DEFAULT = RotateConfig()


def rotated_squares(model_pixels: np.ndarray, *,
                    config: RotateConfig = DEFAULT) -> np.ndarray:
    """The model's whole-image input turned by each angle: len(angles) x S x S x 3."""
    return np.stack([np.ascontiguousarray(np.rot90(model_pixels, k=(a // 90) % 4))
                     for a in config.angles])


def rotation_views(ranked: Sequence[Sequence[Candidate]], views: Sequence[QueryViews], *,
                   model_pixels: Callable[[int], np.ndarray], calibration: Calibration,
                   config: RotateConfig = DEFAULT) -> ViewFamily:
    """The turned whole-image views ("rot90", ...) of the unconfident queries.

    `model_pixels(i)`: query i's whole-image model input."""
    n = len(config.angles)
    return ViewFamily("rot", config.confident, [
        ExtraViews(i, [f"rot{a}" for a in config.angles], [tuple(views[i].boxes[0])] * n,
                   rotated_squares(model_pixels(i), config=config))
        for i in unconfident(ranked, calibration, confident=config.confident)])


def rotation_pass(ranked: list[list[Candidate]], vectors: Sequence[np.ndarray],
                  views: Sequence[QueryViews], *, model_pixels: Callable[[int], np.ndarray],
                  embed: Callable[[np.ndarray], np.ndarray], search: Search,
                  calibration: Calibration, config: RotateConfig = DEFAULT
                  ) -> tuple[list[list[Candidate]], int]:
    """The turned views alone as a second pass (`extra_views.second_pass`): the new candidate
    lists and how many views were embedded."""
    # Only a turned view that finds a confident match changes the candidates: merging every
    # turned view's neighbours into unsure queries pushed 2 originals out of the top 10 on the
    # dev benchmark (R@10 0.982 -> 0.973) and found none.
    family = rotation_views(ranked, views, model_pixels=model_pixels, calibration=calibration,
                            config=config)
    return second_pass(ranked, vectors, views, families=[family], embed=embed, search=search,
                       calibration=calibration)
