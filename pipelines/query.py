"""`copytrace query`: find the originals of one image or a folder of images in an index.

A thin job over `copytrace.pipelines.engine.QueryEngine` (the query API): list the queries, decode
them on threads in chunks, rank each chunk through the engine, write the ISC2021 CSV.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copytrace.descriptors.decode import DecodeError
from copytrace.descriptors.embed import Embedder
from copytrace.descriptors.model import LoadedDescriptor
from copytrace.indexing.embeddings import table_vectors
from copytrace.indexing.sources import ImageSource, list_sources
from copytrace.indexing.store import CopyIndex
from copytrace.matching.calibrate import Calibration
from copytrace.matching.expand import ExpandConfig
from copytrace.matching.isc_csv import write_predictions
from copytrace.matching.normalize import BACKGROUND_FILE, Background
from copytrace.matching.query_image import QueryImage, decode_query
from copytrace.matching.rank import MatchConfig, QueryViews
from copytrace.matching.results import QueryResult
from copytrace.pipelines.embed_job import EmbedSettings, run_embedding
from copytrace.pipelines.engine import (
    QueryEngine,
    QueryTimings,
    VerifyMode,
    embed_views,
    index_model,
    match_config,
    reference_uris,
    with_adapter_views,
)
from copytrace.pipelines.localize import PairOutcome
from copytrace.pipelines.verify_pool import VerifyBackend
from copytrace.util.progress import progress_bar

__all__ = ["QueryEngine", "QueryRun", "QueryTimings", "VerifyMode", "index_model", "match_config",
           "query", "query_index", "reference_uris", "store_background"]

log = logging.getLogger(__name__)

RAY_AUTO_MIN_QUERIES = 256
"""Below this many queries, starting Ray costs more than it saves; they run in-process."""

POOL_MIN_QUERIES = 8
"""From this many queries on, verification runs in a process pool (its start-up pays off)."""

CHUNK_QUERIES = 64
"""Queries decoded and ranked together (bounds the decoded pixels held in memory)."""


@dataclass
class QueryRun:
    """What a query job returns: each query's ranked matches (in input order, failed queries
    with their `error`), and with `localize` the outcome of each copy against its top match."""

    results: list[QueryResult]
    localized: list[PairOutcome] = field(default_factory=list)
    predictions: Path | None = None  # the ISC2021 CSV, when `output` was given

def query_index(
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
    verify: bool | VerifyMode | str = True,
    normalize: bool = True,
    expand: bool = True,
    second_pass: bool = True,
    verify_k: int | None = None,
    background: str | Path | None = None,
    config: MatchConfig | None = None,
    calibration: Calibration | None = None,
    timings: QueryTimings | None = None,
    verify_backend: VerifyBackend | str | None = None,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
    shard_actors: int = 0,
    localize: str | Path | None = None,
    adapters: str = "all",
) -> QueryRun:
    """Rank the index's images for each query; optionally write the ISC2021 predictions CSV.

    Default: whole query plus crops searched (`expand`), turned and small-region views searched
    again for the queries with nothing confident (`second_pass`), similarities normalized against the
    index's background (`normalize`), candidates decided by the calibrated global score where it
    is clear and verified by local features in between (`verify=True` = `VerifyMode.BANDED`;
    `"full"` verifies every top candidate; False = off), one calibrated score per match in [0, 1]
    (0.5 = decision threshold). `config` overrides the switches; `timings` is filled with
    per-stage seconds. `background` (images that are not originals of the queries) is embedded
    once and stored with the index for normalization. `root` refuses queries (and listing paths)
    outside it; `cache_dir` takes the caches a read-only index cannot hold (`QueryEngine.open`).
    `shard_actors` > 0 searches the FAISS shards in that many Ray actors (same results).
    `localize`: a folder for the edit masks of each query against its top match when that is a
    copy (from the decoded query and the verifier's homography), reported in `localized`.
    `adapters`: the index's query adapters searched as extra views ('all', 'none' or names,
    comma-separated; `copytrace adapt`).
    """
    mode = (VerifyMode(verify) if not isinstance(verify, bool)
            else VerifyMode.BANDED if verify else VerifyMode.OFF)
    config = config or match_config(k=k, normalize=normalize, expand=expand,
                                    verify=mode is not VerifyMode.OFF, verify_k=verify_k,
                                    second_pass=second_pass)
    if config.verify is None:
        mode = VerifyMode.OFF
    timings = timings if timings is not None else QueryTimings()
    localized: list[PairOutcome] = []
    if background is not None:
        stored = Path(index) / BACKGROUND_FILE
        if not stored.exists() or Background.load(stored).source != str(background):
            store_background(index, background, model=model, batch_size=batch_size,
                             device=device)
    sources = list_sources(queries, all_files=True, root=root)
    if use_ray is None:
        use_ray = bool(ray_address) or len(sources) >= RAY_AUTO_MIN_QUERIES
    backend = verify_backend or (VerifyBackend.RAY if use_ray else VerifyBackend.PROCESSES
                                 if len(sources) >= POOL_MIN_QUERIES else VerifyBackend.INLINE)
    with QueryEngine.open(index, model=model, device=device, config=config,
                          calibration=calibration, verify_backend=backend,
                          ray_address=ray_address, cache_dir=cache_dir,
                          shard_actors=shard_actors, adapters=adapters) as engine:
        if config.expand is None and use_ray and localize is None:
            # Localizing needs the decoded queries here: the chunked path below decodes each once
            # (the Ray job would decode on the workers, then verification and localization
            # would read every query file again).
            results = _query_whole_on_ray(engine, sources, mode=mode, model=model,
                                          batch_size=batch_size, chunk_size=chunk_size,
                                          device=device, ray_address=ray_address,
                                          show_progress=show_progress, timings=timings)
        else:
            results = _query_chunks(engine, sources, mode=mode, batch_size=batch_size,
                                    show_progress=show_progress, timings=timings,
                                    localize=localize, localized=localized)
    predictions = None
    if output is not None:
        predictions = write_predictions(((r.query_id, m.reference_id, m.score) for r in results
                                         for m in r.matches), output)
    return QueryRun(results, localized, predictions)


def query(queries: str | Path, index: str | Path, *, localized: list | None = None,
          **options) -> list[QueryResult]:
    """Deprecated: `query_index`, which returns a `QueryRun` instead of filling `localized`.
    Kept working for one release."""
    warnings.warn("copytrace.pipelines.query.query() is deprecated; use query_index(), which "
                  "returns a QueryRun (results and localized pairs)", DeprecationWarning,
                  stacklevel=2)
    run = query_index(queries, index, **options)
    if localized is not None:
        localized.extend(run.localized)
    return run.results


def _decode(engine: QueryEngine, source: ImageSource) -> QueryImage | str:
    try:
        return engine.decode(source.uri, query_id=source.image_id)
    except DecodeError as exc:
        return str(exc)


def _query_chunks(engine: QueryEngine, sources: list[ImageSource], *, mode: VerifyMode,
                  batch_size: int, show_progress: bool, timings: QueryTimings,
                  localize: str | Path | None = None,
                  localized: list | None = None) -> list[QueryResult]:
    """Decode a chunk on two threads while nothing else runs, then rank it through the engine
    (and localize its copies while the decoded queries are still in memory)."""
    results: list[QueryResult] = []
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode") as pool, \
            progress_bar("querying", total=len(sources), enabled=show_progress) as advance:
        for start in range(0, len(sources), CHUNK_QUERIES):
            chunk = sources[start : start + CHUNK_QUERIES]
            t = time.perf_counter()
            decoded = list(pool.map(lambda s: _decode(engine, s), chunk))
            timings.embed += time.perf_counter() - t
            good = [d for d in decoded if isinstance(d, QueryImage)]
            matches = engine.rank_images(good, verify=mode, batch_size=batch_size,
                                         timings=timings, config=engine.options(verify=mode))
            if localize is not None:
                outcomes = engine.localize_top(good, matches, localize)
                if localized is not None:
                    localized.extend(outcomes)
            ranked = iter(matches)
            for s, d in zip(chunk, decoded, strict=True):
                results.append(QueryResult(s.image_id, s.uri, next(ranked))
                               if isinstance(d, QueryImage) else
                               QueryResult(s.image_id, s.uri, [], d))
            advance(len(chunk))
    return results


def _query_whole_on_ray(engine: QueryEngine, sources: list[ImageSource], *, mode: VerifyMode,
                        model: str | None, batch_size: int, chunk_size: int, device: str,
                        ray_address: str | None, show_progress: bool,
                        timings: QueryTimings) -> list[QueryResult]:
    """Whole-image queries only (`--no-expand`) embedded as a Ray job, like an index build; the
    workers also embed each adapter's filtered input, so only vectors come back."""
    t = time.perf_counter()
    chains = sorted({a.card.input_filter for a in engine.adapters} - {""})
    filtered: dict[str, dict[str, np.ndarray]] = {}
    vectors, views, errors = embed_files(sources, engine.index, engine.descriptor, model=model,
                                         batch_size=batch_size, chunk_size=chunk_size,
                                         device=device, use_ray=True, ray_address=ray_address,
                                         show_progress=show_progress, input_filters=chains,
                                         filtered=filtered)
    timings.embed += time.perf_counter() - t
    timings.views += len(views)
    ok = [s for s in sources if s.image_id in views]
    vecs, qviews = with_adapter_views(
        [vectors[s.image_id] for s in ok], [views[s.image_id] for s in ok], engine.adapters,
        filtered={c: np.stack([by_id[s.image_id] for s in ok]) for c, by_id in filtered.items()
                  if ok})
    by_id = engine.rank(ok, vecs, qviews,
                        config=engine.options(verify=mode), use_ray=True,
                        ray_address=ray_address, timings=timings, verify_mode=mode)
    return [QueryResult(s.image_id, s.uri, by_id.get(s.image_id, []), errors.get(s.image_id))
            for s in sources]


