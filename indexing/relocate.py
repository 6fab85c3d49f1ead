"""`copytrace index relocate IDX OLD NEW`: re-root a catalog whose images moved.

Catalog uris are absolute, so an index keeps working from any working directory; when the
images themselves move (a disk remounted, a bucket copied), every uri under OLD is rewritten to
the same path under NEW. Parts are rewritten one by one atomically under the index lock, so an
interrupted relocate is finished by running it again. The manifest's source root and the build
state follow, so a later `index build NEW --index IDX` still resumes instead of refusing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from copytrace.indexing.catalog import CATALOG_SCHEMA
from copytrace.indexing.lock import index_lock
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.parts import committed_parts
from copytrace.indexing.sources import ImageSource, absolute_uri, listing_digest
from copytrace.util.atomic import write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

CHECK_SAMPLE = 200
"""Relocated ok rows checked for existence under NEW (a typo in NEW shows at once)."""


@dataclass(frozen=True)
class RelocateReport:
    rows: int  # catalog rows
    relocated: int  # rows whose uri moved from OLD to NEW
    checked: int  # relocated ok rows looked up on disk
    missing: int  # of those, not found under NEW


def _moved(uri: str, old: str, new: str) -> str | None:
    if uri == old:
        return new
    prefix = old.rstrip(os.sep) + os.sep
    return new.rstrip(os.sep) + os.sep + uri[len(prefix):] if uri.startswith(prefix) else None


def _catalog_digest(parts: list[Path]) -> str:
    sources: list[ImageSource] = []
    for part in parts:
        t = pq.read_table(part, columns=["image_id", "uri"])
        sources.extend(ImageSource(i, u) for i, u in zip(t.column("image_id").to_pylist(),
                                                          t.column("uri").to_pylist(), strict=True))
    return listing_digest(sources)


def relocate(index: str | Path, old: str | Path, new: str | Path) -> RelocateReport:
    """Rewrite every catalog uri under `old` to the same path under `new` (both made absolute)."""
    layout = IndexLayout(Path(index))
    manifest = Manifest.read(layout.manifest)  # refuses a folder that is not an index
    old_root, new_root = absolute_uri(old), absolute_uri(new)
    with index_lock(layout.root, purpose="relocate"):
        manifest = Manifest.read(layout.manifest)  # as committed by the last writer
        parts = committed_parts(layout.catalog_dir, manifest.version)
        state = json.loads(layout.build_state.read_text()) if layout.build_state.exists() else {}
        digest_matched = state.get("listing_sha256") == _catalog_digest(parts)
        rows = relocated = 0
        sample: list[str] = []
        for part in parts:
            t = pq.read_table(part, schema=CATALOG_SCHEMA)
            uris = t.column("uri").to_pylist()
            moved = [_moved(u, old_root, new_root) for u in uris]
            rows += len(uris)
            n = sum(m is not None for m in moved)
            if n == 0:
                continue
            relocated += n
            ok = t.column("status").to_pylist()
            sample.extend(m for m, s in zip(moved, ok, strict=True)
                          if m is not None and s == "ok" and len(sample) < CHECK_SAMPLE)
            new_uris = pa.array([m if m is not None else u for m, u in zip(moved, uris,
                                                                           strict=True)],
                                pa.string())
            write_parquet_atomic(part, t.set_column(t.schema.get_field_index("uri"), "uri",
                                                    new_uris))
        source = _moved(manifest.source, old_root, new_root)
        if source is not None:
            manifest = replace(manifest, source=source)
            manifest.write(layout.manifest)
        if digest_matched:
            write_json_atomic(layout.build_state,
                              {**state, "listing_sha256": _catalog_digest(parts)})
    missing = sum(not os.path.exists(u) for u in sample)
    if relocated == 0 and source is None:
        raise ValueError(f"no catalog uri of '{layout.root}' lies under '{old_root}' "
                         f"(the index's source root is '{manifest.source}')")
    return RelocateReport(rows, relocated, len(sample), missing)
