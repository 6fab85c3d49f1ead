"""`copytrace query`: find the originals of one image or a folder of images in an index."""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copytrace.descriptors.decode import DecodeError, decode_bytes, decode_file
from copytrace.descriptors.embed import Embedder, embed_images
from copytrace.descriptors.model import LoadedDescriptor, load_descriptor
from copytrace.indexing.atomic import write_bytes_atomic
from copytrace.indexing.embeddings import table_vectors
from copytrace.indexing.sources import ImageSource, list_sources
from copytrace.indexing.store import CopyIndex
from copytrace.matching.calibrate import Calibration, load_calibration
from copytrace.matching.expand import ExpandConfig, crop_views, query_views
from copytrace.matching.normalize import (
    BACKGROUND_FILE,
    Background,
    NormalizeConfig,
    load_background,
)
from copytrace.matching.rank import Candidate, MatchConfig, QueryViews, candidates, finalize
from copytrace.matching.results import Match, QueryResult
from copytrace.matching.verify import Verification, VerifyConfig, verify_batch
from copytrace.pipelines.embed_job import EmbedSettings, run_embedding
from copytrace.pipelines.progress import progress_bar

log = logging.getLogger(__name__)

RAY_AUTO_MIN_QUERIES = 256
"""Below this many queries, starting Ray costs more than it saves; they run in-process."""

PREDICTIONS_HEADER = ("query_id", "reference_id", "score")

VIEW_MAX_SIDE = 1024
"""Queries are downscaled to this before cropping views (the descriptor sees 224 px anyway)."""

VERIFY_QUERIES_PER_TASK = 8
"""Queries per Ray verification task: enough to reuse prepared references within a task."""


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


@dataclass
class QueryTimings:
    """Wall-clock seconds per stage of one `query` call (the benchmark reads them)."""

    embed: float = 0.0
    search: float = 0.0
    verify: float = 0.0
    views: int = 0
    pairs_verified: int = 0
    extra: dict = field(default_factory=dict)


def match_config(*, k: int = 10, normalize: bool = True, expand: bool = True,
                 verify: bool = True, verify_k: int | None = None) -> MatchConfig:
    """The `MatchConfig` behind the CLI switches."""
    return MatchConfig(
        k=k, search_k=max(20, 2 * k),
        normalize=NormalizeConfig() if normalize else None,
        expand=ExpandConfig() if expand else None,
        verify=VerifyConfig(top_k=verify_k or k) if verify else None,
    )


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
    verify: bool = True,
    normalize: bool = True,
    expand: bool = True,
    verify_k: int | None = None,
    background: str | Path | None = None,
    config: MatchConfig | None = None,
    calibration: Calibration | None = None,
    timings: QueryTimings | None = None,
) -> list[QueryResult]:
    """Rank the index's images for each query; optionally write the ISC2021 predictions CSV.

    Default: whole query plus crops searched (`expand`), similarities normalized against the
    index's background (`normalize`), top candidates verified by local features (`verify`), and
    one calibrated score per match in [0, 1] (0.5 = decision threshold). `config` overrides the
    switches; `timings` is filled with per-stage seconds. `background` (images that are not
    originals of the queries) is embedded once and stored with the index for normalization.
    """
    config = config or match_config(k=k, normalize=normalize, expand=expand, verify=verify,
                                    verify_k=verify_k)
    timings = timings if timings is not None else QueryTimings()
    if background is not None:
        stored = Path(index) / BACKGROUND_FILE
        if not stored.exists() or Background.load(stored).source != str(background):
            store_background(index, background, model=model, batch_size=batch_size,
                             device=device)
    engine = QueryEngine.open(index, model=model, device=device, config=config,
                              calibration=calibration)
    copy_index, descriptor = engine.index, engine.descriptor
    sources = list_sources(queries, all_files=True)
    if use_ray is None:
        use_ray = bool(ray_address) or len(sources) >= RAY_AUTO_MIN_QUERIES

    t = time.perf_counter()
    if config.expand is None:
        vectors, views, errors = _embed_whole(sources, copy_index, descriptor, model=model,
                                              batch_size=batch_size, chunk_size=chunk_size,
                                              device=device, use_ray=use_ray,
                                              ray_address=ray_address, show_progress=show_progress)
    else:
        vectors, views, errors = _embed_views(sources, engine.embedder, config.expand,
                                              batch_size=batch_size,
                                              show_progress=show_progress)
    timings.embed += time.perf_counter() - t
    timings.views += sum(len(v.names) for v in views.values())

    ok = [s for s in sources if s.image_id in views]
    by_id = engine.rank(ok, [vectors[s.image_id] for s in ok], [views[s.image_id] for s in ok],
                        use_ray=use_ray, ray_address=ray_address, timings=timings)
    results = [QueryResult(s.image_id, s.uri, by_id.get(s.image_id, []), errors.get(s.image_id))
               for s in sources]
    if output is not None:
        write_predictions(results, output)
    return results


