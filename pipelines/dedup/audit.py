"""`copytrace dedup`: a dataset dedup audit as clusters, Parquet tables and an HTML report.

Stages: exact duplicates (same sha256), perceptual (PDQ, Hamming <= 31), descriptor neighbours
(a chunked self-join through the index with the query engine's search and normalization), then
local verification of that ambiguous band with the engine's verifier and calibration, and a
content-not-template check (matching.templates): evidence lying only on a frame, caption band,
logo or watermark shared by many catalog images does not make two images duplicates, PDQ
matches included. An image that holds two catalog photos, one pasted into the other, is a
composite (pipelines.dedup.composites): its two pairs are reported with their roles, not as
duplicates. Duplicate pairs become clusters (connected components), each with a representative
chosen by `keep`.

AUDIT_DIR gets pairs.parquet (duplicates, then composite relations: `relation`),
clusters.parquet, candidates.parquet (every scored pair, kept or not, with the reason),
audit.json and report.html with its thumbnails.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copytrace.indexing.catalog import catalog_pdq
from copytrace.indexing.manifest import IndexLayout
from copytrace.matching.clusters import ImageFacts, KeepPolicy, connected_groups, representative
from copytrace.matching.keep_rule import (
    Content,
    largest_content,
    member_content,
    member_templates,
)
from copytrace.matching.templates import ContentCheck, TemplateConfig
from copytrace.matching.verify import VerifyConfig, load_rgb
from copytrace.matching.view_check import ViewCheck, shipped_view_check
from copytrace.pipelines.dedup.bridges import INCONSISTENT, bridges, drop_inconsistent
from copytrace.pipelines.dedup.candidates import (
    Candidate,
    descriptor_candidates,
    exact_pairs,
    pdq_candidates,
)
from copytrace.pipelines.dedup.composites import COMPOSITE, split_composites
from copytrace.pipelines.dedup.features import (
    ImageFeatures,
    catalog_digests,
    catalog_features,
)
from copytrace.pipelines.dedup.score import Kind, ScoredPair, build_jobs, run_jobs
from copytrace.pipelines.engine import QueryEngine, match_config
from copytrace.util.atomic import write_json_atomic, write_parquet_atomic

log = logging.getLogger(__name__)

PAIR_SCHEMA = pa.schema([
    ("image_id_a", pa.string()),
    ("image_id_b", pa.string()),
    ("score", pa.float64()),
    ("kind", pa.string()),  # exact | pdq | near
    ("similarity", pa.float32()),  # descriptor cosine (0 when not a neighbour)
    ("pdq_distance", pa.int32()),
    ("inliers", pa.int32()),
    ("coverage", pa.float32()),  # agreeing share of the non-template overlap
    ("template_cells", pa.int32()),  # overlap cells discounted as template
    ("view_score", pa.float32()),  # P(copy, not another photo of the object); null: unverified
    ("relation", pa.string()),  # duplicate | composite (one pasted into the other) | null: neither
    ("role_a", pa.string()),  # composite relations: composite | inserted | background
    ("role_b", pa.string()),
])
CANDIDATE_SCHEMA = PAIR_SCHEMA.append(pa.field("duplicate", pa.bool_())).append(
    pa.field("reason", pa.string()))
CLUSTER_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("cluster_id", pa.int64()),
    ("is_representative", pa.bool_()),
    ("keep", pa.bool_()),  # the keep policy's choice: drop the others
    ("cluster_size", pa.int32()),
])
AUDIT_FILE = "audit.json"
RAY_MIN_PAIRS = 2000
"""Below this many candidate pairs, starting Ray costs more than it saves."""
RAY_MIN_IMAGES = 20000
"""Below this many catalog images, the self-join runs in-process."""


@dataclass
class DedupReport:
    """What an audit found; the same facts as the files in `out`."""

    out: Path
    index: Path
    images: int
    pairs: list[ScoredPair]  # the duplicates
    candidates: list[ScoredPair]  # every scored pair
    clusters: list[list[str]]
    representatives: list[str]
    counts: dict = field(default_factory=dict)
    features: ImageFeatures | None = None  # PDQ + thumbnails of the audited images
    composites: list[ScoredPair] = field(default_factory=list)  # relations with roles

    @property
    def duplicates_to_drop(self) -> int:
        return sum(len(c) - 1 for c in self.clusters)


def is_index(path: str | Path) -> bool:
    return IndexLayout(Path(path)).manifest.exists()


def resolve_index(images_or_index: str | Path, out: Path, *, model: str, use_ray: bool | None,
                  ray_address: str | None, show_progress: bool) -> Path:
    """An existing index as is; a folder of images is indexed into AUDIT_DIR/index first."""
    if is_index(images_or_index):
        return Path(images_or_index)
    from copytrace.pipelines.build import build_index

    index = out / "index"
    build_index(images_or_index, index, model=model, use_ray=bool(use_ray) or bool(ray_address),
                ray_address=ray_address, show_progress=show_progress, pdq=True)
    return index


def rejection_reason(check: ContentCheck) -> str:
    """Why a pair failed the content check, as the report says it: "template only" when more
    of the agreement lies on template cells than on content (two photos in one frame), else
    "content disagrees" (e.g. a copy whose content was pasted over, template cells or not)."""
    on_template = check.agreeing_all - check.agreeing_content
    return "evidence on template only" if on_template > check.agreeing_content else \
        "content disagrees"


def decide(c: Candidate, query: str, other: str, score: float, ev: dict,
           threshold: float, views: ViewCheck | None = None) -> ScoredPair:
    """The audit's verdict on one scored pair (`score_jobs` evidence): content, not template;
    not another view of the object (`views`); then the threshold. `--against` uses it too."""
    check = ev["check"]
    pdq_hit = c.pdq_distance is not None
    if ev["inliers"] is None and pdq_hit:
        score = 1.0 - c.pdq_distance / 256.0
    content_ok = check is not None and check.passed
    v = ev.get("verification")
    coverage = None if check is None else check.coverage
    view = (views.probability(v, coverage, ev.get("shading"), ev.get("residuals"))
            if views is not None and v is not None else None)
    view_ok = view is None or view >= views.cut
    if check is None:
        reason = "no local geometry"
    elif not content_ok:
        reason = rejection_reason(check)
    elif not view_ok:
        reason = "another view of the object"
    elif not pdq_hit and score < threshold:
        reason = "below threshold"
    else:
        reason = "content match"
    duplicate = content_ok and view_ok and (pdq_hit or score >= threshold)
    return ScoredPair(c.a, c.b, Kind.PDQ if pdq_hit else Kind.NEAR, float(score), c.similarity,
                      c.pdq_distance, ev["inliers"],
                      None if check is None else round(check.coverage, 4),
                      None if check is None else check.template_cells, duplicate, reason,
                      query, ev["homography"], None if view is None else round(view, 4), v)


def score_candidates(cands: dict[tuple[str, str], Candidate], uris: dict[str, str],
                     features: ImageFeatures, *, engine: QueryEngine, threshold: float,
                     template_config: TemplateConfig, use_ray: bool | None,
                     ray_address: str | None, views: ViewCheck | None = None,
                     show_progress: bool = False) -> list[ScoredPair]:
    """Verify each candidate (a -> b, then b -> a when that failed) and decide it; `views`
    rejects verified pairs that look like two photos of one object (matching.view_check)."""
    templates = features.template_cells(sorted({x for key in cands for x in key}),
                                        template_config)
    use_ray = len(cands) >= RAY_MIN_PAIRS if use_ray is None else use_ray
    best = decide_both_ways(cands, uris, templates, threshold=threshold, views=views,
                            show_progress=show_progress,
                            **scorer_settings(engine, template_config, use_ray=use_ray,
                                              ray_address=ray_address))
    return sorted(best.values(), key=lambda p: (-p.score, p.a, p.b))


def scorer_settings(engine: QueryEngine, template_config: TemplateConfig, *, use_ray: bool,
                    ray_address: str | None) -> dict:
    """`run_jobs`' settings for pairs of `engine`'s index: its verifier settings, calibration and
    on-disk keypoint cache (the folder the engine chose, None when none is writable), Ray when
    asked for or when an address is given."""
    disk = engine.verifier.disk
    return dict(use_ray=use_ray or bool(ray_address), ray_address=ray_address,
                keypoint_dir=Path(disk) if disk else None,
                verify_config=engine.config.verify or VerifyConfig(),
                calibration=engine.calibration, template_config=template_config)


def decide_both_ways(cands: dict[tuple[str, str], Candidate], uris: dict[str, str],
                     templates: dict[str, np.ndarray], *, threshold: float,
                     views: ViewCheck | None, reverse: bool = True,
                     **scorer) -> dict[tuple[str, str], ScoredPair]:
    """Verify each candidate a -> b and `decide` it; with `reverse`, again b -> a where geometry
    was found but the (asymmetric) fused score or the content check fell short, e.g. a crop copy
    searched from its original. The better verdict per pair, keyed like `cands` ((a, b))."""
    best: dict[tuple[str, str], ScoredPair] = {}
    todo = list(cands.values())
    for backwards in ((False, True) if reverse else (False,)):
        for q, o, score, ev in run_jobs(build_jobs(todo, uris, reverse=backwards), templates,
                                        **scorer):
            key = (o, q) if backwards else (q, o)
            pair = decide(cands[key], q, o, score, ev, threshold, views)
            prev = best.get(key)
            if prev is None or (pair.duplicate, pair.score) > (prev.duplicate, prev.score):
                best[key] = pair
        todo = [c for c in todo if (p := best.get((c.a, c.b))) is not None and not p.duplicate
                and p.inliers is not None]
    return best


def consistent_pairs(pairs: list[ScoredPair], scored: list[ScoredPair], uris: dict[str, str],
                     features: ImageFeatures, *, engine: QueryEngine,
                     template_config: TemplateConfig, show_progress: bool = False
                     ) -> tuple[list[ScoredPair], list[ScoredPair]]:
    """`pairs` and `scored` with the inconsistent bridges re-decided (pipelines.dedup.bridges);
    `show_progress`: a bar over the bridge partners' pairs as they are verified."""
    found = bridges(pairs)
    if not found:
        return pairs, scored
    templates = features.template_cells(sorted({x for _, c, d in found for x in (c, d)}),
                                        template_config)
    kept, dropped = drop_inconsistent(
        pairs, uris, templates,
        **scorer_settings(engine, template_config, use_ray=False, ray_address=None),
        show_progress=show_progress)
    return kept, [dropped.get(frozenset((p.a, p.b)), p) for p in scored]


