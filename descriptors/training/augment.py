"""Training views for the copy descriptor: PIL copy edits on workers, mixing on tensors.

Views come from the same edit module as the benchmark generator (`descriptors.augment`), drawn
with training seeds and a randomised strength, so the descriptor learns invariance to the edits
real copies go through. Every view is resized to the model's square input, exactly as inference
sees an image (whole image, no crop). Contrastive mixup/cutmix runs on the batch tensor and
records which source images each mixed view contains: any overlap makes two views positives.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from copytrace.descriptors.augment import Edit, EditContext, jpeg, random_copy


@dataclass(frozen=True)
class ViewConfig:
    """How training views are drawn."""

    image_size: int = 160
    clean_probability: float = 0.2  # view is the image itself (a reference) + light JPEG
    min_strength: float = 0.5
    max_strength: float = 1.3
    max_edits: int = 3


def to_square(img: Image.Image, size: int) -> np.ndarray:
    """The inference input contract: the whole image resized to a square, uint8 H x W x 3."""
    return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)


def make_view(
    img: Image.Image,
    rng: random.Random,
    *,
    others: Sequence[Image.Image] = (),
    config: ViewConfig = ViewConfig(),
    edits: Mapping[str, Edit] | None = None,
) -> np.ndarray:
    """One training view of `img` as uint8 S x S x 3.

    `edits`: implementations of the copy edits (default `augment.EDITS`; the fast pipeline's
    `train_edits.FAST_EDITS` draw the same edits with the same parameters, cheaper).
    """
    out = make_view_image(img, rng, others=others, config=config, edits=edits)
    return to_square(out, config.image_size)


def make_view_image(
    img: Image.Image,
    rng: random.Random,
    *,
    others: Sequence[Image.Image] = (),
    config: ViewConfig = ViewConfig(),
    edits: Mapping[str, Edit] | None = None,
) -> Image.Image:
    """The edited image of a view before it is squashed to the model input."""
    if rng.random() < config.clean_probability:
        encode = jpeg if edits is None else edits["jpeg"]
        return encode(img, rng, EditContext(strength=0.2)) if rng.random() < 0.5 else img
    strength = rng.uniform(config.min_strength, config.max_strength)
    out, _ = random_copy(img, rng, context=EditContext(others=others, strength=strength),
                         max_edits=config.max_edits, edits=edits)
    return out


@dataclass(frozen=True)
class MixConfig:
    """Contrastive mixup / cutmix on a share of the batch's views (SSCD section 3.3)."""

    fraction: float = 0.25  # share of views replaced by a mix with another view
    cutmix_probability: float = 0.5  # else mixup
    alpha: float = 2.0  # Beta(alpha, alpha) for the mixing weight


def mix_views(
    views: torch.Tensor,
    instance_ids: torch.Tensor,
    num_instances: int,
    *,
    generator: torch.Generator | None = None,
    config: MixConfig = MixConfig(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a share of the views with other views of the batch.

    views: V x 3 x S x S float; instance_ids: V source-image indices in [0, num_instances).
    Returns the (new) views and a V x num_instances composition matrix: row v is the share of
    each source image in view v (one-hot for an unmixed view). Two views are positives when
    their compositions overlap.
    """
    v = views.shape[0]
    comp = torch.zeros(v, num_instances, dtype=views.dtype, device=views.device)
    comp[torch.arange(v), instance_ids] = 1.0
    n_mix = int(round(v * config.fraction))
    if n_mix == 0 or num_instances < 2:
        return views, comp
    out = views.clone()
    dev = views.device
    targets = torch.randperm(v, generator=generator)[:n_mix].to(dev)
    partners = torch.randint(0, v, (n_mix,), generator=generator).to(dev)
    same = instance_ids[partners] == instance_ids[targets]
    partners = torch.where(same, (partners + 1) % v, partners)  # rarely a view of itself
    beta = torch.distributions.Beta(torch.tensor(config.alpha), torch.tensor(config.alpha))
    size = views.shape[-1]
    new_comp = comp.clone()
    for t, p in zip(targets.tolist(), partners.tolist(), strict=True):
        if instance_ids[t] == instance_ids[p]:
            continue
        lam = float(beta.sample())
        if float(torch.rand((), generator=generator)) < config.cutmix_probability:
            cut = math.sqrt(1.0 - lam)
            ch, cw = max(1, int(size * cut)), max(1, int(size * cut))
            y = int(torch.randint(0, size - ch + 1, (), generator=generator))
            x = int(torch.randint(0, size - cw + 1, (), generator=generator))
            out[t, :, y : y + ch, x : x + cw] = views[p, :, y : y + ch, x : x + cw]
            lam = 1.0 - (ch * cw) / (size * size)
        else:
            out[t] = lam * views[t] + (1.0 - lam) * views[p]
        new_comp[t] = lam * comp[t] + (1.0 - lam) * comp[p]
    return out, new_comp
