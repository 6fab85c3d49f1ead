"""Shared fixtures: real photos (scikit-image's bundled ones), the dev data when present, Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from photos import PHOTO_NAMES, jpeg_bytes, photo

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of real photos as JPEG files, one per scikit-image photo."""
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTO_NAMES:
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(photo(name), 95))
    return folder


@pytest.fixture(scope="session")
def photos_index(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    """An index of `photos_dir`, built once for the tests that only query it (the second-pass
    families' tests); a test that adds to or rewrites an index builds its own."""
    from copytrace.pipelines.build import build_index

    root = tmp_path_factory.mktemp("photos-index") / "index"
    build_index(photos_dir, root, use_ray=False, show_progress=False)
    return root


@pytest.fixture(scope="session")
def photo_crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A made catalog big enough to train a small IVF (16 lists): in catalog/, two 96-pixel crops
    of each scikit-image photo (24 images, seeded); in new/, one more crop (an image to add); in
    copies/, edited copies (mirrored, darker, re-encoded) of six catalog crops."""
    import numpy as np
    from PIL import Image, ImageEnhance

    root = tmp_path_factory.mktemp("photo-crops")
    for folder in ("catalog", "new", "copies"):
        (root / folder).mkdir()
    rng = np.random.default_rng(22)
    for name in PHOTO_NAMES:
        im = Image.fromarray(photo(name))
        side = min(im.size)
        for j in range(3 if name == "astronaut" else 2):
            s = int(side * rng.uniform(0.3, 0.6))
            x, y = int(rng.integers(0, im.width - s)), int(rng.integers(0, im.height - s))
            crop = im.crop((x, y, x + s, y + s)).resize((96, 96), Image.BICUBIC)
            folder = "new" if j == 2 else "catalog"
            (root / folder / f"{name}-{j}.jpg").write_bytes(jpeg_bytes(crop, 90))
            if j == 0 and name in PHOTO_NAMES[:6]:
                edited = ImageEnhance.Brightness(crop.transpose(Image.FLIP_LEFT_RIGHT)).enhance(0.8)
                (root / "copies" / f"{name}-copy.jpg").write_bytes(jpeg_bytes(edited, 60))
    return root


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a busy 2-core CI box two threads spin-wait each other (5x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dev_data() -> Path:
    root = Path(os.environ.get("COPYTRACE_DEV_DATA") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        pytest.skip(f"dev data not found at {root}")
    return root


@pytest.fixture(scope="session")
def local_ray():
    """One embedded local Ray for the whole session (startup costs ~8 s)."""
    import ray

    from copytrace.pipelines.ray_runtime import ensure_ray

    ensure_ray()
    yield
    ray.shutdown()
