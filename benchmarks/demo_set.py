"""The demo's data: scikit-image's photos as references, edited copies of them as queries.

Each copy records which edits made it and which other reference photo an edit pulled in
(image-in-image backgrounds, overlays, blends), so the demo can say why a copy was matched to
the wrong original. The stereo pair `motorcycle_left`/`motorcycle_right` gives a hard negative:
the same scene from another viewpoint is not a copy.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from copytrace.benchmarks.make_disc import jpeg_bytes
from copytrace.descriptors import EditContext, random_copy
from copytrace.util import write_bytes_atomic

# reference id -> scikit-image photo (short ids keep the demo's table within 80 columns)
DEMO_PHOTOS = {
    "astronaut": "astronaut", "camera": "camera", "chelsea": "chelsea", "coffee": "coffee",
    "rocket": "rocket", "hubble": "hubble_deep_field", "retina": "retina",
    "motorcycle": "motorcycle", "ihc": "immunohistochemistry", "brick": "brick", "grass": "grass",
    "gravel": "gravel", "coins": "coins", "moon": "moon", "page": "page", "text": "text",
    "cell": "cell", "clock": "clock", "colorwheel": "colorwheel", "logo": "logo",
    "aneurysms": "microaneurysms", "horse": "horse",
}
HARD_NEGATIVE = "motorcycle_right"
# edits that pull another photo into the copy (each calls EditContext.other once)
EDITS_WITH_OTHER = ("paste_into", "paste_other", "opacity")


@dataclass(frozen=True)
class DemoCopy:
    query_id: str
    original: str  # reference id; "" for the hard negative
    number: int
    edits: tuple[str, ...]
    others: dict[str, str] = field(default_factory=dict)  # edit -> the other reference it used

    @property
    def label(self) -> str:
        """Short name for tables: `<original>#<copy number>`, or the id of a non-copy."""
        return f"{self.original}#{self.number}" if self.original else self.query_id


@dataclass(frozen=True)
class DemoSet:
    references: Path
    queries: Path
    ground_truth: Path
    copies: tuple[DemoCopy, ...]


class _RecordingPhotos(Sequence):
    """The other photos an edit may use; remembers which ones it was given."""

    def __init__(self, names: list[str], photos: list[Image.Image]):
        self.names, self.photos, self.taken = names, photos, []

    def __len__(self) -> int:
        return len(self.photos)

    def __getitem__(self, i):  # noqa: ANN001 - Sequence protocol
        self.taken.append(self.names[i])
        return self.photos[i]


def demo_photo(name: str) -> Image.Image:
    from skimage import data

    if name in ("motorcycle", HARD_NEGATIVE):  # a stereo pair: left view, right view
        arr = data.stereo_motorcycle()[0 if name == "motorcycle" else 1]
    else:
        arr = getattr(data, name)()
    if arr.dtype != "uint8":
        arr = (arr > 0).astype("uint8") * 255 if arr.dtype == bool else arr.astype("uint8")
    return Image.fromarray(arr).convert("RGB")


DEMO_JPEG_QUALITY = 92  # the edited copies and the hard negative (references: 95)


def _load_photos() -> dict[str, Image.Image]:
    photos = {}
    for ref_id, name in DEMO_PHOTOS.items():
        try:
            photos[ref_id] = demo_photo(name)
        except Exception:  # noqa: BLE001 - an older scikit-image may lack one photo
            continue
    return photos


def make_demo_set(out: str | Path, *, seed: int = 0, copies: int = 2,
                  advance: Callable[[int], None] | None = None) -> DemoSet:
    """references/, queries/ and gt.csv from scikit-image's photos, reproducible from `seed`;
    `advance(1)` is called after each reference photo and its copies are written."""
    out = Path(out)
    refs, queries = out / "references", out / "queries"
    photos = _load_photos()
    rng = random.Random(seed)
    made: list[DemoCopy] = []
    for name, img in photos.items():
        write_bytes_atomic(refs / f"{name}.jpg", jpeg_bytes(img, 95))
        names = [n for n in photos if n != name]
        others = _RecordingPhotos(names, [photos[n] for n in names])
        for i in range(copies):
            others.taken.clear()
            copy, recipe = random_copy(img, rng, context=EditContext(others=others))
            qid = f"{name}__copy{i}_{'+'.join(recipe.edits)}"
            write_bytes_atomic(queries / f"{qid}.jpg", jpeg_bytes(copy, DEMO_JPEG_QUALITY))
            used = [e for e in recipe.edits if e in EDITS_WITH_OTHER]
            made.append(DemoCopy(qid, name, i, recipe.edits, dict(zip(used, others.taken, strict=False))))
        if advance is not None:
            advance(1)
    write_bytes_atomic(queries / f"{HARD_NEGATIVE}.jpg",
                       jpeg_bytes(demo_photo(HARD_NEGATIVE), DEMO_JPEG_QUALITY))
    made.append(DemoCopy(HARD_NEGATIVE, "", 0, ()))
    gt = out / "gt.csv"
    lines = ["query_id,reference_id", *(f"{c.query_id},{c.original}" for c in made)]
    write_bytes_atomic(gt, ("\n".join(lines) + "\n").encode())
    return DemoSet(refs, queries, gt, tuple(made))
