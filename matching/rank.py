"""From query views to ranked, verified matches: search, normalize, merge views, fuse evidence.

The steps, each optional through `MatchConfig`: every view of every query is searched in one
FAISS call; each similarity is normalized by the view's own background neighbours; a reference
keeps its best normalized score over the views of a query; the best few are verified
(`matching.verify`, done by the caller so it can run them on Ray) and `finalize` turns global and
local evidence into one calibrated score per match, best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from copytrace.indexing.store import CopyIndex
from copytrace.matching.calibrate import Calibration, Decision, fused_score, global_score_only
from copytrace.matching.expand import Box, ExpandConfig, RotateConfig
from copytrace.matching.normalize import Background, NormalizeConfig, background_offsets
from copytrace.matching.results import Match
from copytrace.matching.roles import assign_roles
from copytrace.matching.verify import Unavailable, Verification, VerifyConfig
from copytrace.matching.view_check import ViewCheck


@dataclass(frozen=True)
class MatchConfig:
    """What `copytrace query` does beyond a plain global search; None switches a stage off."""

    k: int = 10  # matches returned per query
    search_k: int = 20  # neighbours fetched per view before views are merged
    normalize: NormalizeConfig | None = field(default_factory=NormalizeConfig)
    expand: ExpandConfig | None = field(default_factory=ExpandConfig)
    verify: VerifyConfig | None = field(default_factory=VerifyConfig)
    view_check: bool = True  # a verified copy whose geometry says "another photo" is capped below 0.5
    rotate: RotateConfig | None = field(default_factory=RotateConfig)  # 90/180/270 views, if unsure
    # Candidates verified for a query none of whose first `verify.top_k` the global score
    # accepts (the query path only; 0: no deeper pool). In a large catalog a copy the descriptor
    # barely sees ranks past 10: `match_config` sets `UNSURE_POOL`.
    unsure_k: int = 0

    @property
    def pool(self) -> int:
        """Candidates searched, verified and re-ranked per query before the best `k` are kept:
        at least the verified ones. The pool does not shrink with `k`, so for any k <= k' <= pool
        the top k is the prefix of the top k' (verification re-ranks within the pool only)."""
        if self.verify is None:
            return self.k
        return max(self.k, self.verify.top_k, self.unsure_k)

    def without_second_pass(self) -> MatchConfig:
        """No turned views (`rotate`), no small-region views (`expand.small_regions`) and no grid
        tiles (`expand.tile_grids`) for queries the first pass found nothing confident for
        (`copytrace query --no-second-pass`): about half the cost per query on a large catalog,
        and the copies only those views find are missed."""
        expand = (replace(self.expand, small_regions=0, tile_grids=())
                  if self.expand is not None else None)
        return replace(self, rotate=None, expand=expand)


@dataclass(frozen=True)
class Candidate:
    """A reference found by global search, before verification."""

    reference_id: str
    similarity: float  # best raw cosine over the query's views
    global_score: float  # best background-normalized similarity over views (raw if no background)
    view: str  # the view that gave `global_score`
    view_box: Box


@dataclass(frozen=True)
class QueryViews:
    """The searched views of one query: names and boxes, rows of the stacked vector matrix."""

    names: Sequence[str]
    boxes: Sequence[Box]


def candidates(index: CopyIndex, vectors: np.ndarray, views: Sequence[QueryViews], *,
               background: Background | None = None,
               config: MatchConfig = MatchConfig(),
               query_ids: Sequence[str] | None = None) -> list[list[Candidate]]:
    """Top `config.pool` candidates per query, merged over its views (rows of `vectors`, in
    order); the caller keeps the best `config.k` after verification (`finalize`).

    With `query_ids` (queries that are themselves catalog images, as in a dedup audit), a query
    never becomes its own candidate nor part of its own background.
    """
    total = sum(len(v.names) for v in views)
    if vectors.shape[0] != total:
        raise ValueError(f"{vectors.shape[0]} vectors for {total} views")
    if total == 0:
        return [[] for _ in views]
    neighbours = index.search(vectors, k=config.search_k)
    offsets: list[np.ndarray] | None = None
    if background is not None and config.normalize is not None:
        own = (None if query_ids is None else
               [qid for qid, qv in zip(query_ids, views, strict=True) for _ in qv.names])
        offsets = background_offsets(background, vectors,
                                     [[n.image_id for n in row] for row in neighbours],
                                     config=config.normalize, query_ids=own)
    out: list[list[Candidate]] = []
    row = 0
    for q, qv in enumerate(views):
        best: dict[str, Candidate] = {}
        for name, box in zip(qv.names, qv.boxes, strict=True):
            for j, n in enumerate(neighbours[row]):
                if query_ids is not None and n.image_id == query_ids[q]:
                    continue
                g = n.score - float(offsets[row][j]) if offsets is not None else n.score
                prev = best.get(n.image_id)
                sim = max(n.score, prev.similarity) if prev else n.score
                if prev is None or g > prev.global_score:
                    best[n.image_id] = Candidate(n.image_id, sim, g, name, tuple(box))
                else:
                    best[n.image_id] = Candidate(n.image_id, sim, prev.global_score, prev.view,
                                                 prev.view_box)
            row += 1
        ranked = sorted(best.values(), key=lambda c: (-c.global_score, c.reference_id))
        out.append(ranked[: config.pool])
    return out


