"""What the demo says about each query: the verdict at the decision threshold, whether that
verdict is right, and, when it is not, the likely reason in one sentence."""

from __future__ import annotations

from dataclasses import dataclass

from copytrace.benchmarks.demo_set import DemoCopy
from copytrace.matching import QueryResult

THRESHOLD = 0.5  # calibrated score from which the answer is "a copy" (README, Scores)


@dataclass(frozen=True)
class Verdict:
    copy: DemoCopy
    top: str | None  # top match's reference id
    score: float | None  # top match's calibrated score
    rank: int | None  # 1-based rank of the true original among the matches (None: not there)
    is_copy: bool  # the verdict: top score >= THRESHOLD
    correct: bool  # the verdict is right (a copy of the right original, or rightly no copy)
    why: str = ""  # for a wrong verdict: the likely reason
    inserted: bool = False  # the original was found as the `inserted` photo of a composite query

    @property
    def outcome(self) -> str:
        if not self.copy.original:
            return "rejected" if self.correct else "false alarm"
        if self.correct:
            return "found"
        return "wrong original" if self.is_copy else "missed"


def _rank(result: QueryResult, original: str) -> int | None:
    return next((i for i, m in enumerate(result.matches, 1) if m.reference_id == original), None)


def _why(c: DemoCopy, result: QueryResult, top: str | None, score: float, rank: int | None) -> str:
    if not c.original:
        return f"another view of the same scene scored {score:.2f} against {top}: similar, not a copy"
    pulled = {other: edit for edit, other in c.others.items()}
    where = (f"the original ranks {rank} ({result.matches[rank - 1].score:.2f})" if rank
             else "the original is not among the candidates")
    if rank and result.matches[rank - 1].score >= THRESHOLD:
        where += ", also a copy: the query holds both photos"
    if top and top != c.original and top in pulled:
        edit = pulled[top]
        if edit == "paste_into":
            return (f"image-in-image: {c.original} was pasted small into {top}, which is also "
                    f"indexed; the query is mostly {top}, so that match is real; {where}")
        return f"{edit} laid {top} (also indexed) over {c.original}, and {top} won; {where}"
    if top == c.original:
        inliers = result.matches[0].evidence.get("inliers")
        proof = f"{inliers} verified inliers" if inliers is not None else "no verified geometry"
        if "paste_into" in c.edits:
            return (f"image-in-image: {c.original} is only a small part of the query (pasted into "
                    f"{c.others.get('paste_into', 'another photo')}); it ranks first but scores "
                    f"{score:.2f} < {THRESHOLD} ({proof})")
        return (f"right original first, but {score:.2f} < {THRESHOLD}: "
                f"{'+'.join(c.edits)} left too little evidence ({proof})")
    if top is None:
        return "no candidate returned"
    return f"confused with {top} ({score:.2f}); {where}"


def judge(c: DemoCopy, result: QueryResult, *, threshold: float = THRESHOLD) -> Verdict:
    """The verdict on one demo query: a copy when the top match scores >= threshold."""
    top = result.matches[0] if result.matches else None
    score = top.score if top else 0.0
    is_copy = score >= threshold
    right_top = top is not None and top.reference_id == c.original
    rank = _rank(result, c.original) if c.original else None
    inserted = bool(rank) and _found_inserted(result.matches[rank - 1], threshold)
    correct = (is_copy and (right_top or inserted)) if c.original else not is_copy
    why = "" if correct else _why(c, result, top.reference_id if top else None, score, rank)
    return Verdict(c, top.reference_id if top else None, top.score if top else None, rank,
                   is_copy, correct, why, inserted and not right_top)


def _found_inserted(match, threshold: float) -> bool:
    """A query that holds two catalog photos: its original is a copy in its own right, with the
    role `inserted` (matching.roles); the top match is the photo it was pasted into."""
    return match.score >= threshold and match.evidence.get("role") == "inserted"
