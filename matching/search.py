"""Query-by-image search: descriptors in, ranked candidate references out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from copytrace.indexing.store import CopyIndex


@dataclass(frozen=True)
class Match:
    """One candidate original for a query; `score` is higher for more confident matches."""

    reference_id: str
    score: float
    similarity: float  # raw cosine similarity of the global descriptors
    evidence: dict = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    query_id: str
    uri: str
    matches: list[Match]
    error: str | None = None


def search(index: CopyIndex, vectors: np.ndarray, *, k: int = 10) -> list[list[Match]]:
    """Top-k references per query vector, best first."""
    return [
        [Match(n.image_id, n.score, n.score) for n in row]
        for row in index.search(vectors, k=k)
    ]