def image_facts(catalog: pa.Table, ids: set[str], policy: KeepPolicy) -> dict[str, ImageFacts]:
    rows = [r for r in catalog.to_pylist() if r["image_id"] in ids]
    order = {r: n for n, r in enumerate(catalog.column("image_id").to_pylist())}
    return {r["image_id"]: ImageFacts((r["width"] or 0) * (r["height"] or 0), r["bytes"] or 0,
                                      taken_time(r["uri"]) if policy is KeepPolicy.OLDEST
                                      else float("inf"), order[r["image_id"]]) for r in rows}


def keep_content(catalog: pa.Table, pairs: list[ScoredPair], members: set[str],
                 features: ImageFeatures | None, config: TemplateConfig) -> dict[str, Content]:
    """Content of the clustered catalog images, for `--keep largest` (matching.keep_rule)."""
    rows = {r["image_id"]: r for r in catalog.select(["image_id", "uri", "width", "height"])
            .to_pylist() if r["image_id"] in members}
    sizes = {i: (r["width"] or 0, r["height"] or 0) for i, r in rows.items()}
    templates = ({} if features is None else
                 member_templates(features.template_cells(sorted(rows), config), config=config))
    return member_content(sorted(rows), pairs, sizes, templates,
                          lambda i: load_rgb(rows[i]["uri"]), texture_std=config.texture_std)


