"""`copytrace localize` and `copytrace localize-batch`: files in, masks / overlays / JSON out.

The algorithm is `copytrace.matching.localize`; this module decodes files safely, writes the
outputs atomically and fans pairs out over Ray for batches. `localize_pair` never raises, so a
batch (or `copytrace query --localize`) records a bad pair and moves on.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from copytrace.descriptors.decode import DecodeError, decode_file
from copytrace.indexing.sources import list_sources
from copytrace.matching.isc_csv import best_per_query, read_predictions
from copytrace.matching.localize import AlignmentError, Localization, LocalizeConfig
from copytrace.matching.localize import localize as localize_arrays
from copytrace.matching.overlay import overlay as overlay_image
from copytrace.util.atomic import write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

SUMMARY_NAME = "localize.csv"


def _decode(path: str | Path) -> np.ndarray:
    try:
        return decode_file(path).pixels
    except DecodeError as exc:
        raise ValueError(f"cannot decode '{path}': {exc}") from None


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Atomic PNG write of a grey or RGB uint8 array."""
    pixels = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError(f"cannot encode PNG for '{path}'")
    return write_bytes_atomic(path, buf.tobytes())


def localize(
    query: str | Path,
    original: str | Path,
    *,
    mask: str | Path | None = None,
    overlay: str | Path | None = None,
    json_out: str | Path | None = None,
    max_side: int = 1024,
    assume_copy: bool = False,
    initial: np.ndarray | None = None,
    query_pixels: np.ndarray | None = None,
) -> Localization:
    """Localize the edits of the image `query` relative to `original` and write the outputs.

    At least one output is needed. MASK is query-sized, 255 on edits; OVERLAY is original |
    query | heatmap; JSON lists the edit objects (kind, tight query-pixel box, confidence), the
    overall 'edited' score and how the pair was registered. `assume_copy`: the pair is known to
    be a copy, so a mask is always written (with low confidence when the geometry is a best
    guess). `initial`: a known query -> original homography (the verifier's) to start
    registration from. `query_pixels`: the query already decoded (`query --localize` reuses the
    engine's `QueryImage`).
    """
    if mask is None and overlay is None and json_out is None:
        raise ValueError("nothing to write: give --mask, --overlay or --json")
    q = query_pixels if query_pixels is not None else _decode(query)
    o = _decode(original)
    try:
        result = localize_arrays(q, o, config=LocalizeConfig(max_side=max_side), initial=initial,
                                 assume_copy=assume_copy)
    except AlignmentError as exc:
        raise ValueError(f"cannot register '{query}' onto '{original}': {exc}") from None
    if mask is not None:
        write_png(mask, result.mask)
    if overlay is not None:
        write_png(overlay, overlay_image(q, o, result))
    if json_out is not None:
        write_json_atomic(json_out, {"query": str(query), "original": str(original), **result.to_json()})
    return result


