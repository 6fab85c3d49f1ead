"""Split views: the workers draw every edit, the device applies the photometric/geometric ones.

A deferred edit draws exactly the random parameters its CPU version draws (same order, same
`random.Random` state afterwards), so the choice and parameters of edits are unchanged; it only
records them. Each view then carries a small float row of parameters, and
`batch_edits.apply_deferred` applies them to the whole batch on the device, after the
worker-side edits (overlays, text, emoji, image-in-image, crop, pad, stripes). Sizes are
relative to the final worker image (`size` of the row), whose squashed square the device sees,
so warps, blur radii and noise scale as they would on that image.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from copytrace.descriptors.augment import EditContext
from copytrace.descriptors.training.augment import ViewConfig, make_view_image
from copytrace.descriptors.training.data import CopyViewDataset

DEFERRED = ("flip", "grayscale", "colour", "blur", "noise", "jpeg", "pixelize", "rescale",
            "rotate", "perspective")
"""Edits applied on the device in the split pipeline; the others stay on the workers."""

# One row per view: up to MAX_DEFERRED edits as (kind, 11 parameters), then the final size.
MAX_DEFERRED = 4  # at most 3 recipe edits + the final JPEG
SLOT = 12
ROW = MAX_DEFERRED * SLOT + 2
KIND = {name: i + 1 for i, name in enumerate(DEFERRED)}  # 0 = empty slot


def _u(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)  # as augment draws it


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))  # as augment draws it


# Each recorder draws what `augment.<edit>` draws, in the same order, and returns parameters.
def _flip(rng: random.Random, ctx: EditContext) -> list[float]:
    return [1.0 if rng.random() < 0.8 else 0.0]  # 1: mirror (left-right), 0: flip (up-down)


def _grayscale(rng: random.Random, ctx: EditContext) -> list[float]:
    return []


def _colour_params(rng: random.Random, ctx: EditContext) -> list[float]:
    s = 0.6 * ctx.strength
    b = max(0.2, 1 + _u(rng, -s, s))
    c = max(0.2, 1 + _u(rng, -s, s))
    sat = max(0.0, 1 + _u(rng, -s, 1.5 * s))
    hue = rng.randrange(256) if rng.random() < 0.3 else -1
    return [b, c, sat, float(hue)]


def _blur(rng: random.Random, ctx: EditContext) -> list[float]:
    return [_u(rng, 0.5, 1.0 + 3.0 * ctx.strength) / 500]  # x the long side = radius


def _noise(rng: random.Random, ctx: EditContext) -> list[float]:
    sigma = _u(rng, 3, 5 + 20 * ctx.strength)
    return [sigma, float(rng.randrange(2**32) % 2**24)]


def _jpeg(rng: random.Random, ctx: EditContext) -> list[float]:
    return [float(rng.randint(max(5, round(60 - 45 * ctx.strength)), 90))]


def _pixelize(rng: random.Random, ctx: EditContext) -> list[float]:
    return [_u(rng, 0.1, 0.5)]


def _rescale(rng: random.Random, ctx: EditContext) -> list[float]:
    fx = _u(rng, 0.3, 1.5)
    return [fx, fx * math.exp(_u(rng, -0.3, 0.3) * ctx.strength)]


def _rotate(rng: random.Random, ctx: EditContext) -> list[float]:
    if rng.random() < 0.2:
        return [float(rng.choice([90, 180, 270])), 1.0, 0.0, 0.0, 0.0]
    angle = _u(rng, -25, 25) * ctx.strength
    expand = rng.random() < 0.5
    return [angle, float(expand), *_colour(rng)]


def _perspective(rng: random.Random, ctx: EditContext) -> list[float]:
    d = 0.15 * ctx.strength
    corners = [_u(rng, 0, d) for _ in range(8)]  # fractions of w/h inset at each corner
    return [*corners, *_colour(rng)]


RECORDERS: dict[str, Callable[[random.Random, EditContext], list[float]]] = {
    "flip": _flip, "grayscale": _grayscale, "colour": _colour_params, "blur": _blur,
    "noise": _noise, "jpeg": _jpeg, "pixelize": _pixelize, "rescale": _rescale,
    "rotate": _rotate, "perspective": _perspective,
}


class DeferredRecord:
    """The deferred edits of the view being made (a worker makes one view at a time)."""

    def __init__(self) -> None:
        self.slots: list[list[float]] = []

    def edit(self, name: str) -> _Recorder:
        return _Recorder(self, name)

    def row(self, size: tuple[int, int]) -> np.ndarray:
        out = np.zeros(ROW, np.float32)
        for i, slot in enumerate(self.slots):
            out[i * SLOT : i * SLOT + len(slot)] = slot
        out[-2:] = size  # (width, height) of the final worker image
        self.slots = []
        return out


class _Recorder:
    """Stands in for edit `name`: draws its parameters into `record` and leaves the image as
    it is (a class, not a closure, so datasets pickle into spawned DataLoader workers)."""

    def __init__(self, record: DeferredRecord, name: str) -> None:
        self.record, self.name, self.draw = record, name, RECORDERS[name]

    def __call__(self, img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
        params = self.draw(rng, ctx)
        if len(self.record.slots) < MAX_DEFERRED:
            self.record.slots.append([float(KIND[self.name]), *params])
        return img


class DeferredViewDataset(CopyViewDataset):
    """Like `CopyViewDataset`, with the deferred edits recorded into `item['deferred']`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record = DeferredRecord()
        self.edits = {**(self.edits or {}), **{n: self.record.edit(n) for n in DEFERRED}}
        self._rows: list[np.ndarray] = []

    def make_view(self, img: Image.Image, rng: random.Random, others: list[Image.Image],
                  config: ViewConfig) -> np.ndarray:
        out = make_view_image(img, rng, others=others, config=config, edits=self.edits)
        self._rows.append(self.record.row(out.size))
        return self.square(out, config.image_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        self._rows = []
        item = super().__getitem__(index)
        item["deferred"] = torch.from_numpy(np.stack(self._rows))
        return item
