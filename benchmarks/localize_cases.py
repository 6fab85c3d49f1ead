"""The pairs the localization benchmark scores: dev forgery sets plus edits made here.

Every tampered image travels the way copies do (a small crop of each side, a resize, a JPEG
re-encode; fixed seed) and its ground-truth mask goes through the same crop and resize.

* `micc-f220`: MICC-F220 copy-move forgeries. No masks ship: the edit is where the tampered
  image differs from its pixel-aligned original by more than 28 (8-bit, max over channels),
  cleaned up (the dataset README's recipe); `micc-f220-d8` uses threshold 8 (outside the edits
  the pairs are pixel-identical, and a pasted block often differs from what it covers by less
  than 28 over much of its area).
* `noso`: the shipped masks mark copy-move SOURCE and DESTINATION; only the destination differs
  from the original, so `noso-dest` restricts the mask to where the images differ, `noso-full`
  keeps it as shipped (a perfect diff scores well below 1 there).
* `made-edits`: edits made here on the last 300 ImageNet sample photos (never used for
  training): splice, copy-move, inpaint (object removal) and text caption in turn, then a crop of
  up to 4 % per side, a resize by 0.6-1.0 and JPEG 70-92. Each pair knows its edit kind.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from copytrace.descriptors import decode_file
from copytrace.matching import fill_holes

MICC_THRESHOLD = 28
MICC_LOW_THRESHOLD = 8  # the pairs are pixel-identical outside the edit (99th percentile diff 0)
MADE_KINDS = ("splice", "copy-move", "inpaint", "text")
# which predicted region kinds name each made edit correctly
KIND_ACCEPTS = {"splice": {"added", "replaced"}, "copy-move": {"replaced", "added"}, "inpaint": {"removed"},
                "text": {"text"}}
WORDS = ("BREAKING", "FAKE", "SALE", "EXCLUSIVE", "2026", "NEWS", "PROOF", "LOL", "REAL", "COPY")


@dataclass(frozen=True)
class Travel:
    """One post-processing draw: crop fractions (top, bottom, left, right), scale, JPEG quality."""

    crop: tuple[float, float, float, float]
    scale: float
    quality: int

    @staticmethod
    def draw(rng: np.random.Generator, *, max_crop: float = 0.04, scale: tuple[float, float] = (0.5, 1.0),
             quality: tuple[int, int] = (70, 90)) -> Travel:
        return Travel(tuple(float(v) for v in rng.uniform(0, max_crop, 4)), float(rng.uniform(*scale)),
                      int(rng.integers(quality[0], quality[1] + 1)))

    def _geometry(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        h, w = image.shape[:2]
        t, b, left, r = (round(self.crop[0] * h), round(self.crop[1] * h), round(self.crop[2] * w),
                         round(self.crop[3] * w))
        cropped = image[t:h - b, left:w - r]
        size = (max(8, round(cropped.shape[1] * self.scale)), max(8, round(cropped.shape[0] * self.scale)))
        return cropped, size

    def image(self, image: np.ndarray) -> np.ndarray:
        cropped, size = self._geometry(image)
        small = cv2.resize(cropped, size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()

    def mask(self, mask: np.ndarray) -> np.ndarray:
        cropped, size = self._geometry(mask)
        small = cv2.resize((cropped > 0).astype(np.float32), size, interpolation=cv2.INTER_AREA)
        return np.where(small >= 0.5, 255, 0).astype(np.uint8)


NO_TRAVEL = Travel((0.0, 0.0, 0.0, 0.0), 1.0, 100)

Truths = dict[str, np.ndarray]


@dataclass(frozen=True)
class Case:
    dataset: str  # the set it belongs to
    name: str
    original: Path
    load: Callable[[], tuple[np.ndarray, np.ndarray, Truths]]  # -> original, tampered, {variant: mask}
    kind: str | None = None  # the made edit's kind (made-edits only)
    travel: dict | None = None  # Travel.draw arguments for this set (None: the defaults)


def _disk(r: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2)


def changed_part(original: np.ndarray, forged: np.ndarray, mask: np.ndarray,
                 threshold: int = 8) -> np.ndarray:
    """The part of an edit mask where the forged image actually differs (closed, holes filled)."""
    changed = (_difference(original, forged) > threshold).astype(np.uint8)
    changed = fill_holes(cv2.morphologyEx(changed, cv2.MORPH_CLOSE, _disk(7)))
    return np.where(changed & (mask > 0), 255, 0).astype(np.uint8)


def micc_mask(original: np.ndarray, tampered: np.ndarray, threshold: int = MICC_THRESHOLD) -> np.ndarray:
    """MICC-F220 ground truth: thresholded difference of the aligned pair, cleaned up."""
    m = (_difference(original, tampered) > threshold).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(1))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(5))
    m = fill_holes(m).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= 5e-4 * m.size
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def _pixels(path: Path) -> np.ndarray:
    return decode_file(path).pixels


def noso_cases(root: Path) -> list[Case]:
    folder = root / "forgery" / "noso"
    with open(folder / "triples.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))

    def load(r: dict) -> Callable[[], tuple[np.ndarray, np.ndarray, Truths]]:
        def run() -> tuple[np.ndarray, np.ndarray, Truths]:
            o, f = _pixels(folder / r["original"]), _pixels(folder / r["forged"])
            full = np.where(cv2.imread(str(folder / r["mask"]), cv2.IMREAD_GRAYSCALE) > 127, 255, 0)
            full = full.astype(np.uint8)
            return o, f, {"noso-dest": changed_part(o, f, full), "noso-full": full}
        return run

    return [Case("noso", Path(r["forged"]).stem, folder / r["original"], load(r)) for r in rows]


def micc_cases(root: Path) -> list[Case]:
    folder = root / "forgery" / "micc-f220"
    with open(folder / "pairs.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("original_present", "True") == "True"]

    def load(r: dict) -> Callable[[], tuple[np.ndarray, np.ndarray, Truths]]:
        def run() -> tuple[np.ndarray, np.ndarray, Truths]:
            o, t = _pixels(folder / r["original"]), _pixels(folder / r["tampered"])
            return o, t, {"micc-f220": micc_mask(o, t), "micc-f220-d8": micc_mask(o, t, MICC_LOW_THRESHOLD)}
        return run

    return [Case("micc-f220", Path(r["tampered"]).stem, folder / r["original"], load(r)) for r in rows]


def _shape_mask(shape: tuple[int, int], box: tuple[int, int, int, int], ellipse: bool) -> np.ndarray:
    x, y, w, h = box
    m = np.zeros(shape, np.uint8)
    if ellipse:
        cv2.ellipse(m, (x + w // 2, y + h // 2), (w // 2, h // 2), 0, 0, 360, 255, -1)
    else:
        m[y:y + h, x:x + w] = 255
    return m


def _random_box(rng: np.random.Generator, shape: tuple[int, int], area: float) -> tuple[int, int, int, int]:
    H, W = shape
    aspect = float(rng.uniform(0.6, 1.6))
    w = int(np.clip(np.sqrt(area * H * W * aspect), 8, W - 2))
    h = int(np.clip(area * H * W / w, 8, H - 2))
    return int(rng.integers(0, W - w)), int(rng.integers(0, H - h)), w, h


def _text(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    H, W = image.shape[:2]
    words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3)), replace=False))
    font = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX][int(rng.integers(3))]
    thickness = int(rng.integers(2, 5))
    (tw, th), _ = cv2.getTextSize(words, font, 1.0, thickness)
    scale = float(rng.uniform(0.35, 0.7)) * W / tw
    (tw, th), base = cv2.getTextSize(words, font, scale, thickness)
    x = int(rng.integers(0, max(1, W - tw)))
    y = int(rng.integers(th + 2, max(th + 3, H - base)))
    colour = [(255, 255, 255), (0, 0, 0), (255, 230, 0), (230, 20, 20)][int(rng.integers(4))]
    out = image.copy()
    cv2.putText(out, words, (x, y), font, scale, colour, thickness, cv2.LINE_AA)
    mask = np.zeros((H, W), np.uint8)
    cv2.putText(mask, words, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    return out, np.where(mask > 64, 255, 0).astype(np.uint8)


def make_edit(kind: str, image: np.ndarray, donor: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(edited image, ground-truth mask) for one made edit of `image` (RGB uint8)."""
    shape = image.shape[:2]
    if kind == "text":
        out, mask = _text(image, rng)
        return out, changed_part(image, out, mask)
    area = float(rng.uniform(0.01, 0.04)) if kind == "inpaint" else float(rng.uniform(0.02, 0.08))
    box = _random_box(rng, shape, area)
    mask = _shape_mask(shape, box, bool(rng.integers(2)))
    if kind == "inpaint":
        out = cv2.inpaint(image, mask, 7, cv2.INPAINT_TELEA)
    else:
        x, y, w, h = box
        source = cv2.resize(donor, shape[::-1], interpolation=cv2.INTER_AREA) if kind == "splice" else image
        sx, sy = int(rng.integers(0, shape[1] - w)), int(rng.integers(0, shape[0] - h))
        if kind == "copy-move":  # the source must not overlap the destination
            for _ in range(20):
                if abs(sx - x) >= w or abs(sy - y) >= h:
                    break
                sx, sy = int(rng.integers(0, shape[1] - w)), int(rng.integers(0, shape[0] - h))
        patch = np.zeros_like(image)
        patch[y:y + h, x:x + w] = source[sy:sy + h, sx:sx + w]
        out = np.where(mask[..., None] > 0, patch, image)
    return out, changed_part(image, out, mask)


def made_edit_cases(root: Path, *, pairs: int = 60, seed: int = 0) -> list[Case]:
    """`pairs` edits of distinct photos among the last 300 ImageNet sample photos, kinds in turn."""
    photos = sorted((root / "photos" / "imagenet-sample").glob("*"))[-300:]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(photos), size=min(pairs, len(photos)), replace=False)
    cases = []
    for i, p in enumerate(picks):
        kind = MADE_KINDS[i % len(MADE_KINDS)]
        donor = photos[(int(p) + 1 + int(rng.integers(len(photos) - 1))) % len(photos)]
        edit_seed = int(rng.integers(2 ** 31))

        def run(path=photos[int(p)], donor=donor, kind=kind, s=edit_seed):
            o = _pixels(path)
            out, mask = make_edit(kind, o, _pixels(donor), np.random.default_rng(s))
            return o, out, {"made-edits": mask}

        cases.append(Case("made-edits", f"{kind}-{photos[int(p)].stem}", photos[int(p)], run, kind,
                          {"scale": (0.6, 1.0), "quality": (70, 92)}))
    return cases
