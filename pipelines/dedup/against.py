"""`copytrace dedup NEW_IMAGES --against IDX`: which new images duplicate the catalog, without
re-auditing the catalog. New images are searched against the index (whole image plus crops,
background-normalized), hashed against the catalog's stored PDQ hashes and checked for identical
bytes; candidates are verified and decided by the full audit's own scorer and `decide`: the
content-not-template check (template cells learned from the catalog) and the view check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copytrace.indexing.catalog import catalog_pdq
from copytrace.indexing.sources import list_sources
from copytrace.matching.clusters import KeepPolicy
from copytrace.matching.pdq import MATCH_DISTANCE, range_pairs
from copytrace.matching.templates import TemplateConfig
from copytrace.matching.view_check import ViewCheck, shipped_view_check
from copytrace.pipelines.dedup.audit import DedupReport, decide_both_ways, finish, scorer_settings
from copytrace.pipelines.dedup.candidates import Candidate
from copytrace.pipelines.dedup.composites import split_composites
from copytrace.pipelines.dedup.features import (
    as_features,
    catalog_digests,
    catalog_features,
    compute_features,
)
from copytrace.pipelines.dedup.score import Kind, ScoredPair
from copytrace.pipelines.engine import QueryEngine, match_config


def _sha256(uri: str) -> str | None:
    try:
        return hashlib.sha256(Path(uri).read_bytes()).hexdigest()
    except OSError:
        return None


def _neighbours(engine: QueryEngine, new: dict[str, str], *, k: int, band: float,
                always_top: int, batch: int = 256) -> list[tuple[str, str, float, float]]:
    """(new id, catalog id, raw cosine, normalized global score) for the catalog neighbours worth
    verifying, chosen as the full audit chooses them: global-only calibrated score >= `band`, or
    among the `always_top` best of the new image."""
    ids = sorted(new)
    out = []
    for s in range(0, len(ids), batch):
        chunk = ids[s : s + batch]
        for result in engine.query([new[i] for i in chunk], k=k, verify="off", query_ids=chunk):
            out.extend((result.query_id, m.reference_id, float(m.similarity),
                        float(m.evidence.get("global_score", m.similarity)))
                       for r, m in enumerate(result.matches) if m.score >= band or r < always_top)
    return out


def _score(cands: dict[tuple[str, str], Candidate], new: dict[str, str], cat_uris: dict[str, str],
           templates: dict[str, np.ndarray], *, engine: QueryEngine, threshold: float,
           config: TemplateConfig, views: ViewCheck | None, use_ray: bool,
           ray_address: str | None, reverse: bool = True) -> list[ScoredPair]:
    """Verify new -> catalog and decide as the full audit does (`decide_both_ways`: content
    check, view check, threshold; with `reverse`, the catalog image tried as the query where
    geometry was found but fell short). `templates` must hold the catalog images' template cells
    too."""
    best = decide_both_ways(cands, {**cat_uris, **new}, templates, threshold=threshold,
                            views=views, reverse=reverse,
                            **scorer_settings(engine, config, use_ray=use_ray,
                                              ray_address=ray_address))
    return [best[k] for k in sorted(best)]


def dedup_against(new_images: str | Path, index: str | Path, out: str | Path, *,
                  threshold: float = 0.5, keep: KeepPolicy | str = KeepPolicy.LARGEST, k: int = 5,
                  band: float = 0.02, always_top: int = 2, view_check: bool = True,
                  template_config: TemplateConfig | None = None, report: bool = True,
                  use_ray: bool | None = None, ray_address: str | None = None,
                  show_progress: bool = True, reverse: bool = True) -> DedupReport:
    """Pairs (new image, catalog image) that are duplicates; `image_id_a` is the new image.

    Candidates (catalog neighbours of each new image within `band` or its `always_top` best, and
    PDQ matches) are verified and decided exactly as `dedup` decides its pairs: content, not
    template, and not another photo of the same object (`view_check`). In the clusters, the
    catalog's image is the one kept (the policy chooses among catalog images when a new image
    duplicates several). `reverse`: retry failed pairs with geometry from the catalog side.
    """
    out, index = Path(out), Path(index)
    out.mkdir(parents=True, exist_ok=True)
    config = template_config or TemplateConfig()
    engine = QueryEngine.open(index, config=match_config(k=k, verify=True))
    catalog = engine.index.catalog()
    catalog = catalog.filter(pc.equal(catalog.column("status"), "ok"))
    cat_uris = dict(zip(catalog.column("image_id").to_pylist(), catalog.column("uri").to_pylist(),
                        strict=True))
    cat_features = catalog_features(index, sorted(cat_uris.items()), fallback_dir=out,
                                    sha256=catalog_digests(catalog), pdq=catalog_pdq(catalog),
                                    show_progress=show_progress)
    new = {s.image_id: s.uri for s in list_sources(new_images)}
    new_features = as_features(compute_features(sorted(new.items()), show_progress=show_progress))
    model = cat_features.template_model(config)
    templates = dict(zip(new_features.ids, model.template_cells(
        new_features.thumbs(new_features.ids)), strict=True))
    by_sha: dict[str, list[str]] = {}
    for i, sha in zip(catalog.column("image_id").to_pylist(), catalog.column("sha256").to_pylist(),
                      strict=True):
        by_sha.setdefault(sha, []).append(i)
    pairs = [ScoredPair(n, c, Kind.EXACT, 1.0, 1.0, 0, None, 1.0, None, True, "same bytes")
             for n, uri in sorted(new.items()) for c in by_sha.get(_sha256(uri), [])]
    seen = {(p.a, p.b) for p in pairs}
    cands: dict[tuple[str, str], Candidate] = {}
    for a, b, sim, g in _neighbours(engine, new, k=k, band=band, always_top=always_top):
        c = cands.setdefault((a, b), Candidate(a, b))
        c.similarity = max(c.similarity, sim)
        c.global_ab = g if c.global_ab is None else max(c.global_ab, g)
    for hp in range_pairs(new_features.pdq, cat_features.pdq, max_distance=MATCH_DISTANCE):
        a, b = new_features.ids[hp.a], cat_features.ids[hp.b]
        cands.setdefault((a, b), Candidate(a, b)).pdq_distance = hp.distance
    for key in seen:
        cands.pop(key, None)
    if reverse:  # the catalog side queries too when the new side fell short
        templates.update(cat_features.template_cells(sorted({b for _, b in cands}), config))
    try:
        near = _score(cands, new, cat_uris, templates, engine=engine, threshold=threshold,
                      config=config, views=shipped_view_check() if view_check else None,
                      use_ray=bool(use_ray) or bool(ray_address), ray_address=ray_address,
                      reverse=reverse)
    finally:
        engine.close()
    scored = pairs + near
    listing = pa.table({"image_id": list(new) + list(cat_uris), "uri": list(new.values())
                        + list(cat_uris.values())})
    facts_catalog = catalog  # keep policy chooses among catalog images only
    dups, composites, scored = split_composites([p for p in scored if p.duplicate], scored)
    return finish(out, index, facts_catalog, dups, scored, composites=composites,
                  keep=KeepPolicy(keep), threshold=threshold, report=report,
                  extra={"against": str(index.resolve()), "new_images": str(new_images),
                         "new": len(new), "band": band, "k": k, "always_top": always_top,
                         "view_check": view_check}, listing=listing, keep_only=set(cat_uris),
                  features=new_features)

