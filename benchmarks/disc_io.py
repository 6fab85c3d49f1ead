"""Read DISC2021 files: ground truth (`query_id,reference_id`, empty reference = no match) and
predictions (`query_id,reference_id,score`). Column names of the official files are accepted."""

from __future__ import annotations

import csv
from pathlib import Path

from copytrace.benchmarks.metrics import GroundTruthMatch, PredictedMatch

_QUERY_COLS = ("query_id", "query")
_REF_COLS = ("reference_id", "reference", "db", "ref_id")


def _column(header: list[str], names: tuple[str, ...], path: Path) -> str:
    for name in names:
        if name in header:
            return name
    raise ValueError(f"'{path}' has no {names[0]} column (columns: {', '.join(header)})")


def read_ground_truth(path: str | Path) -> tuple[list[GroundTruthMatch], set[str]]:
    """Positive pairs, and every query id listed (queries without a match included)."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        qcol, rcol = _column(header, _QUERY_COLS, path), _column(header, _REF_COLS, path)
        pairs, queries = [], set()
        for row in reader:
            queries.add(row[qcol])
            if row[rcol]:
                pairs.append(GroundTruthMatch(row[qcol], row[rcol]))
    return pairs, queries


def read_predictions(path: str | Path) -> list[PredictedMatch]:
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        qcol, rcol = _column(header, _QUERY_COLS, path), _column(header, _REF_COLS, path)
        scol = _column(header, ("score",), path)
        try:
            return [PredictedMatch(r[qcol], r[rcol], float(r[scol])) for r in reader]
        except ValueError as exc:
            raise ValueError(f"'{path}': bad score value ({exc})") from None