def pick_representative(members: list[str], facts: dict[str, ImageFacts], keep: KeepPolicy,
                        content: dict[str, Content] | None) -> str:
    if keep is KeepPolicy.LARGEST and content and all(m in content for m in members):
        return largest_content(members, content, lambda m: (-facts[m].num_bytes, facts[m].order, m)
                               if m in facts else (0, 1 << 62, m))
    return representative(members, facts, keep)


def taken_time(uri: str) -> float:
    """EXIF DateTimeOriginal (or DateTime) as epoch seconds, else the file's modification time."""
    import datetime

    from PIL import Image

    try:
        with Image.open(uri) as img:
            exif = img.getexif()
            stamp = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
        if stamp:
            return datetime.datetime.strptime(str(stamp), "%Y:%m:%d %H:%M:%S").replace(
                tzinfo=datetime.timezone.utc).timestamp()
    except (OSError, ValueError):
        pass
    try:
        return os.path.getmtime(uri)
    except OSError:
        return float("inf")


def exact_scored(pairs: list[tuple[str, str]]) -> list[ScoredPair]:
    return [ScoredPair(a, b, Kind.EXACT, 1.0, 1.0, 0, None, 1.0, None, True, "same bytes")
            for a, b in pairs]


def relation(p: ScoredPair) -> str | None:
    return COMPOSITE if p.role_a or p.role_b else ("duplicate" if p.duplicate else None)


