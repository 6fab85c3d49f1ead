"""Manipulation-diff localization on copies made here from scikit-image's bundled photos."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from copytrace.matching.localize import OUTSIDE, AlignmentError, localize
from copytrace.matching.overlay import overlay


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def _travel(image: np.ndarray, mask: np.ndarray, *, scale: float, crop: tuple[int, int, int, int],
            quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop (top, bottom, left, right pixels), resize, JPEG: the way copies are redistributed."""
    t, b, left, r = crop
    h, w = image.shape[:2]
    image, mask = image[t:h - b, left:w - r], mask[t:h - b, left:w - r]
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return _jpeg(image, quality), mask


def _pasted(name: str, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    original = getattr(data, name)()
    x, y, w, h = box
    patch = cv2.resize(data.rocket()[60:300, 150:400], (w, h), interpolation=cv2.INTER_AREA)
    edited = original.copy()
    edited[y:y + h, x:x + w] = patch
    mask = np.zeros(original.shape[:2], np.uint8)
    mask[y:y + h, x:x + w] = 255
    return original, edited, mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize(("name", "box", "scale", "crop", "quality"), [
    ("astronaut", (250, 170, 110, 90), 0.7, (15, 5, 20, 10), 75),
    ("coffee", (330, 60, 90, 120), 0.6, (0, 12, 8, 0), 70),
    ("chelsea", (40, 150, 100, 80), 0.9, (6, 6, 6, 6), 85),
])
def test_pasted_patch_is_found_in_travelled_copy(name, box, scale, crop, quality):
    original, edited, truth = _pasted(name, box)
    query, truth = _travel(edited, truth, scale=scale, crop=crop, quality=quality)
    result = localize(query, original)
    assert result.mask.shape == query.shape[:2]
    assert _iou(result.mask, truth) >= 0.5
    edits = list(result.edit_regions)
    assert edits and result.edited > 0.5
    x0, y0, x1, y1 = edits[0].box
    assert truth[y0:y1, x0:x1].mean() > 100  # the strongest region is on the patch


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_unedited_reencoded_copy_has_an_empty_mask(name):
    original = getattr(data, name)()
    query, _ = _travel(original, np.zeros(original.shape[:2], np.uint8), scale=0.75,
                       crop=(10, 4, 7, 12), quality=70)
    result = localize(query, original)
    assert (result.mask > 0).mean() < 0.005
    assert result.edited_fraction < 0.005


def test_colour_shifted_copy_is_not_an_edit():
    original = data.astronaut()
    shifted = np.clip(original.astype(np.float32) * [1.1, 0.95, 0.9] + [8, 0, -6], 0, 255).astype(np.uint8)
    result = localize(_jpeg(shifted, 80), original)
    assert result.edited_fraction < 0.005


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_added_text_is_found(name):
    from copytrace.benchmarks.localize_eval import box_iou

    original = getattr(data, name)()
    edited = original.copy()
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(edited, "FAKE NEWS", (40, 120), font, 1.6, (255, 255, 255), 4, cv2.LINE_AA)
    truth = np.zeros(original.shape[:2], np.uint8)
    cv2.putText(truth, "FAKE NEWS", (40, 120), font, 1.6, 255, 4, cv2.LINE_AA)
    query, truth = _travel(edited, truth, scale=0.75, crop=(0, 0, 0, 0), quality=75)
    result = localize(query, original)
    edits = [r.box for r in result.edit_regions]
    assert edits
    ys, xs = np.nonzero(truth)
    text_box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    boxes = np.array(edits)
    found = (int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max()))
    assert box_iou(found, text_box) >= 0.5  # the region-hit criterion of eval localize
    assert (result.mask[truth > 0] > 0).mean() > 0.9


