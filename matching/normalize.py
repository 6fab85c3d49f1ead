"""Score normalization against a background set (the ISC2021 / SSCD recipe).

A raw cosine similarity means different things for different queries: a plain sky or a text
card is close to many images, a busy photo to few. Subtracting β × the mean of the query's
top-k similarities to a background sample (images that are *not* its originals) turns the
score into "how much closer is this reference than the query's typical neighbours", which is
comparable across queries and so across a single global threshold.

The background is either a sample of the catalog (default; cheap, needs nothing; drawn and
stored on the first query) or a user-given set of images that are known not to be originals of
the queries. It is stored with the index as `background.npz` (or in a writable cache folder when
the index is read-only). A catalog sample is tied to the index version it was drawn from and
leaves out removed images, so after `index add`/`remove` a query scores as on a fresh build of the
same images. When a candidate reference is
itself in the background (catalog sample), it is left out of its own normalization so a true
match never normalizes itself away.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow.parquet as pq

from copytrace.indexing.embeddings import embedding_parts, table_vectors
from copytrace.util.atomic import write_file_atomic

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
    model_id: str = ""  # descriptor that made the vectors (a stale background is not used)
    catalog_size: int = 0  # indexed images when a catalog sample was drawn
    index_version: int = 0  # manifest version a catalog sample was drawn from

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
                         ids=np.asarray(self.ids, dtype=str), source=np.array(self.source),
                         model_id=np.array(self.model_id),
                         catalog_size=np.array(self.catalog_size),
                         index_version=np.array(self.index_version))

        return write_file_atomic(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> Background:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["vectors"].astype(np.float32), z["ids"].astype(object), str(z["source"]),
                       str(z["model_id"]) if "model_id" in z else "",
                       int(z["catalog_size"]) if "catalog_size" in z else 0,
                       int(z["index_version"]) if "index_version" in z else 0)


def sample_catalog(index_root: str | Path, *, size: int = 20_000, seed: int = 0,
                   version: int | None = None, exclude: Collection[str] = ()) -> Background:
    """A sample of the catalog's descriptors: whole embedding parts (those `version` reads) in
    random order until `size` vectors (parts are a few hundred images, so this is near-uniform and
    reads only what it keeps); ids in `exclude` (removed images) are left out."""
    parts = embedding_parts(Path(index_root) / "embeddings", version)
    if not parts:
        raise ValueError(f"index '{index_root}' has no embeddings to sample a background from")
    order = np.random.default_rng(seed).permutation(len(parts))
    dead = set(exclude)
    vecs, ids, have = [], [], 0
    for i in order:
        if have >= size:
            break
        table = pq.read_table(parts[i])
        part_ids = table.column("image_id").to_pylist()
        keep = np.array([x not in dead for x in part_ids], bool)
        vecs.append(table_vectors(table)[keep])
        ids.extend(x for x, k in zip(part_ids, keep, strict=True) if k)
        have += int(keep.sum())
    vectors = np.concatenate(vecs)[:size]
    return Background(vectors, np.asarray(ids[:size], dtype=object), "catalog-sample")


def load_background(index_root: str | Path, *, model_id: str = "", catalog_size: int = 0,
                    config: NormalizeConfig = NormalizeConfig(), version: int = 0,
                    removed: Collection[str] = (), cache_dir: str | Path | None = None
                    ) -> Background:
    """The index's stored background (in the index folder, else in `cache_dir`); else a catalog
    sample of index `version` without the `removed` ids, stored for the next query in `cache_dir`
    when given, else in the index folder when writable. A stored background of another model, or
    a catalog sample drawn from another catalog size or index version, is replaced (a user-given
    set is kept while the model matches)."""
    places = [Path(index_root) / BACKGROUND_FILE]
    if cache_dir is not None:
        places.append(Path(cache_dir) / BACKGROUND_FILE)
    for path in places:
        if path.exists():
            stored = Background.load(path)
            fresh = (stored.source != "catalog-sample" or not catalog_size
                     or (stored.catalog_size == catalog_size
                         and (not version or stored.index_version == version)))
            if (not model_id or stored.model_id == model_id) and fresh:
                return stored
            log.info("background '%s' is stale (model or catalog changed): resampling", path)
    sample = sample_catalog(index_root, size=config.sample_size, version=version or None,
                            exclude=removed)
    sample = Background(sample.vectors, sample.ids, sample.source, model_id, catalog_size, version)
    try:
        sample.save(places[-1])
    except OSError as exc:  # a read-only index still answers queries
        log.info("cannot store the background sample in '%s': %s", places[-1].parent, exc)
    return sample


def background_offsets(background: Background, queries: np.ndarray, candidate_ids: list[list[str]],
                       *, config: NormalizeConfig = NormalizeConfig(),
                       query_ids: list[str] | None = None) -> list[np.ndarray]:
    """β × mean top-k background similarity, per (query, candidate).

    The candidate itself is skipped among the query's background neighbours, so a reference
    that is also in the background sample is not normalized by its own similarity; so is the
    query's own image (`query_ids`) when the query is a catalog image.
    """
    sims, ids = background.neighbours(queries, config.k + 2)
    own = query_ids if query_ids is not None else [None] * len(candidate_ids)
    out = []
    for row_sims, row_ids, cands, qid in zip(sims, ids, candidate_ids, own, strict=True):
        offsets = np.empty(len(cands), np.float32)
        for j, cand in enumerate(cands):
            keep = row_sims[(row_ids != cand) & (row_ids != qid)][: config.k]
            offsets[j] = config.beta * float(keep.mean()) if len(keep) else 0.0
        out.append(offsets)
    return out
