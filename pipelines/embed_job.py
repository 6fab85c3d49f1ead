"""Embed many files in chunks, inline or on Ray actors, yielding one result per chunk.

Each chunk comes back as a catalog table (every input, ok or error) and an embeddings table (the
good ones), so the caller can write both atomically and resume at chunk granularity. On Ray, one
actor per node holds the model and decodes on threads while it runs the model; the driver keeps
two chunks in flight per actor so no actor waits for work.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from copytrace.descriptors.decode import DEFAULT_MAX_PIXELS
from copytrace.descriptors.embed import Embedder, embed_files
from copytrace.descriptors.model import LoadedDescriptor, load_descriptor
from copytrace.indexing.catalog import STATUS_ERROR, STATUS_OK, CatalogRow, catalog_table
from copytrace.indexing.embeddings import embedding_table
from copytrace.indexing.sources import ImageSource
from copytrace.pipelines.ray_runtime import cluster_gpus, cluster_workers, ensure_ray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSettings:
    model: str = "default"
    batch_size: int = 32
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_workers: int | None = None
    decode_processes: int | None = None  # None: sized from the cores the worker is granted
    decode_device: str | None = "auto"  # 'auto': batch JPEG decoding on the model's GPU


@dataclass(frozen=True)
class ChunkResult:
    chunk: int
    catalog: pa.Table
    embeddings: pa.Table


def embed_chunk(chunk: int, sources: Sequence[ImageSource], embedder: Embedder,
                settings: EmbedSettings) -> ChunkResult:
    by_pos: dict[int, CatalogRow] = {}  # by position in `sources`: rows keep the listing order
    ids: list[str] = []
    vectors: list[np.ndarray] = []
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
                             decode_device=settings.decode_device):
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
                                   im.height, im.format, STATUS_OK, None)
            ids.append(src.image_id)
            vectors.append(item.vector)
    matrix = np.stack(vectors) if vectors else np.zeros((0, embedder.dims), np.float32)
    return ChunkResult(chunk, catalog_table([by_pos[pos] for pos in range(len(sources))]),
                       embedding_table(ids, matrix))


class _Worker:
    """Ray actor body: loads the model once, then embeds chunks."""

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        # Ray pins OMP_NUM_THREADS to the actor's num_cpus (1); one actor per node is meant to
        # use the whole node, so give torch every core back.
        self.embedder = Embedder(load_descriptor(settings.model), device=settings.device,
                                 threads=os.cpu_count() or 1)

    def run(self, chunk: int, sources: list[ImageSource]) -> ChunkResult:
        return embed_chunk(chunk, sources, self.embedder, self.settings)

    def ready(self) -> bool:
        return True


def run_inline(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings,
               descriptor: LoadedDescriptor | None = None) -> Iterator[ChunkResult]:
    if not chunks:
        return
    embedder = Embedder(descriptor or load_descriptor(settings.model), device=settings.device)
    for chunk, sources in chunks:
        yield embed_chunk(chunk, sources, embedder, settings)


def run_on_ray(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings, *,
               address: str | None = None, num_workers: int | None = None,
               in_flight_per_worker: int = 2) -> Iterator[ChunkResult]:
    """Yields results in completion order (callers key them by `chunk`)."""
    if not chunks:
        return
    import ray

    ensure_ray(address)
    gpus = cluster_gpus()
    n_workers = max(1, min(len(chunks), num_workers or cluster_workers()))
    actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpus >= n_workers else 0)(_Worker)
    workers = [actor_cls.remote(settings) for _ in range(n_workers)]
    todo = deque(chunks)
    running: dict = {}
    free = deque(w for w in workers for _ in range(in_flight_per_worker))
    try:
        while todo or running:
            while todo and free:
                worker = free.popleft()
                chunk, sources = todo.popleft()
                running[worker.run.remote(chunk, sources)] = worker
            done, _ = ray.wait(list(running), num_returns=1)
            worker = running.pop(done[0])
            free.append(worker)
            yield ray.get(done[0])
    finally:
        for w in workers:
            ray.kill(w)


def run_embedding(chunks: Sequence[tuple[int, list[ImageSource]]], settings: EmbedSettings, *,
                  use_ray: bool, address: str | None = None, num_workers: int | None = None,
                  descriptor: LoadedDescriptor | None = None) -> Iterator[ChunkResult]:
    """`descriptor`, when given, saves the inline runner a second model load."""
    if use_ray:
        return run_on_ray(chunks, settings, address=address, num_workers=num_workers)
    return run_inline(chunks, settings, descriptor)
