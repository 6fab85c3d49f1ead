"""Cheaper implementations of the copy edits for training views (OpenCV / numpy instead of PIL).

Each function here replaces the edit of the same name in `descriptors.augment` and draws
exactly the same random parameters in the same order (the `random.Random` ends in the same
state, so `random_copy` picks the same edits with the same probabilities); only the pixel
arithmetic is cheaper: OpenCV warps, blurs and resizes, float32 colour maths, float32 noise.
The benchmark generator keeps the PIL originals, so its queries stay byte-identical.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from copytrace.descriptors.augment import EDITS, Edit, EditContext

cv2.setNumThreads(1)  # worker processes: one core each


def _u(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)  # as augment draws it


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))  # as augment draws it


def _np(img: Image.Image) -> np.ndarray:
    """RGB pixels as a fresh array: np.array(img) is several times cheaper than np.asarray(img)
    (which goes through PIL's tobytes)."""
    return np.array(img if img.mode == "RGB" else img.convert("RGB"))


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(w, h) resize: area averaging when shrinking (like PIL's antialiased BILINEAR)."""
    w, h = size
    shrink = w < arr.shape[1] or h < arr.shape[0]
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_image(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(_resize(_np(img), size))


def rotate(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    arr = _np(img)
    if rng.random() < 0.2:
        k = rng.choice([90, 180, 270]) // 90
        return Image.fromarray(np.ascontiguousarray(np.rot90(arr, k)))
    angle = _u(rng, -25, 25) * ctx.strength
    expand = rng.random() < 0.5
    fill = _random_colour(rng)
    h, w = arr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    nw, nh = w, h
    if expand:
        c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        span_w, span_h = (w * c + h * s) / 2, (w * s + h * c) / 2  # PIL's bounding box
        nw = math.ceil(w / 2 + span_w) - math.floor(w / 2 - span_w)
        nh = math.ceil(h / 2 + span_h) - math.floor(h / 2 - span_h)
        m[0, 2] += (nw - w) / 2
        m[1, 2] += (nh - h) / 2
    out = cv2.warpAffine(arr, m, (nw, nh), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return Image.fromarray(out)


def colour(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """PIL's three ImageEnhance blends as saturating OpenCV blends (each stage clips to uint8)."""
    s = 0.6 * ctx.strength
    b = max(0.2, 1 + _u(rng, -s, s))
    c = max(0.2, 1 + _u(rng, -s, s))
    sat = max(0.0, 1 + _u(rng, -s, 1.5 * s))
    x = _np(img)
    x = cv2.addWeighted(x, b, x, 0.0, 0.0)  # brightness: blend with black
    mean = int(cv2.mean(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY))[0] + 0.5)
    x = cv2.addWeighted(x, c, x, 0.0, (1.0 - c) * mean)  # contrast: blend with the mean grey
    gray = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    out = cv2.addWeighted(x, sat, gray, 1.0 - sat, 0.0)  # saturation: blend with greyscale
    if rng.random() < 0.3:  # hue rotation
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] += np.uint8(rng.randrange(256))  # uint8 wraps: (h + shift) % 256
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    return Image.fromarray(out)


def blur(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    radius = _u(rng, 0.5, 1.0 + 3.0 * ctx.strength) * max(img.size) / 500
    return Image.fromarray(cv2.GaussianBlur(_np(img), (0, 0), sigmaX=radius))


def noise(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """Gaussian noise drawn by OpenCV as int16 and added with uint8 saturation."""
    arr = _np(img)
    sigma = _u(rng, 3, 5 + 20 * ctx.strength)
    cv2.setRNGSeed(rng.randrange(2**32) % 2**31)
    n = np.empty((arr.shape[0], arr.shape[1] * 3), np.int16)  # one channel: every value drawn
    cv2.randn(n, 0.0, sigma)
    n = n.reshape(arr.shape)
    return Image.fromarray(cv2.add(arr, n, dtype=cv2.CV_8U))


def jpeg(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """OpenCV's libjpeg round trip: the same bytes as PIL's (4:2:0, same tables), cheaper."""
    quality = rng.randint(max(5, round(60 - 45 * ctx.strength)), 90)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(_np(img), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    return Image.fromarray(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))


def to_square(img: Image.Image, size: int) -> np.ndarray:
    """`augment.to_square` (PIL's antialiased bilinear squash, the inference contract)
    computed by torch's uint8 kernel: within 0.1 grey level of PIL, cheaper."""
    x = torch.from_numpy(_np(img)).permute(2, 0, 1)[None]
    out = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out[0].permute(1, 2, 0).numpy()  # a view: the dataset's np.stack copies it once


def perspective(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    w, h = img.size
    d = 0.15 * ctx.strength
    src = [(_u(rng, 0, d) * w, _u(rng, 0, d) * h), (w - _u(rng, 0, d) * w, _u(rng, 0, d) * h),
           (w - _u(rng, 0, d) * w, h - _u(rng, 0, d) * h), (_u(rng, 0, d) * w, h - _u(rng, 0, d) * h)]
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    m = cv2.getPerspectiveTransform(np.float32(dst), np.float32(src))  # output -> input pixel
    out = cv2.warpPerspective(_np(img), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=_random_colour(rng))
    return Image.fromarray(out)


FAST_EDITS: dict[str, Edit] = {
    **EDITS, "rotate": rotate, "colour": colour, "blur": blur, "noise": noise, "jpeg": jpeg,
    "perspective": perspective,
}
"""Every edit of `augment.EDITS` under the same name: the cheaper version where there is one."""
