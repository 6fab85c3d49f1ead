"""PDQ perceptual hashes of pixels and of files: one definition for the catalog column, `copytrace
hash` and the dedup audit, so the same file always gets the same 256 bits wherever it is hashed.

PDQ resamples to 64 x 64 anyway, so a file is hashed from a JPEG DCT-scaled decode whose long
side stays >= HASH_MAX_SIDE, area-resized to HASH_MAX_SIDE. Against PDQ of the fully decoded file
(measured on 40 JPEGs from 737 x 492 to 4000 x 2670 px): 0-6 bits of 256 apart (mean 1.6; the
match threshold is 31), and 1.9-4.5x less CPU from 1152 px up (same below: nothing to skip).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pdqhash

from copytrace.descriptors.decode import DEFAULT_MAX_PIXELS, decode_bytes, read_bytes

PDQ_BYTES = 32
HASH_MAX_SIDE = 512


def pdq_hash(pixels: np.ndarray) -> tuple[bytes, int]:
    """(32-byte PDQ hash, quality 0-100) of RGB uint8 pixels."""
    h, w = pixels.shape[:2]
    scale = HASH_MAX_SIDE / max(h, w)
    if scale < 1:
        pixels = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))),
                            interpolation=cv2.INTER_AREA)
    bits, quality = pdqhash.compute(np.ascontiguousarray(pixels))
    return pack_bits(bits), int(quality)


def pack_bits(bits: np.ndarray) -> bytes:
    """pdqhash's 256 bits (most significant first) as the 32 bytes whose hex is the
    ThreatExchange string."""
    return np.packbits(np.asarray(bits).astype(np.uint8)).tobytes()


def hash_pixels_of(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels a file's PDQ hash is computed from (raises `DecodeError`)."""
    return decode_bytes(data, max_pixels=max_pixels, long_side=HASH_MAX_SIDE).pixels


def hash_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, int]:
    """PDQ hash and quality of an encoded image (raises `DecodeError`)."""
    return pdq_hash(hash_pixels_of(data, max_pixels=max_pixels))


def hash_file(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, int]:
    return hash_bytes(read_bytes(path), max_pixels=max_pixels)
