"""Content, not templates: is a verified pair's evidence on the content or only on a shared frame?

Two different photos posted in the same social-media screenshot frame, under the same caption
band, logo or watermark match each other geometrically: the frame lines up. A frame is whatever
recurs, at the same place, across many images of a catalog; so template cells are learned from
a sample of catalog thumbnails: a cell of image A is template when >= `min_recurrence` sampled
images show the same pixels there AND share A's frame, i.e. also show the same pixels on at
least `partner_cells` of A's textured cells. A flat patch of sky or wall recurs by chance in
many photos without their sharing anything else, so ordinary content is not learned; a frame
(avatar, handle, icons, caption band) recurs as a whole, flat background included, from a few
dozen posts (~1 % of a 2,000-image sample). A pair then counts as a duplicate only when the
aligned pixels agree over the part of the overlap that is NOT template, nor next to it
(`template_margin`: a cell straddling the frame's edge is half frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import faiss
import numpy as np

GRID = 16  # cells per side, in normalized image coordinates
THUMB = 64  # template thumbnails: THUMB x THUMB grey, aspect ignored
ALIGN = 128  # side of the grey images compared for agreement


@dataclass(frozen=True)
class TemplateConfig:
    sample: int = 2000  # catalog thumbnails the recurrence counts are taken over
    cell_rms: float = 7.0  # grey levels: two cells closer than this (RMS) show the same thing
    min_recurrence: int = 8  # a cell seen in this many sampled images is template
    recurrence_fraction: float = 0.004  # ... or in this share of the sample, if larger
    texture_std: float = 5.0  # flatter cells carry no evidence either way
    agree_ncc: float = 0.5  # aligned cells with at least this correlation agree
    min_content_cells: int = 6  # fewer textured non-template cells in the overlap: no evidence
    min_coverage: float = 0.55  # share of content cells that must agree
    template_margin: int = 1  # cells this close to a template cell are not content either
    partner_cells: int = 4  # a sampled image counts toward A's recurrence only when it also
    # shows A's pixels on this many of A's textured cells (it shares A's frame, not one patch)
    query_block: int = 256  # thumbnails whose recurrence is counted at once (memory bound)


@dataclass(frozen=True)
class ContentCheck:
    """How much of the non-template overlap of A agrees with B once aligned."""

    overlap_cells: int  # textured cells of A that B covers
    template_cells: int  # of those, template
    agreeing_content: int  # non-template cells that agree
    agreeing_all: int  # cells that agree, template or not
    passed: bool

    @property
    def coverage(self) -> float:
        """Agreeing share of the content (non-template) overlap."""
        content = self.overlap_cells - self.template_cells
        return self.agreeing_content / content if content > 0 else 0.0


def thumbnail(pixels: np.ndarray, side: int = THUMB) -> np.ndarray:
    """side x side grey uint8 (aspect ignored: cells are in normalized coordinates)."""
    grey = pixels if pixels.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(pixels),
                                                        cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)


def _cells(thumbs: np.ndarray) -> np.ndarray:
    """N x side x side -> GRID*GRID x N x (cell pixels) float32, one block per grid position."""
    n, side = thumbs.shape[0], thumbs.shape[1]
    c = side // GRID
    blocks = thumbs.reshape(n, GRID, c, GRID, c).transpose(1, 3, 0, 2, 4)
    return np.ascontiguousarray(blocks.reshape(GRID * GRID, n, c * c).astype(np.float32))


@dataclass
class TemplateModel:
    """Recurrence of every grid cell across a sample of the catalog."""

    sample: np.ndarray  # S x THUMB x THUMB uint8
    config: TemplateConfig

    @property
    def min_count(self) -> int:
        return max(self.config.min_recurrence,
                   int(np.ceil(self.config.recurrence_fraction * len(self.sample))))

    def template_cells(self, thumbs: np.ndarray) -> np.ndarray:
        """K x GRID x GRID bool: cells of each thumbnail that recur, with its frame, in the sample.

        Sampled images that match a thumbnail as a whole (its own copies, resized or
        re-encoded) are not counted: many copies of one photo do not make it a template."""
        k = len(thumbs)
        if k == 0 or len(self.sample) == 0:
            return np.zeros((k, GRID, GRID), bool)
        s = _cells(self.sample)
        indexes = []
        for p in range(GRID * GRID):
            index = faiss.IndexFlatL2(s.shape[2])
            index.add(s[p])
            indexes.append(index)
        whole = faiss.IndexFlatL2(THUMB * THUMB)
        whole.add(self.sample.reshape(len(self.sample), -1).astype(np.float32))
        step = max(1, self.config.query_block)
        return np.concatenate([self._block(thumbs[i : i + step], indexes, whole)
                               for i in range(0, k, step)])

    def _block(self, thumbs: np.ndarray, indexes: list, whole) -> np.ndarray:  # noqa: ANN001
        k, q = len(thumbs), _cells(thumbs)
        radius = self.config.cell_rms ** 2 * q.shape[2]
        textured = q.std(axis=2) >= self.config.texture_std  # GRID*GRID x K
        shared = np.zeros((k, len(self.sample)), np.int32)  # textured cells each pair shares
        hits = []
        for p, index in enumerate(indexes):
            lims, _, found = index.range_search(q[p], radius)
            rows = np.repeat(np.arange(k), np.diff(lims).astype(np.int64))
            hits.append((rows, found))
            keep = textured[p][rows]
            np.add.at(shared, (rows[keep], found[keep]), 1)
        partner = shared >= self.config.partner_cells
        lims, _, found = whole.range_search(thumbs.reshape(k, -1).astype(np.float32),
                                            (2 * self.config.cell_rms) ** 2 * THUMB * THUMB)
        partner[np.repeat(np.arange(k), np.diff(lims).astype(np.int64)), found] = False
        counts = np.stack([np.bincount(rows[partner[rows, found]], minlength=k)
                           for rows, found in hits])
        return (counts >= self.min_count).T.reshape(k, GRID, GRID)


def template_sample(n: int, *, config: TemplateConfig = TemplateConfig(),
                    seed: int = 0) -> np.ndarray:
    """Rows (ascending) of n catalog images whose thumbnails the recurrence model is learned
    from: all of them up to `config.sample`, else a seeded random sample. Callers that make
    thumbnails on demand make only these (and those of the images they check)."""
    if n <= config.sample:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, config.sample, replace=False))


def learn_templates(thumbs: np.ndarray, *, config: TemplateConfig = TemplateConfig(),
                    seed: int = 0) -> TemplateModel:
    """A recurrence model from (a random sample of) the catalog's thumbnails."""
    thumbs = thumbs[template_sample(len(thumbs), config=config, seed=seed)]
    return TemplateModel(np.ascontiguousarray(thumbs), config)