@dataclass
class QueryEngine:
    """An index opened for querying, with its model, background and calibration loaded once.

    `query` opens one per call; the HTTP service keeps one for its lifetime.
    """

    index: CopyIndex
    descriptor: LoadedDescriptor
    embedder: Embedder
    config: MatchConfig
    calibration: Calibration

    @classmethod
    def open(cls, index: str | Path, *, model: str | None = None, device: str = "auto",
             config: MatchConfig | None = None,
             calibration: Calibration | None = None) -> QueryEngine:
        copy_index = CopyIndex.open(index)
        descriptor = index_model(copy_index, model)
        return cls(copy_index, descriptor, Embedder(descriptor, device=device),
                   config or match_config(),
                   calibration or load_calibration(copy_index.layout.root, descriptor.card))

    def background(self, config: MatchConfig) -> Background | None:
        if config.normalize is None:
            return None
        return load_background(self.index.layout.root, model_id=self.index.manifest.model.id,
                               catalog_size=len(self.index), config=config.normalize)

    def rank(self, sources: Sequence[ImageSource], vectors: Sequence[np.ndarray],
             views: Sequence[QueryViews], *, config: MatchConfig | None = None,
             use_ray: bool = False, ray_address: str | None = None,
             timings: QueryTimings | None = None, pixels: Sequence[np.ndarray] | None = None,
             exclude_self: bool = False) -> dict[str, list[Match]]:
        """Search, normalize, verify and score; `vectors[i]` holds the views of `sources[i]`.

        Verification reads each query from its `uri`, or from `pixels[i]` when given. With
        `exclude_self`, a query never matches (or normalizes against) its own image id.
        """
        config = config or self.config
        timings = timings if timings is not None else QueryTimings()
        if not sources:
            return {}
        t = time.perf_counter()
        matrix = np.concatenate(list(vectors))
        ranked = candidates(self.index, matrix, views, background=self.background(config),
                            config=config,
                            query_ids=[s.image_id for s in sources] if exclude_self else None)
        timings.search += time.perf_counter() - t
        t = time.perf_counter()
        verified: list[list[Verification | None]] | None = None
        if config.verify is not None:
            inputs = list(pixels) if pixels is not None else [s.uri for s in sources]
            verified = _verify(self.index, inputs, ranked, config.verify, use_ray=use_ray,
                               ray_address=ray_address)
            timings.pairs_verified += sum(len(v) for v in verified)
        timings.verify += time.perf_counter() - t
        return {s.image_id: finalize(cands, verified[i] if verified is not None else None,
                                     calibration=self.calibration)
                for i, (s, cands) in enumerate(zip(sources, ranked, strict=True))}

    def query_bytes(self, data: bytes, *, query_id: str = "query", k: int | None = None,
                    verify: bool = True) -> QueryResult:
        """One encoded image in memory (the HTTP service's request body)."""
        config = replace(self.config, k=k or self.config.k, search_k=max(self.config.search_k,
                                                                         2 * (k or 0)))
        if config.verify is not None:
            config = replace(config, verify=replace(config.verify, top_k=config.k)) \
                if verify else replace(config, verify=None)
        decoded = _decode_views(data, self.embedder.image_size, config.expand)
        if isinstance(decoded, str):
            return QueryResult(query_id, "", [], decoded)
        whole, crops, views, pixels = decoded
        vecs = self.embedder.embed_pixels(whole[None])
        if crops:
            vecs = np.concatenate([vecs, embed_images(crops, self.embedder)])
        matches = self.rank([ImageSource(query_id, "")], [vecs], [views], config=config,
                            pixels=[pixels])[query_id]
        return QueryResult(query_id, "", matches, None)


def _embed_whole(sources: list[ImageSource], copy_index: CopyIndex, descriptor: LoadedDescriptor,
                 *, model: str | None, batch_size: int, chunk_size: int, device: str,
                 use_ray: bool, ray_address: str | None, show_progress: bool,
                 ) -> tuple[dict[str, np.ndarray], dict[str, QueryViews], dict[str, str]]:
    """One descriptor per query (the whole image), inline or as a Ray job."""
    spec = model or copy_index.manifest.model.name
    settings = EmbedSettings(model=spec, batch_size=batch_size, device=device)
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
            advance(len(cat))
    return vectors, views, errors


