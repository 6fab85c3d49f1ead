"""`copytrace index build`: images -> catalog + embedding shards + FAISS shards + manifest.

Resumable: the listing is cut into fixed chunks and each finished chunk is a pair of Parquet
parts, so a rerun after a crash embeds only the chunks that are missing. The manifest is written
last; an index folder without one is a build in progress.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from copytrace.descriptors.decode import DEFAULT_MAX_PIXELS
from copytrace.descriptors.model import load_descriptor
from copytrace.indexing.budget import parse_size
from copytrace.indexing.catalog_sql import errors as catalog_errors
from copytrace.indexing.catalog_sql import status_summary
from copytrace.indexing.embeddings import EmbeddingRanges, embedding_parts, table_vectors
from copytrace.indexing.index_spec import Storage, choose_index
from copytrace.indexing.lock import clear_folder, writes_index
from copytrace.indexing.manifest import (
    FaissInfo,
    IndexLayout,
    Manifest,
    ModelInfo,
    software_versions,
    utc_now,
)
from copytrace.indexing.ondisk import lists_path
from copytrace.indexing.shards import build_shards
from copytrace.indexing.sources import NoImagesError, absolute_uri, list_sources, listing_digest
from copytrace.indexing.store import id_map_table
from copytrace.indexing.tuning import tune_built_index
from copytrace.pipelines.embed_job import EmbedSettings, run_embedding
from copytrace.pipelines.ray_runtime import WorkersLostError
from copytrace.util.atomic import write_json_atomic, write_parquet_atomic
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The build cannot go on as asked (e.g. resuming with a different model or listing)."""


@dataclass(frozen=True)
class BuildReport:
    index: Path
    inputs: int
    indexed: int
    errors: int
    resumed_chunks: int  # chunks an earlier, interrupted run had already embedded
    index_spec: str
    model_id: str
    error_examples: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 0  # chunks in the whole listing
    up_to_date: bool = False  # the same build had already finished: nothing was left to do


def _whole_parts_sample(parts: list[Path], n: int, seed: int = 0) -> np.ndarray:
    """Up to `n` vectors for training the index: whole embedding parts in a seeded order (each
    part is a contiguous read), cut to `n`."""
    order = list(range(len(parts)))
    random.Random(seed).shuffle(order)
    chunks, have = [], 0
    for i in order:
        if have >= n:
            break
        v = table_vectors(pq.read_table(parts[i]))
        chunks.append(v)
        have += len(v)
    return np.concatenate(chunks)[:n]


