"""`--keep largest` by content, not raw pixels: a screenshot of a photo has more pixels than the
photo (the frame adds them), yet the photo is the one to keep.

An image's content is the part a verified duplicate pair covers (the shared picture) plus its
textured, non-template rest; a recurring frame, caption band or logo (template cells learned
from the catalog, as the content check does) and blank margins or letterbox bars are not
content. So a crop copy loses to its original (the original has more content), and a
screenshot showing the photo at about the photo's own scale ties with it: within `TIE` the
image that is most content (least frame) is kept, then more bytes, then catalog order.

A frame seen once (one screenshot, a busy page around a small photo) is no template, yet it is
not content either: where another member's picture lands inside an image behind a seam (its
outline is an edge the picture's inside does not have: `framed`), the image frames it and only
its covered part counts. A crop's outline in its original runs through the scene, no seam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from copytrace.matching.templates import ALIGN, TemplateConfig, thumbnail, with_margin

TIE = 0.05
"""Content pixel counts within this relative margin are equal (homography and cell noise)."""
SEAM = 2.0
"""Mean gradient along a footprint's outline over that just inside it: at least this, a seam."""
FLAT_OUTSIDE = 0.5
"""Texture just outside a footprint under this share of that just inside: padding, a frame."""
FRAMED_AT_MOST = 0.8
"""A footprint covering more of an image than this leaves no frame around it to speak of."""


@dataclass(frozen=True)
class Content:
    pixels: int  # content pixels, at the image's own resolution
    share: float  # content pixels / all pixels


def covered_mask(homography: np.ndarray, size_from: tuple[int, int],
                 size_to: tuple[int, int]) -> np.ndarray:
    """ALIGN x ALIGN bool over the `size_from` (w, h) image: where `homography` (its pixels ->
    the other image's pixels) lands inside the `size_to` image, i.e. what the other shows too."""
    (wf, hf), (wt, ht) = size_from, size_to
    to_small = np.diag([ALIGN / wt, ALIGN / ht, 1.0])
    from_small = np.diag([wf / ALIGN, hf / ALIGN, 1.0])
    h = to_small @ homography @ from_small  # small-from -> small-to
    ones = np.ones((ALIGN, ALIGN), np.uint8)
    return cv2.warpPerspective(ones, h, (ALIGN, ALIGN), flags=cv2.INTER_NEAREST
                               | cv2.WARP_INVERSE_MAP) > 0


def framed(grey: np.ndarray, footprint: np.ndarray) -> bool:
    """Whether `footprint` (ALIGN x ALIGN bool: where another member's picture lands in this
    image, `grey` at ALIGN) sits in a frame: just outside its outline (away from the image's own
    edges) the image is flat padding while the picture just inside is not (FLAT_OUTSIDE), or the
    outline is a seam (SEAM times the gradient of a ring just inside it). A crop's outline in
    its original runs through the scene: the same texture on both sides, no step."""
    share = float(footprint.mean())
    if share == 0.0 or share > FRAMED_AT_MOST:
        return False
    f = footprint.astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    inner = lambda n: cv2.erode(f, cross, iterations=n) > 0  # noqa: E731
    outer = lambda n: cv2.dilate(f, cross, iterations=n) > 0  # noqa: E731
    away = np.zeros_like(footprint)
    away[4:-4, 4:-4] = True  # an outline on the image's border frames nothing
    edge, outside = (f > 0) & ~inner(1) & away, outer(3) & ~outer(1) & away
    if edge.sum() < 16 or outside.sum() < 16:
        return False
    g = cv2.GaussianBlur(grey, (3, 3), 0)
    mean = cv2.blur(g, (3, 3))
    std = np.sqrt(np.maximum(cv2.blur(g * g, (3, 3)) - mean * mean, 0))
    if std[outside].mean() + 1.0 < FLAT_OUTSIDE * (std[inner(1) & ~inner(3)].mean() + 1.0):
        return True
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    band = cv2.dilate(edge.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    ring = inner(4) & ~inner(8)
    return bool(ring.sum() >= 16 and grad[band].mean() >= SEAM * (grad[ring].mean() + 1.0))


def content_of(pixels: np.ndarray, covered: np.ndarray, template: np.ndarray | None, *,
               texture_std: float, frames: bool = False) -> Content:
    """Content of one image (RGB or grey at full size): covered, or textured and not template;
    an image that `frames` the covered picture (`framed`) is its covered part alone."""
    h, w = pixels.shape[:2]
    if frames:
        share = float(covered.mean())
        return Content(int(round(w * h * share)), share)
    g = thumbnail(pixels, ALIGN).astype(np.float32)
    mean = cv2.blur(g, (5, 5))
    textured = np.sqrt(np.maximum(cv2.blur(g * g, (5, 5)) - mean * mean, 0)) >= texture_std
    # the 5 x 5 window sees an edge from 2 px away: a blank margin beside a photo is not textured
    textured = cv2.erode(textured.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if template is not None:
        cell = ALIGN // template.shape[0]
        textured &= ~np.kron(template, np.ones((cell, cell), bool))
    share = float((covered | textured).mean())
    return Content(int(round(w * h * share)), share)


def member_content(members: Sequence[str], pairs: Iterable, sizes: dict[str, tuple[int, int]],
                   templates: dict[str, np.ndarray], load: Callable[[str], np.ndarray], *,
                   texture_std: float) -> dict[str, Content]:
    """Content of each member from the verified pairs (ScoredPair: `query`, `homography`
    query -> other) among them; `load` reads an image's pixels by id."""
    covered = {m: np.zeros((ALIGN, ALIGN), bool) for m in members}
    footprints: dict[str, list[np.ndarray]] = {m: [] for m in members}
    for p in pairs:
        if len(p.homography) != 9 or not p.query or p.a not in covered or p.b not in covered:
            continue
        h = np.asarray(p.homography, np.float64).reshape(3, 3)
        if not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
            continue
        q, o = p.query, (p.b if p.query == p.a else p.a)
        for x, y, hx in ((q, o, h), (o, q, np.linalg.inv(h))):
            mask = covered_mask(hx, sizes[x], sizes[y])
            covered[x] |= mask
            footprints[x].append(mask)
    out = {}
    for m in members:
        try:
            pixels = load(m)
            grey = thumbnail(pixels, ALIGN).astype(np.float32)
            out[m] = content_of(pixels, covered[m], templates.get(m), texture_std=texture_std,
                                frames=any(framed(grey, f) for f in footprints[m]))
        except Exception:  # noqa: BLE001 - unreadable now: judged by its pixel count
            w, h = sizes[m]
            out[m] = Content(w * h, 1.0)
    return out


def largest_content(members: Sequence[str], content: dict[str, Content],
                    tiebreak: Callable[[str], tuple]) -> str:
    """The member with the most content; within TIE of the most, the one that is most content
    (least frame), then `tiebreak` (smallest first)."""
    best = max(content[m].pixels for m in members)
    close = [m for m in members if content[m].pixels >= (1.0 - TIE) * best]
    return min(close, key=lambda m: (-round(content[m].share, 2), tiebreak(m)))


def member_templates(cells: dict[str, np.ndarray], *, config: TemplateConfig
                     ) -> dict[str, np.ndarray]:
    """Members' template cells (`ImageFeatures.template_cells`) grown by the content check's
    margin, as the content check sees them."""
    return {m: with_margin(c, config.template_margin) for m, c in cells.items()}
