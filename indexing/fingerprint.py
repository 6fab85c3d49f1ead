"""What an index folder holds, as digests two folders can be compared by.

A resumed build (after a crash, a full disk, a kill -9) must equal a clean one: the same catalog
rows, the same ids in the same FAISS positions, the same vectors, the same shards, and nothing
left over. `fingerprint` says so in one comparable record; `leftovers` lists the temp files an
interrupted writer left behind.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.embeddings import read_embeddings
from copytrace.indexing.manifest import IndexLayout
from copytrace.indexing.parts import uncommitted_parts

_VOLATILE_MANIFEST_KEYS = ("created", "versions", "updated")


@dataclass(frozen=True)
class Fingerprint:
    catalog_rows: int
    duplicate_ids: int  # catalog rows sharing an image id (must be 0)
    catalog: str  # digest of the rows, sorted by image id
    vectors: int
    embeddings: str  # digest of (image id, vector bytes), sorted by image id
    positions: str  # digest of the manifest's id map (FAISS position -> image id)
    shards: str  # digest of the FAISS shard files' bytes
    removed: str  # digest of the tombstoned ids (`index remove`)
    manifest: str  # digest of manifest.json without its timestamps and software versions


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item if isinstance(item, bytes) else repr(item).encode())
    return h.hexdigest()[:16]


def fingerprint(index: str | Path) -> Fingerprint:
    layout = IndexLayout(Path(index))
    rows = read_catalog(layout.catalog_dir).to_pylist()
    ids = [r["image_id"] for r in rows]
    emb_ids, vectors = read_embeddings(layout.embeddings_dir)
    order = np.argsort(np.array(emb_ids, dtype=object)) if emb_ids else []
    manifest = json.loads(layout.manifest.read_text()) if layout.manifest.exists() else {}
    for key in _VOLATILE_MANIFEST_KEYS:
        manifest.pop(key, None)
    shard_files = sorted(layout.faiss_dir.glob("*")) if layout.faiss_dir.exists() else []
    id_map = layout.root / manifest.get("id_map", "ids.parquet")
    positions = pq.read_table(id_map).column("image_id").to_pylist() if id_map.exists() else []
    dead = layout.root / (manifest.get("tombstones") or "-")
    removed = sorted(pq.read_table(dead).column("image_id").to_pylist()) if dead.is_file() else []
    return Fingerprint(
        catalog_rows=len(rows), duplicate_ids=len(ids) - len(set(ids)),
        catalog=_digest(sorted(repr(sorted(r.items())) for r in rows)),
        vectors=len(emb_ids),
        embeddings=_digest(b for i in order for b in (emb_ids[i].encode(), vectors[i].tobytes())),
        positions=_digest(positions),
        shards=_digest(b for f in shard_files for b in (f.name.encode(), f.read_bytes())),
        removed=_digest(removed),
        manifest=_digest([json.dumps(manifest, sort_keys=True)]),
    )


def leftovers(index: str | Path) -> list[Path]:
    """Temp files of interrupted atomic writes (`.NAME.tmp-PID`) and Parquet parts of an update
    that never committed, still in the folder (a finished writer leaves none)."""
    return sorted([*Path(index).rglob(".*.tmp-*"), *uncommitted_parts(index)])
