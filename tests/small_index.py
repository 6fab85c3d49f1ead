"""Test helper: an index folder of seeded random vectors, written with the modules a build uses
(catalog and embedding parts, FAISS shards, id map, manifest) but without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copytrace.indexing.catalog import STATUS_OK, CatalogRow, catalog_table
from copytrace.indexing.embeddings import embedding_table
from copytrace.indexing.manifest import FaissInfo, IndexLayout, Manifest, ModelInfo
from copytrace.indexing.shards import build_shards
from copytrace.indexing.store import id_map_table
from copytrace.util.atomic import write_parquet_atomic

DIMS = 32


def vector(image_id: str) -> np.ndarray:
    """The vector of a numeric id: the same for every caller, unit norm."""
    v = np.random.default_rng(int(image_id)).normal(size=DIMS).astype(np.float32)
    return v / np.linalg.norm(v)


def catalog_rows(ids: list[str]) -> list[CatalogRow]:
    return [CatalogRow(i, f"/img/{i}.jpg", "0", 1, 1, 1, "JPEG", STATUS_OK, None) for i in ids]


def small_index(root: Path, n: int, *, shard_size: int, spec: str = "Flat",
                nprobe: int | None = None) -> np.ndarray:
    """Write an index of ids '0'..'n-1'; returns its vectors."""
    layout = IndexLayout(root)
    ids = [str(i) for i in range(n)]
    vectors = np.stack([vector(i) for i in ids])
    write_parquet_atomic(layout.embeddings_dir / layout.part_name(0), embedding_table(ids, vectors))
    write_parquet_atomic(layout.catalog_dir / layout.part_name(0), catalog_table(catalog_rows(ids)))
    paths = build_shards(spec, DIMS, n, lambda a, b: vectors[a:b], lambda: vectors,
                         layout.faiss_dir, shard_size=shard_size)
    write_parquet_atomic(layout.id_map, id_map_table(ids))
    Manifest(ModelInfo("test", "test", "0", DIMS, 8),
             FaissInfo(spec, nprobe, [str(p.relative_to(root)) for p in paths], shard_size, "test"),
             {"inputs": n, "indexed": n, "errors": 0}, "test").write(layout.manifest)
    return vectors
