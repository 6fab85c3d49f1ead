"""Safe image decoding: every file either yields RGB pixels or a one-line reason.

A catalog build must never stop on one bad file, so decoding turns every failure mode seen on
real collections (empty, truncated, not an image, decompression bombs, odd modes, EXIF rotation)
into a `DecodeError` with a message a person can act on.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 180_000_000
"""Larger images are refused: beyond this they are almost surely decompression bombs. The check
reads only the header, so a 60k x 60k PNG costs nothing; this cap bounds decoded memory
(3 bytes a pixel, plus one working copy for mode conversion)."""

DEFAULT_MAX_BYTES = 256 * 2**20
"""Larger files are refused before they are read: a file is read whole into memory."""


_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


class DecodeError(Exception):
    """An input that cannot be turned into pixels; the message is the catalog's `error`."""


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus the facts the catalog records about the source file."""

    pixels: np.ndarray  # H x W x 3, uint8, RGB, EXIF orientation applied
    width: int  # of the source image as displayed (after EXIF orientation)
    height: int
    format: str
    sha256: str
    num_bytes: int
    pdq: bytes | None = None  # 32-byte PDQ hash of the file (`descriptors.pdq`), when asked for
    pdq_quality: int | None = None


def read_bytes(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's bytes, or a `DecodeError` saying why not. Never blocks on a pipe or device
    and never reads more than `max_bytes`."""
    p = Path(path)
    try:
        with open(p, "rb", opener=lambda f, flags: os.open(f, flags | os.O_NONBLOCK)) as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise DecodeError("is a directory, not an image")
            if not stat.S_ISREG(st.st_mode):
                raise DecodeError("not a regular file (device, pipe or socket)")
            if st.st_size > max_bytes:
                raise DecodeError(f"file too large: {st.st_size / 2**20:.0f} MiB exceeds the "
                                  f"{max_bytes / 2**20:.0f} MiB limit")
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        if os.path.islink(p):
            raise DecodeError("broken symbolic link (its target is missing)") from None
        raise DecodeError("file not found") from None
    except IsADirectoryError:
        raise DecodeError("is a directory, not an image") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError("symbolic link loop") from None
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew while being read
        raise DecodeError(f"file too large: exceeds the {max_bytes / 2**20:.0f} MiB limit")
    return data


def _displayed_size(img: Image.Image, w: int, h: int) -> tuple[int, int]:
    """Size after EXIF orientation; malformed EXIF is ignored (the pixels are still fine)."""
    try:
        if img.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS:
            return h, w
    except Exception as exc:  # noqa: BLE001 - broken EXIF must never cost the image
        log.debug("ignoring malformed EXIF: %s", exc)
    return w, h


def _exif_transposed(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception as exc:  # noqa: BLE001 - broken EXIF must never cost the image
        log.debug("ignoring malformed EXIF orientation: %s", exc)
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    """Bring every PIL mode to 8-bit RGB; transparency is composited on white, like a browser."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255 else 1.0
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def to_model_square(img: Image.Image, size: int) -> Image.Image:
    """The descriptor's input: the whole image squashed to a square (no crop loses content).

    Files and in-memory crops both go through here, so a crop embeds like an indexed image.
    """
    return img.resize((size, size), Image.BILINEAR)


def _draft_box(w: int, h: int, target_size: int | None,
               long_side: int | None) -> tuple[int, int] | None:
    """The size a JPEG decode may shrink to (PIL's draft keeps both sides >= it): the model's
    square, or the image scaled to `long_side` on its long side."""
    if target_size is not None:
        return target_size, target_size
    if long_side is None:
        return None
    scale = long_side / max(w, h, 1)
    return max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))


def decode_bytes(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
    long_side: int | None = None,
) -> DecodedImage:
    """Decode encoded image bytes to RGB pixels.

    With `target_size`, the result is resized to a `target_size` square (the descriptor's input),
    and JPEG decoding uses DCT scaling to skip work it would throw away. With `long_side` alone,
    a JPEG is DCT-scaled (by 1/2, 1/4 or 1/8) no further than its long side >= `long_side`,
    aspect kept: enough pixels for a hash that resamples them anyway, at a fraction of a full
    decode.
    """
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        raise DecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap below
            img = Image.open(io.BytesIO(data))
            fmt = (img.format or "unknown").lower()
            w, h = img.size
            if w * h > max_pixels:
                raise DecodeError(
                    f"image too large: {w}x{h} = {w * h / 1e6:.0f} MP exceeds the "
                    f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)"
                )
            box = _draft_box(w, h, target_size, long_side)
            if box is not None and fmt == "jpeg":
                img.draft("RGB" if img.mode in ("RGB", "L", "YCbCr") else None, box)
            img.load()
            w, h = _displayed_size(img, w, h)
            img = _exif_transposed(img)
            img = _to_rgb(img)
            if target_size is not None:
                img = to_model_square(img, target_size)
            pixels = np.asarray(img, dtype=np.uint8)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(f"image too large (possible decompression bomb): {exc}") from None
    except OSError as exc:
        msg = str(exc)
        if "truncated" in msg:
            raise DecodeError("truncated image data (file cut short)") from None
        raise DecodeError(f"corrupt image data: {msg}") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise DecodeError(f"corrupt image data: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - hostile input must never crash a build
        raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise DecodeError(f"unexpected decoded shape {pixels.shape}")
    return DecodedImage(pixels, int(w), int(h), fmt, digest, len(data))


def decode_file(
    path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, target_size: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DecodedImage:
    return decode_bytes(read_bytes(path, max_bytes=max_bytes), max_pixels=max_pixels,
                        target_size=target_size)