def _scale(w: int, h: int) -> np.ndarray:
    return np.diag([ALIGN / w, ALIGN / h, 1.0])


def with_margin(template: np.ndarray, margin: int) -> np.ndarray:
    """`template` (GRID x GRID bool) grown by `margin` cells (4-neighbourhood steps).

    A cell straddling a frame's edge is half frame: the white border beside a photo, or the
    photo's edge against the frame, lines up in ANY two screenshots of one style, so two
    different photos can "agree" on such cells alone (a photo shown small has many such cells).
    On by default (`template_margin` 1) since recurrence needs a shared frame (`partner_cells`):
    before, plain sky / striped cells of ordinary photos recurred by chance and the margin grew
    them over the content of true copies."""
    if margin <= 0 or not template.any():
        return template
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    return cv2.dilate(template.astype(np.uint8), cross, iterations=margin).astype(bool)


def content_check(a: np.ndarray, b: np.ndarray, homography: np.ndarray, template: np.ndarray,
                  *, config: TemplateConfig = TemplateConfig()) -> ContentCheck:
    """Align B onto A with `homography` (A pixels -> B pixels, full resolution) and count the
    cells of A where they agree, separating A's `template` cells (GRID x GRID bool) from content.

    `a`, `b`: RGB or grey uint8 at full resolution (any size; both are resampled to ALIGN).
    """
    (ha, wa), (hb, wb) = a.shape[:2], b.shape[:2]
    small_h = _scale(wb, hb) @ homography @ np.linalg.inv(_scale(wa, ha))
    ga = cv2.GaussianBlur(thumbnail(a, ALIGN), (3, 3), 0).astype(np.float32)
    gb = cv2.GaussianBlur(thumbnail(b, ALIGN), (3, 3), 0).astype(np.float32)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(gb, small_h, (ALIGN, ALIGN), flags=flags)
    valid = cv2.warpPerspective(np.ones_like(gb), small_h, (ALIGN, ALIGN), flags=flags)
    ca, cb = _cells(ga[None])[:, 0], _cells(warped[None])[:, 0]
    cv = _cells(valid[None])[:, 0]
    da, db = ca - ca.mean(1, keepdims=True), cb - cb.mean(1, keepdims=True)
    sa, sb = da.std(1), db.std(1)
    ncc = (da * db).mean(1) / (sa * sb + 1e-6)
    overlap = (cv.min(1) > 0.99) & (sa >= config.texture_std)
    agree = overlap & (ncc >= config.agree_ncc)
    tmpl = with_margin(np.asarray(template, bool), config.template_margin).reshape(-1) & overlap
    content = overlap & ~tmpl
    n_content = int(content.sum())
    # too little non-template content in the overlap: nothing but the template to go on
    passed = (n_content >= config.min_content_cells
              and (agree & content).sum() >= config.min_coverage * n_content)
    return ContentCheck(int(overlap.sum()), int(tmpl.sum()), int((agree & content).sum()),
                        int(agree.sum()), bool(passed))
