"""Embedding shards: Parquet files of (image_id, vector), written in the same chunks as the catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from copytrace.indexing.parts import committed_parts


def embedding_schema(dims: int) -> pa.Schema:
    return pa.schema([("image_id", pa.string()), ("embedding", pa.list_(pa.float32(), dims))])


def embedding_table(ids: list[str], vectors: np.ndarray) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
    dims = vectors.shape[1]
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    column = pa.FixedSizeListArray.from_arrays(flat, dims)
    return pa.Table.from_arrays([pa.array(ids, pa.string()), column],
                                schema=embedding_schema(dims))


def table_vectors(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    dims = column.type.list_size
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, dims).astype(np.float32)


def embedding_parts(folder: str | Path, version: int | None = None) -> list[Path]:
    """The committed parts (`indexing.parts`): an unfinished `index add`'s parts are left out."""
    return committed_parts(folder, version)


def read_embeddings(folder: str | Path) -> tuple[list[str], np.ndarray]:
    """All vectors of an index, in position order. Fine up to a few million x 512 floats."""
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    for part in embedding_parts(folder):
        t = pq.read_table(part)
        ids.extend(t.column("image_id").to_pylist())
        chunks.append(table_vectors(t))
    if not chunks:
        return [], np.zeros((0, 0), np.float32)
    return ids, np.concatenate(chunks)
