"""`copytrace index verify`: do catalog, embeddings, id map and FAISS tell the same story?

Checks what a search relies on: every id once; the id map, in order, is the embedding parts'
ids; the catalog's good rows are exactly the embedded images; FAISS holds one vector per id;
tombstones name known ids; and FAISS finds a sample of the stored vectors at their own
position (so the shards really hold those vectors, in that order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from copytrace.indexing.embeddings import embedding_parts, table_vectors
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.store import CopyIndex
from copytrace.indexing.updates import ok_catalog_ids, read_ids, read_tombstones

SELF_SEARCH_SAMPLE = 200
MIN_SELF_FOUND = 0.9  # approximate indexes may miss a few of their own vectors in the top 10


@dataclass
class VerifyReport:
    ok: bool
    version: int
    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def verify_index(index: str | Path, *, sample: int = SELF_SEARCH_SAMPLE) -> VerifyReport:
    layout = IndexLayout(Path(index))
    manifest = Manifest.read(layout.manifest)
    problems: list[str] = []
    ids = read_ids(layout, manifest)
    parts = embedding_parts(layout.embeddings_dir)
    emb_ids = [i for p in parts
               for i in pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()]
    catalog_ok = ok_catalog_ids(layout)
    dead = read_tombstones(layout, manifest)
    if len(set(ids)) != len(ids):
        problems.append(f"id map repeats {len(ids) - len(set(ids))} ids")
    if emb_ids != ids:
        problems.append(f"id map ({len(ids)} ids) differs from the embedding parts "
                        f"({len(emb_ids)} ids)")
    if set(catalog_ok) != set(emb_ids):
        problems.append(f"catalog has {len(set(catalog_ok) - set(emb_ids))} good rows without an "
                        f"embedding and {len(set(emb_ids) - set(catalog_ok))} embeddings without one")
    if dead - set(ids):
        problems.append(f"{len(dead - set(ids))} tombstones name ids not in the index")
    files = [*manifest.index.shards, *([manifest.index.lists] if manifest.index.lists else [])]
    missing = [s for s in files if not (layout.root / s).exists()]
    if missing:
        problems.append(f"shard files missing: {', '.join(missing)}")
        return VerifyReport(False, manifest.version, problems)
    opened = CopyIndex.open(layout.root)
    if opened.faiss_index.ntotal != len(ids):
        problems.append(f"FAISS holds {opened.faiss_index.ntotal} vectors for {len(ids)} ids")
    found = _self_found(opened, parts, sample) if not problems else None
    if found is not None and found < MIN_SELF_FOUND:
        problems.append(f"FAISS finds only {found:.0%} of sampled stored vectors at their own "
                        "position: shards and embedding parts disagree")
    live = len(ids) - len(dead)
    if manifest.counts.get("indexed") != live:
        problems.append(f"manifest counts {manifest.counts.get('indexed')} indexed, "
                        f"the id map holds {live} live ids")
    facts = {"version": manifest.version, "ids": len(ids), "live": live, "tombstones": len(dead),
             "shards": len(manifest.index.shards), "catalog_ok": len(catalog_ok),
             "self_found_at_10": found}
    return VerifyReport(not problems, manifest.version, problems, facts)


def _self_found(index: CopyIndex, parts: list[Path], sample: int) -> float:
    vectors = np.concatenate([table_vectors(pq.read_table(p)) for p in parts])
    rng = np.random.default_rng(0)
    rows = rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)
    _, positions = index.faiss_index.search(vectors[rows], 10)
    return float(np.mean([r in p for r, p in zip(rows, positions, strict=True)]))
