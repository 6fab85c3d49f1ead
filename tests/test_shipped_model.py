"""The shipped copy descriptor: loads offline from the installed package, is the default, keeps its
identity through save/load, and an index refuses a query with another model."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import copytrace.descriptors.model as model_module
from copytrace.descriptors.model import (
    DEFAULT_MODEL_NAME,
    IMAGENET_MODEL_NAME,
    card_path,
    default_model_name,
    load_descriptor,
    load_descriptor_file,
    save_descriptor,
    shipped_models,
)
from copytrace.matching.calibrate import load_calibration

from photos import photo


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: the model must load from the package."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted while loading the default model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _batch() -> torch.Tensor:
    from PIL import Image

    img = Image.fromarray(photo("astronaut")).resize((224, 224))
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255


def test_default_is_the_shipped_copy_descriptor_and_loads_offline(no_network):
    weights = shipped_models()[DEFAULT_MODEL_NAME]
    assert Path(model_module.__file__).parent in weights.parents  # inside the installed package
    assert weights.stat().st_size <= 25 * 2**20
    assert default_model_name() == DEFAULT_MODEL_NAME
    loaded = load_descriptor()
    assert loaded.name == DEFAULT_MODEL_NAME
    assert loaded.model_id.startswith(f"{DEFAULT_MODEL_NAME}@")
    assert loaded.model.output_dims == 256 and loaded.config.image_size == 224
    assert loaded.card["trained_for_copy_detection"] is True
    assert "research" in loaded.card["training_data"]["licence"]
    # the card beside the weights is what the loader reads
    assert json.loads(card_path(weights).read_text())["name"] == DEFAULT_MODEL_NAME


def test_shipped_card_carries_its_own_calibration():
    card = load_descriptor().card
    shipped = load_calibration(None, card)
    imagenet = load_calibration(None, load_descriptor(IMAGENET_MODEL_NAME).card)
    assert "calibration" in card
    assert shipped != imagenet  # each descriptor keeps the calibration fitted for it


def test_save_load_identity(tmp_path):
    loaded = load_descriptor()
    sha = save_descriptor(loaded.model, tmp_path / "copy.pt", name="copy", card=loaded.card)
    again = load_descriptor_file(tmp_path / "copy.pt")
    assert sha == loaded.sha256 == again.sha256
    with torch.inference_mode():
        a, b = loaded.model(_batch()), again.model(_batch())
    assert torch.equal(a, b)
    assert abs(float(a.norm()) - 1.0) < 1e-5


def test_imagenet_model_stays_selectable_and_differs():
    imagenet = load_descriptor(IMAGENET_MODEL_NAME)
    assert imagenet.model.output_dims == 1280
    assert imagenet.sha256 != load_descriptor().sha256
    with pytest.raises(ValueError, match="unknown model"):
        load_descriptor("no-such-model")


@pytest.fixture(scope="module")
def imagenet_index(tmp_path_factory) -> tuple[Path, Path]:
    """An index built with the old default (ImageNet lite0), as older copytrace versions made."""
    from copytrace.pipelines.build import build_index

    from photos import jpeg_bytes

    folder = tmp_path_factory.mktemp("refs")
    for name in ("astronaut", "coffee", "chelsea"):
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(photo(name), 90))
    index = tmp_path_factory.mktemp("idx") / "old"
    build_index(folder, index, model=IMAGENET_MODEL_NAME, use_ray=False, show_progress=False)
    return folder, index


def test_index_built_with_the_old_default_keeps_working(imagenet_index, one_torch_thread):
    from copytrace.pipelines.query import query

    folder, index = imagenet_index
    results = query(folder / "coffee.jpg", index, k=2, verify=False, expand=False,
                    show_progress=False)
    assert results[0].matches[0].reference_id == "coffee"


def test_query_with_a_mismatched_model_is_refused(imagenet_index):
    import subprocess
    import sys

    folder, index = imagenet_index
    cli = str(Path(sys.executable).parent / "copytrace")
    proc = subprocess.run([cli, "query", str(folder / "coffee.jpg"), "--index", str(index),
                           "--model", DEFAULT_MODEL_NAME], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert IMAGENET_MODEL_NAME in lines[0] and DEFAULT_MODEL_NAME in lines[0]
