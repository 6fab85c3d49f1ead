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


class EmbeddingRanges:
    """Vectors of some embedding parts by position range, one part in memory at a time (a
    rebuild of an index larger than RAM never holds the catalog)."""

    def __init__(self, parts: list[Path]) -> None:
        self.parts = parts
        counts = [pq.ParquetFile(p).metadata.num_rows for p in parts]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        self.total = int(self.starts[-1])
        self._cached: tuple[int, np.ndarray] | None = None

    def _part(self, i: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != i:
            self._cached = (i, table_vectors(pq.read_table(self.parts[i], columns=["embedding"])))
        return self._cached[1]

    def ids(self) -> list[str]:
        out: list[str] = []
        for p in self.parts:
            out.extend(pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist())
        return out

    def read_range(self, a: int, b: int) -> np.ndarray:
        chunks = [self._part(i)[max(a, s) - s : min(b, e) - s]
                  for i, (s, e) in enumerate(zip(self.starts[:-1], self.starts[1:], strict=True))
                  if s < b and e > a and e > s]
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to `n` vectors at random positions (in the order of a seeded permutation, as a
        whole-array `vectors[permutation[:n]]` would give), read part by part."""
        perm = np.random.default_rng(seed).permutation(self.total)[:n]
        order = np.argsort(perm, kind="stable")
        pick = perm[order]
        got = []
        for i, (s, e) in enumerate(zip(self.starts[:-1], self.starts[1:], strict=True)):
            mine = pick[(pick >= s) & (pick < e)]
            if len(mine):
                got.append(self._part(i)[mine - s])
        if not got:
            return np.zeros((0, 0), np.float32)
        gathered = np.concatenate(got)
        out = np.empty_like(gathered)
        out[order] = gathered
        return out


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
