"""Tune an approximate index's search parameters on copy queries, against exact search.

What matters here is not recall of random nearest neighbours but whether the true original of a
copy lands in the top k. So the tuner takes copy queries whose originals are known, measures the
share exact search finds, and picks the fastest (nprobe, re-ranking depth) that keeps at least
`target` of that share (and, when asked, answers within `max_query_ms`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from copytrace.descriptors.model import LoadedDescriptor
from copytrace.indexing.shards import ShardedIndex

log = logging.getLogger(__name__)

K_FACTORS = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class TuningResult:
    nprobe: int | None
    k_factor: int | None
    recall_at_k: float  # share of copy queries whose original is in the top k
    exact_recall_at_k: float  # the same with exact search
    share_of_exact: float
    query_ms: float  # per query, queries searched as one batch
    queries: int
    k: int
    target: float
    reached: bool

    def as_dict(self) -> dict:
        return asdict(self)


def recall_at_k(ids: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Share of rows whose true position is among the first k ids."""
    if len(truth) == 0:
        return 0.0
    return float(np.mean((ids[:, :k] == np.asarray(truth)[:, None]).any(axis=1)))


def exact_top_k(queries: np.ndarray, total: int, read_range: Callable[[int, int], np.ndarray],
                *, k: int = 10, block: int = 200_000) -> np.ndarray:
    """Exact top-k positions by inner product, streaming the vectors in blocks."""
    q = np.ascontiguousarray(queries, np.float32)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for start in range(0, total, block):
        sims = q @ read_range(start, min(total, start + block)).T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(best_s, order, 1)
        best_i = np.take_along_axis(best_i, order, 1)
    return best_i


def _measure(index: ShardedIndex, queries: np.ndarray, truth: np.ndarray,
             k: int) -> tuple[float, float]:
    t = time.perf_counter()
    _, ids = index.search(queries, k)
    ms = (time.perf_counter() - t) * 1000 / max(1, len(queries))
    return recall_at_k(ids, truth, k), ms


def _nprobes(index: ShardedIndex) -> list[int | None]:
    import faiss

    try:
        nlist = faiss.extract_index_ivf(index.shards[0]).nlist
    except RuntimeError:
        return [None]
    out, p = [], 1
    while p < nlist:
        out.append(p)
        p *= 2
    return [*out, nlist]


def _is_refine(index: ShardedIndex) -> bool:
    import faiss

    return isinstance(faiss.downcast_index(index.shards[0]), faiss.IndexRefine)


def tune_search(index: ShardedIndex, queries: np.ndarray, truth: np.ndarray, *,
                exact_recall: float, target: float = 0.97, max_query_ms: float | None = None,
                k: int = 10) -> TuningResult:
    """Set and return the fastest parameters that keep `target` of exact search's recall@k."""
    goal = target * exact_recall
    k_factors: list[int | None] = list(K_FACTORS) if _is_refine(index) else [None]
    tried: list[TuningResult] = []
    index.search(queries[:16], k)  # warm up (thread pools, lazy allocations)
    for kf in k_factors:
        for nprobe in _nprobes(index):
            index.set_search_params(nprobe=nprobe, k_factor=kf)
            recall, ms = _measure(index, queries, truth, k)
            ok = recall >= goal - 1e-9 and (max_query_ms is None or ms <= max_query_ms)
            tried.append(TuningResult(nprobe, kf, round(recall, 4), round(exact_recall, 4),
                                      round(recall / exact_recall, 4) if exact_recall else 0.0,
                                      round(ms, 4), len(queries), k, target, ok))
            log.info("nprobe=%s k_factor=%s: recall@%d %.4f (exact %.4f), %.3f ms/query",
                     nprobe, kf, k, recall, exact_recall, ms)
            if recall >= goal - 1e-9:
                break  # more probes only cost time at this depth
    # The cheapest setting by work done (lists probed, then vectors re-ranked): timings on a
    # shared machine are too noisy to rank settings by, they only gate `max_query_ms`.
    reached = [t for t in tried if t.reached]
    best = (min(reached, key=lambda t: (t.nprobe or 0, t.k_factor or 0)) if reached
            else max(tried, key=lambda t: (t.recall_at_k, -(t.nprobe or 0), -(t.k_factor or 0))))
    index.set_search_params(nprobe=best.nprobe, k_factor=best.k_factor)
    return best


