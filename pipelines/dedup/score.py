"""Score dedup candidates: local verification (the query engine's verifier and calibration) and
the content-not-template check, in one pass per query image (in-process or as Ray tasks)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from copytrace.matching.calibrate import Calibration, fused_score
from copytrace.matching.templates import ContentCheck, TemplateConfig, content_check
from copytrace.matching.verify import (
    Prepared,
    PreparedCache,
    Unavailable,
    Verification,
    VerifyConfig,
    load_rgb,
    verify_batch,
)
from copytrace.matching.view_check import residual_field, shading_residual
from copytrace.pipelines.dedup.candidates import Candidate
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

PAIRS_PER_TASK = 48


class Kind(str, Enum):
    """What proves a duplicate pair: the same bytes, a PDQ match, or a verified near copy."""

    EXACT = "exact"
    PDQ = "pdq"
    NEAR = "near"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ScoredPair:
    """A candidate after scoring; `duplicate` is the decision at the audit's threshold."""

    a: str
    b: str
    kind: str
    score: float  # calibrated P(copy); 1 for exact; PDQ similarity for unverified PDQ matches
    similarity: float
    pdq_distance: int | None
    inliers: int | None
    coverage: float | None  # agreeing share of the non-template overlap (content check)
    template_cells: int | None  # overlap cells discounted as template
    duplicate: bool
    reason: str  # why kept or rejected, for the audit trail
    query: str = ""  # which of a/b was the verification query (homography goes query -> other)
    homography: tuple[float, ...] = ()
    view_score: float | None = None  # P(copy, not another photo of the object) from the geometry
    verification: Verification | None = field(default=None, repr=False, compare=False)
    role_a: str | None = None  # composite relations (pipelines.dedup.composites): "composite",
    role_b: str | None = None  # "inserted" or "background"; None on plain pairs

    def other(self, image: str) -> str:
        """The pair's other end from `image`."""
        return self.b if image == self.a else self.a


@dataclass(frozen=True)
class ScoreJob:
    query: str
    query_uri: str
    others: list[tuple[str, str, float]]  # (image id, uri, normalized global score)


def _best(query_uri: str, others: Sequence[tuple[str, str, float]], config: VerifyConfig,
          calibration: Calibration, cache: PreparedCache) -> list[tuple[Verification | None, float]]:
    row = verify_batch([(query_uri, [u for _, u, _ in others])], config=config, cache=cache)[0]
    return [(v, fused_score(g, v, calibration=calibration)) for v, (_, _, g) in zip(row, others,
                                                                                    strict=True)]


def score_jobs(jobs: Sequence[ScoreJob], templates: dict[str, np.ndarray], *,
               verify_config: VerifyConfig, calibration: Calibration,
               template_config: TemplateConfig, keypoint_dir: Path | None = None,
               advance: Callable[[int], None] | None = None
               ) -> list[tuple[str, str, float, dict]]:
    """(query, other, score, evidence) for every pair of every job. Runs as one Ray task.

    `keypoint_dir`: the index's keypoint cache, shared with `copytrace query`; `advance(n)` is
    told after each job how many pairs it held (a progress bar, when run in-process)."""
    cache = PreparedCache(load_rgb, config=verify_config, capacity=256, disk=keypoint_dir)
    out = []
    for job in jobs:
        out.extend(_score_job(job, templates, cache, verify_config=verify_config,
                              calibration=calibration, template_config=template_config))
        if advance is not None:
            advance(len(job.others))
    return out


