"""Reading training images: which files (the same listing rule as `index build`), and their
pixels shrunk so edits stay cheap; the DataLoader workers' set-up."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from copytrace.descriptors.decode import decode_file
from copytrace.util.listing import is_image_name, is_listing, listing_paths


def list_images(folders: Sequence[str | Path], *, limits: Sequence[int | None] | None = None
                ) -> list[Path]:
    """Image files of each input: a folder (recursive, sorted by path), one image file, or a
    .parquet/.csv listing (its rows in order); `limits[i]` keeps the first n of input i."""
    out: list[Path] = []
    for i, folder in enumerate(folders):
        folder = Path(folder)
        if folder.is_file() and is_listing(folder):
            files = listing_paths(folder)
        elif folder.is_file():
            files = [folder]
        elif folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p))
        else:
            raise FileNotFoundError(f"training images: no such file or folder '{folder}'")
        limit = limits[i] if limits is not None and i < len(limits) else None
        out.extend(files[:limit] if limit is not None else files)
    return out


def one_thread_worker(worker_id: int) -> None:
    """DataLoader worker init: one torch thread per worker, the cores belong to the model."""
    torch.set_num_threads(1)


def load_for_training(path: str | Path, *, max_side: int) -> Image.Image:
    """Decode (JPEG DCT-scaled) and shrink so edits stay cheap; raises DecodeError."""
    pixels = decode_file(path, target_size=None).pixels
    img = Image.fromarray(pixels)
    img.thumbnail((max_side, max_side), Image.BILINEAR)
    return img
