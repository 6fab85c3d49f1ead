"""Copies shown small inside the query: a photo inside a screenshot frame, a photo pasted small
into another photo. Queries without a confident match also search the rectangles closed by four
straight steps (`matching.small_copies`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copytrace.benchmarks.dedup_planted import social_frame
from copytrace.matching.expand import iou
from copytrace.matching.small_copies import small_regions
from copytrace.pipelines.engine import QueryEngine, QueryTimings

from photos import jpeg_bytes, photo


def _screenshot(name: str, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`name` shrunk to `side` px wide inside a screenshot frame, and where it landed."""
    img = Image.fromarray(photo(name))
    small = img.resize((side, round(img.height * side / img.width)), Image.BILINEAR)
    framed = np.asarray(social_frame(small, 1))
    x0 = 16 + (448 - small.width) // 2
    y0 = 84 + (416 - small.height) // 2
    return framed, (x0, y0, x0 + small.width, y0 + small.height)


def _background() -> np.ndarray:
    """A made textured picture in no index (blurred colour noise, 600 x 400)."""
    noise = np.random.default_rng(7).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(noise).resize((150, 100)).resize((600, 400),
                                                                       Image.BICUBIC))


def _pasted(name: str, area: float) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    back = _background().copy()
    h, w = back.shape[:2]
    img = Image.fromarray(photo(name))
    s = (area * w * h / (img.width * img.height)) ** 0.5
    small = np.asarray(img.resize((round(img.width * s), round(img.height * s)), Image.BILINEAR))
    y, x = h // 5, w // 2
    back[y : y + small.shape[0], x : x + small.shape[1]] = small
    return back, (x, y, x + small.shape[1], y + small.shape[0])


def test_the_photo_inside_a_screenshot_frame_is_a_region():
    framed, truth = _screenshot("chelsea", 150)  # 150 x 99 px of a 480 x 640 frame: 4.8 %
    boxes = small_regions(framed, limit=2)
    assert boxes and max(iou(b, truth) for b in boxes) > 0.85, (boxes, truth)


def test_a_photo_pasted_small_into_another_photo_is_a_region():
    pasted, truth = _pasted("astronaut", 0.04)
    boxes = small_regions(pasted, limit=2)
    assert boxes and max(iou(b, truth) for b in boxes) > 0.85, (boxes, truth)


@pytest.fixture(scope="module")
def index(photos_index) -> Path:
    return photos_index


def test_a_screenshot_framed_copy_and_a_small_paste_are_found(index):
    """Chelsea at 4.8 % of a dark screenshot frame, the astronaut at 4 % of a made
    picture: by
    the global descriptor, the whole image, the centre crop and the large edge-bounded regions
    find no confident match (so in a large catalog the original can fall out of the verified
    pool; this 12-photo index verifies every photo); the small rectangle does, and
    verification on the whole query puts the inliers on it."""
    framed, framed_box = _screenshot("chelsea", 150)
    pasted, pasted_box = _pasted("astronaut", 0.04)
    queries = [jpeg_bytes(framed, 85), jpeg_bytes(pasted, 85)]
    with QueryEngine.open(index, device="cpu") as engine:
        timings = QueryTimings()
        on = [r.matches for r in engine.query(queries, k=3, timings=timings)]
        global_on = [r.matches for r in engine.query(queries, k=3, verify="off")]
        engine.config = replace(engine.config, expand=replace(engine.config.expand,
                                                              small_regions=0))
        off = [r.matches for r in engine.query(queries, k=3, verify="off")]
    for name, truth, found, by_global, before in (
            ("chelsea", framed_box, on[0], global_on[0], off[0]),
            ("astronaut", pasted_box, on[1], global_on[1], off[1])):
        top = found[0]
        assert top.reference_id == name and top.score >= 0.5, top
        assert top.evidence["view"].startswith("small"), top.evidence
        assert iou(tuple(top.evidence["view_box"]), truth) > 0.8, top.evidence
        assert top.evidence["verified"], top.evidence
        x0, y0, x1, y1 = top.evidence["query_box"]  # the inliers' box lies on the small photo
        inside = (max(x0, truth[0]), max(y0, truth[1]), min(x1, truth[2]), min(y1, truth[3]))
        assert iou(inside, (x0, y0, x1, y1)) > 0.9 and iou((x0, y0, x1, y1), truth) > 0.4
        assert by_global[0].reference_id == name and by_global[0].score >= 0.5, by_global[0]
        assert not before or before[0].reference_id != name or before[0].score < 0.5, before[0]
    assert timings.views >= 2 * (1 + 1 + 3)  # whole image, small region and its three turns


