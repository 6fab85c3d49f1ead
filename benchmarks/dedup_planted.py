"""A dedup benchmark folder with planted copies and planted look-alikes that are NOT duplicates.

Duplicates: held-out references with one edited copy each (the project's edit generator), and
some references re-shared as a social-media screenshot (the photo inside a UI frame).
Non-duplicates that fool naive dedup: different photos inside the same screenshot frame, different
photos carrying the same watermark, and UKBench other-viewpoint photos of one object.
Ground truth: `groups.csv` (file, group, role); two files are duplicates iff they share a group.
File names are hashes, so no tool can lean on name order (`role` says what each file is).

Catalog-scale variants (parameters, all 0 by default): `shared_frame` different photos inside ONE
frame style none of the above uses (a frame recurring in ~1-2 % of a catalog: what the template
model must learn), `backgrounds_in_folder` of the photos the copy edits paste into or onto also
in the folder (a pasted copy then holds two catalog photos: a composite, whose group is its
reference's), and `extra_plain` more Caltech photos (from each category's third photo on) to
grow the catalog to a few thousand images.

Two disjoint splits: TEST (what dedup_bench reports) and FIT (other ImageNet references, the second
Caltech photo of each category, other UKBench objects), on which dedup's decisions are fitted
(benchmarks.dedup_fit), so nothing is tuned on the pairs the benchmark counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from copytrace.benchmarks.make_disc import jpeg_bytes, load_photo
from copytrace.descriptors import EditContext, random_copy
from copytrace.indexing import scan_folder
from copytrace.util import write_bytes_atomic

FRAME_SIZE = (480, 640)
PHOTO_BOX = (16, 84, 464, 500)  # where the photo sits inside the frame
SMALL_BOX = (16, 84, 256, 264)  # the shared-frame posts show it small: ~14 % of the frame


@dataclass(frozen=True)
class PlantedSet:
    folder: Path
    images: int
    true_pairs: int


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):
        return ImageFont.load_default()


def social_frame(photo: Image.Image, style: int = 0,
                 box: tuple[int, int, int, int] = PHOTO_BOX) -> Image.Image:
    """`photo` letterboxed inside a fixed screenshot frame: header (avatar, handle), footer
    (icons, likes, caption) and a logo; the frame is identical for every photo of one style.
    `box`: where the photo goes (SMALL_BOX: a post that shows it small, beside a text column)."""
    dark = style % 2 == 1
    bg, fg = ((18, 18, 18), (235, 235, 235)) if dark else ((255, 255, 255), (20, 20, 20))
    out = Image.new("RGB", FRAME_SIZE, bg)
    draw = ImageDraw.Draw(out)
    accent = [(225, 48, 108), (29, 161, 242), (255, 170, 0)][style % 3]
    draw.ellipse((16, 16, 64, 64), fill=accent)
    draw.ellipse((28, 28, 52, 52), fill=bg)
    draw.text((78, 20), ["@daily_pictures", "@world.news.now", "@pets_of_town"][style % 3],
              fill=fg, font=_font(20))
    draw.text((78, 46), "Sponsored · 2 h", fill=(128, 128, 128), font=_font(14))
    draw.text((430, 26), "···", fill=fg, font=_font(22))
    x0, y0, x1, y1 = box
    if box != PHOTO_BOX:  # the space the photo leaves: a text column, the same in every post
        for n, line in enumerate(("Read the full story", "on our website,", "link in bio.",
                                  "#news #daily", "#photooftheday")):
            draw.text((x1 + 14, y0 + 8 + 26 * n), line, fill=fg, font=_font(15))
    fitted = photo.copy()
    fitted.thumbnail((x1 - x0, y1 - y0), Image.BILINEAR)
    out.paste(fitted, (x0 + (x1 - x0 - fitted.width) // 2, y0 + (y1 - y0 - fitted.height) // 2))
    for i, cx in enumerate((36, 86, 136)):
        draw.rounded_rectangle((cx - 14, 514, cx + 14, 542), radius=6 + i * 4, outline=fg, width=3)
    draw.polygon([(430, 514), (452, 528), (430, 542)], outline=fg, fill=None)
    draw.text((20, 556), "Liked by 12,408 people and others", fill=fg, font=_font(16))
    draw.text((20, 582), "View all 1,024 comments", fill=(128, 128, 128), font=_font(15))
    draw.rectangle((360, 600, 470, 632), fill=accent)
    draw.text((370, 604), "FOLLOW", fill=(255, 255, 255), font=_font(20))
    return out


def watermark(photo: Image.Image) -> Image.Image:
    """The same stock-photo watermark (text and a badge) stamped in the lower right."""
    out = photo.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    w, h = out.size
    size = max(14, w // 18)
    draw.rounded_rectangle((w - 11 * size, h - 2 * size, w - 6, h - 6), radius=size // 3,
                           fill=(255, 255, 255, 150))
    draw.text((w - 10 * size, h - 1.8 * size), "© STOCKPIX", fill=(30, 30, 30, 230),
              font=_font(int(size * 1.2)))
    return Image.alpha_composite(out, layer).convert("RGB")


class Split(str, Enum):
    """Which photos and UKBench objects a planted folder is made of; the two share none."""

    TEST = "test"  # the last ImageNet references, first Caltech photos, first UKBench objects
    FIT = "fit"  # ImageNet photos 500.., second Caltech photos, UKBench objects after the test's


FIT_REFERENCE_START = 500
"""FIT references start here: after the edit backgrounds (100..500), before TEST's last 300."""

SHARED_STYLE = 3
"""The style of the `shared_frame` photos (dark, pink accent, the photo small: SMALL_BOX); the
planted screenshots and framed others use styles 0-2 with the photo large (PHOTO_BOX)."""

