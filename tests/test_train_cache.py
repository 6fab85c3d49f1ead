"""Trunk-cached training: the split model equals the whole one, batches group categories,
the cached objective goes down on real photos, and a run reuses its cache and exports."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from copytrace.descriptors.model import load_descriptor_file
from copytrace.descriptors.training.augment import ViewConfig
from copytrace.descriptors.training.cache import (
    GroupedBatches,
    build_view_cache,
    image_groups,
    pick_views,
    top_pooled,
    trunk_features,
)
from copytrace.descriptors.training.trainer import TrainConfig, build_module_class, make_model, train

from photos import PHOTO_NAMES, jpeg_bytes, photo

SIZE = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def photo_folders(tmp_path):
    """Two 'category' folders of real photos."""
    for i, name in enumerate(PHOTO_NAMES):
        folder = tmp_path / "imgs" / f"cat{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(photo(name)))
    return tmp_path / "imgs"


def test_trunk_then_top_equals_the_whole_model() -> None:
    model = make_model(TrainConfig(image_size=SIZE, dims=32, freeze_blocks=4)).eval()
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        split = top_pooled(model, trunk_features(model, x, 4), 4)
        whole = model.pooled(x)
    assert torch.allclose(split, whole, atol=1e-5)


def test_grouped_batches_are_runs_of_one_folder() -> None:
    groups = [0] * 40 + [1] * 40 + [2] * 16
    sampler = GroupedBatches(groups, batch_size=16, group_size=8, seed=0)
    first = list(sampler)
    assert len(first) == len(groups) // 16
    seen = [i for batch in first for i in batch]
    assert len(seen) == len(set(seen))  # no image twice in an epoch
    for batch in first:
        for start in range(0, 16, 8):
            run = batch[start:start + 8]
            assert len({groups[i] for i in run}) == 1
    assert list(sampler) != first  # reshuffled each epoch


def test_image_groups_follow_parent_folders() -> None:
    assert image_groups(["a/x.jpg", "b/y.jpg", "a/z.jpg"]) == [0, 1, 0]


@pytest.mark.slow
def test_cached_loss_decreases_and_run_reuses_cache(photo_folders, tmp_path) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(image_size=SIZE, dims=32, freeze_blocks=4, cache_views=3, views=2,
                      batch_size=6, group_size=3, lr=1e-3, warmup_steps=1, steps=12,
                      koleo_weight=1.0, mix_fraction=0.25, workers=0, val_every=0,
                      checkpoint_every=1)
    module = build_module_class()(asdict(cfg))
    files = sorted(photo_folders.rglob("*.jpg"))
    cache = build_view_cache(module.model, files, tmp_path / "cache.pt", trunk_blocks=4,
                             views=3, view_config=ViewConfig(image_size=SIZE), workers=0,
                             show_progress=False)
    assert cache.features.shape[:2] == (len(files), 3)
    assert cache.features.dtype == torch.float16 and torch.isfinite(cache.features).all()
    feats, clean = pick_views(cache, torch.tensor([0, 1]), 2)
    assert feats.shape[0] == 4 and clean.shape == (4,)

    module.view_cache = cache
    opt = module.configure_optimizers()["optimizer"]
    batch = torch.arange(6)
    losses = []
    for step in range(cfg.steps):
        loss = module.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0] - 0.2, losses

    out = tmp_path / "run"
    run_cfg = TrainConfig(**{**asdict(cfg), "steps": 2})
    report = train([photo_folders], out, config=run_cfg, name="cached", show_progress=False)
    cache_file = out / "view_cache.pt"
    built = cache_file.stat().st_mtime_ns
    assert report.steps == 2 and json.loads(report.card_file.read_text())["steps"] == 2
    more = train([photo_folders], out, config=TrainConfig(**{**asdict(run_cfg), "steps": 3}),
                 name="cached", show_progress=False)
    assert more.steps == 3
    assert cache_file.stat().st_mtime_ns == built  # same files and settings: cache reused
    loaded = load_descriptor_file(more.model_file)
    trunk = make_model(run_cfg).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():  # the frozen trunk really stayed at its initialisation
        assert torch.equal(trunk_features(trunk, x, 4), trunk_features(loaded.model, x, 4))


def test_sibling_windows_share_a_band_but_neither_holds_the_other(photo_folders) -> None:
    import random

    from PIL import Image

    from copytrace.descriptors.training.data import CopyViewDataset, sibling_windows

    img = Image.fromarray(photo("astronaut"))  # 512 x 512
    for seed in range(20):
        a, b = sibling_windows(img, random.Random(seed))
        assert a.size == b.size
        along = 0 if a.size[0] < img.size[0] else 1
        share = a.size[along] / img.size[along]
        assert 0.55 <= share <= 0.7 + 1e-3  # overlap 10-40 %: related, not contained
    files = sorted(photo_folders.rglob("*.jpg"))[:3]
    ds = CopyViewDataset(files, views_per_image=2, view_config=ViewConfig(image_size=SIZE),
                         siblings=True)
    assert len(ds) == 6 and [ds.source_file(i) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert ds[5]["views"].shape == (2, 3, SIZE, SIZE)
