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
