"""Keypoint verification of many (query, references) jobs: in-process, a process pool, or Ray.

Reference keypoints are prepared once per process and kept in a bounded LRU
(`matching.verify.PreparedCache`), optionally backed by an on-disk cache shared by all processes
(inside the index folder when it is writable). Query keypoints are kept on the `QueryImage`, so
localization and a second verification reuse them.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from copytrace.matching.verify import (
    PreparedCache,
    Unavailable,
    Verification,
    VerifyConfig,
    init_worker,
    load_rgb,
    one_blas_thread,
    prepare_references,
    verify_jobs,
    verify_prepared,
)

if TYPE_CHECKING:  # workers import this module: keep it light (no FAISS, Arrow or torch)
    from copytrace.matching.query_image import QueryImage

log = logging.getLogger(__name__)

QUERIES_PER_TASK = 8
"""Queries per pool/Ray task: enough to reuse prepared references within a task."""


class VerifyBackend(str, Enum):
    """Where verification runs."""

    INLINE = "inline"  # this process, one core
    PROCESSES = "processes"  # a pool of worker processes kept for the engine's lifetime
    RAY = "ray"  # Ray tasks (a cluster with --ray-address)


@dataclass(frozen=True)
class VerifyJob:
    """One query against the reference URIs of its candidates."""

    query: QueryImage
    references: Sequence[str]


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start spawned workers without re-importing the caller's `__main__`.

    Workers run only this module's functions. Without this, a plain script that calls `query`
    at top level (no `if __name__ == "__main__"` guard) would be re-run inside every worker.
    Forked workers are no option: a process holding torch and decode threads can deadlock them.
    """
    main = sys.modules.get("__main__")
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__")
             if main is not None and name in main.__dict__}
    try:
        if main is not None:
            main.__spec__ = None
            main.__dict__.pop("__file__", None)
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


class Verifier:
    """Runs verification jobs on the chosen backend; open once per engine, `close` at the end."""

    def __init__(self, config: VerifyConfig, *, backend: VerifyBackend = VerifyBackend.PROCESSES,
                 workers: int | None = None, cache_capacity: int = 1024,
                 disk_cache: str | Path | None = None, ray_address: str | None = None) -> None:
        self.config = config
        self.backend = VerifyBackend(backend)
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.capacity = cache_capacity
        self.disk = str(disk_cache) if disk_cache is not None else None
        self.ray_address = ray_address
        self.cache = PreparedCache(load_rgb, config=config, capacity=cache_capacity,
                                   disk=disk_cache)
        self._pool: ProcessPoolExecutor | None = None

    def verify(self, jobs: Sequence[VerifyJob]) -> list[list[Verification | None]]:
        """Verifications per job, in job and reference order (None: no geometry found)."""
        if not jobs:
            return []
        if self.backend is VerifyBackend.INLINE or (self.workers == 1 and
                                                     self.backend is VerifyBackend.PROCESSES):
            with one_blas_thread():
                return [self._inline(job) for job in jobs]
        if len(jobs) < self.workers:
            return self._split_references(jobs)
        items = [(job.query.prepared or job.query.pixels, list(job.references)) for job in jobs]
        size = max(1, min(QUERIES_PER_TASK, math.ceil(len(items) / self.workers)))
        chunks = [items[s : s + size] for s in range(0, len(items), size)]
        results = [r for part in self._map(chunks) for r in part]
        for job, (prepared, _) in zip(jobs, results, strict=True):
            if job.query.prepared is None and prepared is not None:
                job.query.prepared = prepared
        return [row for _, row in results]

    def _inline(self, job: VerifyJob) -> list[Verification | None]:
        try:
            prepared = job.query.keypoints(self.config)
        except Exception as exc:  # noqa: BLE001 - one bad query must not sink the batch
            log.warning("cannot verify query '%s': %s", job.query.query_id, exc)
            return [None] * len(job.references)
        out: list[Verification | None] = []
        for ref in job.references:
            ref_prepared = self.cache.get(ref)
            out.append(None if ref_prepared is None
                       else verify_prepared(prepared, ref_prepared, config=self.config))
        return out

    def _split_references(self, jobs: Sequence[VerifyJob]) -> list[list[Verification | None]]:
        """Few queries: prepare them here, spread their references over the workers."""
        chunks, owners = [], []
        for j, job in enumerate(jobs):
            prepared = job.query.keypoints(self.config)
            refs = list(job.references)
            per = max(1, math.ceil(len(refs) / self.workers))
            for s in range(0, len(refs), per):
                chunks.append([(prepared, refs[s : s + per])])
                owners.append(j)
        out: list[list[Verification | None]] = [[] for _ in jobs]
        for j, part in zip(owners, self._map(chunks), strict=True):
            out[j].extend(part[0][1])
        return out

    def start(self) -> None:
        """Start the pool's workers now (about a second on a busy 2-core box) rather than inside
        the first query that needs them: part of opening, like loading the model."""
        if self.backend is VerifyBackend.PROCESSES and self.workers > 1:
            self._map([[] for _ in range(self.workers)], task=prepare_references)

    def prepare_references(self, uris: Sequence[str]) -> int:
        """Detect reference keypoints before queries need them, on the verifier's backend;
        returns how many references could not be read. Workers share them through the on-disk
        cache (without one, only this process's memory cache is filled)."""
        uris = list(dict.fromkeys(uris))
        if (self.backend is VerifyBackend.INLINE or self.disk is None or self.workers == 1
                or not uris):
            return sum(isinstance(self.cache.get(u), Unavailable) for u in uris)
        size = max(1, math.ceil(len(uris) / (4 * self.workers)))
        return sum(self._map([uris[s : s + size] for s in range(0, len(uris), size)],
                             task=prepare_references))

    def _map(self, chunks: list[list], task: Callable = verify_jobs) -> list:
        if self.backend is VerifyBackend.RAY:
            import ray

            from copytrace.pipelines.ray_runtime import ensure_ray

            ensure_ray(self.ray_address)
            remote = ray.remote(num_cpus=1)(task)
            return ray.get([remote.remote(c, self.config, self.capacity, self.disk)
                            for c in chunks])
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker, initargs=(self.config, self.capacity, self.disk))
        with _main_module_hidden():  # workers may start during submit
            futures = [self._pool.submit(task, c, self.config) for c in chunks]
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
