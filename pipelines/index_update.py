"""`copytrace index add/remove/compact/verify`: change a built index without rebuilding it.

Adding embeds the new images with the index's own model (inline or on Ray, like a build) and
appends them (`indexing.updates`); each change runs under the index's writer lock and publishes a
new manifest version.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from copytrace.descriptors.model import load_descriptor
from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.embeddings import table_vectors
from copytrace.indexing.lock import writes_index
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.sources import ImageSource, NoImagesError, list_sources
from copytrace.indexing.updates import UpdateError, UpdateReport, append, compact, remove
from copytrace.indexing.verify import VerifyReport, verify_index
from copytrace.pipelines.embed_job import EmbedSettings, run_embedding
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)


@writes_index("index")
def add_images(images: str | Path, index: str | Path, *, batch_size: int = 32,
               device: str = "auto", use_ray: bool = False, ray_address: str | None = None,
               num_workers: int | None = None, chunk_size: int = 512,
               show_progress: bool = True) -> UpdateReport:
    """Embed the images under `images` with the index's model and append them (ids must be new).

    Embedded in chunks of `chunk_size` (on Ray: spread over the workers, a chunk lost with a node
    run again on another); nothing is appended until every chunk is in.
    """
    layout = IndexLayout(Path(index))
    manifest = Manifest.read(layout.manifest)
    sources = list_sources(images, all_files=True)
    if not sources:
        raise NoImagesError(f"no files found in '{images}'")
    if _already_added(layout, manifest, sources):
        log.warning("all %d files of '%s' are already in index '%s' (version %d): nothing to add",
                    len(sources), images, index, manifest.version)
        return UpdateReport(manifest.version, live=manifest.counts.get("indexed", 0),
                            shards=len(manifest.index.shards))
    descriptor = load_descriptor(manifest.model.name)
    if descriptor.model_id != manifest.model.id:
        raise UpdateError(f"'{manifest.model.name}' now loads another model than the one that "
                          f"built '{index}'; rebuild the index")
    settings = EmbedSettings(model=manifest.model.name, batch_size=batch_size, device=device,
                             pdq=manifest.pdq)
    chunks = [(no, sources[s : s + chunk_size])
              for no, s in enumerate(range(0, len(sources), chunk_size))]
    results = {}
    with progress_bar("embedding", total=len(sources), enabled=show_progress) as advance:
        for result in run_embedding(chunks, settings, use_ray=use_ray, address=ray_address,
                                    num_workers=num_workers, descriptor=descriptor):
            results[result.chunk] = result  # Ray answers in completion order: keyed, then sorted
            advance(len(chunks[result.chunk][1]))
    catalog = pa.concat_tables([results[no].catalog for no, _ in chunks])
    table = pa.concat_tables([results[no].embeddings for no, _ in chunks])
    ids = table.column("image_id").to_pylist()
    if not ids:
        raise NoImagesError(f"none of the {len(sources)} files in '{images}' could be decoded")
    return append(layout.root, ids, table_vectors(table), catalog=catalog, embeddings=table)


def _already_added(layout: IndexLayout, manifest: Manifest, sources: list[ImageSource]) -> bool:
    """Every source is in the committed catalog with the same id and file: the same add ran to
    its manifest swap before (a rerun after a crash is then a no-op, not an error)."""
    committed = read_catalog(layout.catalog_dir, version=manifest.version).select(["image_id", "uri"])
    rows = set(zip(committed.column("image_id").to_pylist(), committed.column("uri").to_pylist(),
                   strict=True))
    return all((s.image_id, s.uri) in rows for s in sources)


@writes_index("index")
def remove_images(ids: list[str], index: str | Path) -> UpdateReport:
    """Tombstone `ids`: searches skip them at once; `compact_index` drops them for good."""
    return remove(index, ids)


@writes_index("index")
def compact_index(index: str | Path) -> UpdateReport:
    """Rewrite the index without its tombstoned images (FAISS rebuilt from the Parquet parts)."""
    return compact(index)


def verify(index: str | Path) -> VerifyReport:
    return verify_index(index)
