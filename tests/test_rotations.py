"""Rotated copies: queries without a confident match also search their 90/180/270-degree views."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copytrace.descriptors.decode import to_model_square
from copytrace.matching.expand import RotateConfig
from copytrace.matching.rotations import rotated_squares
from copytrace.pipelines.engine import QueryEngine, QueryTimings

from photos import jpeg_bytes, photo


@pytest.fixture(scope="module")
def index(photos_index) -> Path:
    return photos_index


def test_turning_the_model_input_equals_turning_the_image():
    img = Image.fromarray(photo("astronaut")[:, 50:450])  # not square
    square = np.asarray(to_model_square(img, 224))
    turned = rotated_squares(square, config=RotateConfig(angles=(90,)))[0]
    direct = np.asarray(to_model_square(img.rotate(90, expand=True), 224))
    assert np.abs(turned.astype(int) - direct.astype(int)).mean() < 2.0


def test_a_rotated_copy_is_found_through_its_turned_view(index):
    """The astronaut turned by 90 degrees: its whole-image descriptor no longer matches the
    original confidently (normalized global score 0.25, calibrated 0.08: in a large catalog it
    falls out of the top candidates); the view turned back (270) does (0.94)."""
    query = jpeg_bytes(np.ascontiguousarray(np.rot90(photo("astronaut"), k=1)))
    with QueryEngine.open(index, device="cpu") as engine:
        timings = QueryTimings()
        on = engine.query([query], k=3, timings=timings)[0].matches
        engine.config = replace(engine.config, rotate=None)
        off = engine.query([query], k=3)[0].matches
    top = on[0]
    assert top.reference_id == "astronaut" and top.score >= 0.5, top
    assert top.evidence["view"] == "rot270", top.evidence  # found through the turned view
    before = next(m for m in off if m.reference_id == "astronaut")
    assert before.evidence["global_score"] < top.evidence["global_score"] - 0.3
    assert timings.views >= 3 + 1  # the whole image, its crops, and three turned views


def test_no_second_pass_switches_the_turned_views_off(index, tmp_path):
    """`copytrace query --no-second-pass`: the same turned copy is no longer found through a
    turned view (the CLI switch reaches the engine), while the default finds it as above."""
    import json

    from typer.testing import CliRunner

    from copytrace.app.cli import app

    query = tmp_path / "turned.jpg"
    query.write_bytes(jpeg_bytes(np.ascontiguousarray(np.rot90(photo("astronaut"), k=1))))

    def top_views(*switches: str) -> dict[str, str]:
        res = CliRunner().invoke(app, ["query", str(query), "--index", str(index), "-k", "3",
                                       "--json", "--no-ray", "--quiet", *switches])
        assert res.exit_code == 0, res.output
        matches = json.loads(res.output)[0]["matches"]
        return {m["reference_id"]: m["view"] for m in matches}

    assert top_views()["astronaut"] == "rot270"
    assert not top_views("--no-second-pass").get("astronaut", "").startswith("rot")
