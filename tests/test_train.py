"""Descriptor training on real photos: the objective goes down, exports reload exactly."""

from __future__ import annotations

import json
import random
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from copytrace.descriptors.model import load_descriptor_file, save_descriptor
from copytrace.descriptors.training.augment import ViewConfig, make_view
from copytrace.descriptors.training.trainer import TrainConfig, build_module_class, make_model, train

from photos import PHOTO_NAMES, jpeg_bytes, photo

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(names: tuple[str, ...], views: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = random.Random(seed)
    imgs = [Image.fromarray(photo(n)) for n in names]
    for img in imgs:
        img.thumbnail((160, 160))
    cfg = ViewConfig(image_size=SIZE, clean_probability=0.0, max_strength=1.0)
    arr = np.stack([np.stack([make_view(img, rng, others=imgs, config=cfg) for _ in range(views)])
                    for img in imgs]).transpose(0, 1, 4, 2, 3)
    return {"views": torch.from_numpy(np.ascontiguousarray(arr)),
            "clean": torch.zeros(len(names), views, dtype=torch.bool)}


@pytest.mark.slow
def test_loss_decreases_on_real_photos() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(image_size=SIZE, dims=64, batch_size=6, lr=1e-3, warmup_steps=1,
                      steps=12, koleo_weight=1.0, mix_fraction=0.0, freeze_blocks=2)
    module = build_module_class()(asdict(cfg))
    opt = module.configure_optimizers()["optimizer"]
    batch = _batch(PHOTO_NAMES[:6])
    losses = []
    for step in range(cfg.steps):
        loss = module.training_step(batch, step)  # the real step; self.log() is a no-op here
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0] - 0.3, losses


def test_export_reload_gives_identical_embeddings(tmp_path) -> None:
    model = make_model(TrainConfig(image_size=SIZE, dims=32)).eval()
    with torch.no_grad():  # move away from init so the test checks trained weights survive
        model.projection.weight.mul_(1.7)
    path = tmp_path / "m.pt"
    save_descriptor(model, path, name="m", card={"steps": 1})
    loaded = load_descriptor_file(path)
    x = torch.from_numpy(_batch(("astronaut", "coffee"))["views"].flatten(0, 1).numpy()).float() / 255
    with torch.no_grad():
        a, b = model(x), loaded.model(x)
    assert loaded.config.dims == 32 and loaded.config.image_size == SIZE
    assert torch.equal(a, b)
    assert torch.allclose(a.norm(dim=1), torch.ones(len(a)), atol=1e-5)


@pytest.mark.slow
def test_train_end_to_end_resumes_and_exports(tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in PHOTO_NAMES:
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(photo(name)))
    cfg = TrainConfig(image_size=SIZE, dims=32, batch_size=4, steps=2, workers=0,
                      checkpoint_every=1, val_every=0)
    out = tmp_path / "run"
    report = train([folder], out, config=cfg, name="tiny")
    assert report.steps == 2 and report.model_file.is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    card = json.loads(report.card_file.read_text())
    assert card["steps"] == 2 and card["data"]["images"] == len(PHOTO_NAMES)
    more = train([folder], out, config=TrainConfig(**{**asdict(cfg), "steps": 3}), name="tiny")
    assert more.steps == 3  # resumed from step 2, not restarted
    assert load_descriptor_file(more.model_file).model.output_dims == 32