def embed_files(sources: list[ImageSource], copy_index: CopyIndex, descriptor: LoadedDescriptor,
                 *, model: str | None, batch_size: int, chunk_size: int, device: str,
                 use_ray: bool, ray_address: str | None, show_progress: bool,
                 input_filters: Sequence[str] = (),
                 filtered: dict[str, dict[str, np.ndarray]] | None = None,
                 ) -> tuple[dict[str, np.ndarray], dict[str, QueryViews], dict[str, str]]:
    """One descriptor per file (the whole image, as the index embeds it), inline or as a Ray job;
    with `input_filters`, `filtered` is filled with chain -> {file id: vector of its filtered
    model input}."""
    spec = model or copy_index.manifest.model.name
    settings = EmbedSettings(model=spec, batch_size=batch_size, device=device,
                             input_filters=tuple(input_filters))
    chunks = [(no, sources[s : s + chunk_size])
              for no, s in enumerate(range(0, len(sources), chunk_size))]
    errors: dict[str, str] = {}
    vectors: dict[str, np.ndarray] = {}
    views: dict[str, QueryViews] = {}
    with progress_bar("querying", total=len(sources), enabled=show_progress) as advance:
        for result in run_embedding(chunks, settings, use_ray=use_ray, address=ray_address,
                                    descriptor=descriptor):
            cat = result.catalog.to_pylist()
            for row in cat:
                if row["status"] != "ok":
                    errors[row["image_id"]] = row["error"]
                else:
                    views[row["image_id"]] = QueryViews(
                        ["full"], [(0, 0, int(row["width"]), int(row["height"]))])
            ids = result.embeddings.column("image_id").to_pylist()
            for qid, vec in zip(ids, table_vectors(result.embeddings), strict=True):
                vectors[qid] = vec[None]
            if filtered is not None:
                for chain, rows in result.filtered.items():
                    filtered.setdefault(chain, {}).update(zip(ids, rows, strict=True))
            advance(len(cat))
    return vectors, views, errors


