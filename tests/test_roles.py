"""Two originals in one query: a photo pasted into another, both in the catalog, both found as
copies, with roles (`inserted`, `background`) and regions; a plain copy has no role."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copytrace.matching.isc_csv import read_predictions
from copytrace.matching.results import Match
from copytrace.matching.roles import assign_roles
from copytrace.matching.verify import VerifyConfig, prepare, verify_prepared
from copytrace.pipelines.build import build_index
from copytrace.pipelines.engine import QueryEngine
from copytrace.pipelines.query import query_index

from photos import jpeg_bytes, photo

PASTE = (330, 100)  # where the astronaut lands in coffee (x, y of its top-left corner)
SIDE = 210  # 35 % of coffee's 600 px width


@pytest.fixture(scope="module")
def index(tmp_path_factory, photos_dir) -> Path:
    root = tmp_path_factory.mktemp("roles") / "index"
    build_index(photos_dir, root, use_ray=False, show_progress=False)
    return root


def _composite() -> bytes:
    background = Image.fromarray(photo("coffee"))
    inserted = Image.fromarray(photo("astronaut")).resize((SIDE, SIDE), Image.LANCZOS)
    background.paste(inserted, PASTE)
    return jpeg_bytes(background, 90)


def _iou(a: list[int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("band", [False, True], ids=["all-verified", "decision-band"])
def test_a_pasted_photo_and_its_background_get_their_roles(index, band):
    """Default pipeline. A 12-photo index verifies every top candidate; with the decision band
    on (as in catalogs of BAND_MIN_CATALOG images or more) the band accepts the astronaut
    unverified, and the engine verifies it because the query holds a second copy."""
    with QueryEngine.open(index, keypoint_cache=False) as engine:
        if band:
            engine.band_min_catalog = 0
        result = engine.query_bytes(_composite(), query_id="composite")
        plain = engine.query_bytes(jpeg_bytes(photo("chelsea"), 80), query_id="plain")
    found = {m.reference_id: m for m in result.matches}
    astronaut, coffee = found["astronaut"], found["coffee"]
    assert astronaut.score >= 0.5 and coffee.score >= 0.5, (astronaut, coffee)
    assert astronaut.evidence.get("role") == "inserted", astronaut.evidence
    assert coffee.evidence.get("role") == "background", coffee.evidence
    x, y = PASTE
    assert _iou(astronaut.evidence["region"], (x, y, x + SIDE, y + SIDE)) > 0.6
    assert _iou(coffee.evidence["region"], (0, 0, 600, 400)) > 0.6
    others = [m for m in result.matches if m.reference_id not in ("astronaut", "coffee")]
    assert all("role" not in m.evidence for m in others)
    shown = result.as_json()["matches"]
    assert {m["reference_id"]: m.get("role") for m in shown}["astronaut"] == "inserted"
    top = plain.matches[0]
    assert top.reference_id == "chelsea" and top.score >= 0.5
    assert all("role" not in m.evidence for m in plain.matches)


def test_two_references_of_one_region_get_no_roles():
    """Near-duplicate references (a photo and its crop) match the same region of a query: no
    composite, no roles; while the composite's own pair does get them."""
    config = VerifyConfig()
    astronaut = photo("astronaut")
    query = prepare(np.asarray(Image.open(io.BytesIO(jpeg_bytes(astronaut, 85)))), config=config,
                    with_mirror=True)
    refs = [astronaut, astronaut[40:480, 30:470]]
    found = [verify_prepared(query, prepare(r, config=config), config=config) for r in refs]
    matches = [Match(str(i), 0.9, 0.9, {}) for i in range(2)]
    assign_roles(matches, found)
    assert all("role" not in m.evidence for m in matches)
    composite = prepare(np.asarray(Image.open(io.BytesIO(_composite()))), config=config,
                        with_mirror=True)
    found = [verify_prepared(composite, prepare(photo(n), config=config), config=config)
             for n in ("astronaut", "coffee")]
    matches = [Match(n, 0.9, 0.9, {}) for n in ("astronaut", "coffee")]
    assign_roles(matches, found)
    assert [m.evidence.get("role") for m in matches] == ["inserted", "background"]


def test_the_isc_csv_keeps_both_originals(index, tmp_path):
    """`copytrace query --output`: one row per returned match, so both originals stay."""
    query = tmp_path / "composite.jpg"
    query.write_bytes(_composite())
    run = query_index(query, index, k=5, output=tmp_path / "predictions.csv", use_ray=False,
                      show_progress=False)
    rows = [p for p in read_predictions(run.predictions) if p.score >= 0.5]
    assert sorted(p.reference_id for p in rows) == ["astronaut", "coffee"], rows