def finalize(cands: Sequence[Candidate], verifications: Sequence[Verification | None] | None,
             *, calibration: Calibration, verified_count: int | None = None,
             decisions: Sequence[Decision] | None = None,
             view_check: ViewCheck | None = None, leading: int | None = None) -> list[Match]:
    """Matches with a calibrated score, best first.

    `verifications[i]` belongs to `cands[i]` for the first `verified_count` candidates (None:
    verification found no supported geometry); later candidates were not verified and are
    scored from the global similarity alone. With `decisions` (the decision band's verdict per
    candidate), exactly the candidates marked VERIFY hold a verification; the others are scored
    from the global similarity and their evidence says which way the band decided.

    With `view_check` (the dedup audit's "copy or another photo of the same object" model,
    `matching.view_check`), a verified pair scored a copy whose geometry and pixels say "a second
    photograph" is capped at `calibration.other_view_cap`, below the decision threshold; its
    evidence carries the check's probability.

    Copies verified in disjoint regions of the query get roles (`matching.roles`).

    With `leading`, a candidate past the first `leading` (a deeper pool probed for an unsure
    query, or the unverified tail) ranks after them unless it scores a copy: its score is not
    comparable with theirs (a failed verification scores lower than an unverified global
    similarity), and it must not push an original the first ones hold out of the top k.
    """
    n_verified = 0 if verifications is None else (verified_count if verified_count is not None
                                                  else len(verifications))
    matches, found = [], []
    for i, c in enumerate(cands):
        evidence: dict = {"global_score": round(c.global_score, 6), "view": c.view,
                          "view_box": list(c.view_box)}
        verified = (decisions[i] is Decision.VERIFY if decisions is not None and i < len(decisions)
                    else i < n_verified)
        if verified and verifications is not None:
            v = verifications[i]
            score = fused_score(c.global_score, v, calibration=calibration)
            if isinstance(v, Unavailable):  # scored from the global similarity, and said so
                evidence.update(verified="unavailable", verify_error=v.reason)
            else:
                evidence["verified"] = v is not None
                if v is not None:
                    evidence.update(v.as_evidence())
                    if view_check is not None and score >= THRESHOLD:
                        score = _other_view_capped(v, score, view_check, calibration, evidence)
        else:
            score = global_score_only(c.global_score, calibration=calibration)
            evidence["verified"] = None  # not attempted
            if decisions is not None and i < len(decisions):
                evidence["decided_by_global_score"] = decisions[i].value
        matches.append(Match(c.reference_id, score, c.similarity, evidence))
        found.append(v if verified and verifications is not None else None)
    assign_roles(matches, found)  # a composite query: which original was pasted into which
    behind = [leading is not None and i >= leading and m.score < THRESHOLD
              for i, m in enumerate(matches)]
    order = sorted(range(len(matches)), key=lambda i: (
        behind[i], -matches[i].score, -matches[i].similarity, matches[i].reference_id))
    return [matches[i] for i in order]


THRESHOLD = 0.5  # the calibrated score's decision threshold


def candidate_decisions(row: Sequence[Candidate], *, calibration: Calibration, top_k: int,
                        unsure_k: int = 0, verify_all: bool = False) -> list[Decision]:
    """The decision band's verdict (`verify_all`: VERIFY) for each of the first `top_k`
    candidates, or of the first `unsure_k` when the band accepts none of the first `top_k` (an
    unsure query: in a large catalog its original may rank past them)."""
    band = calibration.decision_band()
    by_band = [band.decide(global_score_only(c.global_score, calibration=calibration))
               for c in row[: max(top_k, unsure_k)]]
    depth = top_k if Decision.ACCEPT in by_band[:top_k] else max(top_k, unsure_k)
    return [Decision.VERIFY] * len(by_band[:depth]) if verify_all else by_band[:depth]


def _other_view_capped(v: Verification, score: float, view_check: ViewCheck,
                       calibration: Calibration, evidence: dict) -> float:
    """The score after the view check. The query path has no template model, so the check's
    content coverage is the verifier's overlap agreement (the share of the overlap whose pixels
    agree, which is what the content check measures off the template cells)."""
    p = view_check.probability(v, v.agreement, v.shading, (v.field_f, v.field_correlation))
    evidence["view_check"] = round(p, 4)
    evidence["residual_field"] = [round(v.field_f, 3), round(v.field_correlation, 3)]
    cut = view_check.cut if calibration.other_view_cut is None else calibration.other_view_cut
    if p >= cut:
        return score
    evidence["another_view"] = True
    return min(score, calibration.other_view_cap)
