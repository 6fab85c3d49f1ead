"""One second pass for the queries the first pass found nothing confident for.

Extra views come in families, each named by a view prefix and with its own threshold: turned
whole images (`rotations.rotation_views`, "rot"), small regions
(`small_copies.small_copy_views`, "small") and grid tiles (`grid_tiles.tile_views`, "tile",
off by default). All families' views of all unconfident queries go through the
model in one call and are searched in one call; each family of a query is searched together
with that query's first-pass views, as its own row. A query's candidates change only where a
family's view finds the top match with a confident calibrated global score (or, for a family that
merges, the small regions, wherever they are still unconfident), the families taken in order, a
later one only where the candidates are still not confident by its threshold: the same rows as
separate passes run one after the other, for one model call and one search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from copytrace.matching.calibrate import Calibration, global_score_only
from copytrace.matching.expand import Box
from copytrace.matching.rank import Candidate, QueryViews

Search = Callable[[np.ndarray, list[QueryViews]], list[list[Candidate]]]
"""`search(vectors, views)`: `rank.candidates` over those queries' views."""


@dataclass(frozen=True)
class ExtraViews:
    """One query's extra views of one family, as model inputs not yet embedded."""

    query: int  # position of the query in the batch
    names: list[str]
    boxes: list[Box]
    squares: np.ndarray  # len(names) x S x S x 3


@dataclass(frozen=True)
class ViewFamily:
    """Extra views that replace a query's candidates only when one of them finds the top match
    with a calibrated global score of at least `confident` (second passes must not reshuffle);
    or, with `merge`, that join the query's first-pass views like its crops do: the candidates
    become the best over both, and verification re-ranks them. A region holding a small copy
    often finds its original in a large catalog, but below `confident` (its view is mostly the
    original, yet a small one): only verification can tell it from the background's matches."""

    prefix: str  # every view name of the family starts with it
    confident: float
    views: list[ExtraViews]
    merge: bool = False


def is_confident(row: Sequence[Candidate], calibration: Calibration, confident: float) -> bool:
    """Whether the best candidate of `row` is a confident copy by its global score alone."""
    return bool(row) and max(global_score_only(c.global_score, calibration=calibration)
                             for c in row) >= confident


def unconfident(ranked: Sequence[Sequence[Candidate]], calibration: Calibration, *,
                confident: float) -> list[int]:
    """Positions of the queries whose best candidate is not a confident copy by its global
    score alone (or that have no candidate)."""
    return [i for i, row in enumerate(ranked) if not is_confident(row, calibration, confident)]


def _found_by(row: Sequence[Candidate], family: ViewFamily, calibration: Calibration) -> bool:
    return bool(row) and row[0].view.startswith(family.prefix) and global_score_only(
        row[0].global_score, calibration=calibration) >= family.confident


def second_pass(ranked: list[list[Candidate]], vectors: Sequence[np.ndarray],
                views: Sequence[QueryViews], *, families: Sequence[ViewFamily],
                embed: Callable[[np.ndarray], np.ndarray], search: Search,
                calibration: Calibration) -> tuple[list[list[Candidate]], int]:
    """Candidates after searching the families' extra views; returns the new candidate lists
    (other rows unchanged) and how many views were embedded.

    `vectors[i]`, `views[i]`: query i's first-pass view vectors and views; `embed`:
    N x S x S x 3 -> N x D."""
    extra = [(family, ev) for family in families for ev in family.views]
    if not extra:
        return ranked, 0
    embedded = embed(np.concatenate([ev.squares for _, ev in extra]))
    stacked, merged, pos = [], [], 0
    for _, ev in extra:
        first = views[ev.query]
        stacked.append(np.concatenate([vectors[ev.query], embedded[pos : pos + len(ev.names)]]))
        merged.append(QueryViews([*first.names, *ev.names], [*first.boxes, *ev.boxes]))
        pos += len(ev.names)
    again = search(np.concatenate(stacked), merged)
    out = list(ranked)
    for (family, ev), row in zip(extra, again, strict=True):
        # In family order: a row a family already made confident is not replaced by a later one.
        if is_confident(out[ev.query], calibration, family.confident):
            continue
        if family.merge:
            out[ev.query] = union(out[ev.query], row)
        elif _found_by(row, family, calibration):
            out[ev.query] = row
    return out, pos


def union(a: Sequence[Candidate], b: Sequence[Candidate]) -> list[Candidate]:
    """Both rows' candidates, each reference by its better view, best first, as long as the
    longer row: what one search over both rows' views would give (`rank.candidates`), so two
    merging families of one query keep each other's finds."""
    best: dict[str, Candidate] = {}
    for c in (*a, *b):
        prev = best.get(c.reference_id)
        if prev is not None:
            keep = c if c.global_score > prev.global_score else prev
            c = replace(keep, similarity=max(c.similarity, prev.similarity))
        best[c.reference_id] = c
    ranked = sorted(best.values(), key=lambda c: (-c.global_score, c.reference_id))
    return ranked[: max(len(a), len(b))]
