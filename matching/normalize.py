"""Score normalization against a background set (the ISC2021 / SSCD recipe).

A raw cosine similarity means different things for different queries: a plain sky or a text
card is close to many images, a busy photo to few. Subtracting β × the mean of the query's
top-k similarities to a background sample (images that are *not* its originals) turns the
score into "how much closer is this reference than the query's typical neighbours", which is
comparable across queries and so across a single global threshold.

The background is either a sample of the catalog (default; cheap, needs nothing) or a
user-given set of images that are known not to be originals of the queries. It is stored with
the index as `background.npz`. When a candidate reference is itself in the background (catalog
sample), it is left out of its own normalization so a true match never normalizes itself away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from copytrace.indexing.atomic import write_file_atomic
from copytrace.indexing.embeddings import embedding_parts, table_vectors

log = logging.getLogger(__name__)

BACKGROUND_FILE = "background.npz"


@dataclass(frozen=True)
class NormalizeConfig:
    k: int = 10  # background neighbours averaged
    beta: float = 1.0  # weight of the background mean
    sample_size: int = 20_000  # catalog vectors sampled when no background is stored


@dataclass
class Background:
    """Background descriptors, searchable exactly (a flat index: at most tens of thousands)."""

    vectors: np.ndarray  # N x D float32, unit norm
    ids: np.ndarray  # N image ids (object array); "" for user-given images not in the catalog
    source: str  # "catalog-sample" or the folder/listing the images came from

    def __post_init__(self) -> None:
        self._index = faiss.IndexFlatIP(self.vectors.shape[1])
        self._index.add(np.ascontiguousarray(self.vectors, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def neighbours(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, background ids) per query vector."""
        kk = max(1, min(k, len(self)))
        sims, pos = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), kk)
        return sims, self.ids[np.clip(pos, 0, None)]

    def save(self, path: str | Path) -> Path:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, vectors=self.vectors.astype(np.float32),
                         ids=np.asarray(self.ids, dtype=str), source=np.array(self.source))

        return write_file_atomic(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> Background:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["vectors"].astype(np.float32), z["ids"].astype(object), str(z["source"]))


def sample_catalog(index_root: str | Path, *, size: int = 20_000, seed: int = 0) -> Background:
    """A uniform sample of the catalog's descriptors, read part by part (bounded memory)."""
    parts = embedding_parts(Path(index_root) / "embeddings")
    counts = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    total = sum(counts)
    if total == 0:
        raise ValueError(f"index '{index_root}' has no embeddings to sample a background from")
    rng = np.random.default_rng(seed)
    keep = np.zeros(total, bool)
    keep[rng.choice(total, size=min(size, total), replace=False)] = True
    vecs, ids, start = [], [], 0
    for part, n in zip(parts, counts, strict=True):
        mask = keep[start : start + n]
        start += n
        if not mask.any():
            continue
        table = pq.read_table(part)
        vecs.append(table_vectors(table)[mask])
        ids.extend(np.asarray(table.column("image_id").to_pylist(), dtype=object)[mask])
    return Background(np.concatenate(vecs), np.asarray(ids, dtype=object), "catalog-sample")


def load_background(index_root: str | Path, *,
                    config: NormalizeConfig = NormalizeConfig()) -> Background:
    """The index's stored background, else a catalog sample (not written: indexes may be read-only)."""
    path = Path(index_root) / BACKGROUND_FILE
    if path.exists():
        return Background.load(path)
    return sample_catalog(index_root, size=config.sample_size)


def background_offsets(background: Background, queries: np.ndarray, candidate_ids: list[list[str]],
                       *, config: NormalizeConfig = NormalizeConfig()) -> list[np.ndarray]:
    """β × mean top-k background similarity, per (query, candidate).

    The candidate itself is skipped among the query's background neighbours, so a reference
    that is also in the background sample is not normalized by its own similarity.
    """
    sims, ids = background.neighbours(queries, config.k + 1)
    out = []
    for row_sims, row_ids, cands in zip(sims, ids, candidate_ids, strict=True):
        offsets = np.empty(len(cands), np.float32)
        for j, cand in enumerate(cands):
            keep = row_sims[row_ids != cand][: config.k]
            offsets[j] = config.beta * float(keep.mean()) if len(keep) else 0.0
        out.append(offsets)
    return out
