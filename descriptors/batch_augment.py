"""Batch copy edits on tensors (kornia): extra augmentation that runs where the model runs.

The PIL edits of `augment.py` (overlays, image-in-image, text, emoji) run on DataLoader workers
and are the bulk of a copy's variety; on a GPU the workers become the bottleneck, so the cheap
photometric and geometric edits are redrawn here on the whole batch, on the device, for the
edited views only (clean views stay references). On by default with a GPU, off on CPU, where
it costs model time and the workers already keep up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchAugmentConfig:
    probability: float = 0.5  # per edit and view
    strength: float = 1.0


def make_batch_augment(config: BatchAugmentConfig = BatchAugmentConfig()) -> torch.nn.Module:
    """A kornia pipeline on N x 3 x S x S float images in [0, 1]; output has the same shape."""
    import kornia.augmentation as K

    p, s = config.probability, config.strength
    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=p * 0.5),
        K.RandomPerspective(distortion_scale=0.3 * s, p=p * 0.4),
        K.RandomRotation(degrees=20.0 * s, p=p * 0.3),
        K.ColorJiggle(0.4 * s, 0.4 * s, 0.4 * s, 0.1 * s, p=p),
        K.RandomGrayscale(p=p * 0.2),
        K.RandomGaussianBlur((5, 5), (0.1, 2.0 * s), p=p * 0.3),
        K.RandomGaussianNoise(std=0.04 * s, p=p * 0.2),
        K.RandomPosterize(bits=4, p=p * 0.1),
        data_keys=["input"],
    )


def augment_edited(images: torch.Tensor, clean: torch.Tensor, augment: torch.nn.Module
                   ) -> torch.Tensor:
    """Apply `augment` to the views that are not clean references; result clamped to [0, 1]."""
    edited = ~clean.to(images.device)
    if not bool(edited.any()):
        return images
    out = images.clone()
    out[edited] = augment(images[edited]).clamp_(0.0, 1.0).to(images.dtype)
    return out
