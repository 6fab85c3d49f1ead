"""Which view pipeline makes the live training views, and the dataset for it.

All pipelines draw the same copy edits with the same probabilities and parameters (the edit
choice is `augment.random_copy`'s in every case); they differ in where and how the pixels are
computed:
- legacy: decode every file every epoch, PIL edits on the DataLoader workers (the shipped
  model's run);
- fast: images decoded once into a memory-mapped cache, cheaper OpenCV edits on the workers;
- split: fast, and the photometric/geometric edits are only drawn on the workers and applied
  to the whole batch on the training device (`batch_augment.apply_deferred`); workers keep the
  overlays, text, emoji, image-in-image, crops and pads.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from copytrace.descriptors.training.augment import ViewConfig
from copytrace.descriptors.training.data import CopyViewDataset


class ViewPipeline(str, Enum):
    LEGACY = "legacy"
    FAST = "fast"
    SPLIT = "split"
    AUTO = "auto"


def resolve_pipeline(name: str, *, gpu: bool) -> ViewPipeline:
    """'auto' is split where a GPU runs the model, fast otherwise (a CPU model step is the
    bottleneck there and the workers are better at the edits)."""
    try:
        choice = ViewPipeline(name)
    except ValueError:
        raise ValueError(f"unknown view pipeline '{name}': one of "
                         f"{[p.value for p in ViewPipeline]}") from None
    if choice is ViewPipeline.AUTO:
        return ViewPipeline.SPLIT if gpu else ViewPipeline.FAST
    return choice


def max_side_for(view_config: ViewConfig) -> int:
    """Working resolution of the edits: the long side is shrunk to twice the model input."""
    return 2 * view_config.image_size


def make_view_dataset(
    files: Sequence[str | Path],
    *,
    pipeline: ViewPipeline,
    view_config: ViewConfig,
    views_per_image: int = 2,
    seed: int = 0,
    cache_folder: str | Path | None = None,
    workers: int = 0,
    siblings: bool = False,
    show_progress: bool = True,
) -> CopyViewDataset:
    """The dataset of live views for `pipeline` (fast/split build or reuse the image cache)."""
    max_side = max_side_for(view_config)
    if pipeline is ViewPipeline.LEGACY:
        return CopyViewDataset(files, views_per_image=views_per_image, view_config=view_config,
                               seed=seed, max_side=max_side, siblings=siblings)
    if pipeline is ViewPipeline.AUTO:
        raise ValueError("resolve 'auto' first (resolve_pipeline)")
    if cache_folder is None:
        raise ValueError(f"the {pipeline.value} view pipeline needs a cache folder")
    from copytrace.descriptors.training.edits import FAST_EDITS, to_square
    from copytrace.descriptors.training.image_cache import build_image_cache

    cache = build_image_cache(files, cache_folder, max_side=max_side, workers=workers,
                              show_progress=show_progress)
    if pipeline is ViewPipeline.SPLIT:
        from copytrace.descriptors.training.deferred import DeferredViewDataset

        return DeferredViewDataset(files, views_per_image=views_per_image,
                                   view_config=view_config, seed=seed, max_side=max_side,
                                   siblings=siblings, image_cache=cache, edits=FAST_EDITS,
                                   square=to_square)
    return CopyViewDataset(files, views_per_image=views_per_image, view_config=view_config,
                           seed=seed, max_side=max_side, siblings=siblings, image_cache=cache,
                           edits=FAST_EDITS, square=to_square)
