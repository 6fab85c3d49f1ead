"""Learned whitening of GeM features from copy pairs (Radenović et al., "Lw"), as the projection.

A closed-form alternative (or finishing step) to gradient training of the projection: embed
pairs of copy-edit views of training images, whiten by the covariance of the pair differences
(directions that copy edits move get shrunk), then keep the top principal directions of the
whitened features (directions that tell images apart). The result is a linear map that goes
into `CopyDescriptor.projection`, so the model file loads with the standard loader. Minutes on a
CPU, where backbone training needs hours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from copytrace.descriptors.model import CopyDescriptor, DescriptorConfig
from copytrace.descriptors.training.augment import ViewConfig
from copytrace.descriptors.training.data import CopyViewDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WhiteningConfig:
    dims: int = 256
    image_size: int = 224
    shrink: float = 0.1  # eigenvalues of the pair covariance shrunk towards their mean
    clean_probability: float = 0.5  # per view: many pairs are (original, copy), like a query
    max_strength: float = 1.3
    batch_size: int = 32
    workers: int = 1
    seed: int = 0


@dataclass(frozen=True)
class PairFeatures:
    a: np.ndarray  # N x C pooled features of view 1
    b: np.ndarray  # N x C pooled features of view 2
    seconds: float


@torch.inference_mode()
def pair_features(model: CopyDescriptor, files: Sequence[str | Path], *,
                  config: WhiteningConfig = WhiteningConfig()) -> PairFeatures:
    """GeM features (before any projection) of two copy-edit views of every file."""
    ds = CopyViewDataset(files, views_per_image=2, seed=config.seed, view_config=ViewConfig(
        image_size=config.image_size, clean_probability=config.clean_probability,
        max_strength=config.max_strength))
    loader = DataLoader(ds, batch_size=config.batch_size, num_workers=config.workers,
                        shuffle=False)
    model.eval()
    feats: list[np.ndarray] = []
    t0 = time.perf_counter()
    for i, batch in enumerate(loader):
        x = batch["views"].flatten(0, 1).float().div_(255.0)
        x = ((x - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
        feats.append(model.pool(model.backbone.forward_features(x)).float().numpy())
        if i % 20 == 0:
            log.info("pair features: %d / %d images", (i + 1) * config.batch_size, len(files))
    f = np.concatenate(feats).astype(np.float64)
    return PairFeatures(f[0::2], f[1::2], time.perf_counter() - t0)


def learn_whitening(pairs: PairFeatures, *, dims: int, shrink: float = 0.1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(weight dims x C, bias dims): y = W f + b, whitened by copy-pair differences."""
    both = np.concatenate([pairs.a, pairs.b])
    mean = both.mean(axis=0)
    diff = pairs.a - pairs.b
    cs = diff.T @ diff / len(diff)
    val, vec = np.linalg.eigh(cs)
    val = np.maximum(val, 1e-12)
    val = (1 - shrink) * val + shrink * val.mean()
    p_s = vec @ np.diag(val ** -0.5) @ vec.T
    centred = (both - mean) @ p_s.T
    cd = centred.T @ centred / len(centred)
    val_d, vec_d = np.linalg.eigh(cd)
    top = np.argsort(val_d)[::-1][:dims]
    weight = vec_d[:, top].T @ p_s
    return weight.astype(np.float32), (-weight @ mean).astype(np.float32)


def with_projection(model: CopyDescriptor, weight: np.ndarray, bias: np.ndarray, *,
                    image_size: int | None = None) -> CopyDescriptor:
    """A copy of `model` whose projection is the given linear map (dims = rows of weight)."""
    cfg = DescriptorConfig(**{**model.config.__dict__, "dims": int(weight.shape[0]),
                              "image_size": image_size or model.config.image_size})
    out = CopyDescriptor(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("projection.")}
    out.load_state_dict(state, strict=False)
    lin = out.projection
    assert isinstance(lin, nn.Linear)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(weight))
        lin.bias.copy_(torch.from_numpy(bias))
    return out.eval()
