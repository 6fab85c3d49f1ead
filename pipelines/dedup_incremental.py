"""`copytrace dedup NEW_IMAGES --against IDX`: which new images duplicate the catalog, without
re-auditing the catalog. New images are queried through the query engine (search, verification,
calibration), hashed against the catalog's stored PDQ hashes and checked for identical bytes; the
content-not-template check uses template cells learned from the catalog."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copytrace.indexing.sources import list_sources
from copytrace.matching.clusters import KeepPolicy
from copytrace.matching.pdq import MATCH_DISTANCE, range_pairs
from copytrace.matching.templates import TemplateConfig, content_check, learn_templates
from copytrace.matching.verify import load_rgb
from copytrace.pipelines.dedup import DedupReport, finish
from copytrace.pipelines.dedup_features import as_features, catalog_features, compute_features
from copytrace.pipelines.dedup_score import Kind, ScoredPair
from copytrace.pipelines.query import query


def _sha256(uri: str) -> str | None:
    try:
        return hashlib.sha256(Path(uri).read_bytes()).hexdigest()
    except OSError:
        return None


def _near(new: dict[str, str], index: Path, rows: dict[str, int], templates: np.ndarray, *,
          k: int, threshold: float, catalog_uris: dict[str, str], config: TemplateConfig,
          images: str | Path, use_ray: bool | None, ray_address: str | None,
          show_progress: bool) -> list[ScoredPair]:
    out = []
    for result in query(images, index, k=k, use_ray=use_ray, ray_address=ray_address,
                        show_progress=show_progress):
        for m in result.matches:
            if m.score < min(threshold, 0.3) or "homography" not in m.evidence:
                continue
            check = content_check(load_rgb(new[result.query_id]),
                                  load_rgb(catalog_uris[m.reference_id]),
                                  np.asarray(m.evidence["homography"], np.float64),
                                  templates[rows[result.query_id]], config=config)
            ok = check.passed and m.score >= threshold
            reason = ("content match" if ok else "below threshold" if check.passed
                      else "evidence on template only" if check.template_cells
                      else "content disagrees")
            out.append(ScoredPair(result.query_id, m.reference_id, Kind.NEAR, m.score,
                                  m.similarity, None, m.evidence.get("inliers"),
                                  round(check.coverage, 4), check.template_cells, ok, reason,
                                  result.query_id))
    return out


def dedup_against(new_images: str | Path, index: str | Path, out: str | Path, *,
                  threshold: float = 0.5, keep: KeepPolicy | str = KeepPolicy.LARGEST, k: int = 5,
                  template_config: TemplateConfig | None = None, report: bool = True,
                  use_ray: bool | None = None, ray_address: str | None = None,
                  show_progress: bool = True) -> DedupReport:
    """Pairs (new image, catalog image) that are duplicates; `image_id_a` is the new image.

    In the clusters, the catalog's image is the one kept (the policy chooses among catalog
    images when a new image duplicates several)."""
    out, index = Path(out), Path(index)
    out.mkdir(parents=True, exist_ok=True)
    config = template_config or TemplateConfig()
    from copytrace.indexing.store import CopyIndex

    catalog = CopyIndex.open(index).catalog()
    catalog = catalog.filter(pc.equal(catalog.column("status"), "ok"))
    cat_uris = dict(zip(catalog.column("image_id").to_pylist(), catalog.column("uri").to_pylist(),
                        strict=True))
    cat_features = catalog_features(index, sorted(cat_uris.items()), fallback_dir=out,
                                    show_progress=show_progress)
    new = {s.image_id: s.uri for s in list_sources(new_images)}
    new_features = as_features(compute_features(sorted(new.items()), show_progress=show_progress))
    rows = new_features.rows()
    templates = learn_templates(cat_features.thumbs, config=config).template_cells(
        new_features.thumbs)
    by_sha: dict[str, list[str]] = {}
    for i, sha in zip(catalog.column("image_id").to_pylist(), catalog.column("sha256").to_pylist(),
                      strict=True):
        by_sha.setdefault(sha, []).append(i)
    pairs = [ScoredPair(n, c, Kind.EXACT, 1.0, 1.0, 0, None, 1.0, None, True, "same bytes")
             for n, uri in sorted(new.items()) for c in by_sha.get(_sha256(uri), [])]
    seen = {(p.a, p.b) for p in pairs}
    for hp in range_pairs(new_features.pdq, cat_features.pdq, max_distance=MATCH_DISTANCE):
        a, b = new_features.ids[hp.a], cat_features.ids[hp.b]
        if (a, b) in seen:
            continue
        check = content_check(load_rgb(new[a]), load_rgb(cat_uris[b]), _scaling(new[a], cat_uris[b]),
                              templates[rows[a]], config=config)
        pairs.append(ScoredPair(a, b, Kind.PDQ, 1.0 - hp.distance / 256.0, 0.0, hp.distance, None,
                                round(check.coverage, 4), check.template_cells, check.passed,
                                "content match" if check.passed else "evidence on template only",
                                a))
        seen.add((a, b))
    near = [p for p in _near(new, index, rows, templates, k=k, threshold=threshold,
                             catalog_uris=cat_uris, config=config, images=new_images,
                             use_ray=use_ray, ray_address=ray_address, show_progress=show_progress)
            if (p.a, p.b) not in seen]
    scored = pairs + near
    listing = pa.table({"image_id": list(new) + list(cat_uris), "uri": list(new.values())
                        + list(cat_uris.values())})
    facts_catalog = catalog  # keep policy chooses among catalog images only
    return finish(out, index, facts_catalog, [p for p in scored if p.duplicate], scored,
                  keep=KeepPolicy(keep), threshold=threshold, report=report,
                  extra={"against": str(index.resolve()), "new_images": str(new_images),
                         "new": len(new)}, listing=listing, keep_only=set(cat_uris),
                  features=new_features)


def _scaling(a_uri: str, b_uri: str) -> np.ndarray:
    """A PDQ match is a whole-image match: map A's frame onto B's."""
    from PIL import Image

    with Image.open(a_uri) as a, Image.open(b_uri) as b:
        return np.diag([b.width / a.width, b.height / a.height, 1.0])
