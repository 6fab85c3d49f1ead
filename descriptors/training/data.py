"""Training data: a dataset yielding several copy-style views per image.

Decoding and PIL edits run on DataLoader workers; the model step only sees uint8 tensors.
Image-in-image and overlay edits need other photos: each worker keeps a small ring of recently
decoded training images for that.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from copytrace.descriptors.augment import Edit
from copytrace.descriptors.decode import DecodeError
from copytrace.descriptors.training.augment import ViewConfig, make_view_image, to_square
from copytrace.descriptors.training.image_cache import ImageCache
from copytrace.descriptors.training.loading import load_for_training

log = logging.getLogger(__name__)

def sibling_windows(img: Image.Image, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """Two overlapping windows from opposite ends of one photo (55-70 % of its long side each).

    Trained as two different instances they are the hardest negatives a photo collection
    offers: same scene, lighting and camera, shared pixels, yet neither is a copy of the other,
    like two photos of one object from nearby viewpoints.
    """
    w, h = img.size
    frac = rng.uniform(0.55, 0.7)
    along_width = (w >= h) != (rng.random() < 0.25)
    if along_width:
        cw = max(1, round(w * frac))
        return img.crop((0, 0, cw, h)), img.crop((w - cw, 0, w, h))
    ch = max(1, round(h * frac))
    return img.crop((0, 0, w, ch)), img.crop((0, h - ch, w, h))


class CopyViewDataset(Dataset):
    """Item i: `views_per_image` views of image i as uint8 V x 3 x S x S, plus clean flags.

    With `siblings`, every file gives two instances (items 2i and 2i + 1): the two windows of
    `sibling_windows`, each with its own views.
    """

    def __init__(self, files: Sequence[str | Path], *, views_per_image: int = 2,
                 view_config: ViewConfig | None = None, seed: int = 0,
                 max_side: int | None = None, others_pool: int = 16,
                 siblings: bool = False, image_cache: ImageCache | None = None,
                 edits: Mapping[str, Edit] | None = None,
                 square: Callable[[Image.Image, int], np.ndarray] = to_square) -> None:
        if views_per_image < 2:
            raise ValueError("views_per_image must be >= 2: positives come from repeated views")
        self.files = [str(f) for f in files]
        self.siblings = siblings
        self.views_per_image = views_per_image
        self.view_config = view_config or ViewConfig()
        self.seed = seed
        self.max_side = max_side or 2 * self.view_config.image_size
        self.image_cache = image_cache  # images decoded once (image_cache), by file index
        self.edits = edits  # None: augment.EDITS (PIL); train_edits.FAST_EDITS: same, cheaper
        self.square = square  # edited image -> uint8 S x S x 3 model input
        self._others: deque[Image.Image] = deque(maxlen=others_pool)
        self._calls = 0

    def __len__(self) -> int:
        return len(self.files) * (2 if self.siblings else 1)

    def source_file(self, index: int) -> int:
        return index // 2 if self.siblings else index

    def _rng(self, index: int) -> random.Random:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        self._calls += 1
        return random.Random(hash((self.seed, index, worker, self._calls, torch.initial_seed())))

    def make_view(self, img: Image.Image, rng: random.Random, others: list[Image.Image],
                  config: ViewConfig) -> np.ndarray:
        out = make_view_image(img, rng, others=others, config=config, edits=self.edits)
        return self.square(out, config.image_size)

    def _load(self, file: int) -> Image.Image | None:
        if self.image_cache is not None:
            return self.image_cache.image(file)
        try:
            return load_for_training(self.files[file], max_side=self.max_side)
        except DecodeError as exc:
            log.warning("training image '%s' skipped: %s", self.files[file], exc)
            return None

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        file = self.source_file(index)
        img = self._load(file)
        if img is None:
            img = self._others[-1] if self._others else Image.new("RGB", (64, 64), (127, 127, 127))
        if self.siblings:  # both siblings must cut the same two windows
            img = sibling_windows(img, random.Random(hash((self.seed, file))))[index % 2]
        others = list(self._others)
        views, clean = [], []
        for _ in range(self.views_per_image):
            p_clean = self.view_config.clean_probability
            is_clean = rng.random() < p_clean
            cfg = self.view_config
            if is_clean:
                cfg = ViewConfig(**{**cfg.__dict__, "clean_probability": 1.0})
            else:
                cfg = ViewConfig(**{**cfg.__dict__, "clean_probability": 0.0})
            views.append(self.make_view(img, rng, others, cfg))
            clean.append(is_clean)
        self._others.append(img)
        arr = np.stack(views).transpose(0, 3, 1, 2)
        return {"views": torch.from_numpy(np.ascontiguousarray(arr)),
                "clean": torch.tensor(clean, dtype=torch.bool),
                "index": torch.tensor(index)}
