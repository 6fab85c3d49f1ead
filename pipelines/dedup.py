"""`copytrace dedup`: audit an index for exact and near duplicates (copies of each other).

Exact duplicates share a sha256 (found with DuckDB over the catalog). Near duplicates are found
without re-embedding anything: every stored vector is searched against the index itself, scored
with the same background normalization, verification and calibration as `copytrace query`, and
a pair is reported when its calibrated score reaches the threshold (0.5 = the decision point).
Pairs are grouped into clusters: a dataset curator keeps one image per cluster.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from copytrace.indexing.atomic import write_bytes_atomic
from copytrace.indexing.catalog_sql import sql
from copytrace.indexing.embeddings import read_embeddings
from copytrace.indexing.sources import ImageSource
from copytrace.matching.clusters import connected_groups
from copytrace.matching.rank import QueryViews
from copytrace.pipelines.progress import progress_bar
from copytrace.pipelines.query import QueryEngine, match_config, reference_uris

log = logging.getLogger(__name__)

PAIRS_HEADER = ("image_a", "image_b", "kind", "score", "similarity")


@dataclass(frozen=True)
class DuplicatePair:
    image_a: str  # a < b
    image_b: str
    kind: str  # "exact" (same bytes) or "near" (a verified copy)
    score: float  # calibrated P(copy); 1.0 for exact duplicates
    similarity: float  # cosine similarity of the global descriptors


@dataclass(frozen=True)
class DedupReport:
    images: int
    pairs: list[DuplicatePair]
    clusters: list[list[str]]

    @property
    def duplicates_to_drop(self) -> int:
        """Images beyond the first of each cluster."""
        return sum(len(c) - 1 for c in self.clusters)


def exact_duplicates(index: str | Path) -> list[DuplicatePair]:
    t = sql(index, """
        SELECT a.image_id AS a, b.image_id AS b FROM catalog a JOIN catalog b
          ON a.sha256 = b.sha256 AND a.image_id < b.image_id
        WHERE a.status = 'ok' AND b.status = 'ok' ORDER BY a, b""")
    return [DuplicatePair(a, b, "exact", 1.0, 1.0)
            for a, b in zip(t.column("a").to_pylist(), t.column("b").to_pylist(), strict=True)]


def dedup(
    index: str | Path,
    *,
    threshold: float = 0.5,
    k: int = 5,
    verify: bool = True,
    output: str | Path | None = None,
    batch: int = 256,
    use_ray: bool = False,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> DedupReport:
    """Find the duplicate pairs and clusters of an index; optionally write the pairs CSV.

    `k` neighbours of every image are scored; `threshold` is on the calibrated score.
    """
    config = match_config(k=k, expand=False, verify=verify)
    engine = QueryEngine.open(index, config=config)
    ids, vectors = read_embeddings(engine.index.layout.embeddings_dir)
    uris = reference_uris(engine.index, set(ids))
    found = {(p.image_a, p.image_b): p for p in exact_duplicates(index)}
    with progress_bar("dedup", total=len(ids), enabled=show_progress) as advance:
        for start in range(0, len(ids), batch):
            block = ids[start : start + batch]
            sources = [ImageSource(i, uris[i]) for i in block]
            views = [QueryViews(["full"], [(0, 0, 0, 0)]) for _ in block]
            ranked = engine.rank(sources, [v[None] for v in vectors[start : start + batch]],
                                 views, use_ray=use_ray, ray_address=ray_address,
                                 exclude_self=True)
            for qid, matches in ranked.items():
                for m in matches:
                    if m.score < threshold:
                        continue
                    key = (min(qid, m.reference_id), max(qid, m.reference_id))
                    prev = found.get(key)
                    if prev is None or (prev.kind == "near" and m.score > prev.score):
                        found[key] = DuplicatePair(*key, "near", m.score, m.similarity)
            advance(len(block))
    pairs = sorted(found.values(), key=lambda p: (-p.score, p.image_a, p.image_b))
    report = DedupReport(len(ids), pairs, connected_groups((p.image_a, p.image_b) for p in pairs))
    if output is not None:
        write_pairs(report.pairs, output)
    return report


def write_pairs(pairs: list[DuplicatePair], path: str | Path) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PAIRS_HEADER)
    for p in pairs:
        writer.writerow((p.image_a, p.image_b, p.kind, f"{p.score:.6f}", f"{p.similarity:.6f}"))
    return write_bytes_atomic(path, buf.getvalue().encode())
