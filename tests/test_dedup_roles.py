"""Dedup uses the query path's evidence (issue 24): many different photos in one shared
screenshot frame are not duplicates (PDQ matches included); a photo pasted into another is a
composite with roles, never a duplicate cluster; `--keep largest` keeps the photo, not a
screenshot that shows it small."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from PIL import Image

from copytrace.benchmarks.dedup_planted import SHARED_STYLE, SMALL_BOX, social_frame
from copytrace.descriptors.pdq import pdq_hash
from copytrace.matching.clusters import connected_groups
from copytrace.matching.keep_rule import largest_content, member_content
from copytrace.matching.templates import learn_templates, thumbnail
from copytrace.matching.verify import load_rgb, verify_batch
from copytrace.pipelines.dedup.audit import PAIR_SCHEMA, decide, pairs_table
from copytrace.pipelines.dedup.candidates import Candidate
from copytrace.pipelines.dedup.composites import split_composites
from copytrace.pipelines.dedup.score import Kind, ScoredPair

from photos import PHOTO_NAMES, jpeg_bytes, photo

POSTED = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "coins", "camera", "grass", "brick", "retina", "moon")


def _ordinary(n: int, seed: int = 0) -> np.ndarray:
    """n made 'photos' as template thumbnails: smooth random texture under a flat sky band of a
    random grey (flat patches recur across ordinary photos by chance)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = cv2.resize(rng.integers(0, 256, (8, 8), np.uint8), (64, 64),
                         interpolation=cv2.INTER_CUBIC)
        img[: rng.integers(8, 24)] = rng.integers(150, 230)
        out.append(img)
    return np.stack(out)


@pytest.fixture(scope="module")
def posts() -> dict[str, np.ndarray]:
    """Twelve different photos, each shown small in the same screenshot frame."""
    return {n: np.asarray(social_frame(Image.fromarray(photo(n)), SHARED_STYLE, SMALL_BOX))
            for n in POSTED}


@pytest.fixture(scope="module")
def catalog_model(posts):
    """The template model of a 900-image catalog in which the frame recurs in 1.3 % of it."""
    thumbs = np.concatenate([np.stack([thumbnail(p) for p in posts.values()]),
                             np.stack([thumbnail(photo(n)) for n in PHOTO_NAMES]),
                             _ordinary(900 - len(posts) - len(PHOTO_NAMES))])
    return learn_templates(thumbs)


def _file(tmp_path, name: str, pixels: np.ndarray) -> str:
    path = tmp_path / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def test_template_model_learns_a_rare_frame_not_ordinary_content(posts, catalog_model):
    framed = catalog_model.template_cells(thumbnail(posts["coffee"])[None])[0]
    assert framed[:2].mean() == 1.0 and framed[13:].mean() == 1.0  # header and footer
    ordinary = catalog_model.template_cells(np.stack([thumbnail(photo(n)) for n in PHOTO_NAMES]
                                                     + list(_ordinary(40, seed=1))))
    assert ordinary.mean() < 0.02, ordinary.mean(axis=(1, 2))  # a flat sky is no frame


def test_photos_sharing_a_frame_are_not_pdq_duplicates(tmp_path, posts, catalog_model):
    """Two different photos shown small in one frame (grey, square: the frame is most of what
    PDQ sees) are a PDQ match and line up; the audit's verdict on the PDQ pair is "not a
    duplicate". Before, the frame was learned but the cells where the frame's edge meets the
    photo (half frame) agreed: coverage 0.62 >= 0.55."""
    a, b = "grass", "brick"
    distance = bin(int.from_bytes(pdq_hash(posts[a])[0], "big")
                   ^ int.from_bytes(pdq_hash(posts[b])[0], "big")).count("1")
    assert distance <= 31  # what made the false pairs "pdq" duplicates
    files = {n: _file(tmp_path, n, posts[n]) for n in (a, b)}
    v = verify_batch([(files[a], [files[b]])])[0][0]
    assert v is not None  # the frame lines up
    from copytrace.matching.templates import TemplateConfig, content_check

    template = catalog_model.template_cells(thumbnail(posts[a])[None])[0]
    check = content_check(load_rgb(files[a]), load_rgb(files[b]), v.homography, template,
                          config=TemplateConfig())
    pair = decide(Candidate(a, b, pdq_distance=distance), a, b, 0.9,
                  {"check": check, "inliers": v.inliers, "homography": ()}, 0.5)
    assert pair.kind == Kind.PDQ and not pair.duplicate, (pair.reason, check)
    # the same photo posted twice (re-encoded) stays a duplicate
    again = np.asarray(Image.open(io.BytesIO(jpeg_bytes(posts[a], 70))))
    files["again"] = _file(tmp_path, "again", again)
    v = verify_batch([(files[a], [files["again"]])])[0][0]
    check = content_check(load_rgb(files[a]), again, v.homography, template,
                          config=TemplateConfig())
    assert check.passed, check