def pairs_table(pairs: list[ScoredPair], schema: pa.Schema = PAIR_SCHEMA) -> pa.Table:
    names = set(schema.names)
    rows = [{k: v for k, v in {
        "image_id_a": p.a, "image_id_b": p.b, "score": p.score, "kind": str(p.kind),
        "similarity": p.similarity, "pdq_distance": p.pdq_distance, "inliers": p.inliers,
        "coverage": p.coverage, "template_cells": p.template_cells, "view_score": p.view_score,
        "relation": relation(p), "role_a": p.role_a, "role_b": p.role_b,
        "duplicate": p.duplicate,
        "reason": p.reason}.items() if k in names} for p in pairs]
    return pa.Table.from_pylist(rows, schema=schema)


def clusters_table(clusters: list[list[str]], reps: list[str]) -> pa.Table:
    rows = [{"image_id": m, "cluster_id": n, "is_representative": m == rep, "keep": m == rep,
             "cluster_size": len(c)}
            for n, (c, rep) in enumerate(zip(clusters, reps, strict=True)) for m in c]
    return pa.Table.from_pylist(rows, schema=CLUSTER_SCHEMA)


def finish(out: Path, index: Path, catalog: pa.Table, pairs: list[ScoredPair],
           candidates: list[ScoredPair], *, keep: KeepPolicy, threshold: float,
           report: bool, extra: dict | None = None, listing: pa.Table | None = None,
           keep_only: set[str] | None = None, features: ImageFeatures | None = None,
           template_config: TemplateConfig | None = None,
           composites: list[ScoredPair] | None = None,
           show_progress: bool = False) -> DedupReport:
    """Clusters, Parquet tables, audit.json and the HTML report.

    `listing` (image_id, uri) names images beyond the catalog (incremental runs); `keep_only`
    limits which images may be a cluster's representative. `--keep largest` compares content
    pixels: a frame learned as template (`features`' thumbnails) does not count. `composites`
    (relations with roles) go into pairs.parquet after the duplicates, never into clusters."""
    composites = composites or []
    clusters = connected_groups((p.a, p.b) for p in pairs)
    members = {m for c in clusters for m in c}
    facts = image_facts(catalog, members, keep)
    content = (keep_content(catalog, pairs, members, features, template_config or TemplateConfig())
               if keep is KeepPolicy.LARGEST and members else None)
    reps = [pick_representative([m for m in c if keep_only is None or m in keep_only] or c, facts,
                                keep, content) for c in clusters]
    write_parquet_atomic(out / "pairs.parquet", pairs_table(pairs + composites))
    write_parquet_atomic(out / "candidates.parquet", pairs_table(candidates, CANDIDATE_SCHEMA))
    write_parquet_atomic(out / "clusters.parquet", clusters_table(clusters, reps))
    counts = {k: sum(1 for p in pairs if p.kind == k) for k in (Kind.EXACT, Kind.PDQ, Kind.NEAR)}
    counts[COMPOSITE] = len(composites)
    counts["rejected_template"] = sum(1 for p in candidates if p.reason.startswith("evidence on"))
    counts["rejected_other_view"] = sum(1 for p in candidates if p.reason.startswith("another view"))
    counts["rejected_inconsistent"] = sum(1 for p in candidates
                                          if p.reason.startswith(INCONSISTENT))
    result = DedupReport(out, index, catalog.num_rows, pairs, candidates, clusters, reps,
                         {str(k): v for k, v in counts.items()}, features, composites)
    write_json_atomic(out / AUDIT_FILE, {
        "index": str(Path(index).resolve()), "images": catalog.num_rows, "threshold": threshold,
        "keep": keep.value, "pairs": len(pairs), "clusters": len(clusters),
        "duplicates_to_drop": result.duplicates_to_drop, "counts": result.counts,
        **(extra or {})})
    if report:
        from copytrace.pipelines.dedup.report import write_report

        write_report(result, listing if listing is not None else catalog, threshold=threshold,
                     show_progress=show_progress)
    return result


