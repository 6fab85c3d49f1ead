"""The fast and split view pipelines draw the same edits as the legacy one, only cheaper.

Not narrowing the edit distribution is checked three ways: the cheaper edits consume the random
stream exactly like the PIL ones (so `random_copy` picks the same edits, with the same
probabilities and parameters); every edit kind still occurs; and the views themselves match the
legacy pipeline's view by view (fast) or edit by edit (split's device stage vs PIL).
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from copytrace.descriptors import augment as A
from copytrace.descriptors.training.augment import ViewConfig, to_square
from copytrace.descriptors.training.batch_edits import apply_deferred
from copytrace.descriptors.training.config import TrainConfig
from copytrace.descriptors.training.deferred import DEFERRED, DeferredRecord
from copytrace.descriptors.training.edits import FAST_EDITS
from copytrace.descriptors.training.image_cache import build_image_cache
from copytrace.descriptors.training.loading import load_for_training
from copytrace.descriptors.training.trainer import train
from copytrace.descriptors.training.views import ViewPipeline, make_view_dataset, resolve_pipeline

from photos import PHOTO_NAMES, jpeg_bytes, photo

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    out = []
    for name in PHOTO_NAMES:
        img = Image.fromarray(photo(name)).convert("RGB")
        img.thumbnail((256, 256))
        out.append(img)
    return out


@pytest.fixture
def files(tmp_path) -> list:
    paths = []
    for name in PHOTO_NAMES:
        p = tmp_path / "imgs" / f"{name}.jpg"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(jpeg_bytes(photo(name)))
        paths.append(p)
    return paths


def _recorder_edits() -> dict:
    rec = DeferredRecord()
    return {**FAST_EDITS, **{n: rec.edit(n) for n in DEFERRED}}


def test_every_implementation_picks_the_same_edits_and_every_kind_occurs(images) -> None:
    ctx = A.EditContext(others=images[:3], strength=1.0)
    counts: Counter[str] = Counter()
    split_jpeg = 0
    for seed in range(300):
        img = images[seed % len(images)]
        rng, fast_rng, split_rng = random.Random(seed), random.Random(seed), random.Random(seed)
        ref = A.random_copy(img, rng, context=ctx)[1].edits
        fast = A.random_copy(img, fast_rng, context=ctx, edits=FAST_EDITS)[1].edits
        split = A.random_copy(img, split_rng, context=ctx, edits=_recorder_edits())[1].edits
        assert fast == ref and fast_rng.getstate() == rng.getstate(), seed  # same stream
        # split: the same chosen edits; a deferred rotate/rescale leaves the worker image its
        # old size, so later size-dependent draws (and the 70 % final-JPEG coin) use other
        # random numbers: the same distribution, not the same stream
        assert [e for e in split if e != "jpeg"] == [e for e in ref if e != "jpeg"], seed
        counts.update(ref)
        split_jpeg += "jpeg" in split
    assert set(counts) == set(A.EDITS)  # every edit kind occurs
    assert counts["crop"] > counts["stripes"]  # and the weights still apply
    assert abs(split_jpeg - counts["jpeg"]) < 0.1 * counts["jpeg"]


@pytest.mark.parametrize("name", [n for n in A.EDITS if FAST_EDITS[n] is not A.EDITS[n]])
def test_fast_edit_matches_the_pil_edit(name, images) -> None:
    ctx = A.EditContext(others=images[:2], strength=1.0)
    diffs, strengths = [], []
    for i, img in enumerate(images):
        r1, r2 = random.Random(i), random.Random(i)
        ref, fast = A.EDITS[name](img, r1, ctx), FAST_EDITS[name](img, r2, ctx)
        assert r1.getstate() == r2.getstate()
        assert ref.size == fast.size and fast.mode == "RGB"
        a, b = np.asarray(ref, np.float32), np.asarray(fast, np.float32)
        base = np.asarray(img, np.float32)
        if name == "noise":  # different samples of the same noise: compare its strength
            strengths.append((b - base).std() / max((a - base).std(), 1e-6))
        else:
            diffs.append(np.abs(a - b).mean())
    if name == "noise":
        assert 0.8 < np.median(strengths) < 1.25, strengths
    else:
        assert np.median(diffs) < 2.0 and max(diffs) < 6.0, diffs


@pytest.mark.parametrize("name", DEFERRED)
def test_device_stage_reproduces_the_pil_edit(name, images) -> None:
    size, ctx = 96, A.EditContext(strength=1.0)
    close, strength = [], []
    for i, img in enumerate(images):
        r1, r2 = random.Random(i), random.Random(i)
        ref = to_square(A.EDITS[name](img, r1, ctx), size).astype(np.float32)
        rec = DeferredRecord()
        rec.edit(name)(img, r2, ctx)
        assert r1.getstate() == r2.getstate()
        row = torch.from_numpy(rec.row(img.size))[None]
        x = torch.from_numpy(np.array(to_square(img, size))).permute(2, 0, 1)[None].float() / 255
        out = apply_deferred(x, row)[0].permute(1, 2, 0).numpy() * 255
        base = to_square(img, size).astype(np.float32)
        close.append(np.abs(out - ref).mean())
        strength.append(np.abs(out - base).mean() / max(np.abs(ref - base).mean(), 0.5))
    if name in ("noise", "jpeg", "pixelize"):  # same strength, different samples/block phase
        assert 0.67 < np.median(strength) < 1.5, strength
    else:
        assert np.median(close) < 3.0 and max(close) < 8.0, close


def test_fast_views_equal_legacy_views_and_split_rows_cover_every_deferred_kind(files, tmp_path
                                                                               ) -> None:
    cfg = ViewConfig(image_size=64, clean_probability=0.0)
    ds = {p: make_view_dataset(files, pipeline=p, view_config=cfg, views_per_image=4,
                               cache_folder=tmp_path / p.value, show_progress=False)
          for p in (ViewPipeline.LEGACY, ViewPipeline.FAST, ViewPipeline.SPLIT)}
    diffs, kinds = [], Counter()
    for _ in range(4):
        for i in range(len(files)):
            legacy, fast = ds[ViewPipeline.LEGACY][i], ds[ViewPipeline.FAST][i]
            diffs += (legacy["views"].float() - fast["views"].float()).abs().mean((1, 2, 3)).tolist()
            split = ds[ViewPipeline.SPLIT][i]
            assert split["views"].shape == legacy["views"].shape
            kinds.update(DEFERRED[int(k) - 1] for k in split["deferred"][:, :-2:12].flatten() if k)
    assert np.median(diffs) < 1.0 and np.percentile(diffs, 90) < 4.0, diffs
    assert set(kinds) == set(DEFERRED)


def test_image_cache_holds_the_training_pixels_and_is_reused(files, tmp_path) -> None:
    broken = tmp_path / "imgs" / "broken.jpg"
    broken.write_bytes(b"not an image")
    listed = [*files, broken]
    cache = build_image_cache(listed, tmp_path / "c", max_side=128, show_progress=False)
    for i, f in enumerate(files):
        assert np.array_equal(np.asarray(cache.image(i)), np.asarray(load_for_training(f, max_side=128)))
    assert cache.image(len(files)) is None
    stamp = (tmp_path / "c" / "pixels.u8").stat().st_mtime_ns
    build_image_cache(listed, tmp_path / "c", max_side=128, show_progress=False)
    assert (tmp_path / "c" / "pixels.u8").stat().st_mtime_ns == stamp  # reused
    again = build_image_cache(files[:2], tmp_path / "c", max_side=128, show_progress=False)
    assert len(again) == 2  # another file list rebuilds


def test_auto_pipeline_is_split_on_gpu_and_fast_on_cpu() -> None:
    assert resolve_pipeline("auto", gpu=True) is ViewPipeline.SPLIT
    assert resolve_pipeline("auto", gpu=False) is ViewPipeline.FAST
    assert resolve_pipeline("legacy", gpu=True) is ViewPipeline.LEGACY
    with pytest.raises(ValueError, match="unknown view pipeline"):
        resolve_pipeline("gpu", gpu=True)


@pytest.mark.slow
def test_split_pipeline_trains_on_cpu(files, tmp_path) -> None:
    cfg = TrainConfig(image_size=48, dims=32, batch_size=4, steps=2, workers=0, val_every=0,
                      checkpoint_every=10, view_pipeline="split", mix_fraction=0.0)
    report = train([files[0].parent], tmp_path / "run", config=cfg, name="s", accelerator="cpu")
    assert report.steps == 2
    assert json.loads(report.card_file.read_text())["view_pipeline"] == "split"


def test_train_throughput_benchmark_runs_every_pipeline(files, tmp_path) -> None:
    """A smoke run of benchmarks/train_throughput.py so it cannot rot (no speed asserted)."""
    from copytrace.benchmarks.train_throughput import run

    rows = run(files[:4], pipelines=list(ViewPipeline)[:3], image_size=48, rounds=1, seed=0,
               cache_root=tmp_path)
    assert set(rows) == {"legacy", "fast", "split"}
    for row in rows.values():
        assert row["views"] == 8 and row["views_per_cpu_s"] > 0
    assert rows["split"]["device_stage_views_per_s"] > 0 and rows["legacy"]["speedup_per_core"] == 1
