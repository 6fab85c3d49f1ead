"""Tamper patterns the descriptor's training edits never made (`descriptors.augment` has none of
them): what a query adapter must learn from a few examples. Each is `f(img, rng) -> img`, PIL in,
PIL out, deterministic for a given `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Pattern = Callable[[Image.Image, random.Random], Image.Image]


def mosaic(img: Image.Image, rng: random.Random) -> Image.Image:
    """The photo cut into a 3x3 grid of tiles, shuffled, with gutters and per-tile tints."""
    img = img.convert("RGB")
    w, h = img.size
    n, gap = 3, max(2, round(0.025 * min(w, h)))
    tw, th = w // n, h // n
    tiles = [img.crop((c * tw, r * th, (c + 1) * tw, (r + 1) * th)) for r in range(n)
             for c in range(n)]
    rng.shuffle(tiles)
    out = Image.new("RGB", (n * tw + (n + 1) * gap, n * th + (n + 1) * gap),
                    (rng.randrange(200, 256),) * 3)
    for i, tile in enumerate(tiles):
        arr = np.asarray(tile, np.float32) * np.array([rng.uniform(0.8, 1.2) for _ in range(3)])
        out.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)),
                  (gap + (i % n) * (tw + gap), gap + (i // n) * (th + gap)))
    return out


def glitch_bands(img: Image.Image, rng: random.Random) -> Image.Image:
    """Horizontal bands torn sideways, colour channels split, a few bands of digital noise."""
    arr = np.asarray(img.convert("RGB")).copy()
    h, w = arr.shape[:2]
    y = 0
    while y < h:
        bh = rng.randrange(max(2, h // 40), max(3, h // 8))
        shift = rng.randrange(-w // 5, w // 5 + 1)
        arr[y : y + bh] = np.roll(arr[y : y + bh], shift, axis=1)
        if rng.random() < 0.15:
            arr[y : y + bh] = np.random.default_rng(rng.randrange(2**32)).integers(
                0, 256, arr[y : y + bh].shape, dtype=np.uint8)
        y += bh
    dx = max(2, w // 40)
    arr[:, :, 0] = np.roll(arr[:, :, 0], dx, axis=1)
    arr[:, :, 2] = np.roll(arr[:, :, 2], -dx, axis=1)
    return Image.fromarray(arr)


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: tuple) -> None:
    pts = []
    for k in range(10):
        a = np.pi / 2 + k * np.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append((cx + rr * np.cos(a), cy - rr * np.sin(a)))
    draw.polygon(pts, fill=fill, outline=(255, 255, 255))


def sticker_frame(img: Image.Image, rng: random.Random) -> Image.Image:
    """A thick candy-coloured frame covered with stickers (stars, hearts as circles), some of
    them over the photo."""
    img = img.convert("RGB")
    w, h = img.size
    b = round(0.16 * min(w, h))
    frame = tuple(rng.randrange(150, 256) for _ in range(3))
    out = Image.new("RGB", (w + 2 * b, h + 2 * b), frame)
    out.paste(img, (b, b))
    draw = ImageDraw.Draw(out)
    W, H = out.size
    for _ in range(rng.randrange(14, 22)):
        colour = tuple(rng.randrange(256) for _ in range(3))
        r = rng.uniform(0.35, 0.7) * b
        side = rng.randrange(4)
        x = rng.uniform(0, W) if side < 2 else (rng.uniform(0, b) if side == 2 else
                                                  rng.uniform(W - b, W))
        y = rng.uniform(0, H) if side >= 2 else (rng.uniform(0, b) if side == 0 else
                                                   rng.uniform(H - b, H))
        if rng.random() < 0.5:
            _star(draw, x, y, r, colour)
        else:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour, outline=(255, 255, 255),
                         width=3)
    return out


def polaroid_frame(img: Image.Image, rng: random.Random) -> Image.Image:
    """An instant-photo print: white border with a thick bottom, tilted a few degrees on a
    textured table with a drop shadow."""
    img = img.convert("RGB")
    w, h = img.size
    b = round(0.06 * min(w, h))
    card = Image.new("RGB", (w + 2 * b, h + b + 4 * b), (rng.randrange(235, 256),) * 3)
    card.paste(img, (b, b))
    pad = round(0.18 * max(card.size))
    table = np.random.default_rng(rng.randrange(2**32)).normal(
        0, 18, (card.size[1] + 2 * pad, card.size[0] + 2 * pad, 1))
    base = np.array([rng.randrange(60, 160) for _ in range(3)], np.float32)
    bg = Image.fromarray(np.clip(base + table, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(2))
    angle = rng.uniform(-8, 8)
    mask = Image.new("L", card.size, 255).rotate(angle, expand=True)
    shadow = Image.new("L", mask.size, 0)
    shadow.paste(mask, (0, 0))
    shadow = shadow.filter(ImageFilter.GaussianBlur(b / 2))
    rotated = card.rotate(angle, expand=True, resample=Image.BICUBIC)
    x, y = (bg.size[0] - rotated.size[0]) // 2, (bg.size[1] - rotated.size[1]) // 2
    bg.paste((20, 20, 20), (x + b // 2, y + b // 2), shadow.point(lambda v: v * 0.6))
    bg.paste(rotated, (x, y), mask)
    return bg


def halftone(img: Image.Image, rng: random.Random) -> Image.Image:
    """Heavy colour halftone: each channel as dots on its own grid, dot size from darkness."""
    img = img.convert("RGB")
    w, h = img.size
    cell = max(5, round(min(w, h) / rng.uniform(45, 65)))
    out = np.full((h, w, 3), 255, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    small = np.asarray(img.resize((max(1, w // cell), max(1, h // cell)), Image.BOX), np.float32)
    for c in range(3):
        off = (c * cell) // 3
        gy = np.clip((yy + off) // cell, 0, small.shape[0] - 1)
        gx = np.clip((xx + off) // cell, 0, small.shape[1] - 1)
        ink = 1.0 - small[gy, gx, c] / 255.0  # darkness of the cell in this channel
        cy, cx = (gy + 0.5) * cell - off, (gx + 0.5) * cell - off
        dist = np.hypot(yy - cy, xx - cx) / (cell * 0.75)
        out[..., c] = np.where(dist < np.sqrt(ink), 0, 255)
    return Image.fromarray(out).filter(ImageFilter.GaussianBlur(0.6))


PATTERNS: dict[str, Pattern] = {
    "mosaic": mosaic, "glitch_bands": glitch_bands, "sticker_frame": sticker_frame,
    "polaroid_frame": polaroid_frame, "halftone": halftone,
}
