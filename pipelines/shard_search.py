"""Search an index whose shards live in Ray actors: fan the queries out, merge the top k.

The same code runs on an embedded local Ray and on a cluster (`ray_address`): each actor loads
its share of the shard files (on a GPU when its node has one, as `ShardedIndex.load` does) and
answers with global positions, so the driver's merge is the in-process merge (`merge_topk`).
The shard files must be readable from every node (a shared filesystem, or the same path).
A merged on-disk index (`indexing.ondisk`) is one index file (its lists file beside it) plus the
small shards later adds opened: one actor maps the merged file, so fanning out splits only
those; splitting its lists over actors is not done.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from copytrace.indexing.shards import ShardedIndex, merge_topk
from copytrace.indexing.store import CopyIndex
from copytrace.pipelines.ray_runtime import (
    WorkersLostError,
    cluster_gpus,
    ensure_ray,
    error_line,
    head_lost,
    kill_actor,
    leave_lost_cluster,
    lost_worker_errors,
    node_id,
)

log = logging.getLogger(__name__)

LOAD_ATTEMPTS = 3  # times one group of shards may be lost with its actor while first loading
LOAD_TIMEOUT_S = 600.0  # an actor not placed and loaded by then fails the load (named shards)


class ShardsUnavailableError(WorkersLostError):
    """Some shards cannot be searched (their actor died and could not be loaded again)."""


class _ShardActor:
    """Ray actor body: holds some shards; positions are offset to the whole index's."""

    def __init__(self, paths: list[str], nprobe: int | None, k_factor: int | None,
                 use_gpu: bool | None, storage: str = "memory") -> None:
        self.index = ShardedIndex.load([Path(p) for p in paths], nprobe=nprobe,
                                       k_factor=k_factor, use_gpu=use_gpu, storage=storage)

    def node(self) -> str:
        return node_id()

    def sizes(self) -> list[int]:
        return [s.ntotal for s in self.index.shards]

    def set_offsets(self, offsets: list[int]) -> None:
        self.index.offsets = list(offsets)

    def set_search_params(self, nprobe: int | None, k_factor: int | None) -> None:
        self.index.set_search_params(nprobe=nprobe, k_factor=k_factor)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)


class RayShardedIndex:
    """`ShardedIndex`'s search interface over shard actors (round-robin groups of shards).

    Actors are spread over the nodes. An actor lost while first loading its shards is started
    again on the surviving nodes (a bounded number of times). When some die later (their node
    is lost), a search loads their shards again into new actors on the surviving nodes and
    retries once; if that fails too it raises `ShardsUnavailableError` naming the shards: a top
    k merged from only some of the shards is never returned.
    """

    def __init__(self, actors: list, total: int, *, groups: list[list[str]] | None = None,
                 offsets: dict[str, int] | None = None, settings: dict | None = None) -> None:
        self.actors = actors
        self._total = total
        self.groups = groups or [[] for _ in actors]  # shard paths per actor
        self.offsets = offsets or {}  # shard path -> global position of its first vector
        self.settings = settings or {}  # nprobe, k_factor, use_gpu, storage: a new actor's load

    @classmethod
    def load(cls, paths: list[Path], *, nprobe: int | None = None, k_factor: int | None = None,
             use_gpu: bool | None = None, actors: int = 2,
             address: str | None = None, storage: str = "memory") -> RayShardedIndex:

        ensure_ray(address)
        n = max(1, min(actors, len(paths)))
        groups = [[str(p) for p in paths[i::n]] for i in range(n)]  # round robin over actors
        settings = {"nprobe": nprobe, "k_factor": k_factor, "use_gpu": use_gpu,
                    "storage": str(getattr(storage, "value", storage))}
        handles = [_start_actor(g, settings, n) for g in groups]
        sizes = _first_load(handles, groups, settings)
        by_path = {p: s for g, ss in zip(groups, sizes, strict=True)
                   for p, s in zip(g, ss, strict=True)}
        offset, offsets = 0, {}
        for p in paths:  # global positions follow the manifest's shard order
            offsets[str(p)] = offset
            offset += by_path[str(p)]
        index = cls(handles, offset, groups=groups, offsets=offsets, settings=settings)
        index._place()
        return index

    def _place(self) -> None:
        """Give every loaded actor its offsets; groups whose actor is lost by then (its node
        died) are loaded again on the surviving nodes, once, else `ShardsUnavailableError`."""
        _, lost = _gather({i: a.set_offsets.remote([self.offsets[p] for p in self.groups[i]])
                           for i, a in enumerate(self.actors)})
        if lost:
            self._reload(lost)
            if failed := {i: why for i, why in lost.items() if why}:
                raise ShardsUnavailableError(
                    f"shards {', '.join(self._names(failed))} cannot be loaded: their Ray actor "
                    f"was lost and loading them again failed ({'; '.join(failed.values())})")
        log.info("%d shards on %d Ray actors, nodes %s", len(self.offsets), len(self.actors),
                 ", ".join(self.nodes()))

    @property
    def ntotal(self) -> int:
        return self._total

    def set_search_params(self, *, nprobe: int | None = None, k_factor: int | None = None) -> None:
        import ray

        self.settings.update(nprobe=nprobe, k_factor=k_factor)
        ray.get([a.set_search_params.remote(nprobe, k_factor) for a in self.actors])

    def nodes(self) -> list[str]:
        """The node of each actor, in actor order."""
        import ray

        return ray.get([a.node.remote() for a in self.actors])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        parts, lost = self._search_all(q, k)
        if lost:
            log.warning("shard actors lost (%s): loading shards %s again on surviving nodes",
                        "; ".join(lost.values()), ", ".join(self._names(lost)))
            self._reload(lost)
            again, still = self._search_all(q, k, only=list(lost))
            if still:
                raise ShardsUnavailableError(
                    f"shards {', '.join(self._names(still))} cannot be searched: their Ray actor "
                    f"was lost and reloading them failed ({'; '.join(still.values())}); no "
                    "partial result is returned")
            parts.update(again)
        ordered = [parts[i] for i in range(len(self.actors))]
        return merge_topk([s for s, _ in ordered], [i for _, i in ordered], k)

    def _search_all(self, q: np.ndarray, k: int, only: list[int] | None = None
                    ) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], dict[int, str]]:
        """Results by actor number, and the actors lost on the way (number -> why)."""
        which = range(len(self.actors)) if only is None else only
        return _gather({i: self.actors[i].search.remote(q, k) for i in which})

    def _reload(self, lost: dict[int, str]) -> None:
        """New actors for the lost groups; a group that fails to load keeps its dead actor (the
        retry then fails and names its shards)."""
        import ray

        for i in lost:
            kill_actor(self.actors[i])
            handle = _start_actor(self.groups[i], self.settings, len(self.actors))
            try:
                ray.get(handle.set_offsets.remote([self.offsets[p] for p in self.groups[i]]))
            except lost_worker_errors() as exc:
                lost[i] = error_line(exc)
                kill_actor(handle)
                continue
            self.actors[i] = handle
            lost[i] = ""  # loaded again
            log.warning("shards %s loaded again on node %s", ", ".join(self._names({i: ""})),
                        ray.get(handle.node.remote()))

    def _names(self, actors: dict[int, str]) -> list[str]:
        return [Path(p).name for i in actors for p in self.groups[i]]

    def close(self) -> None:
        for a in self.actors:
            kill_actor(a)


