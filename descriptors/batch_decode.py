"""Batch JPEG decoding on the model's device (nvJPEG through torchvision), CPU fallback per file.

On a GPU, PIL decoding on the host is what keeps the model waiting (measured on an H100: 900
images/s end to end against ~14,000 for the bare forward). `torchvision.io.decode_jpeg` decodes
a whole batch on the device, the resize to the model's square runs there too, and the batch
stays there for the model (`decode_to_device`): the host only reads, checks and hashes the files,
on threads. Files the device decoder cannot take (other formats, CMYK or rotated-by-EXIF JPEGs,
anything it rejects) go through the safe CPU decoder (`descriptors.decode`), so both paths give
the same records. The geometry follows the CPU decoder's: JPEGs it would shrink by DCT scaling
(`Image.draft`) are box-averaged by the same factor first. On the CPU the same code runs with
libjpeg-turbo, which is how the tests exercise it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from copytrace.descriptors.decode import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    DecodeError,
    decode_bytes,
    read_bytes,
)

log = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_NO_PIXELS = np.empty((0, 0, 3), np.uint8)


@dataclass(frozen=True)
class DeviceBatch:
    """A batch decoded for the model: `pixels[k]` (3 x S x S float, whole values 0-255, on the
    device) belongs to the k-th input that decoded; `images` has every input's file facts
    (pixels left empty) or its error message, in input order."""

    pixels: torch.Tensor
    images: list[DecodedImage | str]


@dataclass(frozen=True)
class _Prepared:
    data: bytes
    width: int
    height: int
    draft: int  # the DCT scale PIL's decoder would use for this target size (1 = none)
    sha256: str


def _draft_scale(width: int, height: int, size: int) -> int:
    """The reduction `Image.draft(mode, (size, size))` picks for a JPEG: 8, 4, 2 or 1."""
    scale = min(width // size, height // size)
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def _plain_jpeg(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) when the device decoder can take the file as is, else None."""
    if data[:2] != b"\xff\xd8":
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                return None
            if img.width * img.height > max_pixels:
                return None  # the CPU decoder refuses it with its own message
            if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                return None
            return img.width, img.height
    except Exception:  # noqa: BLE001 - let the CPU decoder name what is wrong
        return None


def _prepare(path: str | Path, size: int, max_pixels: int) -> _Prepared | DecodedImage | str:
    """Host side of one file (runs on a thread): read, check, hash; CPU-decode what the device
    decoder cannot take."""
    try:
        data = read_bytes(path)
    except DecodeError as exc:
        return str(exc)
    dims = _plain_jpeg(data, max_pixels)
    if dims is None:
        return _cpu(data, size, max_pixels)
    return _Prepared(data, dims[0], dims[1], _draft_scale(*dims, size),
                     hashlib.sha256(data).hexdigest())


def _to_square(chw: torch.Tensor, size: int, draft: int) -> torch.Tensor:
    """3 x H x W uint8 -> 3 x size x size float: the CPU decoder's DCT shrink, then a bilinear
    antialiased squash (as `decode.to_model_square`)."""
    x = chw.unsqueeze(0).float()
    if draft > 1:
        x = torch.nn.functional.avg_pool2d(x, draft, ceil_mode=True)
    for shape in ((x.shape[2], size), (size, size)):  # PIL's two passes, each rounded to 8 bits
        x = torch.nn.functional.interpolate(x, size=shape, mode="bilinear", align_corners=False,
                                            antialias=True).round_().clamp_(0, 255)
    return x[0]


def _decode_jpegs(prepared: list[_Prepared], device: str | torch.device) -> list:
    """Decoded 3 x H x W uint8 tensors on `device`; None for each file when the batch fails."""
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffers: torch only reads them
        tensors = [torch.frombuffer(p.data, dtype=torch.uint8) for p in prepared]
    try:
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:  # one bad file fails the batch: decode those on the CPU
        log.info("batch JPEG decode failed (%s); decoding this batch on the CPU", exc)
        return [None] * len(prepared)


def decode_to_device(paths: list[str | Path], *, size: int, device: str | torch.device = "cuda",
                     max_pixels: int = DEFAULT_MAX_PIXELS,
                     threads: int | None = None) -> DeviceBatch:
    """Decode and squash files to the model's square, leaving the pixels on `device`."""
    threads = threads or min(16, max(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads, thread_name_prefix="prepare") as pool:
        prepared = list(pool.map(lambda p: _prepare(p, size, max_pixels), paths))
    jpegs = [(i, p) for i, p in enumerate(prepared) if isinstance(p, _Prepared)]
    decoded = dict(zip((i for i, _ in jpegs), _decode_jpegs([p for _, p in jpegs], device)
                       if jpegs else [], strict=True))
    images: list[DecodedImage | str] = []
    squares: list[torch.Tensor] = []
    for i, item in enumerate(prepared):
        if isinstance(item, _Prepared) and decoded[i] is None:
            item = _cpu(item.data, size, max_pixels)
        if isinstance(item, _Prepared):
            squares.append(_to_square(decoded[i], size, item.draft))
            item = DecodedImage(_NO_PIXELS, item.width, item.height, "jpeg", item.sha256,
                                len(item.data))
        elif isinstance(item, DecodedImage):
            host = item.pixels if item.pixels.flags.writeable else item.pixels.copy()  # PIL's
            # arrays are read-only; torch.from_numpy warns on memory it may not write
            squares.append(torch.from_numpy(host).to(device).permute(2, 0, 1).float())
            item = DecodedImage(_NO_PIXELS, item.width, item.height, item.format, item.sha256,
                                item.num_bytes)
        images.append(item)
    pixels = torch.stack(squares) if squares else torch.zeros((0, 3, size, size), device=device)
    return DeviceBatch(pixels, images)


def decode_batch(paths: list[str | Path], *, size: int, device: str | torch.device = "cuda",
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[DecodedImage | str]:
    """As `decode_to_device`, with each image's pixels brought back to the host (HWC uint8)."""
    batch = decode_to_device(paths, size=size, device=device, max_pixels=max_pixels)
    host = batch.pixels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out: list[DecodedImage | str] = []
    k = 0
    for item in batch.images:
        if isinstance(item, DecodedImage):
            item = DecodedImage(host[k], item.width, item.height, item.format, item.sha256,
                                item.num_bytes)
            k += 1
        out.append(item)
    return out


def _cpu(data: bytes, size: int, max_pixels: int) -> DecodedImage | str:
    try:
        return decode_bytes(data, max_pixels=max_pixels, target_size=size)
    except DecodeError as exc:
        return str(exc)
