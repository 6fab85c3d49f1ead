"""The view check in the query path: a second photograph of the same object stays below 0.5,
while digital copies (re-encoded, cropped, in perspective) keep their scores."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from copytrace.descriptors.model import load_descriptor
from copytrace.matching.calibrate import load_calibration
from copytrace.matching.rank import Candidate, finalize
from copytrace.matching.verify import VerifyConfig, prepare, verify_prepared
from copytrace.matching.view_check import shipped_view_check

from photos import jpeg_bytes, photo


def _jpeg(arr: np.ndarray, quality: int = 85) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(arr, quality))).convert("RGB"))


def _scores(query: np.ndarray, reference: np.ndarray) -> tuple[float, float, dict]:
    """The pair's calibrated score without and with the view check, and its evidence."""
    config = VerifyConfig()
    v = verify_prepared(prepare(query, config=config, with_mirror=True),
                        prepare(reference, config=config), config=config)
    assert v is not None
    cand = [Candidate("ref", 0.9, 0.5, "full", (0, 0, 1, 1))]
    calibration = load_calibration(None, load_descriptor("default").card)  # what a query uses
    off = finalize(cand, [v], calibration=calibration)[0]
    on = finalize(cand, [v], calibration=calibration, view_check=shipped_view_check())[0]
    return off.score, on.score, on.evidence


@pytest.mark.devdata
@pytest.mark.parametrize("other, ref", [(454, 452), (127, 124), (124, 125)])
def test_another_photo_of_the_same_box_is_not_called_a_copy(dev_data, other, ref):
    """UKBench 454 vs 452 (group 113), 127 vs 124 and 124 vs 125 (group 31; odd groups: never
    seen by a fit): two photos of one flat object from nearby viewpoints. One homography maps it.
    For 454/452 the fused score alone called it a copy until its inlier error was judged per
    keypoint size (`sized_residual`); for 127/124 it did until that error was capped
    (`SIZED_RESIDUAL_CAP`: 0.53 before, 0.40 now); for 124/125 it still does (0.83), and the
    smooth field of the inlier residuals says "second photograph"."""
    ref_img = np.asarray(Image.open(dev_data / "ukbench" / f"ukbench{ref:05d}.jpg").convert("RGB"))
    other_img = np.asarray(Image.open(dev_data / "ukbench" / f"ukbench{other:05d}.jpg"
                                      ).convert("RGB"))
    off, on, evidence = _scores(other_img, ref_img)
    assert on < 0.5, evidence
    if off >= 0.5:  # the fused score alone calls it a copy: the view check must catch it
        assert evidence.get("another_view"), evidence
    if other == 124:
        assert off >= 0.5  # the pair that exercises the check


def _perspective(image: np.ndarray, t: float) -> np.ndarray:
    h, w = image.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = np.float32([[t * w, 0], [w * (1 - t), t * h], [w, h], [0, h * (1 - t)]])
    return cv2.warpPerspective(image, cv2.getPerspectiveTransform(src, dst), (w, h))


@pytest.mark.parametrize("edit", ["jpeg", "crop", "perspective"])
def test_digital_copies_keep_their_scores(edit):
    ref = photo("astronaut")
    query = {"jpeg": lambda: _jpeg(ref, 60),
             "crop": lambda: _jpeg(np.ascontiguousarray(ref[60:420, 100:480])),
             "perspective": lambda: _jpeg(_perspective(ref, 0.08))}[edit]()
    off, on, evidence = _scores(query, ref)
    assert off >= 0.5 and on == off, evidence