def test_greyscale_copy_is_not_an_edit():
    original = data.astronaut()
    grey = cv2.cvtColor(cv2.cvtColor(original, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    result = localize(_jpeg(grey, 80), original)
    assert result.edited_fraction < 0.005


def test_mirrored_copy_is_registered_and_its_edit_found():
    original, edited, truth = _pasted("coffee", (330, 60, 90, 120))
    query, truth = _jpeg(np.ascontiguousarray(edited[:, ::-1]), 80), truth[:, ::-1]
    result = localize(query, original)
    assert result.registration.mirrored
    assert _iou(result.mask, truth) >= 0.5


def test_padding_is_added_content_not_an_edit():
    original = data.coffee()
    query = cv2.copyMakeBorder(original, 40, 40, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    query = _jpeg(query, 85)
    result = localize(query, original)
    added = [r for r in result.regions if r.kind == OUTSIDE]
    assert len(added) == 2
    top, bottom = sorted(added, key=lambda r: r.box[1])
    assert abs(top.box[1]) <= 2 and abs(top.box[3] - 40) <= 3
    assert abs(bottom.box[1] - (original.shape[0] + 40)) <= 3 and bottom.box[3] == query.shape[0]
    assert result.edited_fraction < 0.005
    assert 0.15 < result.added_fraction < 0.18  # 80 of 480 rows


def test_unrelated_image_cannot_be_registered():
    with pytest.raises(AlignmentError):
        localize(data.astronaut(), data.coffee())


def test_overlay_shows_three_panels():
    original, edited, _ = _pasted("astronaut", (250, 170, 110, 90))
    result = localize(edited, original)
    panel = overlay(edited, original, result, height=200)
    assert panel.shape[0] == 200 and panel.shape[2] == 3
    assert panel.shape[1] > 3 * 160


def test_overlay_outlines_each_region_in_its_kind_colour():
    from copytrace.matching.overlay import KIND_COLOURS

    original = data.coffee()
    edited = original.copy()
    cv2.putText(edited, "SALE", (40, 370), cv2.FONT_HERSHEY_DUPLEX, 2.0, (255, 255, 255), 4, cv2.LINE_AA)
    edited[60:180, 330:420] = cv2.resize(data.rocket()[60:300, 150:400], (90, 120))
    result = localize(_jpeg(edited, 85), original)
    kinds = sorted(r.kind for r in result.edit_regions)
    assert len(kinds) == 2 and "text" in kinds
    panel = overlay(edited, original, result, height=400)
    width = (panel.shape[1] - 16) // 3  # three panels of the same aspect, 8-pixel gaps
    copy_panel = panel[:, width + 8:2 * width + 8]
    for kind in kinds:
        assert (copy_panel == KIND_COLOURS[kind]).all(axis=2).sum() > 100  # box + label in the kind's colour


def _write(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), image[..., ::-1])
    return path


def test_cli_localize_writes_mask_overlay_and_json(tmp_path):
    from typer.testing import CliRunner

    from copytrace.app.cli import app

    original, edited, truth = _pasted("astronaut", (250, 170, 110, 90))
    query, truth = _travel(edited, truth, scale=0.7, crop=(15, 5, 20, 10), quality=80)
    q = _write(tmp_path / "q.jpg", query)
    o = _write(tmp_path / "o.png", original)
    res = CliRunner().invoke(app, ["localize", str(q), str(o), "--mask", str(tmp_path / "m.png"),
                                   "--overlay", str(tmp_path / "ov.png"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    mask = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == query.shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert _iou(mask, truth) >= 0.5
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["edited"] > 0.5 and report["registration"]["method"] == "keypoints"
    assert report["regions"][0]["kind"] != OUTSIDE and len(report["regions"][0]["box"]) == 4
    from copytrace.benchmarks.localize_eval import box_iou

    assert box_iou(tuple(report["regions"][0]["original_box"]), (250, 170, 360, 260)) >= 0.5
    assert cv2.imread(str(tmp_path / "ov.png")).shape[1] > 2 * query.shape[1] * 480 / query.shape[0]


def test_batch_localizes_predicted_pairs_and_records_failures(tmp_path):
    from copytrace.pipelines.localize import localize_batch

    qdir, rdir = tmp_path / "q", tmp_path / "r"
    qdir.mkdir()
    rdir.mkdir()
    original, edited, _ = _pasted("coffee", (330, 60, 90, 120))
    _write(rdir / "R1.png", original)
    _write(rdir / "R2.png", data.astronaut())
    _write(qdir / "Q1.jpg", _jpeg(edited, 80))
    _write(qdir / "Q2.jpg", _jpeg(data.chelsea(), 80))  # not a copy of R2
    preds = tmp_path / "preds.csv"
    with open(preds, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([("query_id", "reference_id", "score"), ("Q1", "R1", 0.9), ("Q1", "R2", 0.1),
                     ("Q2", "R2", 0.5), ("Q3", "R1", 0.7)])
    report = localize_batch(preds, queries=qdir, references=rdir, out=tmp_path / "out", use_ray=False)
    assert (report.pairs, report.done, report.failed, report.edited) == (3, 1, 2, 1)
    with open(report.summary, newline="") as fh:
        rows = {r["query_id"]: r for r in csv.DictReader(fh)}
    assert rows["Q1"]["reference_id"] == "R1" and float(rows["Q1"]["edited"]) > 0.5
    assert rows["Q1"]["method"] == "keypoints" and float(rows["Q1"]["confidence"]) > 0.7
    assert Path(rows["Q1"]["mask"]).is_file()
    assert "register" in rows["Q2"]["error"] and "no file" in rows["Q3"]["error"]


def _dev_data() -> Path | None:
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    root = Path(os.environ.get("COPYTRACE_DEV_DATA", default))
    return root if (root / "forgery" / "noso" / "triples.csv").is_file() else None


@pytest.mark.devdata
@pytest.mark.skipif(_dev_data() is None, reason="needs ../shared/data (or $COPYTRACE_DEV_DATA)")
def test_noso_copy_move_destination_is_found():
    from copytrace.descriptors.decode import decode_file

    noso = _dev_data() / "forgery" / "noso"
    original = decode_file(noso / "02.png").pixels
    forged = decode_file(noso / "02_mod.png").pixels
    truth = (np.abs(forged.astype(int) - original).max(axis=2) > 10).astype(np.uint8) * 255
    query, truth = _travel(forged, truth, scale=0.6, crop=(10, 10, 10, 10), quality=80)
    result = localize(query, original)
    assert (result.mask[truth > 0] > 0).mean() > 0.6  # most of the pasted destination is found


def test_cli_names_the_inputs_it_cannot_register(tmp_path):
    import subprocess
    import sys

    a = _write(tmp_path / "a.png", data.astronaut())
    b = _write(tmp_path / "b.png", data.coffee())
    exe = Path(sys.executable).with_name("copytrace")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([str(exe), "localize", str(a), str(b), "--mask", str(tmp_path / "m.png")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert "cannot register" in res.stderr and "a.png" in res.stderr
    assert not (tmp_path / "m.png").exists()


@pytest.mark.slow
def test_batch_runs_as_a_ray_job(tmp_path):
    pytest.importorskip("ray")
    from copytrace.pipelines.localize import localize_batch

    qdir, rdir = tmp_path / "q", tmp_path / "r"
    qdir.mkdir()
    rdir.mkdir()
    rows = [("query_id", "reference_id", "score")]
    for i, name in enumerate(["astronaut", "coffee", "chelsea"]):
        original, edited, _ = _pasted(name, (40, 60, 90, 80))
        _write(rdir / f"R{i}.png", original)
        _write(qdir / f"Q{i}.jpg", _jpeg(edited, 80))
        rows.append((f"Q{i}", f"R{i}", 1.0))
    with open(tmp_path / "preds.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    report = localize_batch(tmp_path / "preds.csv", queries=qdir, references=rdir, out=tmp_path / "out",
                            chunk_size=1, use_ray=True)
    assert (report.pairs, report.done, report.edited) == (3, 3, 3)
    assert len(list((tmp_path / "out").glob("*.mask.png"))) == 3


# --- edit objects, registration fallbacks (issue 14) -------------------------------------------

def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize(("name", "centre"), [("astronaut", (420, 90)), ("chelsea", (300, 120)),
                                              ("coffee", (430, 300))])
def test_two_percent_inpainted_patch_is_one_removed_region(name, centre):
    from copytrace.benchmarks.localize_eval import box_iou

    original = getattr(data, name)()
    h, w = original.shape[:2]
    side = round(np.sqrt(0.02 * h * w))  # 2 % of the photo
    truth = np.zeros((h, w), np.uint8)
    cv2.ellipse(truth, centre, (side // 2, side // 2), 0, 0, 360, 255, -1)
    edited = cv2.inpaint(original, truth, 7, cv2.INPAINT_TELEA)
    query, truth = _travel(edited, truth, scale=0.7, crop=(6, 3, 8, 4), quality=75)
    result = localize(query, original)
    edits = [r for r in result.edit_regions if r.confidence >= 0.5]  # what a person is shown as likely
    assert len(edits) == 1, result.edit_regions
    assert box_iou(edits[0].box, _box_of(truth)) >= 0.5
    assert edits[0].kind == "removed"
    assert (result.mask[truth == 0] > 0).mean() < 0.002  # at most specks elsewhere


@pytest.mark.parametrize(("name", "colour"), [("astronaut", (255, 255, 255)), ("coffee", (255, 230, 0)),
                                              ("chelsea", (0, 0, 0))])
def test_caption_is_one_text_region(name, colour):
    from copytrace.benchmarks.localize_eval import box_iou

    original = getattr(data, name)()
    edited = original.copy()
    truth = np.zeros(original.shape[:2], np.uint8)
    for img, c in ((edited, colour), (truth, 255)):
        cv2.putText(img, "BREAKING NEWS", (30, original.shape[0] - 40), cv2.FONT_HERSHEY_DUPLEX, 1.3, c, 3,
                    cv2.LINE_AA)
    query, truth = _travel(edited, truth, scale=0.8, crop=(4, 4, 4, 4), quality=80)
    result = localize(query, original)
    edits = result.edit_regions
    assert len(edits) == 1, edits
    assert edits[0].kind == "text"
    assert box_iou(edits[0].box, _box_of(truth > 0)) >= 0.5


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_unedited_reencoded_copy_yields_no_region(name):
    original = getattr(data, name)()
    query, _ = _travel(original, np.zeros(original.shape[:2], np.uint8), scale=0.65, crop=(9, 2, 3, 11),
                       quality=72)
    result = localize(query, original)
    assert result.edit_regions == () and not result.mask.any()


def _no_keypoints():
    """A configuration whose keypoint stage never holds, so the fallbacks are what registers."""
    from copytrace.matching.align import AlignConfig
    from copytrace.matching.localize import LocalizeConfig
    from copytrace.matching.register import RegisterConfig

    return LocalizeConfig(register=RegisterConfig(align=AlignConfig(max_side=640, min_matches=10 ** 6)))


def test_crop_resize_search_registers_when_keypoints_fail():
    original, edited, truth = _pasted("coffee", (330, 60, 90, 120))
    query, truth = _travel(edited, truth, scale=0.62, crop=(14, 3, 9, 17), quality=72)
    result = localize(query, original, config=_no_keypoints())
    reg = result.registration
    assert reg.method == "similarity" and reg.tried == ("keypoints",)
    assert reg.confidence > 0.7
    assert _iou(result.mask, truth) >= 0.5


def test_dense_matching_registers_a_large_crop_when_keypoints_fail():
    original, edited, truth = _pasted("astronaut", (250, 170, 110, 90))
    crop = (120, 40, 130, 60)  # a third of each axis gone: beyond what the crop/resize search tries
    query, truth = _travel(edited, truth, scale=0.8, crop=crop, quality=80)
    result = localize(query, original, config=_no_keypoints())
    assert result.registration.method == "dense"
    assert _iou(result.mask, truth) >= 0.5


def test_known_copy_always_gets_a_mask_with_low_confidence_when_nothing_registers():
    query = data.coffee()
    result = localize(query, data.astronaut(), assume_copy=True)
    assert result.registration.method == "best-guess" and result.registration.confidence < 0.3
    assert result.mask.shape == query.shape[:2]
    assert all(r.confidence < 0.65 for r in result.edit_regions)


def test_given_homography_is_used_first():
    original, edited, truth = _pasted("chelsea", (40, 150, 100, 80))
    query, truth = _travel(edited, truth, scale=0.5, crop=(0, 0, 0, 0), quality=85)
    H = np.diag([2.0, 2.0, 1.0])  # query pixels -> original pixels, as the verifier reports it
    result = localize(query, original, initial=H)
    assert result.registration.method == "given" and result.registration.tried == ()
    assert _iou(result.mask, truth) >= 0.5


@pytest.mark.parametrize(("a", "b"), [("00058", "00059"), ("00148", "00149")])
def test_glare_on_a_glossy_object_is_lighting_not_text(dev_data, a, b):
    """Two photos of one glossy object: the glare that moved between them is the same print
    under other light. It used to be labelled `text 1.00`, a false claim of an added caption."""
    def rgb(name: str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(dev_data / "ukbench" / f"ukbench{name}.jpg")), cv2.COLOR_BGR2RGB)

    kinds = [r.kind for r in localize(rgb(a), rgb(b), assume_copy=True).edit_regions]
    assert "text" not in kinds and "lighting" in kinds, kinds
