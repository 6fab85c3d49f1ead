"""`copytrace query`: find the originals of one image or a folder of images in an index."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
from copytrace.descriptors.model import LoadedDescriptor, load_descriptor
from copytrace.indexing.atomic import write_bytes_atomic
from copytrace.indexing.embeddings import table_vectors
from copytrace.indexing.sources import list_sources
from copytrace.indexing.store import CopyIndex
from copytrace.matching.search import QueryResult, search
from copytrace.pipelines.embed_job import EmbedSettings, run_embedding
from copytrace.pipelines.progress import progress_bar

log = logging.getLogger(__name__)

RAY_AUTO_MIN_QUERIES = 256
"""Below this many queries, starting Ray costs more than it saves; they run in-process."""

PREDICTIONS_HEADER = ("query_id", "reference_id", "score")


def index_model(index: CopyIndex, model: str | None = None) -> LoadedDescriptor:
    """The descriptor an index was built with; refuses a different one (vectors would not compare)."""
    descriptor = load_descriptor(model or index.manifest.model.name)
    if descriptor.sha256 != index.manifest.model.sha256:
        raise ValueError(
            f"index '{index.layout.root}' was built with model {index.manifest.model.id}, "
            f"but '{model or index.manifest.model.name}' is {descriptor.model_id}: "
            "query with the index's model or rebuild the index"
        )
    return descriptor


def query(
    queries: str | Path,
    index: str | Path,
    *,
    k: int = 10,
    output: str | Path | None = None,
    model: str | None = None,
    batch_size: int = 32,
    chunk_size: int = 512,
    device: str = "auto",
    use_ray: bool | None = None,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> list[QueryResult]:
    """Rank the index's images for each query; optionally write the ISC2021 predictions CSV."""
    copy_index = CopyIndex.open(index)
    descriptor = index_model(copy_index, model)
    sources = list_sources(queries, all_files=True)
    if use_ray is None:
        use_ray = bool(ray_address) or len(sources) >= RAY_AUTO_MIN_QUERIES
    spec = model or copy_index.manifest.model.name
    settings = EmbedSettings(model=spec, batch_size=batch_size, device=device)
    chunks = [(no, sources[s : s + chunk_size])
              for no, s in enumerate(range(0, len(sources), chunk_size))]
    errors: dict[str, str] = {}
    vectors: dict[str, np.ndarray] = {}
    with progress_bar("querying", total=len(sources), enabled=show_progress) as advance:
        for result in run_embedding(chunks, settings, use_ray=use_ray, address=ray_address,
                                    descriptor=descriptor):
            cat = result.catalog.to_pylist()
            for row in cat:
                if row["status"] != "ok":
                    errors[row["image_id"]] = row["error"]
            ids = result.embeddings.column("image_id").to_pylist()
            for qid, vec in zip(ids, table_vectors(result.embeddings), strict=True):
                vectors[qid] = vec
            advance(len(cat))
    ok = [s for s in sources if s.image_id in vectors]
    matrix = (np.stack([vectors[s.image_id] for s in ok]) if ok
              else np.zeros((0, copy_index.manifest.model.dims), np.float32))
    ranked = search(copy_index, matrix, k=k) if ok else []
    by_id = {s.image_id: m for s, m in zip(ok, ranked, strict=True)}
    results = [QueryResult(s.image_id, s.uri, by_id.get(s.image_id, []), errors.get(s.image_id))
               for s in sources]
    if output is not None:
        write_predictions(results, output)
    return results


def predictions_csv(results: list[QueryResult]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PREDICTIONS_HEADER)
    for r in results:
        for m in r.matches:
            writer.writerow((r.query_id, m.reference_id, f"{m.score:.6f}"))
    return buf.getvalue()


def write_predictions(results: list[QueryResult], path: str | Path) -> Path:
    """ISC2021 matching-track CSV: `query_id,reference_id,score`, higher = more confident."""
    return write_bytes_atomic(path, predictions_csv(results).encode())
