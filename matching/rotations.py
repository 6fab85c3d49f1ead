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
match; otherwise the first pass's candidates stand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from copytrace.matching.calibrate import Calibration, global_score_only
from copytrace.matching.expand import RotateConfig
from copytrace.matching.rank import Candidate, QueryViews

DEFAULT = RotateConfig()


def unconfident(ranked: Sequence[Sequence[Candidate]], calibration: Calibration, *,
                config: RotateConfig = DEFAULT) -> list[int]:
    """Positions of the queries whose best candidate is not a confident copy by its global
    score alone (or that have no candidate)."""
    return [i for i, row in enumerate(ranked)
            if not row or max(global_score_only(c.global_score, calibration=calibration)
                              for c in row) < config.confident]


def rotated_squares(model_pixels: np.ndarray, *,
                    config: RotateConfig = DEFAULT) -> np.ndarray:
    """The model's whole-image input turned by each angle: len(angles) x S x S x 3."""
    return np.stack([np.ascontiguousarray(np.rot90(model_pixels, k=(a // 90) % 4))
                     for a in config.angles])


def rotation_pass(ranked: list[list[Candidate]], vectors: Sequence[np.ndarray],
                  views: Sequence[QueryViews], *, model_pixels: Callable[[int], np.ndarray],
                  embed: Callable[[np.ndarray], np.ndarray],
                  search: Callable[[np.ndarray, list[QueryViews]], list[list[Candidate]]],
                  calibration: Calibration, config: RotateConfig = DEFAULT
                  ) -> tuple[list[list[Candidate]], int]:
    """Candidates after searching the rotated views of the unconfident queries; returns the new
    candidate lists (confident queries' rows unchanged) and how many views were embedded.

    `model_pixels(i)`: query i's whole-image model input; `embed`: N x S x S x 3 -> N x D;
    `search(vectors, views)`: `rank.candidates` over those queries' views."""
    todo = unconfident(ranked, calibration, config=config)
    if not todo:
        return ranked, 0
    turned = embed(np.concatenate([rotated_squares(model_pixels(i), config=config)
                                   for i in todo]))
    n = len(config.angles)
    stacked, merged_views = [], []
    for j, i in enumerate(todo):
        full_box = tuple(views[i].boxes[0])
        stacked.append(np.concatenate([vectors[i], turned[j * n : (j + 1) * n]]))
        merged_views.append(QueryViews([*views[i].names, *(f"rot{a}" for a in config.angles)],
                                       [*views[i].boxes, *([full_box] * n)]))
    # Only a turned view that finds a confident match changes the candidates: merging every
    # turned view's neighbours into unsure queries pushed 2 originals out of the top 10 on the
    # dev benchmark (R@10 0.982 -> 0.973) and found none.
    out = search_again(ranked, todo, stacked, merged_views, search=search,
                       calibration=calibration, view_prefix="rot", confident=config.confident)
    return out, len(todo) * n


def search_again(ranked: list[list[Candidate]], todo: list[int], stacked: list[np.ndarray],
                 merged: list[QueryViews], *,
                 search: Callable[[np.ndarray, list[QueryViews]], list[list[Candidate]]],
                 calibration: Calibration, view_prefix: str, confident: float
                 ) -> list[list[Candidate]]:
    """Search the queries `todo` again with their extra views (`stacked` rows, `merged` views);
    a query's candidates change only where a view named `view_prefix...` found the top match
    with a calibrated global score of at least `confident` (second passes must not reshuffle)."""
    again = search(np.concatenate(stacked), merged)
    out = list(ranked)
    for i, row in zip(todo, again, strict=True):
        if row and row[0].view.startswith(view_prefix) and global_score_only(
                row[0].global_score, calibration=calibration) >= confident:
            out[i] = row
    return out
