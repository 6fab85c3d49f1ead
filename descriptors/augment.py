"""Copy-style edits: the transformations real copies go through (DISC2021 / AugLy families).

One module serves two users with different seeds and strengths: descriptor training (random
views of an image that must map to the same descriptor) and the benchmark generator (the
reproducible queries of `copytrace bench make-disc`). Every edit takes a PIL RGB image and a
`random.Random`, and returns a new PIL RGB image; nothing here touches global random state.
"""

from __future__ import annotations

import io
import math
import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Edit = Callable[[Image.Image, random.Random, "EditContext"], Image.Image]


@dataclass(frozen=True)
class EditContext:
    """What some edits need beyond the image: other images to paste onto or into it."""

    others: Sequence[Image.Image] = ()
    strength: float = 1.0  # 0 = gentle, 1 = DISC-like, >1 harsher

    def other(self, rng: random.Random, like: Image.Image) -> Image.Image:
        if self.others:
            return self.others[rng.randrange(len(self.others))].convert("RGB")
        arr = np.random.default_rng(rng.randrange(2**32)).integers(0, 255, (8, 8, 3), np.uint8)
        return Image.fromarray(arr).resize(like.size, Image.BILINEAR)


def _u(rng: random.Random, lo: float, hi: float) -> float:
    return rng.uniform(lo, hi)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(8, size))
    except (TypeError, OSError):
        return ImageFont.load_default()


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def crop(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    w, h = img.size
    area = _u(rng, max(0.1, 0.6 - 0.35 * ctx.strength), 0.95)
    aspect = math.exp(_u(rng, -0.4, 0.4))
    cw = max(8, min(w, round(w * math.sqrt(area * aspect))))
    ch = max(8, min(h, round(h * math.sqrt(area / aspect))))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((x, y, x + cw, y + ch))


def pad(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    w, h = img.size
    f = 0.3 * ctx.strength
    left, right = round(w * _u(rng, 0, f)), round(w * _u(rng, 0, f))
    top, bottom = round(h * _u(rng, 0, f)), round(h * _u(rng, 0, f))
    out = Image.new("RGB", (w + left + right, h + top + bottom), _random_colour(rng))
    out.paste(img, (left, top))
    return out


def rotate(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    if rng.random() < 0.2:
        return img.rotate(rng.choice([90, 180, 270]), expand=True)
    angle = _u(rng, -25, 25) * ctx.strength
    return img.rotate(angle, resample=Image.BILINEAR, expand=rng.random() < 0.5,
                      fillcolor=_random_colour(rng))


def hflip(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    return ImageOps.mirror(img) if rng.random() < 0.8 else ImageOps.flip(img)


def colour(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    s = 0.6 * ctx.strength
    img = ImageEnhance.Brightness(img).enhance(max(0.2, 1 + _u(rng, -s, s)))
    img = ImageEnhance.Contrast(img).enhance(max(0.2, 1 + _u(rng, -s, s)))
    img = ImageEnhance.Color(img).enhance(max(0.0, 1 + _u(rng, -s, 1.5 * s)))
    if rng.random() < 0.3:  # hue rotation
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + rng.randrange(256)) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
    return img


def grayscale(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    return ImageOps.grayscale(img).convert("RGB")


def blur(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    radius = _u(rng, 0.5, 1.0 + 3.0 * ctx.strength) * max(img.size) / 500
    return img.filter(ImageFilter.GaussianBlur(radius))


def noise(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    sigma = _u(rng, 3, 5 + 20 * ctx.strength)
    gen = np.random.default_rng(rng.randrange(2**32))
    return Image.fromarray(np.clip(arr + gen.normal(0, sigma, arr.shape), 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    quality = rng.randint(max(5, round(60 - 45 * ctx.strength)), 90)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def pixelize(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    w, h = img.size
    f = _u(rng, 0.1, 0.5)
    small = img.resize((max(4, round(w * f)), max(4, round(h * f))), Image.BILINEAR)
    return small.resize((w, h), Image.NEAREST)


def rescale(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    w, h = img.size
    fx = _u(rng, 0.3, 1.5)
    fy = fx * math.exp(_u(rng, -0.3, 0.3) * ctx.strength)
    return img.resize((max(16, round(w * fx)), max(16, round(h * fy))), Image.BILINEAR)


def _words(rng: random.Random) -> str:
    n = rng.randint(1, 5)
    return " ".join(
        "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(2, 9)))
        for _ in range(n)
    )


def text(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    img = img.copy()
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(rng.randint(1, 1 + round(2 * ctx.strength))):
        size = round(h * _u(rng, 0.05, 0.08 + 0.12 * ctx.strength))
        xy = (rng.randint(0, max(1, w // 2)), rng.randint(0, max(1, h - size)))
        draw.text(xy, _words(rng), fill=_random_colour(rng), font=_font(size),
                  stroke_width=rng.choice([0, 0, 1, 2]), stroke_fill=_random_colour(rng))
    return img


def shapes(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """Emoji-like stickers: filled shapes, opaque or translucent."""
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = base.size
    for _ in range(rng.randint(1, 1 + round(3 * ctx.strength))):
        r = round(min(w, h) * _u(rng, 0.05, 0.1 + 0.15 * ctx.strength))
        cx, cy = rng.randint(0, w), rng.randint(0, h)
        fill = (*_random_colour(rng), rng.choice([255, 255, 200, 128]))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif kind == 1:
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a))
                   for a in np.linspace(0, 2 * math.pi, 11)[:-1]]
            pts = [p if i % 2 == 0 else (cx + (p[0] - cx) / 2.5, cy + (p[1] - cy) / 2.5)
                   for i, p in enumerate(pts)]
            draw.polygon(pts, fill=fill)
    return Image.alpha_composite(base, layer).convert("RGB")


def paste_into(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """Image-in-image: the copy is a smaller version of `img` pasted onto another photo."""
    bg = ctx.other(rng, img)
    bw, bh = bg.size
    f = _u(rng, max(0.25, 0.6 - 0.3 * ctx.strength), 0.8)
    scale = f * min(bw / img.width, bh / img.height)
    fg = img.resize((max(8, round(img.width * scale)), max(8, round(img.height * scale))),
                    Image.BILINEAR)
    out = bg.copy()
    out.paste(fg, (rng.randint(0, bw - fg.width), rng.randint(0, bh - fg.height)))
    return out


def paste_other(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """Overlay another photo onto part of `img` (a distractor covering 10-35% of it)."""
    other = ctx.other(rng, img)
    w, h = img.size
    f = _u(rng, 0.3, 0.4 + 0.2 * ctx.strength)
    ow = max(8, round(w * f))
    oh = max(8, round(ow * other.height / max(1, other.width)))
    oh = min(oh, h)
    fg = other.resize((ow, oh), Image.BILINEAR)
    out = img.copy()
    out.paste(fg, (rng.randint(0, w - ow), rng.randint(0, h - oh)))
    return out


def opacity(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    other = ctx.other(rng, img).resize(img.size, Image.BILINEAR)
    return Image.blend(img, other, _u(rng, 0.1, 0.2 + 0.25 * ctx.strength))


def perspective(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    w, h = img.size
    d = 0.15 * ctx.strength
    src = [(_u(rng, 0, d) * w, _u(rng, 0, d) * h), (w - _u(rng, 0, d) * w, _u(rng, 0, d) * h),
           (w - _u(rng, 0, d) * w, h - _u(rng, 0, d) * h), (_u(rng, 0, d) * w, h - _u(rng, 0, d) * h)]
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    coeffs = np.linalg.solve(np.array(a, float), np.array(b, float))
    return img.transform((w, h), Image.PERSPECTIVE, tuple(coeffs), Image.BILINEAR,
                         fillcolor=_random_colour(rng))


def meme(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    """A caption band above (and sometimes below) the image, like a meme or screenshot frame."""
    w, h = img.size
    band = round(h * _u(rng, 0.12, 0.3))
    bottom = band if rng.random() < 0.4 else 0
    out = Image.new("RGB", (w, h + band + bottom), rng.choice([(255, 255, 255), (0, 0, 0),
                                                               _random_colour(rng)]))
    out.paste(img, (0, band))
    draw = ImageDraw.Draw(out)
    colour_ = (0, 0, 0) if sum(out.getpixel((0, 0))) > 380 else (255, 255, 255)
    draw.text((w // 20, band // 4), _words(rng), fill=colour_, font=_font(band // 2))
    return out


def stripes(img: Image.Image, rng: random.Random, ctx: EditContext) -> Image.Image:
    arr = np.asarray(img).copy()
    period = rng.randint(6, 40)
    width = rng.randint(1, max(1, period // 3))
    colour_ = np.array(_random_colour(rng), np.uint8)
    alpha = _u(rng, 0.3, 0.8)
    idx = (np.arange(arr.shape[0]) % period) < width
    if rng.random() < 0.5:
        arr[idx] = (alpha * colour_ + (1 - alpha) * arr[idx]).astype(np.uint8)
    else:
        idx = (np.arange(arr.shape[1]) % period) < width
        arr[:, idx] = (alpha * colour_ + (1 - alpha) * arr[:, idx]).astype(np.uint8)
    return Image.fromarray(arr)


EDITS: dict[str, Edit] = {
    "crop": crop, "pad": pad, "rotate": rotate, "flip": hflip, "colour": colour,
    "grayscale": grayscale, "blur": blur, "noise": noise, "jpeg": jpeg, "pixelize": pixelize,
    "rescale": rescale, "text": text, "shapes": shapes, "paste_into": paste_into,
    "paste_other": paste_other, "opacity": opacity, "perspective": perspective, "meme": meme,
    "stripes": stripes,
}

# How often each edit is drawn: geometric and overlay edits dominate DISC2021 queries.
EDIT_WEIGHTS: dict[str, float] = {
    "crop": 3, "pad": 1, "rotate": 1, "flip": 1, "colour": 2, "grayscale": 0.7, "blur": 1,
    "noise": 0.7, "jpeg": 1, "pixelize": 0.5, "rescale": 1, "text": 2, "shapes": 1.5,
    "paste_into": 1.5, "paste_other": 1, "opacity": 0.5, "perspective": 1, "meme": 1,
    "stripes": 0.5,
}


@dataclass(frozen=True)
class CopyRecipe:
    """A reproducible random copy: which edits were applied, in order."""

    edits: tuple[str, ...]


def random_copy(
    img: Image.Image,
    rng: random.Random,
    *,
    context: EditContext = EditContext(),
    min_edits: int = 1,
    max_edits: int = 3,
    allowed: Sequence[str] | None = None,
    final_jpeg: bool = True,
    edits: Mapping[str, Edit] | None = None,
) -> tuple[Image.Image, CopyRecipe]:
    """Apply 1-3 weighted-random edits (no edit twice), then usually a JPEG re-encode.

    `edits` swaps in other implementations of the same edits (the training views' cheaper
    ones); the choice of edits and their probabilities stay those of `EDITS`/`EDIT_WEIGHTS`.
    """
    impl = EDITS if edits is None else edits
    names = [n for n in EDITS if allowed is None or n in allowed]
    weights = [EDIT_WEIGHTS[n] for n in names]
    k = rng.randint(min_edits, max_edits)
    chosen: list[str] = []
    while len(chosen) < min(k, len(names)):
        name = rng.choices(names, weights)[0]
        if name not in chosen:
            chosen.append(name)
    out = img.convert("RGB")
    for name in chosen:
        out = impl[name](out, rng, context)
        if out.width < 8 or out.height < 8:
            out = out.resize((max(8, out.width), max(8, out.height)))
    if final_jpeg and "jpeg" not in chosen and rng.random() < 0.7:
        out = impl["jpeg"](out, rng, EditContext(strength=0.3))
        chosen.append("jpeg")
    return out, CopyRecipe(tuple(chosen))
