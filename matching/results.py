"""The records a query returns: a ranked list of matches per query, each with its evidence."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Match:
    """One candidate original for a query; `score` is the calibrated P(copy), 0.5 = threshold."""

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

    def as_json(self) -> dict:
        """The JSON shape of `copytrace query --json` and of the HTTP service."""
        return {"query_id": self.query_id, "uri": self.uri, "error": self.error,
                "matches": [{"reference_id": m.reference_id, "score": m.score,
                             "similarity": m.similarity, **m.evidence} for m in self.matches]}