def _score_job(job: ScoreJob, templates: dict[str, np.ndarray], cache: PreparedCache, *,
               verify_config: VerifyConfig, calibration: Calibration,
               template_config: TemplateConfig) -> list[tuple[str, str, float, dict]]:
    """One query's pairs: verified, content-checked, with the view check's residuals."""
    out: list[tuple[str, str, float, dict]] = []
    try:
        scored = _best(job.query_uri, job.others, verify_config, calibration, cache)
    except Exception as exc:  # noqa: BLE001 - one unreadable image must not sink the audit
        log.warning("dedup: cannot verify '%s': %s", job.query_uri, exc)
        return []
    pixels = None
    for (other, uri, _), (v, score) in zip(job.others, scored, strict=True):
        ev: dict = {"inliers": None, "check": None, "homography": ()}
        if isinstance(v, Unavailable):  # unreadable image: scored from the global score
            log.warning("dedup: cannot verify '%s' vs '%s': %s", job.query, other, v.reason)
        elif v is not None:
            ev["inliers"] = v.inliers
            ev["verification"] = v
            ev["homography"] = tuple(float(x) for x in v.homography.reshape(-1))
            try:
                pixels = load_rgb(job.query_uri) if pixels is None else pixels
                other_pixels = load_rgb(uri)
                check: ContentCheck = content_check(
                    pixels, other_pixels, v.homography,
                    templates.get(job.query, np.zeros((16, 16), bool)),
                    config=template_config)
                ev["check"] = check
                ev["shading"] = shading_residual(pixels, other_pixels, v.homography)
                # only where the view check can change the verdict (it follows content)
                ev["residuals"] = (_residuals(cache, job.query_uri, uri, v, verify_config)
                                   if check.passed else None)
            except Exception as exc:  # noqa: BLE001
                log.warning("dedup: content check of '%s' vs '%s' failed: %s", job.query,
                            other, exc)
        out.append((job.query, other, score, ev))
    return out


def _residuals(cache: PreparedCache, query_uri: str, uri: str, v: Verification,
               config: VerifyConfig) -> tuple[float, float] | None:
    """The pair's `residual_field`, from both images' keypoints in the scorer's keypoint cache
    (on disk for catalog images); None when either cannot be read."""
    q, o = cache.get(query_uri), cache.get(uri)
    if not (isinstance(q, Prepared) and isinstance(o, Prepared)):
        return None
    return residual_field(q.keypoints, o.keypoints, v.homography, mirrored=v.mirrored,
                          config=config.align)


def build_jobs(cands: Sequence[Candidate], uris: dict[str, str], *, reverse: bool = False
               ) -> list[ScoreJob]:
    """One job per query image: a (or b when `reverse`) against the others of its pairs."""
    groups: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for c in cands:
        q, o = (c.b, c.a) if reverse else (c.a, c.b)
        g = (c.global_ba if reverse else c.global_ab)
        g = g if g is not None else (c.global_ab if reverse else c.global_ba)
        groups[q].append((o, uris[o], g if g is not None else 0.0))
    return [ScoreJob(q, uris[q], others) for q, others in sorted(groups.items())]


def run_jobs(jobs: list[ScoreJob], templates: dict[str, np.ndarray], *, use_ray: bool,
             ray_address: str | None, verify_config: VerifyConfig, calibration: Calibration,
             template_config: TemplateConfig, keypoint_dir: Path | None = None,
             show_progress: bool = False, label: str = "verifying pairs"
             ) -> list[tuple[str, str, float, dict]]:
    """Every job's scored pairs, in job order, in-process or as Ray tasks of ~PAIRS_PER_TASK
    pairs; `show_progress`: a bar (`label`) over the pairs as they are verified."""
    kwargs = dict(verify_config=verify_config, calibration=calibration,
                  template_config=template_config, keypoint_dir=keypoint_dir)
    total = sum(len(j.others) for j in jobs)
    with progress_bar(label, total, enabled=show_progress and total > 0) as advance:
        if not use_ray:
            return score_jobs(jobs, templates, advance=advance, **kwargs)
        return _run_on_ray(jobs, templates, ray_address, advance, kwargs)


def _run_on_ray(jobs: list[ScoreJob], templates: dict[str, np.ndarray], ray_address: str | None,
                advance: Callable[[int], None], kwargs: dict) -> list[tuple[str, str, float, dict]]:
    import ray

    from copytrace.pipelines.ray_runtime import ensure_ray

    ensure_ray(ray_address)
    task = ray.remote(num_cpus=1)(score_jobs)
    chunks, size, current = [], 0, []
    for job in jobs:
        current.append(job)
        size += len(job.others)
        if size >= PAIRS_PER_TASK:
            chunks.append(current)
            current, size = [], 0
    if current:
        chunks.append(current)
    futures = [task.remote(c, {j.query: templates.get(j.query) for j in c if j.query in templates},
                           **kwargs) for c in chunks]
    parts: list[list | None] = [None] * len(futures)
    pending = {f: i for i, f in enumerate(futures)}
    while pending:  # results keep the job order whatever order the tasks finish in
        done, _ = ray.wait(list(pending), num_returns=1)
        for f in done:
            i = pending.pop(f)
            parts[i] = ray.get(f)
            advance(sum(len(j.others) for j in chunks[i]))
    return [row for part in parts for row in part]