def _gather(refs: dict[int, object]) -> tuple[dict[int, object], dict[int, str]]:
    """Each actor's result by actor number, and the actors lost on the way (number -> why)."""
    import ray

    results, lost = {}, {}
    for i, ref in refs.items():
        try:
            results[i] = ray.get(ref)
        except lost_worker_errors() as exc:
            lost[i] = error_line(exc)
    return results, lost


def _first_load(handles: list, groups: list[list[str]], settings: dict) -> list[list[int]]:
    """Each actor's shard sizes once it has loaded them. An actor lost while loading (its node
    died) is started again, on the surviving nodes, up to `LOAD_ATTEMPTS` times per group; an
    actor that never finishes loading fails after `LOAD_TIMEOUT_S`: both raise
    `ShardsUnavailableError` naming the shards, never a wait for ever. Replaces lost handles in
    place."""
    import ray

    refs = {h.sizes.remote(): i for i, h in enumerate(handles)}
    sizes: dict[int, list[int]] = {}
    tries = [1] * len(handles)
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1,
                           timeout=max(0.0, min(1.0, deadline - time.monotonic())))
        if not done:
            if lost := head_lost():
                raise leave_lost_cluster(ShardsUnavailableError(lost))
            if time.monotonic() >= deadline:
                names = [Path(p).name for i in refs.values() for p in groups[i]]
                raise ShardsUnavailableError(
                    f"shards {', '.join(names)} were not loaded within {LOAD_TIMEOUT_S:.0f} s "
                    "(no node could place their Ray actor, or reading them hangs)")
            continue
        i = refs.pop(done[0])
        try:
            sizes[i] = ray.get(done[0])
        except lost_worker_errors() as exc:
            names = ", ".join(Path(p).name for p in groups[i])
            kill_actor(handles[i])
            if tries[i] >= LOAD_ATTEMPTS:
                raise ShardsUnavailableError(
                    f"shards {names} cannot be loaded: their Ray actor was lost {tries[i]} "
                    f"times while loading them (last: {error_line(exc)})") from exc
            tries[i] += 1
            log.warning("lost the Ray actor loading shards %s (%s): loading them again on the "
                        "surviving nodes", names, error_line(exc))
            handles[i] = _start_actor(groups[i], settings, len(handles))
            refs[handles[i].sizes.remote()] = i
    return [sizes[i] for i in range(len(handles))]


def _start_actor(group: list[str], settings: dict, n: int):  # noqa: ANN202 - a Ray actor handle
    """One shard actor, placed by Ray's SPREAD strategy (away from the other actors' nodes)."""
    import ray

    gpu = 1 if settings["use_gpu"] is not False and cluster_gpus() >= n else 0
    actor_cls = ray.remote(num_cpus=0, num_gpus=gpu, scheduling_strategy="SPREAD")(_ShardActor)
    return actor_cls.remote(group, settings["nprobe"], settings["k_factor"], settings["use_gpu"],
                            settings.get("storage", "memory"))


def open_distributed(index: str | Path, *, actors: int = 2, ray_address: str | None = None,
                     nprobe: int | None = None) -> CopyIndex:
    """A `CopyIndex` whose FAISS shards are searched by `actors` Ray actors."""

    def load(paths, **kwargs):
        return RayShardedIndex.load(paths, actors=actors, address=ray_address, **kwargs)

    return CopyIndex.open(index, nprobe=nprobe, load_shards=load)
