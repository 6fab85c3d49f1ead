"""`copytrace eval disc --report DIR`: the static HTML page, its plots and worst cases, in a browser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import browser
import pytest
from PIL import Image

from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.eval_report import worst_false_positives, worst_misses, write_disc_report
from copytrace.benchmarks.metrics import PredictedMatch

from photos import jpeg_bytes, photo

REFS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


@pytest.fixture(scope="module")
def disc(tmp_path_factory) -> tuple[Path, Path, Path, list[PredictedMatch]]:
    """References, cropped copies as queries (+ one non-copy), gt.csv and hand-set predictions."""
    root = tmp_path_factory.mktemp("disc")
    refs, queries = root / "references", root / "queries"
    refs.mkdir()
    queries.mkdir()
    for name in REFS:
        img = photo(name)
        (refs / f"{name}.jpg").write_bytes(jpeg_bytes(img))
        h, w = img.shape[:2]
        (queries / f"q_{name}.jpg").write_bytes(jpeg_bytes(img[h // 8:, w // 8:]))
    (queries / "q_none.jpg").write_bytes(jpeg_bytes(photo("moon")))
    gt = root / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"q_{n},{n}\n" for n in REFS) + "q_none,\n")
    preds = [PredictedMatch("q_astronaut", "astronaut", 0.97), PredictedMatch("q_chelsea", "chelsea", 0.91),
             PredictedMatch("q_coffee", "coffee", 0.35),  # a miss: right pair, low score
             PredictedMatch("q_coffee", "rocket", 0.62),  # a confident wrong answer
             PredictedMatch("q_rocket", "rocket", 0.88), PredictedMatch("q_none", "camera", 0.12)]
    # q_camera is never predicted: the worst miss
    return refs, queries, gt, preds


def test_worst_cases_order_and_notes(disc):
    _, _, gt_path, preds = disc
    gt, _ = read_ground_truth(gt_path)
    misses = worst_misses(gt, preds)
    assert [(c.query, c.reference) for c in misses] == [("q_camera", "camera"), ("q_coffee", "coffee")]
    assert misses[0].score is None and "no prediction" in misses[0].note
    assert misses[1].score == pytest.approx(0.35) and "rocket (0.620)" in misses[1].note
    wrong = worst_false_positives(gt, preds)
    assert [(c.query, c.reference) for c in wrong] == [("q_coffee", "rocket"), ("q_none", "camera")]
    assert wrong[0].note == "WRONG COPY VERDICT; true original: coffee"  # 0.62 >= 0.5
    assert wrong[1].note == "not a copy of anything indexed"  # 0.12: rightly no verdict


def test_report_is_one_self_contained_page(disc, tmp_path):
    refs, queries, gt, preds = disc
    baseline = [PredictedMatch(p.query, p.reference, p.score / 2) for p in preds]
    page = write_disc_report(tmp_path / "report", gt, preds, queries=queries, references=refs,
                             baselines={"halved": baseline})
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # no CDN, works offline
    sources = re.findall(r'src="([^"]+)"', text)
    assert "pr_curve.png" in sources and "score_histogram.png" in sources
    for src in sources:
        with Image.open(page.parent / src) as img:  # every referenced image exists and decodes
            assert min(img.size) > 0
    thumbs = [s for s in sources if s.startswith("thumbs/")]
    assert len(thumbs) == 8 and len(set(thumbs)) == 6  # 2 misses + 2 false positives; q_coffee made once
    with Image.open(page.parent / "pr_curve.png") as img:
        assert img.size == (600, 450)
    for label in ("µAP", "R@P90", "acc@1", "R@10", "halved", "q_camera", "never predicted"):
        assert label in text
    assert (page.parent / "metrics.json").is_file()


@pytest.mark.skipif(browser.chromium() is None, reason="no chromium installed")
def test_report_loads_in_a_headless_browser(disc, tmp_path):
    refs, queries, gt, preds = disc
    page = write_disc_report(tmp_path / "report", gt, preds, queries=queries, references=refs)
    check = browser.check_page(page.resolve().as_uri())
    assert check.title.startswith("copytrace")
    assert check.errors == []
    assert len(check.images) == 2 + 8 and check.broken_images == []


def test_browser_check_sees_a_broken_image(tmp_path):
    if browser.chromium() is None:
        pytest.skip("no chromium installed")
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><title>t</title><img src="missing.png">')
    check = browser.check_page(page.as_uri())
    assert check.broken_images == ["missing.png"]
    assert any("missing.png" in e or "ERR_FILE_NOT_FOUND" in e for e in check.errors)


def test_cli_eval_disc_report(disc, tmp_path):
    refs, queries, gt, preds = disc
    csv = tmp_path / "preds.csv"
    csv.write_text("query_id,reference_id,score\n" + "".join(f"{p.query},{p.reference},{p.score}\n"
                                                            for p in preds))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "80"}
    proc = subprocess.run([str(Path(sys.executable).parent / "copytrace"), "eval", "disc", "--gt", str(gt),
                           "--predictions", str(csv), "--queries", str(queries), "--references", str(refs),
                           "--report", str(tmp_path / "rep")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rep" / "index.html").is_file() and "index.html" in proc.stdout
    assert len(list((tmp_path / "rep" / "thumbs").glob("*.jpg"))) == 6


def _triples(root: Path) -> Path:
    """Two photos with another photo's patch pasted in (kind 'splice'), one untouched ('none')."""
    import cv2
    import numpy as np

    rows = [("query", "original", "mask", "kind")]
    for name, kind in (("astronaut", "splice"), ("coffee", "splice"), ("chelsea", "none")):
        original = photo(name)
        edited, truth = original.copy(), np.zeros(original.shape[:2], np.uint8)
        if kind == "splice":
            edited[100:200, 150:260] = cv2.resize(photo("rocket")[100:300, 200:400], (110, 100))
            truth[100:200, 150:260] = 255
        Image.fromarray(original).save(root / f"{name}.png")
        (root / f"{name}_q.jpg").write_bytes(jpeg_bytes(edited, 85))
        Image.fromarray(truth).save(root / f"{name}_gt.png")
        rows.append((f"{name}_q.jpg", f"{name}.png", f"{name}_gt.png", kind))
    (root / "triples.csv").write_text("".join(",".join(r) + "\n" for r in rows))
    return root / "triples.csv"


def test_eval_localize_report(tmp_path):
    import json

    from typer.testing import CliRunner

    from copytrace.app.cli import app

    triples = _triples(tmp_path)
    res = CliRunner().invoke(app, ["eval", "localize", str(triples), "--report", str(tmp_path / "rep"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["summary"]["images"] == 3 and data["report"].endswith("index.html")
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert set(summary) == {"splice", "none", "all"} and summary["splice"]["images"] == 2
    assert summary["splice"]["iou"] > 0.5  # the pasted patch is found
    page = Path(data["report"])
    sources = re.findall(r'src="([^"]+)"', page.read_text())
    assert "kind_f1.png" in sources and sum(s.startswith("overlays/") for s in sources) == 3
    for src in sources:
        with Image.open(page.parent / src) as img:
            assert min(img.size) > 0
    if browser.chromium() is not None:
        check = browser.check_page(page.resolve().as_uri())
        assert check.errors == [] and check.broken_images == [] and len(check.images) == len(sources)
