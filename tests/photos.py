"""Test helpers: real photos that ship with scikit-image, and JPEG encoding."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
               "immunohistochemistry", "coins", "moon", "camera", "brick", "grass")


def photo(name: str) -> np.ndarray:
    """An RGB uint8 photo that ships with scikit-image."""
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).convert("RGB"))


def jpeg_bytes(arr: np.ndarray | Image.Image, quality: int = 92) -> bytes:
    img = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()