def store_background(index: str | Path, images: str | Path, *, model: str | None = None,
                     limit: int = 20_000, batch_size: int = 32, device: str = "auto",
                     use_ray: bool = False, show_progress: bool = False) -> Path:
    """Embed a user-given background set (images known not to be originals of the queries) and
    store it with the index; later queries normalize against it instead of a catalog sample."""
    copy_index = CopyIndex.open(index)
    descriptor = index_model(copy_index, model)
    sources = list_sources(images)[:limit]
    vectors, _, errors = embed_files(sources, copy_index, descriptor, model=model,
                                      batch_size=batch_size, chunk_size=512, device=device,
                                      use_ray=use_ray, ray_address=None,
                                      show_progress=show_progress)
    if not vectors:
        raise ValueError(f"no background image could be embedded from '{images}'")
    if errors:
        log.warning("%d background images could not be decoded (skipped)", len(errors))
    ids = [s.image_id for s in sources if s.image_id in vectors]
    background = Background(np.concatenate([vectors[i] for i in ids]),
                            np.full(len(ids), "", dtype=object), str(images),
                            copy_index.manifest.model.id, len(copy_index))
    return background.save(copy_index.layout.root / BACKGROUND_FILE)


def embed_queries(sources: Sequence[ImageSource], embedder: Embedder, expand: ExpandConfig | None,
                  *, batch_size: int = 32, show_progress: bool = False,
                  ) -> tuple[dict[str, np.ndarray], dict[str, QueryViews], dict[str, str]]:
    """View vectors (whole image first), views and decode errors per query id, for callers that
    keep vectors across runs (benchmarks); each file is read and decoded once."""
    vectors: dict[str, np.ndarray] = {}
    views: dict[str, QueryViews] = {}
    errors: dict[str, str] = {}
    with progress_bar("embedding", total=len(sources), enabled=show_progress) as advance:
        for start in range(0, len(sources), CHUNK_QUERIES):
            chunk = sources[start : start + CHUNK_QUERIES]
            good = []
            for s in chunk:
                try:
                    good.append(decode_query(s.uri, model_size=embedder.image_size,
                                             expand=expand, query_id=s.image_id))
                except DecodeError as exc:
                    errors[s.image_id] = str(exc)
            for q, vecs in zip(good, embed_views(good, embedder, batch_size=batch_size),
                               strict=True):
                vectors[q.query_id] = vecs
                views[q.query_id] = q.views
            advance(len(chunk))
    return vectors, views, errors
