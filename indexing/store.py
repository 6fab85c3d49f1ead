"""An index opened for search: manifest, id map and FAISS shards, answering in image ids."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.shards import ShardedIndex

log = logging.getLogger(__name__)

OPEN_ATTEMPTS = 5
ID_MAP_SCHEMA = pa.schema([("position", pa.int64()), ("image_id", pa.string())])


@dataclass(frozen=True)
class Neighbor:
    image_id: str
    score: float  # cosine similarity of the descriptors


@dataclass
class CopyIndex:
    layout: IndexLayout
    manifest: Manifest
    ids: np.ndarray  # position -> image_id (object array)
    faiss_index: ShardedIndex
    removed: np.ndarray | None = None  # position -> tombstoned (bool), None when none are

    @classmethod
    def open(cls, root: str | Path, *, nprobe: int | None = None, use_gpu: bool | None = None,
             load_shards: Callable[..., ShardedIndex] | None = None) -> CopyIndex:
        """Open the version the manifest names; if updates retired its files meanwhile (the
        reader fell two versions behind while opening), read the newer manifest and go again.

        `load_shards(paths, nprobe=, k_factor=, use_gpu=)` replaces `ShardedIndex.load`, e.g. to
        hold the shards in Ray actors (`pipelines.shard_search`)."""
        load = load_shards or ShardedIndex.load
        for attempt in range(OPEN_ATTEMPTS):
            try:
                return cls._open(root, nprobe=nprobe, use_gpu=use_gpu, load=load)
            except (FileNotFoundError, RuntimeError) as exc:  # FAISS: RuntimeError, no such file
                retired = isinstance(exc, FileNotFoundError) or "No such file" in str(exc)
                last = attempt == OPEN_ATTEMPTS - 1
                if not retired or last or not IndexLayout(Path(root)).manifest.exists():
                    raise
                log.info("index '%s' changed while opening; reading the new version", root)
        raise AssertionError("unreachable")

    @classmethod
    def _open(cls, root: str | Path, *, nprobe: int | None, use_gpu: bool | None,
              load: Callable[..., ShardedIndex]) -> CopyIndex:
        layout = IndexLayout(Path(root))
        manifest = Manifest.read(layout.manifest)
        ids = np.array(pq.read_table(layout.root / manifest.id_map).column("image_id").to_pylist(),
                       dtype=object)
        shards = [layout.root / s for s in manifest.index.shards]
        # only on-disk indexes pass `storage`: a `load_shards` written before it still loads the rest
        storage = {} if manifest.index.storage == "memory" else {"storage": manifest.index.storage}
        index = load(shards, nprobe=nprobe or manifest.index.nprobe,
                     k_factor=manifest.index.k_factor, use_gpu=use_gpu, **storage)
        if index.ntotal != len(ids):
            raise ValueError(f"index '{root}' is inconsistent: {index.ntotal} vectors, "
                             f"{len(ids)} ids; rebuild it")
        removed = None
        if manifest.tombstones:
            dead = pq.read_table(layout.root / manifest.tombstones).column("image_id").to_pylist()
            removed = np.isin(ids, np.array(dead, dtype=object))
        return cls(layout, manifest, ids, index, removed)

    def __len__(self) -> int:
        return len(self.ids) - (int(self.removed.sum()) if self.removed is not None else 0)

    def search(self, vectors: np.ndarray, k: int = 10) -> list[list[Neighbor]]:
        """Top-k live neighbours: tombstoned positions are asked for extra, then dropped."""
        extra = int(self.removed.sum()) if self.removed is not None else 0
        kk = min(k + extra, max(1, len(self.ids)))
        scores, positions = self.faiss_index.search(vectors, kk)
        out = []
        for srow, prow in zip(scores, positions, strict=True):
            row = [Neighbor(str(self.ids[p]), float(s)) for s, p in zip(srow, prow, strict=True)
                   if p >= 0 and (self.removed is None or not self.removed[p])]
            out.append(row[:k])
        return out

    def catalog(self) -> pa.Table:
        return read_catalog(self.layout.catalog_dir, version=self.manifest.version)


def id_map_table(ids: list[str]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(np.arange(len(ids), dtype=np.int64)), pa.array(ids, pa.string())],
        schema=ID_MAP_SCHEMA,
    )