def copy_queries(uris: list[str], positions: list[int], descriptor: LoadedDescriptor, *,
                 n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of edited copies (`descriptors.augment`) of up to `n` catalog images, and the
    index position of each one's original. Unreadable files are skipped."""
    from PIL import Image

    from copytrace.descriptors.augment import EditContext, random_copy
    from copytrace.descriptors.embed import Embedder, embed_images

    rng = random.Random(seed)
    order = rng.sample(range(len(uris)), min(n, len(uris)))
    images, truth = [], []
    for i in order:
        try:
            with Image.open(uris[i]) as im:
                im.draft("RGB", (512, 512))  # JPEG: decode near the size copies are made at
                img = im.convert("RGB")
        except OSError as exc:
            log.warning("tuning: cannot open '%s' (%s); skipped", uris[i], exc)
            continue
        img.thumbnail((512, 512))
        copy, _ = random_copy(img, rng, context=EditContext())
        images.append(np.asarray(copy))
        truth.append(positions[i])
    if not images:
        return np.zeros((0, descriptor.model.output_dims), np.float32), np.zeros(0, np.int64)
    vectors = embed_images(images, Embedder(descriptor), batch_size=32)
    return vectors.astype(np.float32), np.array(truth, np.int64)


def tune_on_copies(index: ShardedIndex, *, uris: list[str], positions: list[int],
                   descriptor: LoadedDescriptor, total: int,
                   read_range: Callable[[int, int], np.ndarray], target: float = 0.97,
                   max_query_ms: float | None = None, n: int = 200,
                   seed: int = 0) -> TuningResult | None:
    """Tune an IVF index on copies of its own catalog images; None for exact indexes."""
    if _nprobes(index) == [None] or not uris:
        return None
    queries, truth = copy_queries(uris, positions, descriptor, n=n, seed=seed)
    if not len(queries):
        return None
    exact = recall_at_k(exact_top_k(queries, total, read_range), truth)
    return tune_search(index, queries, truth, exact_recall=exact, target=target,
                       max_query_ms=max_query_ms)


def tune_built_index(root: str | Path, shard_paths: list[Path], descriptor: LoadedDescriptor, *,
                     nprobe: int | None, total: int, read_range: Callable[[int, int], np.ndarray],
                     target: float = 0.97, max_query_ms: float | None = None,
                     n: int = 200, storage: str = "memory") -> TuningResult | None:
    """Tune a freshly built index folder on copies of its catalog images (see `tune_on_copies`);
    on-disk shards (`storage`) are tuned memory-mapped, as they will serve."""
    import pyarrow.parquet as pq

    from copytrace.indexing.catalog import read_catalog
    from copytrace.indexing.manifest import IndexLayout

    layout = IndexLayout(Path(root))
    index = ShardedIndex.load(shard_paths, nprobe=nprobe, use_gpu=False, storage=storage)
    if _nprobes(index) == [None]:
        return None
    catalog = read_catalog(layout.catalog_dir).to_pylist()
    uri = {r["image_id"]: r["uri"] for r in catalog if r["status"] == "ok"}
    ids = pq.read_table(layout.id_map).column("image_id").to_pylist()
    pairs = [(uri[i], p) for p, i in enumerate(ids) if i in uri]
    result = tune_on_copies(index, uris=[u for u, _ in pairs], positions=[p for _, p in pairs],
                            descriptor=descriptor, total=total, read_range=read_range,
                            target=target, max_query_ms=max_query_ms, n=n)
    if result:
        log.info("tuned on %d copy queries: nprobe=%s k_factor=%s keeps %.3f of exact recall@10",
                 result.queries, result.nprobe, result.k_factor, result.share_of_exact)
    return result
