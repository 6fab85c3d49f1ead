"""Candidate pairs for a dedup audit: same bytes, close PDQ hashes, close descriptors.

Every stage is a chunked self-join over the index (FAISS search of stored vectors, FAISS binary
range search of PDQ hashes): memory grows with the catalog and the pairs found, never N x N.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq

from copytrace.indexing.catalog_sql import sql
from copytrace.indexing.embeddings import embedding_parts, table_vectors
from copytrace.indexing.sources import ImageSource
from copytrace.matching.pdq import MATCH_DISTANCE, range_pairs
from copytrace.matching.rank import QueryViews
from copytrace.pipelines.dedup_features import ImageFeatures
from copytrace.pipelines.engine import QueryEngine
from copytrace.pipelines.progress import progress_bar


@dataclass
class Candidate:
    """An unordered pair (a < b) worth scoring, with what found it."""

    a: str
    b: str
    similarity: float = 0.0  # raw descriptor cosine (0 when only PDQ found it)
    global_ab: float | None = None  # normalized global score, a searched -> b found
    global_ba: float | None = None
    pdq_distance: int | None = None


def pair_key(x: str, y: str) -> tuple[str, str]:
    return (x, y) if x < y else (y, x)


def exact_pairs(index: str | Path) -> list[tuple[str, str]]:
    """Pairs of catalog images with identical bytes (sha256), a < b."""
    t = sql(index, """
        SELECT a.image_id AS a, b.image_id AS b FROM catalog a JOIN catalog b
          ON a.sha256 = b.sha256 AND a.image_id < b.image_id
        WHERE a.status = 'ok' AND b.status = 'ok' ORDER BY a, b""")
    return list(zip(t.column("a").to_pylist(), t.column("b").to_pylist(), strict=True))


def pdq_candidates(features: ImageFeatures, found: dict[tuple[str, str], Candidate], *,
                   max_distance: int = MATCH_DISTANCE) -> None:
    """Add every PDQ pair within `max_distance` bits to `found`."""
    ids = features.ids
    for hp in range_pairs(features.pdq, features.pdq, max_distance=max_distance, self_join=True):
        key = pair_key(ids[hp.a], ids[hp.b])
        cand = found.setdefault(key, Candidate(*key))
        cand.pdq_distance = hp.distance


def descriptor_candidates(engine: QueryEngine, found: dict[tuple[str, str], Candidate], *,
                          k: int, min_score: float, batch: int = 1024,
                          show_progress: bool = False) -> None:
    """Search every stored vector against the index (the query engine's search and background
    normalization, no verification) and add the neighbours whose global-only calibrated score
    reaches `min_score`: the band that verification then decides."""
    config = replace(engine.config, k=k, search_k=max(engine.config.search_k, 2 * k),
                     verify=None, expand=None)
    total = len(engine.index)
    with progress_bar("neighbours", total=total, enabled=show_progress) as advance:
        for part in embedding_parts(engine.index.layout.embeddings_dir):
            table = pq.read_table(part)
            ids = table.column("image_id").to_pylist()
            vectors = table_vectors(table)
            for s in range(0, len(ids), batch):
                block = ids[s : s + batch]
                ranked = engine.rank([ImageSource(i, "") for i in block],
                                     [v[None] for v in vectors[s : s + batch]],
                                     [QueryViews(["full"], [(0, 0, 0, 0)]) for _ in block],
                                     config=config, exclude_self=True)
                for qid, matches in ranked.items():
                    for m in matches:
                        if m.score < min_score:
                            continue
                        key = pair_key(qid, m.reference_id)
                        cand = found.setdefault(key, Candidate(*key))
                        cand.similarity = max(cand.similarity, m.similarity)
                        g = float(m.evidence.get("global_score", m.similarity))
                        if qid == key[0]:
                            cand.global_ab = g
                        else:
                            cand.global_ba = g
                advance(len(block))