def _decode_views(source: str | bytes, size: int, expand: ExpandConfig | None
                  ) -> tuple[np.ndarray, list[np.ndarray], QueryViews, np.ndarray] | str:
    """The whole query exactly as the index embeds images, its crops, and its full pixels.

    `source` is a path or the encoded bytes (HTTP uploads).
    """
    try:
        if isinstance(source, bytes):
            whole = decode_bytes(source, target_size=size).pixels
            full = decode_bytes(source)
        else:
            whole = decode_file(source, target_size=size).pixels
            full = decode_file(source)
    except DecodeError as exc:
        return str(exc)
    pixels = full.pixels
    h, w = pixels.shape[:2]
    if expand is None:
        return whole, [], QueryViews(["full"], [(0, 0, w, h)]), pixels
    scale = min(1.0, VIEW_MAX_SIDE / max(h, w))
    small = pixels
    if scale < 1:
        from PIL import Image

        small = np.asarray(Image.fromarray(pixels).resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    found = query_views(small, config=expand)[1:]  # [0] is the whole image: `whole` covers it
    crops = crop_views(small, found)
    boxes = [(0, 0, w, h)] + [tuple(round(c / scale) for c in v.box) for v in found]
    return whole, crops, QueryViews(["full"] + [v.name for v in found], boxes), pixels


def _embed_views(sources: list[ImageSource], embedder: Embedder, expand: ExpandConfig,
                 *, batch_size: int, show_progress: bool,
                 ) -> tuple[dict[str, np.ndarray], dict[str, QueryViews], dict[str, str]]:
    """Whole query + crops per query, embedded in-process (decoding on threads)."""
    size = embedder.image_size
    errors: dict[str, str] = {}
    vectors: dict[str, np.ndarray] = {}
    views: dict[str, QueryViews] = {}
    step = max(1, batch_size // 4)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="views") as pool, \
            progress_bar("querying", total=len(sources), enabled=show_progress) as advance:
        for start in range(0, len(sources), step):
            chunk = sources[start : start + step]
            decoded = list(pool.map(lambda s: _decode_views(s.uri, size, expand), chunk))
            good = [(s, d) for s, d in zip(chunk, decoded, strict=True) if not isinstance(d, str)]
            for s, d in zip(chunk, decoded, strict=True):
                if isinstance(d, str):
                    errors[s.image_id] = d
            if good:
                whole = embedder.embed_pixels(np.stack([d[0] for _, d in good]))
                crops = [c for _, d in good for c in d[1]]
                crop_vecs = embed_images(crops, embedder, batch_size=batch_size)
                pos = 0
                for i, (s, d) in enumerate(good):
                    n = len(d[1])
                    vectors[s.image_id] = np.concatenate([whole[i : i + 1], crop_vecs[pos : pos + n]])
                    views[s.image_id] = d[2]
                    pos += n
            advance(len(chunk))
    return vectors, views, errors


def store_background(index: str | Path, images: str | Path, *, model: str | None = None,
                     limit: int = 20_000, batch_size: int = 32, device: str = "auto",
                     use_ray: bool = False, show_progress: bool = False) -> Path:
    """Embed a user-given background set (images known not to be originals of the queries) and
    store it with the index; later queries normalize against it instead of a catalog sample."""
    copy_index = CopyIndex.open(index)
    descriptor = index_model(copy_index, model)
    sources = list_sources(images)[:limit]
    vectors, _, errors = _embed_whole(sources, copy_index, descriptor, model=model,
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


def reference_uris(copy_index: CopyIndex, ids: set[str]) -> dict[str, str]:
    """Catalog paths of the given reference ids (what verification reads)."""
    cat = copy_index.catalog().select(["image_id", "uri"])
    cat = cat.filter(pc.is_in(cat.column("image_id"), value_set=pa.array(sorted(ids), pa.string())))
    return dict(zip(cat.column("image_id").to_pylist(), cat.column("uri").to_pylist(), strict=True))


def _verify(copy_index: CopyIndex, queries: Sequence[str | np.ndarray],
            ranked: list[list[Candidate]], config: VerifyConfig, *, use_ray: bool,
            ray_address: str | None) -> list[list[Verification | None]]:
    """Verify each query (path or pixels) against its top candidates: in-process, or as Ray
    tasks of a few queries each."""
    uris = reference_uris(copy_index, {c.reference_id for row in ranked for c in row[: config.top_k]})
    jobs = [(q, [uris.get(c.reference_id, "") for c in row[: config.top_k]])
            for q, row in zip(queries, ranked, strict=True)]
    if not use_ray:
        return verify_batch(jobs, config=config)
    import ray

    from copytrace.pipelines.ray_runtime import ensure_ray

    ensure_ray(ray_address)
    task = ray.remote(num_cpus=1)(verify_batch)
    futures = [task.remote(jobs[s : s + VERIFY_QUERIES_PER_TASK], config=config)
               for s in range(0, len(jobs), VERIFY_QUERIES_PER_TASK)]
    out: list[list[Verification | None]] = []
    for part in ray.get(futures):
        out.extend(part)
    return out


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
