"""Decode every training image once: a memory-mapped file of pre-shrunk RGB pixels.

Live-view training decodes each source image again every epoch, and on the shipped recipe's
data that decode (full JPEG/WebP decode + shrink) cost as much as the edits. The cache holds
each image exactly as `load_for_training` returns it (same shrink, same pixels), so views drawn
from it are the views drawn from the files; it costs H x W x 3 bytes per image on disk (about
0.3 MB at a 448-px long side) and reads at memory speed, shared by every DataLoader worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from copytrace.descriptors.decode import DecodeError
from copytrace.descriptors.training.loading import load_for_training, one_thread_worker
from copytrace.util.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_VERSION = 1


class ImageCache:
    """Image i of the training list as a PIL image; None where the file did not decode."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.max_side = int(meta["max_side"])
        index = np.load(self.folder / "index.npy")  # N x 3: byte offset, height, width
        self.offsets, self.heights, self.widths = index[:, 0], index[:, 1], index[:, 2]
        self._pixels: np.ndarray | None = None  # opened lazily: each worker maps it itself

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    def image(self, i: int) -> Image.Image | None:
        h, w = int(self.heights[i]), int(self.widths[i])
        if h == 0:
            return None
        if self._pixels is None:
            self._pixels = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r")
        start = int(self.offsets[i])
        return Image.fromarray(np.array(self._pixels[start : start + h * w * 3]).reshape(h, w, 3))


def cache_key(files: Sequence[str | Path], max_side: int) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}:{max_side}".encode())
    for f in files:
        h.update(str(f).encode() + b"\0")
    return h.hexdigest()[:16]


class _Decode(Dataset):
    def __init__(self, files: Sequence[str | Path], max_side: int) -> None:
        self.files, self.max_side = [str(f) for f in files], max_side

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        try:
            return np.array(load_for_training(self.files[i], max_side=self.max_side))
        except DecodeError as exc:
            log.warning("training image '%s' skipped: %s", self.files[i], exc)
            return np.zeros((0, 0, 3), np.uint8)


def build_image_cache(
    files: Sequence[str | Path],
    folder: str | Path,
    *,
    max_side: int,
    workers: int = 0,
    show_progress: bool = True,
) -> ImageCache:
    """Decode `files` into `folder` (reused when it already holds these files at `max_side`)."""
    folder = Path(folder)
    key = cache_key(files, max_side)
    meta_file = folder / "meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()).get("key") == key:
        return ImageCache(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_file.unlink(missing_ok=True)  # an interrupted build leaves no valid meta behind
    loader = DataLoader(_Decode(files, max_side), batch_size=None, num_workers=workers,
                        worker_init_fn=one_thread_worker if workers else None)
    index = np.zeros((len(files), 3), np.int64)
    tmp = folder / f".pixels.u8.tmp-{os.getpid()}"
    offset = 0
    bar = progress_bar("decoding training images once", len(files), enabled=show_progress,
                       transient=True)
    with open(tmp, "wb") as fh, bar as advance:
        for i, arr in enumerate(loader):
            arr = arr.numpy() if isinstance(arr, torch.Tensor) else arr
            fh.write(np.ascontiguousarray(arr, np.uint8).tobytes())
            index[i] = (offset, arr.shape[0], arr.shape[1])
            offset += arr.size
            advance(1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / "pixels.u8")
    np.save(folder / "index.npy", index)
    meta = {"key": key, "max_side": max_side, "images": len(files), "bytes": offset,
            "version": CACHE_VERSION}
    tmp_meta = folder / f".meta.json.tmp-{os.getpid()}"
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, meta_file)
    log.info("image cache: %d images, %.1f MB in %s", len(files), offset / 1e6, folder)
    return ImageCache(folder)
