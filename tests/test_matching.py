"""Matching end to end with real photos, the real descriptor and FAISS: normalization, query
views, verification and the calibrated score through `copytrace.pipelines.query`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from copytrace.descriptors.model import load_descriptor
from copytrace.matching.expand import ExpandConfig, pasted_regions, query_views, trimmed_box
from copytrace.matching.normalize import Background, NormalizeConfig, background_offsets

from photos import jpeg_bytes, photo

INDEXED = ("astronaut", "chelsea", "rocket", "hubble_deep_field", "coins", "moon", "camera",
           "brick", "grass", "motorcycle_left")


def _motorcycle(side: str) -> np.ndarray:
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    return np.asarray(left if side == "left" else right)


def _image(name: str) -> np.ndarray:
    return _motorcycle("left") if name == "motorcycle_left" else photo(name)


def _pasted(fg: np.ndarray, bg: np.ndarray, fraction: float, at: tuple[int, int]) -> tuple:
    h, w = bg.shape[:2]
    scale = fraction * min(w / fg.shape[1], h / fg.shape[0])
    pw, ph = round(fg.shape[1] * scale), round(fg.shape[0] * scale)
    out = bg.copy()
    out[at[1] : at[1] + ph, at[0] : at[0] + pw] = np.asarray(
        Image.fromarray(fg).resize((pw, ph), Image.BILINEAR))
    return out, (at[0], at[1], at[0] + pw, at[1] + ph)


def test_background_normalization_skips_the_candidate_itself():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.array([f"r{i}" for i in range(50)], dtype=object)
    bg = Background(vecs, ids, "catalog-sample")
    query = vecs[7:8] + 0.05 * rng.normal(size=(1, 16)).astype(np.float32)
    query /= np.linalg.norm(query)
    config = NormalizeConfig(k=3, beta=1.0)
    own, other = background_offsets(bg, query, [["r7", "r8"]], config=config)[0]
    sims = np.sort(vecs @ query[0])[::-1]
    assert own == pytest.approx(sims[1:4].mean(), abs=1e-5)  # r7 itself left out
    assert other == pytest.approx(sims[:3].mean(), abs=1e-5)
    assert other > own


def test_views_find_pasted_photos_and_trim_padding():
    for fg, bg, at in (("astronaut", "rocket", (50, 20)), ("rocket", "chelsea", (20, 100))):
        query, box = _pasted(photo(fg), photo(bg), 0.4 if fg == "astronaut" else 0.5, at)
        regions = pasted_regions(query)
        assert any(all(abs(r[i] - box[i]) <= 8 for i in range(4)) for r in regions), (regions, box)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):  # no paste, no region
        assert pasted_regions(photo(name)) == []
    padded = np.full((500, 451, 3), 255, np.uint8)
    padded[100:400] = photo("chelsea")
    assert trimmed_box(padded) == (0, 100, 451, 400)
    views = query_views(padded, config=ExpandConfig())
    assert views[0].name == "full" and any(v.name == "trimmed" for v in views)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from copytrace.pipelines.build import build_index

    refs = tmp_path_factory.mktemp("refs")
    for name in INDEXED:
        (refs / f"{name}.jpg").write_bytes(jpeg_bytes(_image(name), 95))
    index = tmp_path_factory.mktemp("index") / "idx"
    build_index(refs, index, use_ray=False, show_progress=False)
    return index


@pytest.mark.slow
def test_query_verifies_crops_and_pastes_and_rejects_another_view(index_dir, tmp_path):
    from copytrace.pipelines.query import query

    queries = tmp_path / "q"
    queries.mkdir()
    astro = photo("astronaut")
    (queries / "crop25.jpg").write_bytes(jpeg_bytes(astro[40:296, 200:456], 85))
    pasted, box = _pasted(photo("chelsea"), photo("coffee"), 0.4, (320, 180))
    (queries / "pasted40.jpg").write_bytes(jpeg_bytes(pasted, 85))
    (queries / "otherview.jpg").write_bytes(jpeg_bytes(_motorcycle("right"), 85))
    results = {r.query_id: r for r in query(queries, index_dir, k=5, use_ray=False,
                                            show_progress=False)}

    crop = results["crop25"].matches[0]
    assert crop.reference_id == "astronaut" and crop.score >= 0.5
    assert crop.evidence["verified"] and crop.evidence["inliers"] >= 20
    x0, y0, x1, y1 = crop.evidence["reference_box"]
    assert x0 >= 190 and y0 >= 30 and x1 <= 466 and y1 <= 306

    paste = results["pasted40"].matches[0]
    assert paste.reference_id == "chelsea" and paste.score >= 0.5
    h = np.array(paste.evidence["homography"])
    corner = h @ np.array([box[2], box[3], 1.0])
    assert np.allclose(corner[:2] / corner[2], (451, 300), atol=12)
    assert all(m.score < 0.5 for m in results["pasted40"].matches[1:])

    stored = Background.load(index_dir / "background.npz")  # drawn on the first query, kept
    assert stored.source == "catalog-sample" and len(stored) == len(INDEXED)
    assert stored.vectors.shape[1] == load_descriptor().model.output_dims
    assert stored.catalog_size == len(INDEXED)

    other = results["otherview"].matches
    assert all(m.score < 0.5 for m in other), [(m.reference_id, m.score, m.evidence) for m in other]


@pytest.mark.slow
def test_no_verify_gives_unverified_calibrated_scores(index_dir, tmp_path):
    from copytrace.pipelines.query import query

    (tmp_path / "rocket.jpg").write_bytes(jpeg_bytes(photo("rocket"), 70))
    r = query(tmp_path / "rocket.jpg", index_dir, k=3, use_ray=False, show_progress=False,
              verify=False)[0]
    assert r.matches[0].reference_id == "rocket"
    assert all(m.evidence["verified"] is None and 0.0 <= m.score <= 1.0 for m in r.matches)


def test_calibration_precedence_index_then_model_card_then_defaults(tmp_path):
    from dataclasses import asdict, replace

    from copytrace.matching.calibrate import DEFAULT_CALIBRATION, load_calibration

    card_cal = replace(DEFAULT_CALIBRATION, global_weight=20.0, source="card")
    card = {"calibration": asdict(card_cal)}
    assert load_calibration(tmp_path) == DEFAULT_CALIBRATION
    assert load_calibration(tmp_path, card) == card_cal
    replace(DEFAULT_CALIBRATION, global_weight=5.0, source="index").save(tmp_path / "calibration.json")
    assert load_calibration(tmp_path, card).source == "index"


def test_an_unsure_query_gets_a_deeper_verified_pool():
    """`MatchConfig.unsure_k`: a query whose first `top_k` candidates the global score accepts
    none of has its first `unsure_k` decided (verified where undecided); a query with an accepted
    candidate keeps `top_k`. In a 50k catalog some copies' originals rank 12-23."""
    from copytrace.matching.calibrate import Decision, load_calibration
    from copytrace.matching.rank import Candidate, candidate_decisions

    calibration = load_calibration(None, load_descriptor("default").card)
    band = calibration.decision_band()
    unsure = [Candidate(f"r{i}", 0.4, 0.02 - i * 1e-4, "full", (0, 0, 1, 1)) for i in range(25)]
    sure = [Candidate("copy", 0.95, 0.9, "full", (0, 0, 1, 1)), *unsure[:24]]

    def depth(row: list[Candidate], **kw) -> list[Decision]:  # noqa: ANN003
        return candidate_decisions(row, calibration=calibration, top_k=10, **kw)

    assert Decision.ACCEPT not in depth(unsure) and band.accept > 0.5
    assert len(depth(unsure, unsure_k=20)) == 20 and len(depth(unsure)) == 10
    assert depth(sure, unsure_k=20)[0] is Decision.ACCEPT and len(depth(sure, unsure_k=20)) == 10
    assert depth(unsure, unsure_k=20, verify_all=True) == [Decision.VERIFY] * 20


def test_candidates_past_the_verified_ones_rank_after_them_unless_copies():
    """`finalize(leading=)`: a failed verification scores lower than an unverified global
    similarity, so without the rule the unverified tail (or a deeper pool's failures) pushed an
    original the first candidates hold, verified but weak, out of the top k."""
    from copytrace.matching.calibrate import load_calibration
    from copytrace.matching.rank import Candidate, finalize

    calibration = load_calibration(None, load_descriptor("default").card)
    cands = [Candidate("weak-original", 0.6, 0.1, "full", (0, 0, 1, 1)),
             Candidate("tail", 0.5, 0.08, "full", (0, 0, 1, 1)),
             Candidate("tail-copy", 0.9, 0.6, "full", (0, 0, 1, 1))]
    # weak-original verified, no geometry found (scored from the global score); the tail not
    ids = [m.reference_id for m in finalize(cands, [None], calibration=calibration, leading=1)]
    assert ids == ["tail-copy", "weak-original", "tail"], ids
    mixed = [m.reference_id for m in finalize(cands, [None], calibration=calibration)]
    assert mixed.index("tail") < mixed.index("weak-original"), mixed  # what `leading` prevents
