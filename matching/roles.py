"""Two originals in one query: which catalog image was pasted into which.

When a photo is pasted into another photo and both are in the catalog, both verify as copies.
Their inliers then sit in different parts of the query: the pasted photo's inside its rectangle,
the other photo's all around it (the pasted rectangle hides the background there). That is what
tells a composite from two near-duplicate references (whose inliers share one region). The
matches get roles: `inserted` (occupies a region of the query) and `background` (fills the rest),
each with its region, the box of its inliers in query pixels. A copy the decision band accepted
unverified has no inliers: `accepted_to_verify` names the ones a query with two copies needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from copytrace.matching.calibrate import Calibration, Decision, fused_score, global_score_only
from copytrace.matching.results import Match
from copytrace.matching.verify import Unavailable, Verification

INSERTED = "inserted"
BACKGROUND = "background"


@dataclass(frozen=True)
class RoleConfig:
    """When two verified copies count as a composite."""

    threshold: float = 0.5  # only matches called copies get roles
    max_shared: float = 0.1  # share of the background's inliers allowed inside the inserted box
    min_enclosed: float = 0.5  # share of the inserted box inside the background's inlier box
    max_inserted_coverage: float = 0.6  # an inserted photo occupies a region, not the query


def assign_roles(matches: Sequence[Match], verifications: Sequence[Verification | None], *,
                 config: RoleConfig = RoleConfig()) -> None:
    """Add `role` and `region` to the evidence of the matches of a composite query, in place.

    `verifications[i]` belongs to `matches[i]` (None: not verified, or nothing found). The
    background is the verified copy with the largest query coverage; every other verified copy
    whose inlier box lies within the background's inliers yet holds almost none of them is
    inserted. Without an inserted match no evidence changes (a single match never has a role).
    """
    verified = [(m, v) for m, v in zip(matches, verifications, strict=True)
                if isinstance(v, Verification) and v.field_points is not None
                and len(v.field_points) and m.score >= config.threshold]
    if len(verified) < 2:
        return
    verified.sort(key=lambda mv: (-mv[1].query_coverage, mv[0].reference_id))
    split = split_roles([v.field_points[:, :2] for _, v in verified],
                        [v.query_coverage for _, v in verified], config=config)
    if split is None:
        return
    background, bv = verified[split[0]]
    background.evidence.update(role=BACKGROUND, region=list(bv.query_box))
    for j in split[1]:
        m, v = verified[j]
        m.evidence.update(role=INSERTED, region=list(v.query_box))


def split_roles(points: Sequence[np.ndarray], coverages: Sequence[float], *,
                config: RoleConfig = RoleConfig()) -> tuple[int, list[int]] | None:
    """(background, inserted) indexes among several partners' inlier points in ONE image (the
    composite; N x 2, one detection scale) and the share of it each covers, or None when none is
    inserted. The background covers the most (the first on ties); another partner is inserted
    when it covers at most `max_inserted_coverage`, its inlier box holds at most `max_shared` of
    the background's inliers and lies at least `min_enclosed` inside the background's inlier box.
    `assign_roles` (the query path) and the dedup audit's composites use this one rule."""
    if len(points) < 2:
        return None
    order = sorted(range(len(points)), key=lambda j: -coverages[j])
    back = order[0]
    bp = np.asarray(points[back])[:, :2]
    outer = (*bp.min(axis=0).tolist(), *bp.max(axis=0).tolist())
    inserted = [j for j in order[1:] if len(points[j])
                and coverages[j] <= config.max_inserted_coverage
                and _inside(bp, _points_box(points[j])) <= config.max_shared
                and _enclosed(_points_box(points[j]), outer) >= config.min_enclosed]
    return (back, inserted) if inserted else None


def _points_box(points: np.ndarray) -> tuple[float, float, float, float]:
    p = np.asarray(points)[:, :2]
    return (*p.min(axis=0).tolist(), *p.max(axis=0).tolist())


def _inside(points: np.ndarray, box: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = box
    within = ((points[:, 0] >= x0) & (points[:, 0] <= x1)
              & (points[:, 1] >= y0) & (points[:, 1] <= y1))
    return float(within.mean())


def _enclosed(inner: tuple[float, float, float, float],
              outer: tuple[float, float, float, float]) -> float:
    w = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    h = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = max(1e-6, (inner[2] - inner[0]) * (inner[3] - inner[1]))
    return w * h / area


def accepted_to_verify(global_scores: Sequence[float], decisions: Sequence[Decision],
                       verifications: Sequence[Verification | Unavailable | None], *,
                       calibration: Calibration, config: RoleConfig = RoleConfig()) -> list[int]:
    """Candidates the decision band accepted unverified that roles need verified: a query with
    an accepted copy (scored >= 0.5) beside another copy (accepted, or verified and scored >= 0.5)
    may hold two originals, and only their inliers tell which was pasted into which. Indexes into
    the candidates; empty for the common query with one copy (it costs nothing)."""
    accepted = [j for j, (g, d) in enumerate(zip(global_scores, decisions, strict=False))
                if d is Decision.ACCEPT
                and global_score_only(g, calibration=calibration) >= config.threshold]
    verified_copies = sum(
        1 for g, d, v in zip(global_scores, decisions, verifications, strict=False)
        if d is Decision.VERIFY and isinstance(v, Verification)
        and fused_score(g, v, calibration=calibration) >= config.threshold)
    return accepted if accepted and len(accepted) + verified_copies >= 2 else []
