"""DISC2021 / ISC2021 matching-track metrics, defined once.

µAP pools every prediction of every query, sorts by score (ties broken pessimistically:
negatives first) and integrates precision over recall, where recall counts against the number
of ground-truth pairs, so a missed pair costs even if never predicted. R@P90 is the best
recall reached at precision ≥ 0.9; acc@1 is the share of ground-truth pairs whose reference
is the query's top prediction (ties count against it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroundTruthMatch:
    query: str
    reference: str


@dataclass(frozen=True)
class PredictedMatch:
    query: str
    reference: str
    score: float


@dataclass(frozen=True)
class Metrics:
    micro_ap: float
    recall_at_p90: float | None  # None: precision 0.9 is never reached
    threshold_at_p90: float | None
    acc_at_1: float
    recall_at_10: float
    num_predictions: int
    num_positives: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"uAP": self.micro_ap, "R@P90": self.recall_at_p90,
                "threshold@P90": self.threshold_at_p90, "acc@1": self.acc_at_1,
                "recall@10": self.recall_at_10, "predictions": self.num_predictions,
                "positives": self.num_positives}


def check_unique(predictions: list[PredictedMatch]) -> None:
    pairs = {(p.query, p.reference) for p in predictions}
    if len(pairs) != len(predictions):
        raise ValueError("predictions repeat a (query_id, reference_id) pair: keep one score each")


def precision_recall(labels: np.ndarray, scores: np.ndarray,
                     num_positives: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and threshold after each prediction, in decreasing-score order."""
    # lexsort: last key is primary -> by score desc, then negatives before positives
    order = np.lexsort((labels.astype(int), -scores))
    labels, scores = labels[order], scores[order]
    tp = np.cumsum(labels)
    precision = tp / np.arange(1, len(labels) + 1)
    recall = tp / max(1, num_positives)
    return precision, recall, scores


def micro_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * precision).sum())


def recall_at_precision(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray,
                        min_precision: float = 0.9) -> tuple[float | None, float | None]:
    ok = precision >= min_precision
    if not ok.any():
        return None, None
    best = int(np.argmax(np.where(ok, recall, -1)))
    return float(recall[best]), float(thresholds[best])


def ground_truth_ranks(gt: list[GroundTruthMatch], predictions: list[PredictedMatch]) -> np.ndarray:
    """0-based rank of each ground-truth reference in its query's predictions (ties pessimistic)."""
    by_query: dict[str, list[PredictedMatch]] = defaultdict(list)
    for p in predictions:
        by_query[p.query].append(p)
    missing = np.iinfo(np.int64).max
    ranks = []
    for g in gt:
        preds = by_query.get(g.query, [])
        hit = next((p for p in preds if p.reference == g.reference), None)
        ranks.append(missing if hit is None else sum(p.score >= hit.score for p in preds) - 1)
    return np.array(ranks, dtype=np.int64)


def evaluate(gt: list[GroundTruthMatch], predictions: list[PredictedMatch]) -> Metrics:
    check_unique(predictions)
    gt_set = {(g.query, g.reference) for g in gt}
    labels = np.array([(p.query, p.reference) in gt_set for p in predictions], dtype=bool)
    scores = np.array([p.score for p in predictions], dtype=np.float64)
    precision, recall, thresholds = precision_recall(labels, scores, len(gt))
    rp90, tp90 = recall_at_precision(precision, recall, thresholds, 0.9)
    ranks = ground_truth_ranks(gt, predictions)
    n = max(1, len(ranks))
    return Metrics(
        micro_ap=micro_average_precision(precision, recall) if len(labels) else 0.0,
        recall_at_p90=rp90, threshold_at_p90=tp90,
        acc_at_1=float((ranks == 0).sum() / n), recall_at_10=float((ranks < 10).sum() / n),
        num_predictions=len(predictions), num_positives=len(gt),
    )
