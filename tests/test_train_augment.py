"""Training views stay valid images; mixing keeps track of which sources a view contains."""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from copytrace.descriptors.training.augment import MixConfig, ViewConfig, make_view, mix_views
from copytrace.descriptors.training.data import CopyViewDataset

from photos import jpeg_bytes, photo


def test_views_are_valid_square_images() -> None:
    img = Image.fromarray(photo("chelsea"))
    others = [Image.fromarray(photo("coffee")), Image.fromarray(photo("rocket"))]
    rng = random.Random(0)
    cfg = ViewConfig(image_size=96, max_strength=2.0)
    distinct = set()
    for _ in range(40):
        view = make_view(img, rng, others=others, config=cfg)
        assert view.shape == (96, 96, 3) and view.dtype == np.uint8
        distinct.add(view.tobytes())
    assert len(distinct) > 30  # random edits, not one fixed output


def test_dataset_item_from_files(tmp_path) -> None:
    paths = []
    for name in ("astronaut", "coffee", "camera"):
        p = tmp_path / f"{name}.jpg"
        p.write_bytes(jpeg_bytes(photo(name)))
        paths.append(p)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    ds = CopyViewDataset([*paths, tmp_path / "broken.jpg"], views_per_image=3,
                         view_config=ViewConfig(image_size=64))
    for i in range(len(ds)):  # the broken file falls back to another image, never raises
        item = ds[i]
        assert item["views"].shape == (3, 3, 64, 64) and item["views"].dtype == torch.uint8
        assert item["clean"].shape == (3,)


def test_mix_views_compositions() -> None:
    g = torch.Generator().manual_seed(0)
    views = torch.rand(16, 3, 32, 32, generator=g)
    ids = torch.arange(8).repeat_interleave(2)
    mixed, comp = mix_views(views, ids, 8, generator=g, config=MixConfig(fraction=0.5))
    assert mixed.shape == views.shape and torch.isfinite(mixed).all()
    assert mixed.min() >= 0 and mixed.max() <= 1
    assert torch.allclose(comp.sum(dim=1), torch.ones(16))
    assert (comp > 0).sum(dim=1).max() == 2  # some views now contain two sources
    changed = (mixed != views).flatten(1).any(dim=1)
    assert changed.sum() >= 4
    assert ((comp > 0).sum(dim=1) == 2)[changed].all()  # every changed view is marked mixed
    unmixed, comp0 = mix_views(views, ids, 8, config=MixConfig(fraction=0.0))
    assert torch.equal(unmixed, views) and torch.equal(comp0.argmax(dim=1), ids)


def test_kornia_batch_edits_keep_views_valid_and_clean_views_untouched() -> None:
    from copytrace.descriptors.training.batch_edits import augment_edited, make_batch_augment

    torch.manual_seed(0)
    x = torch.rand(8, 3, 48, 48)
    clean = torch.tensor([True, False] * 4)
    out = augment_edited(x, clean, make_batch_augment())
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out[clean], x[clean])
    assert not torch.equal(out[~clean], x[~clean])
