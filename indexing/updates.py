"""Change an index in place: append vectors, remove ids (tombstones), compact, one version each.

Every change writes new files (shards, id map, tombstones, Parquet parts, each named with the
new version), then swaps manifest.json atomically: a reader that opened the manifest of version v
reads only files of version v (`indexing.parts` hides later parts), so it never sees half of a
change, and the parts of a killed change are deleted by the next writer. Files of the previous
version are kept (a reader may be opening them right now); older ones are deleted by the next
change. Parquet stays the source of truth: `compact` rebuilds FAISS from the embedding parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from copytrace.indexing.catalog import STATUS_OK, read_catalog
from copytrace.indexing.embeddings import EmbeddingRanges, embedding_parts
from copytrace.indexing.hold_points import hold
from copytrace.indexing.index_spec import Storage
from copytrace.indexing.manifest import IndexLayout, Manifest, utc_now
from copytrace.indexing.ondisk import empty_copy, lists_path
from copytrace.indexing.parts import (
    PART_GLOB,
    committed_parts,
    part_number,
    remove_uncommitted_parts,
    superseded_parts,
    versioned_part_name,
)
from copytrace.indexing.shards import build_shards, empty_like, write_shard
from copytrace.indexing.store import id_map_table
from copytrace.util.atomic import write_file_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

TOMBSTONE_SCHEMA = pa.schema([("image_id", pa.string())])


class UpdateError(ValueError):
    """The change cannot be made as asked (duplicate ids, unknown ids, another model)."""


@dataclass(frozen=True)
class UpdateReport:
    version: int
    added: int = 0
    removed: int = 0
    live: int = 0
    shards: int = 0


def read_ids(layout: IndexLayout, manifest: Manifest) -> list[str]:
    return pq.read_table(layout.root / manifest.id_map).column("image_id").to_pylist()


def read_tombstones(layout: IndexLayout, manifest: Manifest) -> set[str]:
    if not manifest.tombstones:
        return set()
    return set(pq.read_table(layout.root / manifest.tombstones).column("image_id").to_pylist())


def next_part_number(layout: IndexLayout) -> int:
    numbers = [n for folder in (layout.embeddings_dir, layout.catalog_dir)
               for p in folder.glob(PART_GLOB) if (n := part_number(p)) is not None]
    return max(numbers, default=-1) + 1


def _open_for_update(layout: IndexLayout) -> Manifest:
    """The committed manifest, after deleting what a killed update of a later version left."""
    manifest = Manifest.read(layout.manifest)
    dropped = remove_uncommitted_parts(layout.root, manifest.version)
    if dropped:
        log.warning("index '%s': removed %d parts of an update that never committed", layout.root,
                    dropped)
    return manifest


def _publish(layout: IndexLayout, old: Manifest, new: Manifest) -> None:
    """Swap the manifest, then delete files neither this version nor the previous one reads."""
    hold("manifest-swap")
    new.write(layout.manifest)
    keep = new.files() | old.files()
    stale = [p for p in [*layout.faiss_dir.glob("*.faiss"), *layout.faiss_dir.glob("*.ivfdata"),
                         *layout.root.glob("ids*.parquet"),
                         *layout.root.glob("tombstones*.parquet")]
             if str(p.relative_to(layout.root)) not in keep]
    stale += superseded_parts(layout.root, (old.version, new.version))
    for p in stale:
        p.unlink(missing_ok=True)


def append(root: str | Path, ids: list[str], vectors: np.ndarray, *,
           catalog: pa.Table | None = None, embeddings: pa.Table | None = None) -> UpdateReport:
    """Add vectors with new unique ids (call under the index lock). `catalog`/`embeddings` are
    the Parquet parts that record them (written first: Parquet is the source of truth)."""
    layout = IndexLayout(Path(root))
    old = _open_for_update(layout)
    known = read_ids(layout, old)
    _refuse_duplicates(ids, known)
    vectors = np.ascontiguousarray(vectors, np.float32)
    if vectors.shape != (len(ids), old.model.dims):
        raise UpdateError(f"{len(ids)} ids for vectors of shape {vectors.shape}; "
                          f"the index holds {old.model.dims}-d vectors")
    version = old.version + 1
    part = versioned_part_name(next_part_number(layout), version)  # unseen until the swap
    if embeddings is not None:
        write_parquet_atomic(layout.embeddings_dir / part, embeddings)
    if catalog is not None:
        write_parquet_atomic(layout.catalog_dir / part, catalog)
    shards = _append_to_shards(layout, old, vectors, version)
    write_parquet_atomic(layout.root / f"ids.v{version}.parquet", id_map_table(known + list(ids)))
    removed = len(read_tombstones(layout, old))
    counts = dict(old.counts, indexed=len(known) + len(ids) - removed,
                  inputs=old.counts.get("inputs", 0) + (len(catalog) if catalog is not None
                                                        else len(ids)))
    new = replace(old, index=replace(old.index, shards=shards), counts=counts, version=version,
                  id_map=f"ids.v{version}.parquet", updated=utc_now())
    _publish(layout, old, new)
    return UpdateReport(version, added=len(ids), live=counts["indexed"], shards=len(shards))


def _refuse_duplicates(ids: list[str], known: list[str]) -> None:
    seen: set[str] = set()
    dup = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
    if dup:
        raise UpdateError(f"{len(dup)} ids appear twice in the new images (e.g. '{dup[0]}'); "
                          "ids must be unique")
    clash = sorted(set(ids) & set(known))
    if clash:
        raise UpdateError(f"{len(clash)} ids are already in the index (e.g. '{clash[0]}'): "
                          "remove them first, or give the new images other ids")


def _append_to_shards(layout: IndexLayout, old: Manifest, vectors: np.ndarray,
                      version: int) -> list[str]:
    """Fill the last shard up to shard_size (written as a new file), then open new shards.
    A merged on-disk index (`ondisk`) is never rewritten: new vectors go to small shards after
    it, searched beside it (with its quantizer, `ShardedIndex.load`), until `compact` merges
    everything again."""
    shards = list(old.index.shards)
    size = old.index.shard_size
    start = 0
    if old.index.lists and len(shards) == 1:  # the merged index alone: its lists stay as they are
        template = empty_copy(faiss.read_index(str(layout.root / shards[0]), faiss.IO_FLAG_MMAP))
        last, room = None, 0
    else:
        last = faiss.read_index(str(layout.root / shards[-1]))
        template = empty_like(last)
        room = max(0, size - last.ntotal)
    if last is not None and room and len(vectors):
        take = vectors[:room]
        last.add(take)
        name = f"faiss/shard-{len(shards) - 1:04d}.v{version}.faiss"
        write_file_atomic(layout.root / name, lambda tmp: faiss.write_index(last, str(tmp)))
        shards[-1] = name
        start = len(take)
    while start < len(vectors):
        name = f"faiss/shard-{len(shards):04d}.v{version}.faiss"
        write_shard(template, vectors[start : start + size], layout.root / name)
        shards.append(name)
        start += size
    return shards


def remove(root: str | Path, ids: list[str]) -> UpdateReport:
    """Tombstone `ids` (call under the index lock): search skips them until `compact`."""
    layout = IndexLayout(Path(root))
    old = _open_for_update(layout)
    known = set(read_ids(layout, old))
    unknown = sorted(set(ids) - known)
    if unknown:
        raise UpdateError(f"{len(unknown)} ids are not in the index (e.g. '{unknown[0]}')")
    dead = read_tombstones(layout, old)
    if set(ids) <= dead:  # already removed (e.g. a rerun after a kill that came after the swap)
        return UpdateReport(old.version, live=len(known) - len(dead),
                            shards=len(old.index.shards))
    now = sorted(dead | set(ids))
    version = old.version + 1
    name = f"tombstones.v{version}.parquet"
    write_parquet_atomic(layout.root / name,
                         pa.Table.from_arrays([pa.array(now, pa.string())], schema=TOMBSTONE_SCHEMA))
    counts = dict(old.counts, indexed=len(known) - len(now), removed=len(now))
    new = replace(old, counts=counts, version=version, tombstones=name, updated=utc_now())
    _publish(layout, old, new)
    return UpdateReport(version, removed=len(now) - len(dead), live=counts["indexed"],
                        shards=len(old.index.shards))


def compact(root: str | Path) -> UpdateReport:
    """Drop tombstoned rows from the Parquet parts and rebuild FAISS from what is left
    (call under the index lock), reading the parts one at a time. The coarse quantizer is
    retrained on the live vectors, as a fresh build would; the tuned search parameters are kept.
    An on-disk index comes back merged (one index file and one lists file), also one built
    before merging existed.
    Filtered parts are new files of the new version, so readers of the current one see its rows
    until the manifest swap."""
    layout = IndexLayout(Path(root))
    old = _open_for_update(layout)
    dead = read_tombstones(layout, old)
    version = old.version + 1
    _filter_parts(layout.embeddings_dir, dead, old.version, version)
    _filter_parts(layout.catalog_dir, dead, old.version, version)
    live = EmbeddingRanges(embedding_parts(layout.embeddings_dir, version))
    ids = live.ids()
    sample = live.sample(200_000)
    paths = build_shards(old.index.spec, old.model.dims, live.total, live.read_range,
                         lambda: sample, layout.faiss_dir, shard_size=old.index.shard_size,
                         version=version, storage=old.index.storage)
    write_parquet_atomic(layout.root / f"ids.v{version}.parquet", id_map_table(ids))
    shards = [str(p.relative_to(layout.root)) for p in paths]
    merged = Storage(old.index.storage) is Storage.ONDISK
    lists = str(lists_path(paths[0]).relative_to(layout.root)) if merged else None
    counts = {k: v for k, v in old.counts.items() if k != "removed"}
    counts["indexed"] = len(ids)
    new = replace(old, index=replace(old.index, shards=shards, lists=lists), counts=counts,
                  version=version, id_map=f"ids.v{version}.parquet", tombstones=None,
                  updated=utc_now())
    _publish(layout, old, new)
    return UpdateReport(version, removed=len(dead), live=len(ids), shards=len(shards))


def _filter_parts(folder: Path, dead: set[str], old_version: int, new_version: int) -> None:
    """Each part of `old_version` that holds tombstoned rows gets a filtered copy of its number
    at `new_version`, unseen until the swap (`indexing.parts`)."""
    if not dead:
        return
    dead_ids = pa.array(sorted(dead), pa.string())
    for part in committed_parts(folder, old_version):
        table = pq.read_table(part)
        drop = pc.is_in(table.column("image_id"), value_set=dead_ids)
        if "status" in table.column_names:  # the catalog keeps failed inputs, never removed
            drop = pc.and_(drop, pc.equal(table.column("status"), STATUS_OK))
        if pc.any(drop).as_py():
            name = versioned_part_name(part_number(part), new_version)  # type: ignore[arg-type]
            write_parquet_atomic(folder / name, table.filter(pc.invert(drop)))


def ok_catalog_ids(layout: IndexLayout) -> list[str]:
    table = read_catalog(layout.catalog_dir)
    return table.filter(pc.equal(table.column("status"), STATUS_OK)).column("image_id").to_pylist()