@writes_index("index")
def build_index(
    images: str | Path,
    index: str | Path,
    *,
    model: str = "default",
    batch_size: int = 32,
    chunk_size: int = 512,
    index_spec: str = "auto",
    memory_budget: str = "4GB",
    shard_size: int = 2_000_000,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    device: str = "auto",
    use_ray: bool = True,
    ray_address: str | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    root: str | Path | None = None,
    target_recall: float = 0.97,
    max_query_ms: float | None = None,
    pdq: bool = False,
) -> BuildReport:
    """Index every image under `images` (folder, image, or .parquet/.csv listing) into `index`.

    One writer at a time per index folder (`indexing.lock`); `root` refuses inputs outside it.
    `pdq` also stores each file's PDQ hash in the catalog (dedup audits, hash lists).
    """
    layout = IndexLayout(Path(index))
    sources = list_sources(images, all_files=True, root=root)
    if not sources:
        raise NoImagesError(f"no files found in '{images}'")
    descriptor = load_descriptor(model)
    model_spec = model if Path(str(model)).exists() else descriptor.name
    if overwrite and layout.root.exists():
        clear_folder(layout.root)
    layout.root.mkdir(parents=True, exist_ok=True)

    state = {"listing_sha256": listing_digest(sources), "model_id": descriptor.model_id,
             "chunk_size": chunk_size, "inputs": len(sources), **({"pdq": True} if pdq else {})}
    if layout.build_state.exists():
        previous = json.loads(layout.build_state.read_text())
        if previous != state:
            changed = [k for k in state if previous.get(k) != state[k]]
            raise BuildError(
                f"'{layout.root}' holds a build of other inputs or settings ({', '.join(changed)}"
                " differ): pass --overwrite to rebuild it, or choose another --index folder"
            )
    write_json_atomic(layout.build_state, state)
    was_complete = layout.manifest.exists()  # a finished build of these inputs and settings
    if was_complete:
        layout.manifest.unlink()  # the folder is being (re)built; the manifest comes last

    chunks = [(no, sources[s : s + chunk_size])
              for no, s in enumerate(range(0, len(sources), chunk_size))]
    todo = [(no, src) for no, src in chunks
            if not (layout.catalog_dir / layout.part_name(no)).exists()]
    resumed = len(chunks) - len(todo)
    if resumed:
        log.info("resuming: %d of %d chunks already done", resumed, len(chunks))
    settings = EmbedSettings(model=model_spec, batch_size=batch_size, device=device,
                             max_pixels=max_pixels, pdq=pdq)
    sizes = {no: len(src) for no, src in todo}
    with progress_bar("embedding", total=len(sources), enabled=show_progress) as advance:
        advance(sum(len(src) for no, src in chunks if no not in sizes))
        try:
            for result in run_embedding(todo, settings, use_ray=use_ray, address=ray_address,
                                        num_workers=num_workers, descriptor=descriptor):
                name = layout.part_name(result.chunk)
                write_parquet_atomic(layout.embeddings_dir / name, result.embeddings)
                write_parquet_atomic(layout.catalog_dir / name, result.catalog)
                advance(sizes[result.chunk])
        except WorkersLostError as exc:  # every node gone: the committed chunks stay for a rerun
            saved = sum(1 for no, _ in chunks if (layout.catalog_dir / layout.part_name(no)).exists())
            raise BuildError(f"embedding stopped: {exc.reason}; {saved} of {len(chunks)} "
                             f"chunks are saved in '{layout.root}': rerun the same command to "
                             "resume") from exc

    reader = EmbeddingRanges(embedding_parts(layout.embeddings_dir))
    if reader.total == 0:
        first = catalog_errors(layout.root, limit=1).to_pylist()
        example = f" (e.g. '{first[0]['uri']}': {first[0]['error']})" if first else ""
        raise NoImagesError(f"no images found in '{images}': none of its {len(sources)} "
                            f"files could be decoded{example}")
    dims = descriptor.model.output_dims
    budget = parse_size(memory_budget)
    choice = choose_index(reader.total, dims, budget)
    spec = choice.spec if index_spec == "auto" else index_spec
    nprobe = choice.nprobe if index_spec == "auto" else None
    storage = choice.storage.value if index_spec == "auto" else "memory"
    shard_size = min(shard_size, choice.max_shard_size or shard_size)  # a shard's build in budget
    if layout.faiss_dir.exists():
        shutil.rmtree(layout.faiss_dir)
    shard_paths = build_shards(spec, dims, reader.total, reader.read_range,
                               lambda: _whole_parts_sample(reader.parts, 200_000), layout.faiss_dir,
                               shard_size=shard_size, storage=storage)
    lists = (str(lists_path(shard_paths[0]).relative_to(layout.root))
             if storage == Storage.ONDISK.value else None)  # on disk: one merged lists file
    write_parquet_atomic(layout.id_map, id_map_table(reader.ids()))
    tuned = tune_built_index(layout.root, shard_paths, descriptor, nprobe=nprobe,
                             total=reader.total, read_range=reader.read_range,
                             target=target_recall, max_query_ms=max_query_ms, storage=storage)

    counts = status_summary(layout.root)
    manifest = Manifest(
        model=ModelInfo(descriptor.model_id, model_spec, descriptor.sha256, dims,
                        descriptor.config.image_size),
        index=FaissInfo(spec, tuned.nprobe if tuned else nprobe,
                        [str(p.relative_to(layout.root)) for p in shard_paths], shard_size,
                        choice.reason if index_spec == "auto" else "user choice",
                        k_factor=tuned.k_factor if tuned else None,
                        tuning=tuned.as_dict() if tuned else None, storage=storage,
                        lists=lists),
        counts={"inputs": len(sources), "indexed": reader.total,
                "errors": counts.get("error", 0)},
        source=absolute_uri(images), versions=software_versions(), created=utc_now(), pdq=pdq,
    )
    manifest.write(layout.manifest)
    errs = catalog_errors(layout.root, limit=20)
    examples = list(zip(errs.column("uri").to_pylist(), errs.column("error").to_pylist(),
                        strict=True))
    return BuildReport(layout.root, len(sources), reader.total, counts.get("error", 0), resumed,
                       spec, descriptor.model_id, examples, chunks=len(chunks),
                       up_to_date=was_complete and not todo)
