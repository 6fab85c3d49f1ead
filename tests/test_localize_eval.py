"""Localization metrics and `copytrace eval localize`."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from skimage import data

from copytrace.benchmarks.localize_eval import pixel_scores, region_hits, score_mask, summarize


def _mask(shape, *boxes):
    m = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        m[y0:y1, x0:x1] = 255
    return m


def test_pixel_scores():
    truth = _mask((100, 100), (0, 0, 10, 10))
    pred = _mask((100, 100), (5, 0, 15, 10))  # half overlaps
    f1, iou = pixel_scores(pred, truth)
    assert f1 == pytest.approx(0.5) and iou == pytest.approx(50 / 150)
    assert pixel_scores(np.zeros((4, 4)), np.zeros((4, 4))) == (1.0, 1.0)
    assert pixel_scores(truth, np.zeros_like(truth)) == (0.0, 0.0)


def test_region_hits_need_box_iou_half():
    truth = _mask((200, 200), (10, 10, 50, 50), (100, 100, 150, 150))
    pred = _mask((200, 200), (12, 12, 52, 52), (140, 140, 190, 190))
    assert region_hits(pred, truth) == (1, 2)
    s = summarize([score_mask("a", pred, truth), score_mask("b", truth, truth)])
    assert s.region_hit_rate == pytest.approx(0.75) and s.images == 2


def test_cli_eval_localize_on_made_triples(tmp_path):
    from typer.testing import CliRunner

    from copytrace.app.cli import app

    rows = [("query", "original", "mask")]
    for name in ("astronaut", "coffee"):
        original = getattr(data, name)()
        edited = original.copy()
        edited[100:200, 150:260] = cv2.resize(data.rocket()[100:300, 200:400], (110, 100))
        truth = _mask(original.shape[:2], (150, 100, 260, 200))
        cv2.imwrite(str(tmp_path / f"{name}.png"), original[..., ::-1])
        cv2.imwrite(str(tmp_path / f"{name}_q.jpg"), edited[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
        cv2.imwrite(str(tmp_path / f"{name}_gt.png"), truth)
        rows.append((f"{name}_q.jpg", f"{name}.png", f"{name}_gt.png"))
    with open(tmp_path / "triples.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    res = CliRunner().invoke(app, ["eval", "localize", str(tmp_path / "triples.csv"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["summary"]["images"] == 2 and report["summary"]["failed"] == 0
    assert report["summary"]["iou"] > 0.5 and report["summary"]["region_hit_rate"] == 1.0


def test_truth_fragments_within_one_percent_are_one_object():
    from copytrace.benchmarks.localize_eval import truth_regions

    truth = _mask((400, 400), (100, 100, 110, 130), (114, 100, 124, 130), (300, 300, 340, 340))
    assert sorted(truth_regions(truth)) == [(100, 100, 124, 130), (300, 300, 340, 340)]


def test_region_hits_use_reported_boxes_and_known_objects():
    truth = _mask((200, 200), (10, 10, 50, 50), (60, 10, 100, 50))  # one edit in two pieces
    pred = truth.copy()
    assert region_hits(pred, truth, truth_boxes=[(10, 10, 100, 50)]) == (0, 1)  # pieces are not the object
    assert region_hits(pred, truth, truth_boxes=[(10, 10, 100, 50)], boxes=[(11, 10, 99, 50)]) == (1, 1)
