"""Candidate pairs for a dedup audit: same bytes, close PDQ hashes, close descriptors.

Every stage is a chunked self-join over the index (FAISS search of stored vectors and of the
images' query crops, FAISS binary range search of PDQ hashes): memory grows with the catalog and
the pairs found, never N x N.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from copytrace.descriptors.decode import DecodeError
from copytrace.descriptors.embed import embed_images
from copytrace.indexing.catalog_sql import sql
from copytrace.indexing.embeddings import embedding_parts, table_vectors
from copytrace.indexing.manifest import IndexLayout
from copytrace.indexing.sources import ImageSource
from copytrace.matching.expand import ExpandConfig
from copytrace.matching.pdq import MATCH_DISTANCE, range_pairs
from copytrace.matching.rank import MatchConfig, QueryViews
from copytrace.pipelines.dedup.features import ImageFeatures
from copytrace.pipelines.engine import QueryEngine, match_config
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Neighbour:
    """One search result of the self-join: `reference` found for query image `query`."""

    query: str
    reference: str
    rank: int
    score: float  # global-only calibrated score
    similarity: float  # best raw cosine over the query's views
    global_score: float  # best background-normalized similarity over the views


def _views(engine: QueryEngine, uri: str, image_id: str, whole: np.ndarray,
           config: MatchConfig) -> tuple[np.ndarray, QueryViews, list[np.ndarray]]:
    """The stored whole-image vector plus the engine's query crops (centre, trimmed border,
    pasted regions) of one catalog image; the crops still to be embedded are returned."""
    try:
        q = engine.decode(uri, query_id=image_id, config=config)
    except (DecodeError, OSError) as exc:
        log.warning("dedup: cannot decode '%s' for crops: %s (whole image only)", uri, exc)
        return whole[None], QueryViews(["full"], [(0, 0, 0, 0)]), []
    return whole[None], q.views, q.crops


def search_block(engine: QueryEngine, ids: list[str], vectors: np.ndarray, uris: dict[str, str],
                 *, config: MatchConfig) -> list[Neighbour]:
    """Neighbours of a block of catalog images searched as queries (their stored vectors, plus
    their crops when `config.expand` is set); a query never finds itself."""
    got = [_views(engine, uris[i], i, v, config) if config.expand is not None and uris.get(i)
           else (v[None], QueryViews(["full"], [(0, 0, 0, 0)]), [])
           for i, v in zip(ids, vectors, strict=True)]
    pending = [c for _, _, cs in got for c in cs]
    crop_vecs = (embed_images(pending, engine.embedder) if pending
                 else np.zeros((0, vectors.shape[1]), np.float32))
    stacked, pos = [], 0
    for whole, _, cs in got:
        stacked.append(np.concatenate([whole, crop_vecs[pos : pos + len(cs)]]))
        pos += len(cs)
    ranked = engine.rank([ImageSource(i, "") for i in ids], stacked,
                         [views for _, views, _ in got], config=config, exclude_self=True)
    return [Neighbour(qid, m.reference_id, r, float(m.score), float(m.similarity),
                      float(m.evidence.get("global_score", m.similarity)))
            for qid, matches in ranked.items() for r, m in enumerate(matches)]


def _add(found: dict[tuple[str, str], Candidate], n: Neighbour) -> None:
    key = pair_key(n.query, n.reference)
    cand = found.setdefault(key, Candidate(*key))
    cand.similarity = max(cand.similarity, n.similarity)
    side = "global_ab" if n.query == key[0] else "global_ba"
    prev = getattr(cand, side)
    setattr(cand, side, n.global_score if prev is None else max(prev, n.global_score))


def _self_join_config(engine: QueryEngine, k: int, crops: bool) -> MatchConfig:
    return replace(engine.config, k=k, search_k=max(engine.config.search_k, 2 * k), verify=None,
                   expand=ExpandConfig() if crops else None)


SHARD_ROWS = 4096
"""Images per work item of the self-join on Ray."""


def read_rows(part: str | Path, start: int, stop: int) -> tuple[list[str], np.ndarray]:
    """Rows [start, stop) of an embeddings part, reading only the row groups that hold them."""
    f = pq.ParquetFile(part)
    groups, first, pos = [], None, 0
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if pos < stop and pos + n > start:
            groups.append(g)
            first = pos if first is None else first
        pos += n
    if not groups:
        return [], np.zeros((0, 0), np.float32)
    table = f.read_row_groups(groups).slice(start - first, stop - start)
    return table.column("image_id").to_pylist(), table_vectors(table)


class _NeighbourWorker:
    """Ray actor body: opens the index and model once, then searches blocks of catalog rows as
    queries and keeps only the neighbours worth scoring (what it holds: the engine plus one
    block and the block's kept neighbours)."""

    def __init__(self, index: str, k: int, crops: bool, min_score: float, always_top: int,
                 batch: int) -> None:
        self.engine = QueryEngine.open(index, config=match_config(k=k, expand=False,
                                                                  verify=False),
                                       keypoint_cache=False)
        self.config = _self_join_config(self.engine, k, crops)
        self.min_score, self.always_top, self.batch = min_score, always_top, batch

    def ready(self) -> str:
        from copytrace.pipelines.ray_runtime import node_id

        return node_id()

    def run(self, part: str, start: int, stop: int, uris: dict[str, str]) -> list[Neighbour]:
        ids, vectors = read_rows(part, start, stop)
        return [n for s in range(0, len(ids), self.batch)
                for n in search_block(self.engine, ids[s : s + self.batch],
                                      vectors[s : s + self.batch], uris, config=self.config)
                if n.score >= self.min_score or n.rank < self.always_top]


def neighbours_on_ray(index: str | Path, *, k: int, min_score: float, always_top: int = 2,
                      crops: bool = False, uris: dict[str, str] | None = None,
                      ray_address: str | None = None, workers: int | None = None,
                      rows_per_item: int = SHARD_ROWS, batch: int = 64,
                      show_progress: bool = False) -> Iterator[Neighbour]:
    """The descriptor self-join of `index` as a Ray job: every catalog image searched against
    the whole index by one-CPU actors (one per CPU the cluster grants, or `workers`), each
    holding one engine. Yields the neighbours with a calibrated global score >= `min_score` or
    among the `always_top` of their query (never the query itself), block by block in
    completion order. Blocks of `rows_per_item` rows are the unit of work and of retry: a block
    lost with its node runs again on a surviving actor (`ray_runtime.run_on_actors`). `uris`
    (image id -> file) are needed only for `crops`."""
    import ray

    from copytrace.pipelines.ray_runtime import cluster_cpus, ensure_ray, run_on_actors

    ensure_ray(ray_address)
    root = str(IndexLayout(Path(index)).root)
    items = []
    for part in embedding_parts(IndexLayout(Path(index)).embeddings_dir):
        rows = pq.ParquetFile(part).metadata.num_rows
        ids = (pq.read_table(part, columns=["image_id"]).column("image_id").to_pylist()
               if crops and uris else [])
        for s in range(0, rows, rows_per_item):
            e = min(rows, s + rows_per_item)
            block_uris = {i: uris[i] for i in ids[s:e] if i in uris} if ids else {}
            items.append((f"{Path(part).name}:{s}", (str(part), s, e, block_uris)))
    if not items:
        return
    actor_cls = ray.remote(num_cpus=1)(_NeighbourWorker)

    def start():  # noqa: ANN202 - a Ray actor handle
        return actor_cls.remote(root, k, crops, min_score, always_top, batch)

    n_workers = max(1, min(len(items), workers or cluster_cpus()))
    sizes = {key: args[2] - args[1] for key, args in items}
    with progress_bar("neighbours", total=sum(sizes.values()), enabled=show_progress) as advance:
        for key, found in run_on_actors(items, start, workers=n_workers, needs={"CPU": 1},
                                        what="block"):
            yield from found
            advance(sizes[key])


def descriptor_candidates(engine: QueryEngine, found: dict[tuple[str, str], Candidate], *,
                          uris: dict[str, str], k: int, min_score: float, always_top: int = 2,
                          crops: bool = True, use_ray: bool = False, ray_address: str | None = None,
                          batch: int = 64, show_progress: bool = False) -> None:
    """Search every catalog image against the index as the query engine searches a query: its
    stored whole-image vector plus its crops (a cropped or framed copy is often a neighbour of
    its original only through a crop), background-normalized, no verification. A neighbour is a
    candidate when its global-only calibrated score reaches `min_score` (the band verification
    then decides) or it is among the `always_top` best of its query (hard copies score low
    against a busy background but still rank first). Memory: one block of queries at a time;
    with `use_ray`, blocks of SHARD_ROWS images on Ray actors (`neighbours_on_ray`)."""
    if use_ray:
        for n in neighbours_on_ray(engine.index.layout.root, k=k, min_score=min_score,
                                   always_top=always_top, crops=crops, uris=uris,
                                   ray_address=ray_address, rows_per_item=SHARD_ROWS,
                                   batch=batch, show_progress=show_progress):
            _add(found, n)
        return
    config = _self_join_config(engine, k, crops)
    parts = list(embedding_parts(engine.index.layout.embeddings_dir))
    with progress_bar("neighbours", total=len(engine.index), enabled=show_progress) as advance:
        for part in parts:
            table = pq.read_table(part)
            ids = table.column("image_id").to_pylist()
            vectors = table_vectors(table)
            for s in range(0, len(ids), batch):
                for n in search_block(engine, ids[s : s + batch], vectors[s : s + batch], uris,
                                      config=config):
                    if n.score >= min_score or n.rank < always_top:
                        _add(found, n)
                advance(len(ids[s : s + batch]))
