"""`QueryEngine`: the one query API. Open an index once, then query images, bytes or arrays.

    engine = QueryEngine.open("idx/")
    results = engine.query(["a.jpg", upload_bytes, rgb_array], k=5)

Each query is read and decoded once (`matching.query_image.QueryImage`); the whole image and its
crops of a batch of queries go through the model together; candidates are searched, normalized
against the index's background and decided by the calibrated global score where it is clear
(`VerifyMode.BANDED`, the default: above the band a copy, below it not), and verified with
keypoints only in between. Reference keypoints are cached (bounded LRU in memory, plus `.npz`
files under `INDEX/keypoints/` when the index folder is writable, or under the `cache_dir` given:
then nothing is written next to the index, which may be read-only).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copytrace.descriptors.adapter import adapt_query
from copytrace.descriptors.decode import DecodeError
from copytrace.descriptors.embed import Embedder, embed_images
from copytrace.descriptors.model import LoadedDescriptor, load_descriptor
from copytrace.indexing.adapters import ALL, LoadedAdapter, load_adapters
from copytrace.indexing.sources import ImageSource
from copytrace.indexing.store import CopyIndex
from copytrace.matching.calibrate import Calibration, Decision, load_calibration
from copytrace.matching.expand import ExpandConfig
from copytrace.matching.extra_views import second_pass
from copytrace.matching.grid_tiles import tile_views
from copytrace.matching.normalize import Background, NormalizeConfig, load_background
from copytrace.matching.query_image import QueryImage, QuerySource, decode_query
from copytrace.matching.rank import (
    Candidate,
    MatchConfig,
    QueryViews,
    candidate_decisions,
    candidates,
    finalize,
)
from copytrace.matching.results import Match, QueryResult
from copytrace.matching.roles import accepted_to_verify
from copytrace.matching.rotations import rotation_views
from copytrace.matching.small_copies import small_copy_views
from copytrace.matching.verify import Verification, VerifyConfig
from copytrace.matching.view_check import shipped_view_check
from copytrace.pipelines.shard_search import RayShardedIndex, open_distributed
from copytrace.pipelines.verify_pool import Verifier, VerifyBackend, VerifyJob

if TYPE_CHECKING:
    from copytrace.pipelines.localize import PairOutcome

log = logging.getLogger(__name__)

KEYPOINT_CACHE_DIR = "keypoints"
"""Reference keypoints cached inside the index folder (when writable)."""

BAND_MIN_CATALOG = 200
"""Below this many indexed images every top candidate is verified. The decision band reads the
background-normalized global score, and a catalog this small is its own thin background: on a
12-reference UKBench index the band accepted 11 of 36 other-view photos (not copies) unverified,
full verification 5. The band was fitted on a 300-reference catalog."""


class VerifyMode(str, Enum):
    """How candidates are verified with keypoints."""

    BANDED = "banded"  # only where the calibrated global score is undecided (the default)
    FULL = "full"  # every one of the top `verify_k` candidates
    OFF = "off"  # never: the calibrated global score alone (`--no-verify`)


@dataclass
class QueryTimings:
    """Wall-clock seconds per stage, summed over `query` calls (the benchmarks read them)."""

    embed: float = 0.0  # decode + model forward
    search: float = 0.0  # FAISS + normalization
    verify: float = 0.0
    views: int = 0
    pairs_verified: int = 0
    pairs_decided: int = 0  # candidates decided by the global score alone (banded mode)
    extra: dict = field(default_factory=dict)


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


RERANK_POOL = 10
"""Candidates verified and re-ranked per query when `verify_k` is not given: at least this many
whatever `k` is, so a smaller `k` returns the first k of a larger one's list (issue 26: with the
pool tied to k, `-k 5` verified two more candidates than `-k 3` and one of them re-ranked to 2)."""


UNSURE_POOL = 20
"""Candidates verified for a query whose first `RERANK_POOL` hold none the calibrated global
score accepts (`MatchConfig.unsure_k`): at 50,350 references 3 of the 14 dev copies missing from
the top 10 ranked 12-23 by global score. With it, 213 instead of 211 of 225 are in the top 10
(µAP 0.9176 -> 0.9266, other views >= 0.5 unchanged) for 1.1x the time per query; at 350
references nothing changes but the time (1.12x). One run each, README "At catalog scale"."""


def verify_pool(k: int, verify_k: int | None) -> int:
    """Candidates verified per query: `verify_k`, else `k` but at least `RERANK_POOL`."""
    return verify_k or max(k, RERANK_POOL)


def match_config(*, k: int = 10, normalize: bool = True, expand: bool = True,
                 verify: bool = True, verify_k: int | None = None,
                 second_pass: bool = True, unsure_k: int = UNSURE_POOL) -> MatchConfig:
    """The `MatchConfig` behind the CLI switches. An explicit `verify_k` is the number verified
    for every query (no deeper pool for unsure ones)."""
    config = MatchConfig(
        k=k, normalize=NormalizeConfig() if normalize else None,
        expand=ExpandConfig() if expand else None,
        verify=VerifyConfig(top_k=verify_pool(k, verify_k)) if verify else None,
        unsure_k=0 if verify_k else unsure_k,
    )
    config = config if second_pass else config.without_second_pass()
    return replace(config, search_k=max(20, 2 * config.pool))


def embed_views(images: Sequence[QueryImage], embedder: Embedder, *,
                batch_size: int = 32) -> list[np.ndarray]:
    """View vectors per query (whole image first): the whole images of all queries go through
    the model in batches, then all their crops."""
    if not images:
        return []
    whole = np.concatenate([embedder.embed_pixels(np.stack(
        [q.model_pixels for q in images[s : s + batch_size]]))
        for s in range(0, len(images), batch_size)])
    crop_vecs = embed_images([c for q in images for c in q.crops], embedder,
                             batch_size=batch_size)
    out, pos = [], 0
    for i, q in enumerate(images):
        n = len(q.crops)
        out.append(np.concatenate([whole[i : i + 1], crop_vecs[pos : pos + n]]))
        pos += n
    return out


def with_adapter_views(vectors: Sequence[np.ndarray], views: Sequence[QueryViews],
                       adapters: Sequence[LoadedAdapter], *,
                       pixels: Sequence[np.ndarray] | None = None,
                       embedder: Embedder | None = None,
                       filtered: Mapping[str, np.ndarray] | None = None,
                       ) -> tuple[list[np.ndarray], list[QueryViews]]:
    """Each adapter's vector of a query's whole image as one more view of it ('adapter:NAME',
    the whole query's box), merged with the plain views as the crops are: a reference keeps its
    best normalized score over all views, so a query no adapter helps keeps its plain results
    unless an adapted view finds a reference even closer. An adapter with an input filter
    embeds the filtered `pixels` (the queries' model inputs) once more, or takes the vectors
    the embedding workers made of them (`filtered`: chain -> one row per query; the Ray
    whole-image path, which keeps no pixels)."""
    if not adapters or not vectors:
        return list(vectors), list(views)
    whole = np.stack([v[0] for v in vectors])
    stacked = np.stack(pixels) if pixels is not None else None
    embed = None if embedder is None else embedder.embed_pixels
    adapted = [adapt_query(whole, stacked, input_filter=a.card.input_filter, arrays=a.arrays,
                           embed=embed, embedded=(filtered or {}).get(a.card.input_filter))
               for a in adapters]
    names = [f"adapter:{a.card.name}" for a in adapters]
    return ([np.concatenate([v, *(x[i : i + 1] for x in adapted)]) for i, v in enumerate(vectors)],
            [QueryViews([*qv.names, *names], [*qv.boxes, *[qv.boxes[0]] * len(adapters)])
             for qv in views])


def reference_uris(copy_index: CopyIndex, ids: set[str]) -> dict[str, str]:
    """Catalog URIs of the given reference ids (what verification and localization read)."""
    cat = copy_index.catalog().select(["image_id", "uri"])
    cat = cat.filter(pc.is_in(cat.column("image_id"), value_set=pa.array(sorted(ids), pa.string())))
    return dict(zip(cat.column("image_id").to_pylist(), cat.column("uri").to_pylist(), strict=True))


def _writable_dir(path: Path) -> Path | None:
    try:
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def index_cache_dir(cache_dir: str | Path, index_root: Path) -> Path:
    """`cache_dir/NAME-HASH/`: one writable subfolder per index (by its absolute path), so one
    cache folder can serve several read-only indexes without mixing their caches."""
    root = Path(os.path.abspath(index_root))
    folder = Path(cache_dir) / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:10]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot use '{cache_dir}' as the cache folder: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cache folder '{cache_dir}' is not writable")
    return folder


@dataclass
class QueryEngine:
    """An index opened for querying: model, background, calibration and verifier loaded once.

    The HTTP service keeps one for its lifetime; `copytrace query` opens one per run. Not safe
    for concurrent `query` calls from several threads (the service feeds it from one thread).
    """

    index: CopyIndex
    descriptor: LoadedDescriptor
    embedder: Embedder
    config: MatchConfig
    calibration: Calibration
    verifier: Verifier
    band_min_catalog: int = BAND_MIN_CATALOG  # smaller indexes verify every top candidate
    cache_dir: Path | None = None  # this index's writable cache folder; None: the index folder
    adapters: list[LoadedAdapter] = field(default_factory=list)  # extra query views (`adapt`)
    _uris: dict[str, str] | None = field(default=None, repr=False)
    _backgrounds: dict = field(default_factory=dict, repr=False)
    _verifiers: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, index: str | Path, *, model: str | None = None, device: str = "auto",
             config: MatchConfig | None = None, calibration: Calibration | None = None,
             verify_backend: VerifyBackend | str = VerifyBackend.INLINE,
             verify_workers: int | None = None, cache_capacity: int = 2048,
             keypoint_cache: bool = True, ray_address: str | None = None,
             cache_dir: str | Path | None = None, shard_actors: int = 0,
             adapters: str = ALL) -> QueryEngine:
        """Open `index` for querying; the keypoint cache and background sample go to `cache_dir`
        (a subfolder per index) when given, else to the index folder when it is writable
        (`keypoint_cache=False`: keypoints in memory only). `shard_actors` > 0: the FAISS
        shards are held and searched by that many Ray actors (`pipelines.shard_search`).
        `adapters`: the index's query adapters used as extra views ('all', 'none' or names)."""
        copy_index = (open_distributed(index, actors=shard_actors, ray_address=ray_address)
                      if shard_actors > 0 else CopyIndex.open(index))
        descriptor = index_model(copy_index, model)
        config = config or match_config()
        cache = index_cache_dir(cache_dir, copy_index.layout.root) if cache_dir else None
        disk = (_writable_dir((cache or copy_index.layout.root) / KEYPOINT_CACHE_DIR)
                if keypoint_cache else None)
        verifier = Verifier(config.verify or VerifyConfig(), backend=VerifyBackend(verify_backend),
                            workers=verify_workers, cache_capacity=cache_capacity,
                            disk_cache=disk, ray_address=ray_address)
        loaded = load_adapters(copy_index.layout.root, adapters, manifest=copy_index.manifest)
        return cls(copy_index, descriptor, Embedder(descriptor, device=device), config,
                   calibration or load_calibration(copy_index.layout.root, descriptor.card),
                   verifier, cache_dir=cache, adapters=loaded)

    def close(self) -> None:
        """Stop verification workers and shard actors (if any)."""
        for verifier in [self.verifier, *self._verifiers.values()]:
            verifier.close()
        if isinstance(self.index.faiss_index, RayShardedIndex):
            self.index.faiss_index.close()

    def __enter__(self) -> QueryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the query API -------------------------------------------------------------------------

    def decode(self, source: QuerySource | QueryImage, *, query_id: str | None = None,
               config: MatchConfig | None = None) -> QueryImage:
        """Read and decode one query once (raises `DecodeError`)."""
        if isinstance(source, QueryImage):
            return source
        return decode_query(source, model_size=self.embedder.image_size,
                            expand=(config or self.config).expand, query_id=query_id)

    def query(self, images: Sequence[QuerySource | QueryImage], *, k: int | None = None,
              verify: VerifyMode | str = VerifyMode.BANDED, verify_k: int | None = None,
              query_ids: Sequence[str] | None = None, batch_size: int = 32,
              timings: QueryTimings | None = None, second_pass: bool = True) -> list[QueryResult]:
        """One result per image (paths, encoded bytes, RGB arrays or decoded `QueryImage`s), in
        order; an image that cannot be decoded gets a result with `error` set."""
        config = self.options(k=k, verify=verify, verify_k=verify_k, second_pass=second_pass)
        timings = timings if timings is not None else QueryTimings()
        t = time.perf_counter()
        decoded: list[QueryImage | str] = []
        for i, image in enumerate(images):
            qid = query_ids[i] if query_ids is not None else None
            try:
                decoded.append(self.decode(image, query_id=qid, config=config))
            except DecodeError as exc:
                decoded.append(str(exc))
        timings.embed += time.perf_counter() - t
        good = [d for d in decoded if isinstance(d, QueryImage)]
        ranked = self.rank_images(good, config=config, verify=verify, timings=timings,
                                  batch_size=batch_size)
        out, pos = [], 0
        for i, (image, d) in enumerate(zip(images, decoded, strict=True)):
            if isinstance(d, QueryImage):
                out.append(QueryResult(d.query_id, d.uri, ranked[pos]))
                pos += 1
            else:
                qid = query_ids[i] if query_ids is not None else _default_id(image)
                uri = str(image) if isinstance(image, (str, Path)) else ""
                out.append(QueryResult(qid, uri, [], d))
        return out

    def options(self, *, k: int | None = None, verify: VerifyMode | str = VerifyMode.BANDED,
                verify_k: int | None = None, second_pass: bool = True) -> MatchConfig:
        """The engine's `MatchConfig` with a per-call `k`, verification mode, `verify_k` and
        second pass (False: no turned, small-region or tile views; `--no-second-pass`)."""
        config = self.config if k is None else replace(self.config, k=k)
        config = config if second_pass else config.without_second_pass()
        if VerifyMode(verify) is VerifyMode.OFF:
            config = replace(config, verify=None)
        else:
            base = config.verify or VerifyConfig()
            config = replace(config, verify=replace(base, top_k=verify_k or (
                base.top_k if k is None else verify_pool(k, None))),
                             unsure_k=0 if verify_k else config.unsure_k)
        return replace(config, search_k=max(config.search_k, 2 * config.pool))

    def embed(self, images: Sequence[QueryImage], *, batch_size: int = 32) -> list[np.ndarray]:
        """View vectors per query (whole image first), batched over all queries."""
        return embed_views(images, self.embedder, batch_size=batch_size)

    def rank_images(self, images: Sequence[QueryImage], *, config: MatchConfig | None = None,
                    verify: VerifyMode | str = VerifyMode.BANDED, batch_size: int = 32,
                    timings: QueryTimings | None = None) -> list[list[Match]]:
        """Embed, search, decide / verify and score decoded queries; matches per query."""
        config = config or self.config
        timings = timings if timings is not None else QueryTimings()
        t = time.perf_counter()
        vectors, views = with_adapter_views(self.embed(images, batch_size=batch_size),
                                            [q.views for q in images], self.adapters,
                                            pixels=[q.model_pixels for q in images],
                                            embedder=self.embedder)
        timings.embed += time.perf_counter() - t
        timings.views += sum(len(v.names) for v in views)
        sources = [ImageSource(q.query_id, q.uri) for q in images]
        by_id = self.rank(sources, vectors, views, config=config,
                          timings=timings, queries=images, verify_mode=verify)
        return [by_id[i] for i in range(len(images))]

    def rank(self, sources: Sequence[ImageSource], vectors: Sequence[np.ndarray],
             views: Sequence[QueryViews], *, config: MatchConfig | None = None,
             use_ray: bool = False, ray_address: str | None = None,
             timings: QueryTimings | None = None, pixels: Sequence[np.ndarray] | None = None,
             exclude_self: bool = False, queries: Sequence[QueryImage] | None = None,
             verify_mode: VerifyMode | str = VerifyMode.FULL) -> dict:
        """Search, normalize, verify and score; `vectors[i]` holds the views of `sources[i]`.

        Verification uses `queries[i]` (decoded, keeps its keypoints) when given, else
        `pixels[i]`, else reads `sources[i].uri`. With `exclude_self`, a query never matches (or
        normalizes against) its own image id. Keyed by image id, or by position when `queries`
        is given (ids of uploads may repeat).
        """
        config = config or self.config
        timings = timings if timings is not None else QueryTimings()
        if not sources:
            return {}
        t = time.perf_counter()
        ranked = candidates(self.index, np.concatenate(list(vectors)), views,
                            background=self.background(config), config=config,
                            query_ids=[s.image_id for s in sources] if exclude_self else None)
        if queries is not None and not exclude_self:  # the second pass needs decoded queries
            ranked, extra = self._second_pass(ranked, vectors, views, queries, config)
            timings.views += extra
        timings.search += time.perf_counter() - t
        t = time.perf_counter()
        verified: list[list[Verification | None]] | None = None
        decisions: list[list[Decision]] | None = None
        if config.verify is not None:
            # The deeper pool is for queries: a dedup self-join (`exclude_self`) keeps its cost.
            decisions = self._decisions(ranked, config.verify.top_k, VerifyMode(verify_mode),
                                        unsure_k=0 if exclude_self else config.unsure_k)
            inputs = (list(queries) if queries is not None else
                      [QueryImage(s.image_id, s.uri, p, p, [], v) for s, p, v in
                       zip(sources, pixels, views, strict=True)] if pixels is not None else
                      [_LazyQuery(s) for s in sources])
            verified = self._verify(inputs, ranked, decisions, config, use_ray=use_ray,
                                    ray_address=ray_address)
            self._verify_second_copies(inputs, ranked, decisions, verified, config,
                                       use_ray=use_ray, ray_address=ray_address)
            wanted = sum(d is Decision.VERIFY for row in decisions for d in row)
            timings.pairs_verified += wanted
            timings.pairs_decided += sum(len(row) for row in decisions) - wanted
        timings.verify += time.perf_counter() - t
        keys = range(len(sources)) if queries is not None else [s.image_id for s in sources]
        return {key: finalize(cands, verified[i] if verified is not None else None,
                              calibration=self.calibration,
                              decisions=decisions[i] if decisions is not None else None,
                              view_check=shipped_view_check() if config.view_check else None,
                              leading=config.verify.top_k if config.verify is not None else None,
                              )[: config.k]  # the best k of the re-ranked pool
                for i, (key, cands) in enumerate(zip(keys, ranked, strict=True))}

    def _second_pass(self, ranked: list[list[Candidate]], vectors: Sequence[np.ndarray],
                     views: Sequence[QueryViews], queries: Sequence[QueryImage],
                     config: MatchConfig) -> tuple[list[list[Candidate]], int]:
        """The turned, small-region and grid-tile views of the unconfident queries, embedded and
        searched once (`matching.extra_views`); the candidates and how many views were embedded."""
        families = []
        if config.rotate is not None:
            families.append(rotation_views(ranked, views, calibration=self.calibration,
                                           model_pixels=lambda i: queries[i].model_pixels,
                                           config=config.rotate))
        if config.expand is not None:
            families.append(small_copy_views(ranked, views, pixels=lambda i: queries[i].pixels,
                                             model_size=self.embedder.image_size,
                                             calibration=self.calibration, config=config.expand,
                                             rotate=config.rotate))
            families.append(tile_views(ranked, views, pixels=lambda i: queries[i].pixels,
                                       model_size=self.embedder.image_size,
                                       calibration=self.calibration, config=config.expand))
        return second_pass(ranked, vectors, views, families=families,
                           embed=self.embedder.embed_pixels, calibration=self.calibration,
                           search=lambda v, qv: candidates(self.index, v, qv, config=config,
                                                           background=self.background(config)))

    def query_bytes(self, data: bytes, *, query_id: str = "query", k: int | None = None,
                    verify: bool | VerifyMode | str = VerifyMode.BANDED) -> QueryResult:
        """One encoded image in memory (kept for callers of the old service API)."""
        mode = verify if not isinstance(verify, bool) else (
            VerifyMode.BANDED if verify else VerifyMode.OFF)
        return self.query([data], k=k, verify=mode, query_ids=[query_id])[0]

    def localize_top(self, images: Sequence[QueryImage], matches: Sequence[Sequence[Match]],
                     out_dir: str | Path, *, threshold: float = 0.5,
                     overlay: bool = True) -> list[PairOutcome]:
        """`query --localize`: each decoded query against its top match when that is a copy.

        The query's pixels come from its `QueryImage` (not decoded again) and registration starts
        from the verifier's homography; a match the decision band accepted unverified is verified
        now (the query's keypoints are computed once and kept), so only the reference is decoded.
        """
        from copytrace.pipelines.localize import localize_pair

        top = [(q, row[0]) for q, row in zip(images, matches, strict=True)
               if row and row[0].score >= threshold]
        uris = self.reference_uris({m.reference_id for _, m in top})
        out = []
        for q, m in top:
            if m.reference_id not in uris:
                continue
            h = evidence_homography(m.evidence)
            if h is None:
                v = self.verifier.verify([VerifyJob(q, [uris[m.reference_id]])])[0][0]
                h = v.homography if isinstance(v, Verification) else None
            out.append(localize_pair(q.uri or q.query_id, uris[m.reference_id], out_dir=out_dir,
                                     query_id=q.query_id, reference_id=m.reference_id,
                                     score=m.score, overlay=overlay, assume_copy=True, initial=h,
                                     query_pixels=q.pixels))
        return out

    def prepare_references(self, ids: Sequence[str] | None = None, *,
                           progress: Callable[[int], None] | None = None,
                           chunk: int = 256) -> int:
        """Detect the keypoints of these references (default: the whole catalog) into the
        keypoint cache now rather than on a query's first use: what a service does before it
        takes traffic. An inline engine with an on-disk cache prepares them on a temporary
        process pool (the disk cache is what its queries then read). `progress` is called with
        the number of references done after each chunk. Returns how many could not be read."""
        self.reference_uris([])  # loads the catalog's URIs once
        uris = list((self._uris if ids is None else self.reference_uris(ids)).values())
        verifier, own = self.verifier, False
        if (verifier.backend is VerifyBackend.INLINE and verifier.disk is not None
                and verifier.workers > 1 and len(uris) > chunk):
            verifier, own = Verifier(verifier.config, backend=VerifyBackend.PROCESSES,
                                     workers=verifier.workers, cache_capacity=verifier.capacity,
                                     disk_cache=verifier.disk), True
        failed = 0
        try:
            for s in range(0, len(uris), chunk):
                failed += verifier.prepare_references(uris[s : s + chunk])
                if progress is not None:
                    progress(len(uris[s : s + chunk]))
        finally:
            if own:
                verifier.close()
        return failed

    # -- pieces --------------------------------------------------------------------------------

    def background(self, config: MatchConfig) -> Background | None:
        if config.normalize is None:
            return None
        key = config.normalize
        if key not in self._backgrounds:
            removed = (self.index.ids[self.index.removed] if self.index.removed is not None
                       else ())
            self._backgrounds[key] = load_background(
                self.index.layout.root, model_id=self.index.manifest.model.id,
                catalog_size=len(self.index), config=config.normalize,
                version=self.index.manifest.version, removed=set(removed),
                cache_dir=self.cache_dir)
        return self._backgrounds[key]

    def reference_uris(self, ids: set[str] | Sequence[str]) -> dict[str, str]:
        """Catalog URIs of reference ids (read from the catalog once per engine)."""
        if self._uris is None:
            cat = self.index.catalog().select(["image_id", "uri"])
            self._uris = dict(zip(cat.column("image_id").to_pylist(),
                                  cat.column("uri").to_pylist(), strict=True))
        return {i: self._uris[i] for i in ids if i in self._uris}

    def _decisions(self, ranked: list[list[Candidate]], top_k: int, mode: VerifyMode, *,
                   unsure_k: int = 0) -> list[list[Decision]]:
        """Per query, the decision for each of its top `top_k` candidates; up to `unsure_k`
        for a query the global score accepts none of the first `top_k` for."""
        every = mode is VerifyMode.FULL or len(self.index) < self.band_min_catalog
        return [candidate_decisions(row, calibration=self.calibration, top_k=top_k,
                                    unsure_k=unsure_k, verify_all=every) for row in ranked]

    def _verify(self, queries: Sequence[QueryImage | _LazyQuery], ranked: list[list[Candidate]],
                decisions: list[list[Decision]], config: MatchConfig, *, use_ray: bool,
                ray_address: str | None) -> list[list[Verification | None]]:
        """Verifications aligned with each query's top candidates (None where not verified)."""
        uris = self.reference_uris({c.reference_id for row, dec in zip(ranked, decisions,
                                                                        strict=True)
                                    for c, d in zip(row, dec, strict=False) if d is Decision.VERIFY})
        jobs, where = [], []
        for i, (q, row, dec) in enumerate(zip(queries, ranked, decisions, strict=True)):
            picked = [j for j, d in enumerate(dec) if d is Decision.VERIFY]
            if not picked:
                continue
            image = q.load() if isinstance(q, _LazyQuery) else q
            if image is None:
                continue
            jobs.append(VerifyJob(image, [uris.get(row[j].reference_id, "") for j in picked]))
            where.append((i, picked))
        verifier = self._verifier_for(config.verify, use_ray, ray_address)
        results = verifier.verify(jobs) if jobs else []
        out: list[list[Verification | None]] = [[None] * len(dec) for dec in decisions]
        for (i, picked), row in zip(where, results, strict=True):
            for j, v in zip(picked, row, strict=True):
                out[i][j] = v
        return out

    def _verify_second_copies(self, queries: Sequence[QueryImage | _LazyQuery],
                              ranked: list[list[Candidate]], decisions: list[list[Decision]],
                              verified: list[list[Verification | None]], config: MatchConfig, *,
                              use_ray: bool, ray_address: str | None) -> None:
        """In place: verify the band-accepted copies of queries that hold two copies, so their
        roles (`matching.roles`: which was pasted into which) can be told; a query with one copy
        costs nothing more."""
        extra = []
        for row, dec, ver in zip(ranked, decisions, verified, strict=True):
            picked = set(accepted_to_verify([c.global_score for c in row], dec, ver,
                                            calibration=self.calibration))
            extra.append([Decision.VERIFY if j in picked else Decision.REJECT
                          for j in range(len(dec))])
        if not any(d is Decision.VERIFY for row in extra for d in row):
            return
        again = self._verify(queries, ranked, extra, config, use_ray=use_ray,
                             ray_address=ray_address)
        for dec, ver, more, new in zip(decisions, verified, extra, again, strict=True):
            for j, d in enumerate(more):
                if d is Decision.VERIFY:
                    dec[j], ver[j] = Decision.VERIFY, new[j]

    def _verifier_for(self, config: VerifyConfig, use_ray: bool,
                      ray_address: str | None) -> Verifier:
        """The engine's verifier, or one for other alignment settings / Ray (same disk cache)."""
        base = self.verifier
        backend = VerifyBackend.RAY if use_ray else base.backend
        settings = replace(config, top_k=0)  # how many are verified is not the verifier's business
        if replace(base.config, top_k=0) == settings and base.backend is backend:
            return base
        key = (settings, backend, ray_address)
        if key not in self._verifiers:
            self._verifiers[key] = Verifier(settings, backend=backend, workers=base.workers,
                                            cache_capacity=base.capacity, disk_cache=base.disk,
                                            ray_address=ray_address)
        return self._verifiers[key]


@dataclass(frozen=True)
class PreparedKeypoints:
    """What `prepare_keypoints` did."""

    references: int
    unreadable: int
    seconds: float
    folder: str  # where the keypoint files are ("" when no writable cache folder)


def prepare_keypoints(index: str | Path, *, cache_dir: str | Path | None = None,
                      workers: int | None = None, show_progress: bool = True) -> PreparedKeypoints:
    """`copytrace index prepare-keypoints`: every reference's keypoints into the index's on-disk
    keypoint cache (or `cache_dir`'s), on a process pool, so no query or service start pays for
    detecting them. Already cached references are read back, not detected again."""
    from copytrace.util.progress import progress_bar

    t = time.perf_counter()
    with QueryEngine.open(index, verify_backend=VerifyBackend.PROCESSES, verify_workers=workers,
                          cache_dir=cache_dir) as engine:
        if engine.verifier.disk is None:
            raise ValueError(f"no writable keypoint cache folder for '{index}': give --cache-dir")
        engine.reference_uris([])  # the catalog's URIs, loaded once
        n = len(engine._uris or {})
        with progress_bar("keypoints", total=n, enabled=show_progress) as advance:
            failed = engine.prepare_references(progress=advance)
        return PreparedKeypoints(n, failed, time.perf_counter() - t, engine.verifier.disk)


@dataclass
class _LazyQuery:
    """A query known only by its file (the dedup audit): decoded when it needs verifying."""

    source: ImageSource

    def load(self) -> QueryImage | None:
        try:
            pixels = decode_query(self.source.uri, model_size=1, query_id=self.source.image_id
                                  ).pixels
        except DecodeError as exc:
            log.warning("cannot verify query '%s': %s", self.source.uri, exc)
            return None
        h, w = pixels.shape[:2]
        return QueryImage(self.source.image_id, self.source.uri, pixels, pixels, [],
                          QueryViews(["full"], [(0, 0, w, h)]))


def evidence_homography(evidence: dict | None) -> np.ndarray | None:
    """The verifier's query -> reference homography recorded in a match's evidence, if any."""
    h = (evidence or {}).get("homography")
    if h is None:
        return None
    try:
        m = np.asarray(h, np.float64).reshape(3, 3)
    except ValueError:
        return None
    return m if np.isfinite(m).all() else None


def _default_id(image: object) -> str:
    return Path(image).stem if isinstance(image, (str, Path)) else "query"
