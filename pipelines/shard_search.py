"""Search an index whose shards live in Ray actors: fan the queries out, merge the top k.

The same code runs on an embedded local Ray and on a cluster (`ray_address`): each actor loads
its share of the shard files (on a GPU when its node has one, as `ShardedIndex.load` does) and
answers with global positions, so the driver's merge is the in-process merge (`merge_topk`).
The shard files must be readable from every node (a shared filesystem, or the same path).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from copytrace.indexing.shards import ShardedIndex, merge_topk
from copytrace.indexing.store import CopyIndex
from copytrace.pipelines.ray_runtime import cluster_gpus, ensure_ray

log = logging.getLogger(__name__)


class _ShardActor:
    """Ray actor body: holds some shards; positions are offset to the whole index's."""

    def __init__(self, paths: list[str], nprobe: int | None, k_factor: int | None,
                 use_gpu: bool | None) -> None:
        self.index = ShardedIndex.load([Path(p) for p in paths], nprobe=nprobe,
                                       k_factor=k_factor, use_gpu=use_gpu)

    def sizes(self) -> list[int]:
        return [s.ntotal for s in self.index.shards]

    def set_offsets(self, offsets: list[int]) -> None:
        self.index.offsets = list(offsets)

    def set_search_params(self, nprobe: int | None, k_factor: int | None) -> None:
        self.index.set_search_params(nprobe=nprobe, k_factor=k_factor)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)


class RayShardedIndex:
    """`ShardedIndex`'s search interface over shard actors (contiguous runs of shards each)."""

    def __init__(self, actors: list, total: int) -> None:
        self.actors = actors
        self._total = total

    @classmethod
    def load(cls, paths: list[Path], *, nprobe: int | None = None, k_factor: int | None = None,
             use_gpu: bool | None = None, actors: int = 2,
             address: str | None = None) -> RayShardedIndex:
        import ray

        ensure_ray(address)
        n = max(1, min(actors, len(paths)))
        groups = [[str(p) for p in paths[i::n]] for i in range(n)]  # round robin over actors
        gpu = 1 if use_gpu is not False and cluster_gpus() >= n else 0
        actor_cls = ray.remote(num_cpus=0, num_gpus=gpu)(_ShardActor)
        handles = [actor_cls.remote(g, nprobe, k_factor, use_gpu) for g in groups]
        sizes = ray.get([h.sizes.remote() for h in handles])
        by_path = {p: s for g, ss in zip(groups, sizes, strict=True)
                   for p, s in zip(g, ss, strict=True)}
        offset, offsets = 0, {}
        for p in paths:  # global positions follow the manifest's shard order
            offsets[str(p)] = offset
            offset += by_path[str(p)]
        ray.get([h.set_offsets.remote([offsets[p] for p in g])
                 for h, g in zip(handles, groups, strict=True)])
        log.info("%d shards on %d Ray actors", len(paths), n)
        return cls(handles, offset)

    @property
    def ntotal(self) -> int:
        return self._total

    def set_search_params(self, *, nprobe: int | None = None, k_factor: int | None = None) -> None:
        import ray

        ray.get([a.set_search_params.remote(nprobe, k_factor) for a in self.actors])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import ray

        q = np.ascontiguousarray(queries, dtype=np.float32)
        parts = ray.get([a.search.remote(q, k) for a in self.actors])
        return merge_topk([s for s, _ in parts], [i for _, i in parts], k)

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)


def open_distributed(index: str | Path, *, actors: int = 2, ray_address: str | None = None,
                     nprobe: int | None = None) -> CopyIndex:
    """A `CopyIndex` whose FAISS shards are searched by `actors` Ray actors."""

    def load(paths, **kwargs):
        return RayShardedIndex.load(paths, actors=actors, address=ray_address, **kwargs)

    return CopyIndex.open(index, nprobe=nprobe, load_shards=load)
