"""`copytrace train` reproduces a recipe from a model card, reads listings, fine-tunes (--init)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from copytrace.descriptors.model import load_descriptor, load_descriptor_file, shipped_models
from copytrace.descriptors.training.config import RECIPE_FIELDS, TrainConfig, config_from_card
from copytrace.descriptors.training.loading import list_images
from copytrace.descriptors.training.trainer import frozen_modules, make_model

from photos import PHOTO_NAMES, jpeg_bytes, photo

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250", "OMP_NUM_THREADS": "1"}
SHIPPED = "copytrace-sscd-lite0"


def _shipped_card() -> Path:
    return shipped_models()[SHIPPED].with_name(f"{SHIPPED}.card.json")


def test_shipped_card_gives_the_issue_recipe_and_flags_override_it() -> None:
    cfg = config_from_card(_shipped_card())
    assert (cfg.batch_size, cfg.views, cfg.image_size, cfg.freeze_blocks) == (512, 2, 224, 1)
    assert (cfg.koleo_weight, cfg.lr, cfg.max_minutes, cfg.batch_augment) == (10.0, 3e-4, 25.0, "on")
    assert cfg.workers == 15
    assert config_from_card(SHIPPED) == cfg  # a shipped model's name finds the same card
    over = config_from_card(_shipped_card(), batch_size=8, lr=None, image_size=64)
    assert (over.batch_size, over.image_size, over.lr) == (8, 64, 3e-4)  # None: not given


def test_card_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="no train_config"):
        config_from_card("imagenet-lite0-gem")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        config_from_card(bad)
    with pytest.raises(FileNotFoundError):
        config_from_card(tmp_path / "missing.json")


def test_every_recipe_field_is_a_flag_with_help() -> None:
    text = subprocess.run([BIN, "train", "--help"], capture_output=True, text=True, env=ENV,
                          check=True).stdout
    for name in RECIPE_FIELDS:
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
    assert "--from-card" in text and "(default: " in text


def test_listing_inputs_parquet_and_csv(tmp_path) -> None:
    files = []
    for name in PHOTO_NAMES[:4]:
        (tmp_path / "imgs").mkdir(exist_ok=True)
        p = tmp_path / "imgs" / f"{name}.jpg"
        p.write_bytes(jpeg_bytes(photo(name)))
        files.append(p)
    pq.write_table(pa.table({"path": [str(p) for p in reversed(files)]}), tmp_path / "l.parquet")
    (tmp_path / "l.csv").write_text("path\n" + "".join(f"imgs/{p.name}\n" for p in files))
    assert list_images([tmp_path / "l.parquet"]) == list(reversed(files))  # listing order kept
    assert list_images([tmp_path / "l.csv", tmp_path / "imgs"], limits=[2, None]) == \
        files[:2] + sorted(files)
    (tmp_path / "nopath.csv").write_text("file_name\nx.jpg\n")
    with pytest.raises(ValueError, match="needs a 'path'"):
        list_images([tmp_path / "nopath.csv"])


def test_init_starts_from_the_given_model(tmp_path) -> None:
    init = load_descriptor(SHIPPED).model.state_dict()
    model = make_model(TrainConfig(init=SHIPPED, image_size=64, freeze_blocks=1))
    state = model.state_dict()
    assert state.keys() == init.keys()
    assert all(torch.equal(state[k], init[k]) for k in init)
    with pytest.raises(ValueError, match="--dims 256"):
        make_model(TrainConfig(init=SHIPPED, dims=64))
    imagenet = make_model(TrainConfig(init="imagenet-lite0-gem", dims=32))  # no projection there
    assert imagenet.projection.weight.shape == (32, 1280)


@pytest.mark.slow
def test_cli_trains_from_card_on_a_listing_with_init(tmp_path) -> None:
    (tmp_path / "imgs").mkdir()
    for name in PHOTO_NAMES:
        (tmp_path / "imgs" / f"{name}.jpg").write_bytes(jpeg_bytes(photo(name)))
    listing = tmp_path / "train.csv"
    listing.write_text("path\n" + "".join(f"imgs/{n}.jpg\n" for n in PHOTO_NAMES))
    recipe = asdict(TrainConfig(image_size=48, batch_size=4, steps=5, workers=0, val_every=0,
                                checkpoint_every=1, freeze_blocks=1, mix_fraction=0.0,
                                view_pipeline="fast"))
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "x", "train_config": recipe}))
    run = tmp_path / "run"
    proc = subprocess.run([BIN, "train", "--from-card", str(card), "--images", str(listing),
                           "--out", str(run), "--steps", "1", "--init", SHIPPED, "--name", "ft",
                           "--threads", "1"],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out_card = json.loads((run / "ft.json").read_text())
    assert out_card["train_config"]["steps"] == 1  # the flag overrode the card's 5
    assert out_card["train_config"]["image_size"] == 48  # the card's value, not the default 160
    assert out_card["init"] == SHIPPED and out_card["data"]["images"] == len(PHOTO_NAMES)
    trained = load_descriptor_file(run / "ft.pt").model
    shipped = load_descriptor(SHIPPED).model
    frozen = zip(frozen_modules(trained, 1), frozen_modules(shipped, 1), strict=True)
    for a, b in frozen:  # frozen layers keep the init model's weights exactly
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                      b.state_dict().values(), strict=True))
    head_moved = not torch.equal(trained.projection.weight, shipped.projection.weight)
    assert head_moved  # and the step trained the rest
