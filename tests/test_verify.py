"""Local verification on real photos: crops and pasted images verify with the right geometry;
another photo of the same object or a wider view of the reference's scene does not pass."""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from copytrace.matching.align import align
from copytrace.matching.calibrate import fused_score
from copytrace.matching.verify import VerifyConfig, prepare, verify_prepared

from photos import jpeg_bytes, photo


def _jpeg(arr: np.ndarray, quality: int = 85) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(arr, quality))).convert("RGB"))


def _verify(query: np.ndarray, reference: np.ndarray):
    config = VerifyConfig()
    return verify_prepared(prepare(query, config=config, with_mirror=True),
                           prepare(reference, config=config), config=config)


def _project(h: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    return cv2.perspectiveTransform(np.array(points, np.float64).reshape(-1, 1, 2), h).reshape(-1, 2)


def test_quarter_area_crop_verifies_and_maps_onto_its_region():
    ref = photo("astronaut")  # 512 x 512
    x0, y0, side = 200, 60, 256  # 25% of the area
    query = _jpeg(np.ascontiguousarray(ref[y0 : y0 + side, x0 : x0 + side]))
    v = _verify(query, ref)
    assert v is not None and v.inliers >= 30
    corners = [(0, 0), (side, 0), (side, side), (0, side)]
    expected = np.array([(x0 + x, y0 + y) for x, y in corners], np.float64)
    assert np.abs(_project(v.homography, corners) - expected).max() < 4.0
    bx0, by0, bx1, by1 = v.reference_box
    assert bx0 >= x0 - 4 and by0 >= y0 - 4 and bx1 <= x0 + side + 4 and by1 <= y0 + side + 4
    assert v.residual < 1.0 and v.photometric > 0.9
    assert not v.query_extends
    assert fused_score(0.1, v) >= 0.5


def test_image_pasted_at_40_percent_verifies_and_maps_back_to_the_whole_reference():
    ref = photo("chelsea")  # 451 x 300 cat
    background = photo("coffee")  # 600 x 400
    pw, ph = round(ref.shape[1] * 0.4 * 600 / 451), round(ref.shape[0] * 0.4 * 600 / 451)
    small = np.asarray(Image.fromarray(ref).resize((pw, ph), Image.BILINEAR))
    px, py = 310, 150
    query = background.copy()
    query[py : py + ph, px : px + pw] = small
    query = _jpeg(query)
    v = _verify(query, ref)
    assert v is not None and v.inliers >= 15
    pasted = [(px, py), (px + pw, py), (px + pw, py + ph), (px, py + ph)]
    rh, rw = ref.shape[:2]
    expected = np.array([(0, 0), (rw, 0), (rw, rh), (0, rh)], np.float64)
    assert np.abs(_project(v.homography, pasted) - expected).max() < 0.04 * rw
    qx0, qy0, qx1, qy1 = v.query_box
    assert qx0 >= px - 4 and qy0 >= py - 4 and qx1 <= px + pw + 4 and qy1 <= py + ph + 4
    assert v.seam > 1.0 and not v.query_extends  # the paste has a border: a copy
    assert fused_score(0.1, v) >= 0.5


def test_mirrored_copy_verifies_with_a_reflecting_homography():
    ref = photo("coffee")
    query = _jpeg(np.ascontiguousarray(ref[:, ::-1]))
    v = _verify(query, ref)
    assert v is not None and v.mirrored and v.inliers >= 30
    w = ref.shape[1]
    mapped = _project(v.homography, [(10, 50), (w - 10, 50)])
    assert np.abs(mapped - np.array([(w - 10, 50), (10, 50)])).max() < 4.0


@pytest.mark.devdata
def test_a_mirror_whose_direct_fit_locks_onto_a_symmetric_strip_is_still_a_copy(dev_data):
    """A plain horizontal mirror of a box with print (UKBench 150): the direct fit finds 15
    inliers on a mirror-symmetric strip (1.7 % of the query). That used to skip the mirror
    attempt (only tried under 15 inliers), so the copy scored 0.045 beside a 0.89 global
    similarity: a silent "not a copy"."""
    ref = np.asarray(Image.open(dev_data / "ukbench" / "ukbench00150.jpg").convert("RGB"))
    query = _jpeg(np.ascontiguousarray(ref[:, ::-1]), quality=95)  # (85: 14 inliers there)
    v = _verify(query, ref)
    assert v is not None and v.mirrored and v.inliers >= 100 and v.query_coverage > 0.3, v


def test_reference_that_is_a_crop_of_the_query_scene_is_not_its_original():
    scene = photo("astronaut")
    reference = _jpeg(np.ascontiguousarray(scene[100:400, 120:420]))  # a crop of the scene
    v = _verify(_jpeg(scene), reference)
    assert v is not None and v.inliers >= 30  # the geometry is right ...
    assert v.reference_in_query < 0.5 and v.query_extends  # ... but the query holds more
    assert fused_score(0.5, v) < 0.5


def test_another_view_of_the_same_scene_does_not_pass():
    """The stereo pair: same scene, camera moved sideways. Keypoints fit a homography on part of
    it, but parallax breaks the exact agreement a copy has."""
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    v = _verify(_jpeg(np.asarray(right)), np.asarray(left))
    assert v is not None
    assert fused_score(0.5, v) < 0.5, v.as_evidence()


def test_align_public_api_is_unchanged():
    ref = photo("chelsea")
    a = align(_jpeg(ref), ref)
    assert a is not None and a.inliers > 50 and a.homography.shape == (3, 3)


@pytest.mark.devdata
@pytest.mark.slow
def test_other_photos_of_the_same_object_do_not_pass(dev_data, tmp_path):
    """UKBench: four photos of one object, none a copy of another. The first photo of 12 groups
    is indexed, the 36 others are queried through the full default pipeline."""
    from copytrace.pipelines.build import build_index
    from copytrace.pipelines.query import query

    groups: dict[str, list[str]] = {}
    with open(dev_data / "ukbench" / "groups.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            groups.setdefault(row["group"], []).append(row["file"])
    refs, queries = tmp_path / "refs", tmp_path / "queries"
    refs.mkdir()
    queries.mkdir()
    for g in range(1, 24, 2):  # odd groups: never used to fit the calibration
        files = sorted(groups[str(g)])
        (refs / files[0]).symlink_to(dev_data / "ukbench" / files[0])
        for other in files[1:]:
            (queries / other).symlink_to(dev_data / "ukbench" / other)
    build_index(refs, tmp_path / "idx", use_ray=False, show_progress=False)
    results = query(queries, tmp_path / "idx", k=3, use_ray=False, show_progress=False)
    passed = [(r.query_id, m.reference_id, round(m.score, 3)) for r in results for m in r.matches
              if m.score >= 0.5]
    assert len(results) == 36 and all(r.matches for r in results)
    # Measured: 5 of 36 before the view check ran in the query path (3 were the ceramic fish tile
    # of group 13), 3 with it (two of group 13, ukbench00078 of group 19). What passes is flat
    # printed objects shot from nearby viewpoints: one homography maps the print exactly and its
    # pixels agree, as a copy's would. A regression guard, not the goal (which is 0).
    assert len(passed) <= 4, passed


def test_disk_keypoint_cache_never_serves_a_replaced_file(tmp_path):
    """A reference replaced at the same path is detected anew, not verified against the
    keypoints of the file that used to be there."""
    from copytrace.matching.verify import PreparedCache, load_rgb

    path = tmp_path / "ref.jpg"
    path.write_bytes(jpeg_bytes(photo("astronaut")))
    cache_dir = tmp_path / "keypoints"
    first = PreparedCache(load_rgb, disk=cache_dir).get(str(path))
    again = PreparedCache(load_rgb, disk=cache_dir)
    assert np.array_equal(again.get(str(path)).gray, first.gray) and again.misses == 1
    path.write_bytes(jpeg_bytes(photo("coffee")))
    replaced = PreparedCache(load_rgb, disk=cache_dir).get(str(path))
    fresh = PreparedCache(load_rgb).get(str(path))
    assert replaced.gray.shape == fresh.gray.shape and np.array_equal(replaced.gray, fresh.gray)
    assert not np.array_equal(replaced.gray, first.gray)


def _brute_force_matches(a: np.ndarray, b: np.ndarray, ratio: float) -> np.ndarray:
    """Mutual nearest neighbours passing the ratio test, the obvious way (full arg-min both
    ways; ties go to the lowest index, as `np.argmin` resolves them)."""
    d = np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(axis=2))
    first, back = d.argmin(axis=1), d.argmin(axis=0)
    out = []
    for i, j in enumerate(first):
        second = np.partition(d[i], 1)[1]
        if d[i, j] < ratio * second and back[j] == i:
            out.append((i, j))
    return np.array(out, np.int64).reshape(-1, 2)


def test_descriptor_matching_finds_the_mutual_ratio_test_matches():
    """On real SIFT descriptors of a photo and its edited copy, plus duplicated descriptors
    (exact ties: which of equal rows is the mutual match must not depend on the shortcut)."""
    from copytrace.matching.align import detect, match_descriptors

    ref = photo("coffee")
    a = detect(_jpeg(ref[20:, 30:], 70)).descriptors
    b = detect(ref).descriptors
    a = np.concatenate([a, a[:5], b[10:14]])  # repeated query rows; rows equal to some of b
    b = np.concatenate([b, b[:3]])  # repeated reference columns
    got = match_descriptors(a, b, 0.8)
    assert len(got) > 50
    np.testing.assert_array_equal(got, _brute_force_matches(a, b, 0.8))
    np.testing.assert_array_equal(match_descriptors(a, b, 0.8), got)  # no state kept


def test_matching_runs_on_one_blas_thread_and_restores_it():
    from threadpoolctl import threadpool_info

    from copytrace.matching.verify import one_blas_thread

    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    with one_blas_thread():
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


def test_a_pool_worker_matches_on_one_blas_thread():
    """The pool initializer, in a real fresh process: BLAS threads there would fight the other
    workers for the same cores."""
    import subprocess
    import sys

    code = ("from threadpoolctl import threadpool_info\n"
            "from copytrace.matching.verify import VerifyConfig, init_worker\n"
            "init_worker(VerifyConfig(), 8, None)\n"
            "print(sorted({i['num_threads'] for i in threadpool_info() "
            "if i['user_api'] == 'blas'}))\n")
    env = {**__import__("os").environ, "OPENBLAS_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120).stdout
    assert out.strip() == "[1]"