def test_turned_and_small_views_are_one_model_call(index):
    """A rotated copy and a screenshot-framed copy in one batch: each is found through its own
    family of extra views (turned whole image, small region), and both families go through the
    model in one call (`matching.extra_views`), not one call per family."""
    framed, _ = _screenshot("chelsea", 150)
    turned = np.ascontiguousarray(np.rot90(photo("astronaut"), k=1))
    queries = [jpeg_bytes(framed, 85), jpeg_bytes(turned)]
    calls = {"n": 0}
    with QueryEngine.open(index, device="cpu") as engine:
        embed = engine.embedder.embed_pixels

        def counted(pixels: np.ndarray) -> np.ndarray:
            calls["n"] += 1
            return embed(pixels)

        engine.embedder.embed_pixels = counted
        on = [r.matches[0] for r in engine.query(queries, k=3, verify="off")]
        with_passes = calls["n"]
        engine.config = replace(engine.config, rotate=None, expand=replace(
            engine.config.expand, small_regions=0))
        engine.query(queries, k=3, verify="off")
    assert on[0].reference_id == "chelsea" and on[0].evidence["view"].startswith("small"), on[0]
    assert on[1].reference_id == "astronaut" and on[1].evidence["view"] == "rot270", on[1]
    assert with_passes - (calls["n"] - with_passes) == 1


def test_small_region_views_join_an_unsure_querys_candidates():
    """`ViewFamily.merge` (the small regions): an unconfident query's candidates become the best
    over its first-pass and small-region views, even where the region's match is not confident
    by its global score (a small paste's view in a large catalog), so verification gets to see
    it; a family without `merge` (the turned views) still replaces only a confident top match."""
    from copytrace.matching.calibrate import load_calibration
    from copytrace.matching.extra_views import ExtraViews, ViewFamily, second_pass
    from copytrace.matching.rank import Candidate, QueryViews

    calibration = load_calibration(None, None)
    first = [[Candidate("background", 0.3, 0.1, "full", (0, 0, 100, 100))]]
    views = [QueryViews(["full"], [(0, 0, 100, 100)])]
    row = [Candidate("background", 0.3, 0.1, "full", (0, 0, 100, 100)),
           Candidate("pasted", 0.3, 0.09, "small0", (10, 10, 30, 30))]
    extra = ExtraViews(0, ["small0"], [(10, 10, 30, 30)], np.zeros((1, 8, 8, 3), np.uint8))

    def run(merge: bool) -> list[str]:
        family = ViewFamily("small", 0.5, [extra], merge=merge)
        out, embedded = second_pass(first, [np.zeros((1, 4))], views, families=[family],
                                    embed=lambda px: np.zeros((len(px), 4)),
                                    search=lambda v, qv: [row], calibration=calibration)
        assert embedded == 1
        return [c.reference_id for c in out[0]]

    assert run(merge=True) == ["background", "pasted"]
    assert run(merge=False) == ["background"]


def test_two_merging_families_keep_each_others_finds():
    """Small regions and grid tiles both merging (`ExpandConfig.tile_merge`): the query's
    candidates hold what each family's views found, as one search over all the views would (the
    best 3 of the pool); a later family's row does not replace an earlier one's."""
    from copytrace.matching.calibrate import load_calibration
    from copytrace.matching.extra_views import ExtraViews, ViewFamily, second_pass
    from copytrace.matching.rank import Candidate, QueryViews

    full = (0, 0, 100, 100)
    first = [[Candidate("background", 0.3, 0.1, "full", full)]]
    found = {"small0": Candidate("pasted", 0.3, 0.09, "small0", (10, 10, 30, 30)),
             "tile3-4": Candidate("oval", 0.35, 0.08, "tile3-4", (30, 30, 70, 70))}
    families = [ViewFamily(prefix, 0.5, [ExtraViews(0, [c.view], [c.view_box],
                                                    np.zeros((1, 8, 8, 3)))], merge=True)
                for prefix, c in zip(("small", "tile"), found.values(), strict=True)]

    def search(vectors: np.ndarray, views: list[QueryViews]) -> list[list[Candidate]]:
        filler = Candidate("other", 0.2, 0.01, "full", full)  # rows are pool-long: 3 here
        return [[*first[0], found[qv.names[-1]], filler] for qv in views]

    out, embedded = second_pass(first, [np.zeros((1, 4))], [QueryViews(["full"], [full])],
                                families=families, embed=lambda px: np.zeros((len(px), 4)),
                                search=search, calibration=load_calibration(None, None))
    assert embedded == 2
    assert [c.reference_id for c in out[0]] == ["background", "pasted", "oval"]
    assert out[0][2].similarity == 0.35
