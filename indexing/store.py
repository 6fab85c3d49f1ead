"""An index opened for search: manifest, id map and FAISS shards, answering in image ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.shards import ShardedIndex

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

    @classmethod
    def open(cls, root: str | Path, *, nprobe: int | None = None,
             use_gpu: bool | None = None) -> CopyIndex:
        layout = IndexLayout(Path(root))
        manifest = Manifest.read(layout.manifest)
        ids = np.array(pq.read_table(layout.id_map).column("image_id").to_pylist(), dtype=object)
        shards = [layout.root / s for s in manifest.index.shards]
        index = ShardedIndex.load(shards, nprobe=nprobe or manifest.index.nprobe, use_gpu=use_gpu)
        if index.ntotal != len(ids):
            raise ValueError(f"index '{root}' is inconsistent: {index.ntotal} vectors, "
                             f"{len(ids)} ids; rebuild it")
        return cls(layout, manifest, ids, index)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, vectors: np.ndarray, k: int = 10) -> list[list[Neighbor]]:
        scores, positions = self.faiss_index.search(vectors, min(k, max(1, len(self))))
        return [
            [Neighbor(str(self.ids[p]), float(s)) for s, p in zip(srow, prow, strict=True)
             if p >= 0]
            for srow, prow in zip(scores, positions, strict=True)
        ]

    def catalog(self) -> pa.Table:
        return read_catalog(self.layout.catalog_dir)


def id_map_table(ids: list[str]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(np.arange(len(ids), dtype=np.int64)), pa.array(ids, pa.string())],
        schema=ID_MAP_SCHEMA,
    )