def dedup(
    images_or_index: str | Path,
    out: str | Path,
    *,
    threshold: float = 0.5,
    keep: KeepPolicy | str = KeepPolicy.LARGEST,
    k: int = 5,
    band: float = 0.02,
    always_top: int = 2,
    crops: bool = True,
    view_check: bool = True,
    bridge_check: bool = True,
    model: str = "default",
    template_config: TemplateConfig | None = None,
    report: bool = True,
    use_ray: bool | None = None,
    ray_address: str | None = None,
    show_progress: bool = True,
) -> DedupReport:
    """Audit a folder (indexed into `out/index` first) or an existing index for duplicates.

    `threshold` is on the calibrated score (0.5 = the decision point); `band` is the global-only
    score from which a descriptor neighbour is verified, and the `always_top` best neighbours of
    each image are verified whatever their score; `k` neighbours per image are looked at, searched
    with the image's query crops too (`crops`). `view_check` rejects verified pairs whose
    geometry says "two photos of one object", not a copy (matching.view_check). `bridge_check`
    drops a pair that alone joins two groups whose other members share no content
    (pipelines.dedup.bridges).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keep = KeepPolicy(keep)
    template_config = template_config or TemplateConfig()
    index = resolve_index(images_or_index, out, model=model, use_ray=use_ray,
                          ray_address=ray_address, show_progress=show_progress)
    engine = QueryEngine.open(index, config=match_config(k=k, expand=False, verify=True))
    catalog = engine.index.catalog()
    catalog = catalog.filter(pc.equal(catalog.column("status"), "ok"))
    uris = dict(zip(catalog.column("image_id").to_pylist(), catalog.column("uri").to_pylist(),
                    strict=True))
    features = catalog_features(index, sorted(uris.items()), fallback_dir=out,
                                sha256=catalog_digests(catalog), pdq=catalog_pdq(catalog),
                                show_progress=show_progress)
    exact = exact_pairs(index)
    found: dict[tuple[str, str], Candidate] = {}
    pdq_candidates(features, found)
    descriptor_candidates(engine, found, uris=uris, k=k, min_score=band, always_top=always_top,
                          crops=crops, show_progress=show_progress, ray_address=ray_address,
                          use_ray=bool(ray_address) or (catalog.num_rows >= RAY_MIN_IMAGES
                                                        if use_ray is None else use_ray))
    for key in exact:
        found.pop(key, None)
    log.info("dedup: %d exact pairs, %d candidates to verify", len(exact), len(found))
    scored = score_candidates(found, uris, features, engine=engine, threshold=threshold,
                              template_config=template_config, use_ray=use_ray,
                              ray_address=ray_address,
                              views=shipped_view_check() if view_check else None,
                              show_progress=show_progress)
    pairs, composites, scored = split_composites(
        exact_scored(exact) + [p for p in scored if p.duplicate], scored)
    if bridge_check:
        pairs, scored = consistent_pairs(pairs, scored, uris, features, engine=engine,
                                         template_config=template_config,
                                         show_progress=show_progress)
    return finish(out, index, catalog, pairs, scored, keep=keep, threshold=threshold,
                  show_progress=show_progress,
                  report=report, features=features, template_config=template_config,
                  composites=composites,
                  extra={"band": band, "k": k, "always_top": always_top, "crops": crops,
                         "view_check": view_check, "bridge_check": bridge_check,
                         "template_config": asdict(template_config)})


def write_hash_matches(audit: DedupReport, hash_list: str | Path) -> int:
    """hash_matches.parquet: audited images within PDQ distance 31 of a listed hash; returns how
    many images matched."""
    from copytrace.pipelines.pdq_hashes import match_hash_list

    if audit.features is None:
        raise ValueError("this audit has no PDQ features to match")
    table = match_hash_list(audit.features.ids, audit.features.pdq, hash_list)
    write_parquet_atomic(audit.out / "hash_matches.parquet", table)
    return len(set(table.column("image_id").to_pylist()))
