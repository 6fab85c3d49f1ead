"""Trunk-cached training: a CPU-friendly way to train the copy descriptor.

The frozen trunk (stem + first blocks) is the costly part of a forward pass and never changes
during training, so it is run once over a fixed pool of copy-edit views per image and its
feature maps are kept (fp16, in memory and on disk). Training then runs only the top blocks,
head and projection on those maps: measured on 2 cores at 224 px, the top trains at ~150
views/s against ~15 for full-image steps, which buys batches of hundreds of views (many more
negatives per step) and many passes over the data. The trade: each image has only `views`
fixed edits instead of fresh ones every epoch.

Works for timm backbones laid out as conv_stem -> bn1 -> blocks -> conv_head -> bn2
(EfficientNet, MobileNet families); the exported model is the ordinary `CopyDescriptor`.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from copytrace.descriptors.model import CopyDescriptor
from copytrace.descriptors.training.augment import ViewConfig
from copytrace.descriptors.training.data import CopyViewDataset
from copytrace.descriptors.training.loading import one_thread_worker
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_FORMAT = "copytrace-view-cache/1"


def supports_trunk_cache(model: CopyDescriptor) -> bool:
    bb = model.backbone
    return all(hasattr(bb, name) for name in ("conv_stem", "bn1", "blocks", "conv_head", "bn2"))


def trunk_features(model: CopyDescriptor, x: torch.Tensor, trunk_blocks: int) -> torch.Tensor:
    """Feature maps after the stem and the first `trunk_blocks` blocks; x in [0, 1]."""
    bb = model.backbone
    h = bb.bn1(bb.conv_stem((x - model.mean) / model.std))
    for block in bb.blocks[:trunk_blocks]:
        h = block(h)
    return h


def top_pooled(model: CopyDescriptor, features: torch.Tensor, trunk_blocks: int) -> torch.Tensor:
    """The rest of `model.pooled` from trunk feature maps: top blocks, head, GeM, projection."""
    bb = model.backbone
    h = features
    for block in bb.blocks[trunk_blocks:]:
        h = block(h)
    return model.projection(model.pool(bb.bn2(bb.conv_head(h))))


@dataclass
class ViewCache:
    """Trunk feature maps of `views` edited views per training image."""

    features: torch.Tensor  # N x V x C x H x W, float16
    clean: torch.Tensor  # N x V bool: the view is the unedited image (+ light JPEG)
    groups: torch.Tensor  # N int: folder of each image, for grouped batches
    meta: dict[str, Any]

    @property
    def num_images(self) -> int:
        return int(self.features.shape[0])


def image_groups(files: Sequence[str | Path]) -> list[int]:
    """Group id per file = its parent folder (a category in Caltech-style trees)."""
    ids: dict[str, int] = {}
    return [ids.setdefault(str(Path(f).parent), len(ids)) for f in files]


def build_view_cache(
    model: CopyDescriptor,
    files: Sequence[str | Path],
    path: str | Path,
    *,
    trunk_blocks: int,
    views: int,
    view_config: ViewConfig,
    seed: int = 0,
    siblings: bool = False,
    workers: int = 1,
    batch_size: int = 16,
    show_progress: bool = True,
) -> ViewCache:
    """Load `path` if it was built from the same files and settings, else build and save it.

    With `siblings` each file gives two instances (see `CopyViewDataset`) and the groups are
    the source files, so that grouped batches put siblings together.
    """
    path = Path(path)
    meta = {"format": CACHE_FORMAT, "files": [str(f) for f in files], "trunk_blocks": trunk_blocks,
            "views": views, "view_config": view_config.__dict__, "seed": seed,
            "siblings": siblings, "backbone": model.config.backbone}
    if path.is_file():
        payload = torch.load(path, map_location="cpu", weights_only=False)
        if payload.get("meta") == meta:
            log.info("using the cached trunk features in %s", path)
            return ViewCache(payload["features"], payload["clean"], payload["groups"], meta)
        log.info("%s was built from other files or settings: rebuilding it", path)
    from copytrace.descriptors.training.edits import FAST_EDITS, to_square

    dataset = CopyViewDataset(files, views_per_image=views, view_config=view_config, seed=seed,
                              siblings=siblings, edits=FAST_EDITS, square=to_square)
    n = len(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        worker_init_fn=one_thread_worker, prefetch_factor=4 if workers else None)
    was_training = model.training
    model = model.eval().to(memory_format=torch.channels_last)
    features: torch.Tensor | None = None
    clean = torch.zeros(n, views, dtype=torch.bool)
    bar = progress_bar("trunk features of training views", n, enabled=show_progress)
    with bar as advance, torch.inference_mode():
        for batch in loader:
            b, v = batch["views"].shape[:2]
            x = batch["views"].flatten(0, 1).float().div_(255.0)
            f = trunk_features(model, x.contiguous(memory_format=torch.channels_last),
                               trunk_blocks).half()
            if features is None:
                features = torch.empty((n, views, *f.shape[1:]), dtype=torch.float16)
            features[batch["index"]] = f.view(b, v, *f.shape[1:]).contiguous()
            clean[batch["index"]] = batch["clean"]
            advance(b)
    assert features is not None
    model.train(was_training)
    groups = torch.tensor([dataset.source_file(i) for i in range(n)] if siblings
                          else image_groups(files), dtype=torch.long)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"meta": meta, "features": features, "clean": clean, "groups": groups}, tmp)
    os.replace(tmp, path)
    (path.with_suffix(".json")).write_text(json.dumps(
        {k: v for k, v in meta.items() if k != "files"} | {"images": len(files), "instances": n,
                                                           "shape": list(features.shape)}))
    return ViewCache(features, clean, groups, meta)


class GroupedBatches(Sampler[list[int]]):
    """Batches made of runs of `group_size` images from one folder (category).

    Same-category images in a batch are hard negatives: the descriptor has to tell two guitars
    apart by the picture, not by what it shows. group_size 1 gives plain shuffled batches.
    """

    def __init__(self, groups: Sequence[int], batch_size: int, *, group_size: int = 1,
                 seed: int = 0) -> None:
        self.groups = list(groups)
        self.batch_size = batch_size
        self.group_size = max(1, group_size)
        self.seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.groups) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(hash((self.seed, self._epoch)))
        self._epoch += 1
        members: dict[int, list[int]] = {}
        for i, g in enumerate(self.groups):
            members.setdefault(g, []).append(i)
        runs: list[list[int]] = []
        for idx in members.values():
            rng.shuffle(idx)
            runs.extend(idx[i:i + self.group_size] for i in range(0, len(idx), self.group_size))
        rng.shuffle(runs)
        flat = [i for run in runs for i in run]
        for start in range(0, len(flat) - self.batch_size + 1, self.batch_size):
            yield flat[start:start + self.batch_size]


def cached_loader(cache: ViewCache, batch_size: int, *, group_size: int, seed: int
                  ) -> DataLoader:
    """Yields image-index batches; the training step gathers two cached views per image."""
    sampler = GroupedBatches(cache.groups.tolist(), batch_size, group_size=group_size, seed=seed)
    return DataLoader(np.arange(cache.num_images), batch_sampler=sampler, num_workers=0)


def pick_views(cache: ViewCache, index: torch.Tensor, per_image: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_image` distinct cached views of each image: (B*per_image x C x H x W float, clean)."""
    v = cache.features.shape[1]
    order = torch.rand(len(index), v, generator=generator).argsort(dim=1)[:, :per_image]
    rows = index.view(-1, 1).expand(-1, per_image)
    feats = cache.features[rows, order].flatten(0, 1).float()
    return feats, cache.clean[rows, order].flatten()