def _composite() -> np.ndarray:
    background = Image.fromarray(photo("coffee"))
    background.paste(Image.fromarray(photo("astronaut")).resize((210, 210), Image.LANCZOS),
                     (330, 100))
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(background, 90))))


def _scored(q: str, o: str, v) -> ScoredPair:  # noqa: ANN001 - a Verification
    a, b = sorted((q, o))
    return ScoredPair(a, b, Kind.NEAR, 0.9, 0.8, None, v.inliers, 0.9, 0, True, "content match",
                      q, tuple(v.homography.reshape(-1)), 0.9, v)


def test_a_composite_is_reported_with_roles_not_clustered(tmp_path):
    files = {n: _file(tmp_path, n, p) for n, p in (("coffee", photo("coffee")),
                                                  ("astronaut", photo("astronaut")),
                                                  ("pasted", _composite()))}
    inserted = verify_batch([(files["pasted"], [files["astronaut"]])])[0][0]
    background = verify_batch([(files["coffee"], [files["pasted"]])])[0][0]  # other direction
    assert inserted is not None and background is not None
    pairs = [_scored("pasted", "astronaut", inserted), _scored("coffee", "pasted", background)]
    dups, composites, scored = split_composites(pairs, pairs)
    assert dups == [] and not any(p.duplicate for p in scored)
    roles = {frozenset((p.a, p.b)): {p.a: p.role_a, p.b: p.role_b} for p in composites}
    assert roles == {frozenset(("astronaut", "pasted")): {"astronaut": "inserted",
                                                          "pasted": "composite"},
                     frozenset(("coffee", "pasted")): {"coffee": "background",
                                                       "pasted": "composite"}}
    assert connected_groups((p.a, p.b) for p in dups) == []  # coffee and astronaut stay apart
    table = pairs_table(composites)
    assert table.schema.names[: len(PAIR_SCHEMA) - 3] == PAIR_SCHEMA.names[:-3]  # added at the end
    assert set(table.column("relation").to_pylist()) == {"composite"}
    # a plain copy beside it keeps its duplicate pair, without roles
    copy = verify_batch([(files["astronaut"], [files["astronaut"]])])[0][0]
    plain = ScoredPair("astronaut", "astronaut-copy", Kind.NEAR, 0.9, 0.9, None, copy.inliers,
                       0.9, 0, True, "content match", "astronaut",
                       tuple(copy.homography.reshape(-1)), 0.9, copy)
    dups, composites, _ = split_composites([plain], [plain])
    assert dups == [plain] and composites == [] and plain.role_a is None
    # partners that are duplicates of each other are not two photos in one composite (two
    # copies carrying the same pasted photo): the pairs stay duplicates
    link = ScoredPair("astronaut", "coffee", Kind.NEAR, 0.9, 0.9, None, copy.inliers, 0.9, 0, True,
                      "content match", "astronaut", tuple(copy.homography.reshape(-1)), 0.9, copy)
    dups, composites, _ = split_composites([*pairs, link], [*pairs, link])
    assert composites == [] and len(dups) == 3


@dataclass
class _Pair:
    a: str
    b: str
    query: str
    homography: tuple


def test_keep_largest_keeps_the_photo_not_a_busy_screenshot_showing_it_small():
    """A screenshot (one of a kind: no template to learn) whose busy page shows the photo at a
    quarter of its size has more textured pixels than the photo; the photo is kept."""
    orig = photo("coffee")  # 400 x 600
    rng = np.random.default_rng(0)
    page = cv2.resize(rng.integers(0, 256, (60, 66, 3), np.uint8), (1100, 1000),
                      interpolation=cv2.INTER_NEAREST)  # a busy page: blocks of colour
    page[80:320, 80:420] = 245  # the post's padding around the photo
    page[100:300, 100:400] = cv2.resize(orig, (300, 200), interpolation=cv2.INTER_AREA)
    images = {"photo": orig, "screenshot": page}
    sizes = {k: (v.shape[1], v.shape[0]) for k, v in images.items()}
    half = (0.5, 0.0, 100.0, 0.0, 0.5, 100.0, 0.0, 0.0, 1.0)  # photo -> screenshot
    content = member_content(list(images), [_Pair("photo", "screenshot", "photo", half)], sizes,
                             {}, images.__getitem__, texture_std=5.0)
    assert sizes["screenshot"][0] * sizes["screenshot"][1] > content["photo"].pixels
    assert largest_content(list(images), content, lambda m: (m,)) == "photo", content
