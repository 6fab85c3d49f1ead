"""µAP, R@P90 and acc@1 against values worked out by hand (ISC2021 definitions)."""

from __future__ import annotations

import pytest

from copytrace.benchmarks.metrics import GroundTruthMatch as G
from copytrace.benchmarks.metrics import PredictedMatch as P
from copytrace.benchmarks.metrics import evaluate

GT = [G("q1", "r1"), G("q2", "r2"), G("q3", "r3"), G("q4", "r4")]


def test_hand_checked_micro_ap():
    # Sorted by score: q1r1 (TP), q2rX (FP), q2r2 (TP), q5r1 (FP), q3r3 (TP); q4 never found.
    # precision at each TP: 1/1, 2/3, 3/5; recall steps of 1/4 each.
    # uAP = (1 + 2/3 + 3/5) / 4 = 0.5666...
    preds = [P("q1", "r1", 0.9), P("q2", "rX", 0.8), P("q2", "r2", 0.7), P("q5", "r1", 0.6),
             P("q3", "r3", 0.5)]
    m = evaluate(GT, preds)
    assert m.micro_ap == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    # precision >= 0.9 only after the first prediction: recall 1/4
    assert m.recall_at_p90 == pytest.approx(0.25)
    assert m.threshold_at_p90 == pytest.approx(0.9)
    # rank-1 hits: q1 (yes), q2 (no: rX scores higher), q3 (yes), q4 (missing)
    assert m.acc_at_1 == pytest.approx(0.5)
    assert m.recall_at_10 == pytest.approx(0.75)


def test_ties_are_broken_pessimistically():
    # Same score for a TP and an FP: the FP counts first, so precision at the TP is 1/2.
    preds = [P("q1", "r9", 0.5), P("q1", "r1", 0.5)]
    m = evaluate([G("q1", "r1")], preds)
    assert m.micro_ap == pytest.approx(0.5)
    assert m.acc_at_1 == 0.0  # a tie at the top does not count as rank 1
    assert m.recall_at_p90 is None


def test_perfect_and_empty():
    assert evaluate(GT, [P(g.query, g.reference, 1.0) for g in GT]).micro_ap == pytest.approx(1.0)
    assert evaluate(GT, []).micro_ap == 0.0


def test_duplicate_pairs_rejected():
    with pytest.raises(ValueError, match="repeat"):
        evaluate(GT, [P("q1", "r1", 0.9), P("q1", "r1", 0.8)])
