"""Embed many files in chunks, inline or on Ray actors, yielding one result per chunk.

Each chunk comes back as a catalog table (every input, ok or error) and an embeddings table (the
good ones), so the caller can write both atomically and resume at chunk granularity.

On CPUs, one worker per granted core, each with ONE torch thread and a decode thread running a
batch ahead: a multi-threaded forward waits at every op for its slowest thread, and a decoder
sharing those cores makes some thread slow all the time (measured on the busy 2-core box: two
1-thread processes ran the bare forward 2.3x faster than one 2-thread process). Inline that is a
local process pool (for builds of at least `POOL_MIN_IMAGES`; fewer run in this process), on Ray
one actor per granted CPU. On a GPU, one actor per GPU holds the model and decodes on the
node's cores. The driver keeps two chunks in flight per worker so no worker waits for work;
a chunk lost with a Ray actor or node goes back in the queue (`ray_runtime.run_on_actors`).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context

import numpy as np
import pyarrow as pa

from copytrace.descriptors.decode import DEFAULT_MAX_PIXELS
from copytrace.descriptors.embed import Embedder, embed_files, granted_cores, pick_device
from copytrace.descriptors.model import LoadedDescriptor, load_descriptor
from copytrace.indexing.catalog import STATUS_ERROR, STATUS_OK, CatalogRow, catalog_table
from copytrace.indexing.embeddings import embedding_table
from copytrace.indexing.sources import ImageSource
from copytrace.pipelines.ray_runtime import (
    RetryPolicy,
    cluster_cpus,
    cluster_gpus,
    cluster_workers,
    ensure_ray,
    node_id,
    run_on_actors,
)
from copytrace.util.worker_guard import exit_with_parent

log = logging.getLogger(__name__)

POOL_MIN_IMAGES = 4096  # below this a worker pool's model loads cost more than they save


@dataclass(frozen=True)
class EmbedSettings:
    model: str = "default"
    batch_size: int = 32
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_workers: int | None = None
    decode_processes: int | None = None  # None: sized from the cores the worker is granted
    decode_device: str | None = "auto"  # 'auto': batch JPEG decoding on the model's GPU
    pdq: bool = False  # also hash each file (the catalog's pdq column)
    input_filters: tuple[str, ...] = ()  # query adapters' chains: also embed the filtered input


@dataclass(frozen=True)
class ChunkResult:
    chunk: int
    catalog: pa.Table
    embeddings: pa.Table
    filtered: dict[str, np.ndarray] = field(default_factory=dict)  # chain -> rows as embeddings


def embed_chunk(chunk: int, sources: Sequence[ImageSource], embedder: Embedder,
                settings: EmbedSettings) -> ChunkResult:
    by_pos: dict[int, CatalogRow] = {}  # by position in `sources`: rows keep the listing order
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    filtered: list[tuple[np.ndarray, ...]] = []
    for pos, src in enumerate(sources):
        if src.error is not None:  # known unreadable (broken link, odd name): never opened
            by_pos[pos] = CatalogRow(src.image_id, src.uri, None, None, None, None, None,
                                   STATUS_ERROR, src.error)
    readable = [pos for pos, src in enumerate(sources) if src.error is None]
    for batch in embed_files([sources[pos].uri for pos in readable], embedder,
                             batch_size=settings.batch_size,
                             decode_workers=settings.decode_workers,
                             max_pixels=settings.max_pixels,
                             decode_processes=settings.decode_processes,
                             decode_device=settings.decode_device, pdq=settings.pdq,
                             input_filters=settings.input_filters):
        for item in batch:
            pos = readable[item.index]
            src = sources[pos]
            if item.image is None:
                log.info("cannot decode '%s': %s (skipped; see catalog status)", src.uri,
                            item.error)
                by_pos[pos] = CatalogRow(src.image_id, src.uri, None, None, None, None, None,
                                       STATUS_ERROR, item.error)
                continue
            im = item.image
            by_pos[pos] = CatalogRow(src.image_id, src.uri, im.sha256, im.num_bytes, im.width,
                                   im.height, im.format, STATUS_OK, None, im.pdq, im.pdq_quality)
            ids.append(src.image_id)
            vectors.append(item.vector)
            filtered.append(item.filtered)
    matrix = np.stack(vectors) if vectors else np.zeros((0, embedder.dims), np.float32)
    return ChunkResult(chunk, catalog_table([by_pos[pos] for pos in range(len(sources))]),
                       embedding_table(ids, matrix),
                       {c: np.stack([f[j] for f in filtered]) if filtered
                        else np.zeros((0, embedder.dims), np.float32)
                        for j, c in enumerate(settings.input_filters)})


class _Worker:
    """Ray actor body: loads the model once, then embeds chunks."""

    def __init__(self, settings: EmbedSettings, threads: int) -> None:
        self.settings = settings
        self.embedder = Embedder(load_descriptor(settings.model), device=settings.device,
                                 threads=threads)

    def run(self, chunk: int, sources: list[ImageSource]) -> ChunkResult:
        return embed_chunk(chunk, sources, self.embedder, self.settings)

    def ready(self) -> str:
        return node_id()


_POOL_WORKER: _Worker | None = None  # the model of a local pool process


def one_core(settings: EmbedSettings) -> EmbedSettings:
    """A one-thread worker decodes on one thread of its own, a batch ahead of its model."""
    return replace(settings, decode_processes=0, decode_workers=settings.decode_workers or 1)


def _pool_init(settings: EmbedSettings) -> None:
    global _POOL_WORKER
    exit_with_parent()
    _POOL_WORKER = _Worker(one_core(settings), threads=1)


def _pool_run(chunk: int, sources: list[ImageSource]) -> ChunkResult:
    assert _POOL_WORKER is not None
    return _POOL_WORKER.run(chunk, sources)


def cpu_workers(settings: EmbedSettings, chunks: int, images: int) -> int:
    """Local model processes: one per granted core on a CPU build big enough to pay for them."""
    if pick_device(settings.device).type != "cpu" or images < POOL_MIN_IMAGES:
        return 1
    return max(1, min(granted_cores(), chunks))


def run_inline(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings,
               descriptor: LoadedDescriptor | None = None,
               workers: int | None = None) -> Iterator[ChunkResult]:
    """In chunk order; a pool of `workers` one-thread model processes (None: `cpu_workers`)."""
    if not chunks:
        return
    if workers is None:
        workers = cpu_workers(settings, len(chunks), sum(len(s) for _, s in chunks))
    if workers > 1:
        yield from _run_pool(chunks, settings, workers)
        return
    embedder = Embedder(descriptor or load_descriptor(settings.model), device=settings.device)
    for chunk, sources in chunks:
        yield embed_chunk(chunk, sources, embedder, settings)


def _run_pool(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings,
              workers: int, in_flight_per_worker: int = 2) -> Iterator[ChunkResult]:
    todo = deque(chunks)
    pending: deque[Future] = deque()
    ctx = get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_init,
                             initargs=(settings,)) as pool:
        while todo or pending:
            while todo and len(pending) < workers * in_flight_per_worker:
                pending.append(pool.submit(_pool_run, *todo.popleft()))
            yield pending.popleft().result()


def run_on_ray(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings, *,
               address: str | None = None, num_workers: int | None = None,
               policy: RetryPolicy | None = None) -> Iterator[ChunkResult]:
    """Yields results in completion order (callers key them by `chunk`), each chunk once.

    Actors get file paths, never pixels: every node reads the images itself (a shared
    filesystem). A chunk lost with its actor or node is run again on the surviving actors
    (`ray_runtime.run_on_actors`); `WorkersLostError` when none is left.
    """
    if not chunks:
        return
    import ray

    ensure_ray(address)
    gpus = cluster_gpus()
    if gpus:  # one actor per node (per GPU), using every core of its node for decoding
        n_workers = max(1, min(len(chunks), num_workers or cluster_workers()))
        gpu = 1 if gpus >= n_workers else 0
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpu)(_Worker)
        threads = os.cpu_count() or 1

        def start():  # noqa: ANN202 - a Ray actor handle
            return actor_cls.remote(settings, threads)
        needs = {"CPU": 1, **({"GPU": 1} if gpu else {})}
    else:  # one one-thread actor per CPU Ray grants (module docstring: why one thread)
        n_workers = max(1, min(len(chunks), num_workers or cluster_cpus()))
        actor_cls = ray.remote(num_cpus=1)(_Worker)
        worker_settings = one_core(settings)

        def start():  # noqa: ANN202
            return actor_cls.remote(worker_settings, 1)
        needs = {"CPU": 1}
    items = [(chunk, (chunk, sources)) for chunk, sources in chunks]
    for _, result in run_on_actors(items, start, workers=n_workers, needs=needs, what="chunk",
                                   policy=policy):
        yield result


def run_embedding(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings, *,
                  use_ray: bool, address: str | None = None, num_workers: int | None = None,
                  descriptor: LoadedDescriptor | None = None) -> Iterator[ChunkResult]:
    """`descriptor`, when given, saves the inline runner a second model load."""
    if use_ray:
        return run_on_ray(chunks, settings, address=address, num_workers=num_workers)
    return run_inline(chunks, settings, descriptor)
