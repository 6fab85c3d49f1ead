"""The ISC2021 / DISC2021 CSV files, read and written here only (as isc2021's `io.py` does).

Predictions: `query_id,reference_id,score`, higher = more confident; `copytrace query -o`
writes them, `localize-batch` and `copytrace eval` read them. Ground truth:
`query_id,reference_id`, an empty reference meaning the query is not a copy. The official
files' column names (`query`, `reference`, `db`, `ref_id`) are accepted on reading.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from copytrace.util.atomic import write_bytes_atomic

PREDICTIONS_HEADER = ("query_id", "reference_id", "score")
QUERY_COLUMNS = ("query_id", "query")
REFERENCE_COLUMNS = ("reference_id", "reference", "db", "ref_id")


@dataclass(frozen=True)
class Prediction:
    query_id: str
    reference_id: str
    score: float | None  # None: the file has no score for this row


def _column(header: list[str], names: tuple[str, ...], path: Path, *, required: bool = True
            ) -> str | None:
    found = next((n for n in names if n in header), None)
    if found is None and required:
        raise ValueError(f"'{path}' has no {names[0]} column (columns: {', '.join(header)})")
    return found


def _rows(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"cannot read {what} '{path}': "
                         f"{getattr(exc, 'strerror', None) or exc}") from None


def read_predictions(path: str | Path, *, require_score: bool = True,
                     min_score: float | None = None) -> list[Prediction]:
    """The rows of a predictions CSV, in file order; `min_score` drops rows below it (and
    unscored ones). `best_per_query` keeps the best few of each query."""
    path = Path(path)
    header, rows = _rows(path, "predictions")
    qcol = _column(header, QUERY_COLUMNS, path)
    rcol = _column(header, REFERENCE_COLUMNS, path)
    scol = _column(header, ("score",), path, required=require_score)
    try:
        preds = [Prediction(r[qcol], r[rcol], float(r[scol]) if scol and r.get(scol) not in
                            (None, "") else None) for r in rows]
    except ValueError as exc:
        raise ValueError(f"'{path}': bad score value ({exc})") from None
    if require_score and any(p.score is None for p in preds):
        raise ValueError(f"'{path}': rows without a score")
    if min_score is not None:
        preds = [p for p in preds if p.score is not None and p.score >= min_score]
    return preds


def best_per_query(preds: list[Prediction], top: int | None) -> list[Prediction]:
    """The best `top` predictions of each query (all with None), best first, queries in order."""
    by_query: dict[str, list[Prediction]] = {}
    for p in preds:
        by_query.setdefault(p.query_id, []).append(p)
    out: list[Prediction] = []
    for items in by_query.values():
        items.sort(key=lambda p: -(p.score if p.score is not None else float("-inf")))
        out.extend(items[:top] if top else items)
    return out


def read_ground_truth(path: str | Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(positive (query_id, reference_id) pairs, every query id listed, in file order)."""
    path = Path(path)
    header, rows = _rows(path, "ground truth")
    qcol = _column(header, QUERY_COLUMNS, path)
    rcol = _column(header, REFERENCE_COLUMNS, path)
    return [(r[qcol], r[rcol]) for r in rows if r[rcol]], [r[qcol] for r in rows]


def predictions_csv(rows: Iterable[tuple[str, str, float]]) -> str:
    """(query_id, reference_id, score) rows as the CSV text, scores to 6 decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PREDICTIONS_HEADER)
    for query_id, reference_id, score in rows:
        writer.writerow((query_id, reference_id, f"{score:.6f}"))
    return buf.getvalue()


def write_predictions(rows: Iterable[tuple[str, str, float]], path: str | Path) -> Path:
    """Write the predictions CSV atomically (a reader never sees half a file)."""
    return write_bytes_atomic(path, predictions_csv(rows).encode())
