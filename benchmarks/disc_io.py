"""DISC2021 files as the metrics' records: ground truth (`query_id,reference_id`, empty
reference = no match) and predictions (`query_id,reference_id,score`). Parsing is
`copytrace.matching`'s (isc_csv, the one owner of these formats); this only adapts the rows."""

from __future__ import annotations

from pathlib import Path

from copytrace.benchmarks.metrics import GroundTruthMatch, PredictedMatch
from copytrace.matching import read_ground_truth as read_isc_ground_truth
from copytrace.matching import read_predictions as read_isc_predictions


def read_ground_truth(path: str | Path) -> tuple[list[GroundTruthMatch], set[str]]:
    """Positive pairs, and every query id listed (queries without a match included)."""
    pairs, queries = read_isc_ground_truth(path)
    return [GroundTruthMatch(q, r) for q, r in pairs], set(queries)


def read_predictions(path: str | Path) -> list[PredictedMatch]:
    return [PredictedMatch(p.query_id, p.reference_id, p.score)
            for p in read_isc_predictions(path)]