@dataclass(frozen=True)
class PairOutcome:
    """One localized pair as recorded by a batch; `error` set when it could not be done."""

    query_id: str
    reference_id: str
    query: str
    reference: str
    score: float | None  # the retrieval score from the predictions, if any
    edited: float | None
    edited_fraction: float | None
    added_fraction: float | None
    regions: int
    mask: str | None
    json: str | None
    overlay: str | None
    error: str | None
    method: str | None = None  # how the pair was registered (keypoints, similarity, ...)
    confidence: float | None = None  # the registration's confidence, 0..1


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def localize_pair(
    query: str | Path,
    reference: str | Path,
    *,
    out_dir: str | Path,
    query_id: str | None = None,
    reference_id: str | None = None,
    score: float | None = None,
    overlay: bool = False,
    max_side: int = 1024,
    assume_copy: bool = False,
    initial: np.ndarray | None = None,
    query_pixels: np.ndarray | None = None,
) -> PairOutcome:
    """Localize one (query, matched reference) pair into out_dir; never raises.

    Writes `<query_id>__<reference_id>.mask.png` and `.json` (and `.overlay.png`). This is the
    call for `copytrace query --localize` on the top verified match.
    """
    qid = query_id or Path(query).stem
    rid = reference_id or Path(reference).stem
    stem = Path(out_dir) / f"{_safe(qid)}__{_safe(rid)}"
    paths = {"mask": f"{stem}.mask.png", "json": f"{stem}.json",
             "overlay": f"{stem}.overlay.png" if overlay else None}
    try:
        result = localize(query, reference, mask=paths["mask"], overlay=paths["overlay"],
                          json_out=paths["json"], max_side=max_side, assume_copy=assume_copy,
                          initial=initial, query_pixels=query_pixels)
    except Exception as exc:  # noqa: BLE001 - one bad pair must not stop a batch
        log.warning("localize %s vs %s failed: %s", qid, rid, exc)
        return PairOutcome(qid, rid, str(query), str(reference), score, None, None, None, 0,
                           None, None, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return PairOutcome(qid, rid, str(query), str(reference), score, result.edited, result.edited_fraction,
                       result.added_fraction, len(result.edit_regions),
                       paths["mask"], paths["json"], paths["overlay"], None, result.registration.method,
                       result.registration.confidence)


@dataclass(frozen=True)
class PairJob:
    query_id: str
    reference_id: str
    query: str
    reference: str
    score: float | None


def _id_paths(location: str | Path | None, index: str | Path | None = None) -> dict[str, str]:
    if index is not None:
        from copytrace.indexing.catalog import read_catalog
        from copytrace.indexing.manifest import IndexLayout

        t = read_catalog(IndexLayout(Path(index)).catalog_dir).select(["image_id", "uri"]).to_pylist()
        return {r["image_id"]: r["uri"] for r in t}
    if location is None:
        return {}
    return {s.image_id: s.uri for s in list_sources(location)}


def _chunks(items: Sequence[PairJob], size: int) -> Iterator[list[PairJob]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


def _run_chunk(jobs: list[PairJob], out_dir: str, overlay: bool, max_side: int) -> list[PairOutcome]:
    cv2.setNumThreads(1)  # one pair per core; Ray already runs one task per core
    return [localize_pair(j.query, j.reference, out_dir=out_dir, query_id=j.query_id,
                          reference_id=j.reference_id, score=j.score, overlay=overlay, max_side=max_side)
            for j in jobs]


@dataclass(frozen=True)
class BatchReport:
    pairs: int
    done: int
    failed: int
    edited: int  # pairs with at least one edit region
    summary: Path


def localize_batch(
    predictions: str | Path,
    *,
    queries: str | Path,
    references: str | Path | None = None,
    index: str | Path | None = None,
    out: str | Path,
    top: int | None = 1,
    min_score: float | None = None,
    overlay: bool = False,
    max_side: int = 1024,
    chunk_size: int = 8,
    use_ray: bool = True,
    ray_address: str | None = None,
) -> BatchReport:
    """Localize the edits of each predicted (query, reference) pair, as a Ray job.

    Ids resolve to files through the `queries` and `references` folders/listings (or the
    index's catalog for references). Writes per-pair outputs and `localize.csv` under `out`.
    """
    if references is None and index is None:
        raise ValueError("give --references (folder or listing) or --index to resolve reference ids")
    qpaths, rpaths = _id_paths(queries), _id_paths(references, index)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs, outcomes = [], []
    rows = read_predictions(predictions, require_score=False, min_score=min_score)
    for qid, rid, s in ((p.query_id, p.reference_id, p.score) for p in best_per_query(rows, top)):
        if qid not in qpaths or rid not in rpaths:
            missing = f"query id '{qid}'" if qid not in qpaths else f"reference id '{rid}'"
            outcomes.append(PairOutcome(qid, rid, qpaths.get(qid, ""), rpaths.get(rid, ""), s, None, None,
                                        None, 0, None, None, None, f"no file for {missing}"))
            continue
        jobs.append(PairJob(qid, rid, qpaths[qid], rpaths[rid], s))
    chunks = list(_chunks(jobs, chunk_size))
    if use_ray and len(chunks) > 1:
        import ray

        from copytrace.pipelines.ray_runtime import ensure_ray

        ensure_ray(ray_address)
        task = ray.remote(num_cpus=1)(_run_chunk)
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending: list = []
        for chunk in chunks:
            if len(pending) >= limit:
                ready, pending = ray.wait(pending, num_returns=1)
                outcomes.extend(o for r in ray.get(ready) for o in r)
            pending.append(task.remote(chunk, str(out_dir), overlay, max_side))
        outcomes.extend(o for r in ray.get(pending) for o in r)
    else:
        for chunk in chunks:
            outcomes.extend(_run_chunk(chunk, str(out_dir), overlay, max_side))
    summary = out_dir / SUMMARY_NAME
    fields = list(PairOutcome.__dataclass_fields__)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for o in sorted(outcomes, key=lambda o: (o.query_id, o.reference_id)):
                w.writerow(asdict(o))

    from copytrace.util.atomic import write_file_atomic

    write_file_atomic(summary, write)
    failed = sum(o.error is not None for o in outcomes)
    return BatchReport(pairs=len(outcomes), done=len(outcomes) - failed, failed=failed,
                       edited=sum(o.regions > 0 for o in outcomes), summary=summary)