PHOTO_SIDE = 640
"""Photos are shrunk to fit this before planting."""


def _per_category(folder: Path, take: int) -> list[list[Path]]:
    """The first `take` photos of each category folder (distinct photos, no web near-dups)."""
    out = []
    for cat in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in cat.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) >= take:
            out.append(files[:take])
    return out


def _scale_rows(data: Path, put, rng: random.Random, *, fit: bool, shared_frame: int,
                backgrounds: list[Image.Image], extra_plain: int) -> None:
    """The catalog-scale variants of `make_planted` (each its own group): different photos in
    the one SHARED_STYLE frame, pasted-in backgrounds, more plain Caltech photos. Caltech photos
    here come from each category's third photo on (the splits use the first two; Caltech's
    BACKGROUND_Google clutter is left out), shuffled; FIT and TEST take disjoint halves."""
    pool = [p for c in _per_category_all(data / "photos" / "caltech101") for p in c[2:]]
    rng.shuffle(pool)
    pool.sort(key=lambda p: int(fit) != hash_bucket(p))  # FIT and TEST draw disjoint halves
    photos = iter(pool)
    for kind, count, make in (("shared", shared_frame,
                               lambda im: social_frame(im, SHARED_STYLE, SMALL_BOX)),
                              ("extra", extra_plain, lambda im: im)):
        made = 0
        while made < count and (path := next(photos, None)) is not None:
            if (img := load_photo(path, PHOTO_SIDE)) is not None:
                put(f"{kind}{made:04d}-{path.parent.name}", make(img), f"{kind}{made}")
                made += 1
    for j, img in enumerate(backgrounds):
        put(f"bg{j:04d}", img, f"bg{j}")


def hash_bucket(path: Path) -> int:
    """0 or 1 from the file's name: which split may use an extra Caltech photo."""
    return hashlib.sha1(f"{path.parent.name}/{path.name}".encode()).digest()[0] & 1


def _per_category_all(folder: Path) -> list[list[Path]]:
    return [sorted(p for p in cat.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            for cat in sorted(p for p in folder.iterdir() if p.is_dir())
            if not cat.name.startswith("BACKGROUND")]


def make_planted(data: str | Path, out: str | Path, *, seed: int = 0, references: int = 300,
                 screenshots: int = 50, framed_others: int = 40, watermarked: int = 25,
                 ukbench_groups: int = 50, distractors: int = 37, backgrounds: int = 400,
                 shared_frame: int = 0, backgrounds_in_folder: int = 0, extra_plain: int = 0,
                 split: Split | str = Split.TEST) -> PlantedSet:
    """Write `out/images/*.jpg` and `out/groups.csv` from the dev data folder `data`."""
    data, out, split = Path(data), Path(out), Split(split)
    rng = random.Random(seed)
    photos = [s.uri for s in scan_folder(data / "photos" / "imagenet-sample")]
    fit = split is Split.FIT
    imagenet = (photos[FIT_REFERENCE_START:FIT_REFERENCE_START + references] if fit
                else photos[-references:])
    # one photo per Caltech category: two photos of one category can be web near-duplicates
    others = [c[int(fit)] for c in _per_category(data / "photos" / "caltech101", 2 if fit else 1)]
    rng.shuffle(others)
    # what copy edits paste in or onto: a large pool, so two copies rarely share a background
    pasted = [(p, i) for p in photos[100:100 + backgrounds]
              if (i := load_photo(p, PHOTO_SIDE)) is not None]
    context = EditContext(others=[i for _, i in pasted])
    rows: list[tuple[str, str, str]] = []

    def put(name: str, img: Image.Image, group: str, quality: int = 90) -> None:
        file = hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:12] + ".jpg"
        write_bytes_atomic(out / "images" / file, jpeg_bytes(img, quality))
        rows.append((file, group, name))

    true_pairs = 0
    for i, path in enumerate(imagenet):
        img = load_photo(path, PHOTO_SIDE)
        if img is None:
            continue
        put(f"ref{i:04d}", img, f"g{i}", 95)
        copy = (social_frame(img, rng.randrange(3)) if i < screenshots
                else random_copy(img, rng, context=context)[0])
        put(f"copy{i:04d}", copy, f"g{i}")
        true_pairs += 1
    pool = iter(others)
    for kind, count, make in (("framed", framed_others, lambda im, j: social_frame(im, j % 3)),
                              ("wm", watermarked, lambda im, j: watermark(im)),
                              ("plain", distractors, lambda im, j: im)):
        for j in range(count):
            path = next(pool, None)
            img = load_photo(path, PHOTO_SIDE) if path is not None else None
            if img is not None:
                put(f"{kind}{j:04d}", make(img, j), f"{kind}{j}")
    _scale_rows(data, put, rng, fit=fit, shared_frame=shared_frame,
                backgrounds=[i for _, i in pasted][:backgrounds_in_folder], extra_plain=extra_plain)
    groups: dict[str, list[str]] = {}
    with open(data / "ukbench" / "groups.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            groups.setdefault(row["group"], []).append(row["file"])
    first = 50 if fit else 0  # TEST takes at most the first 50 objects
    for g in sorted(groups, key=int)[first:first + ukbench_groups]:
        for f in groups[g]:
            img = load_photo(data / "ukbench" / f, PHOTO_SIDE)
            if img is not None:
                put(f"ukb{Path(f).stem}", img, f"ukb{Path(f).stem}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("file", "group", "role"))
    writer.writerows(rows)
    write_bytes_atomic(out / "groups.csv", buf.getvalue().encode())
    return PlantedSet(out, len(rows), true_pairs)
