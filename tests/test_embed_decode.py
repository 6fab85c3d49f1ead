"""Decoding paths of the embedding stage: process pool and batch JPEG decoding (torchvision,
run on the CPU here: the same code decodes on the GPU) against the threaded PIL path."""

from __future__ import annotations

import numpy as np
import pytest

from copytrace.descriptors.batch_decode import decode_batch
from copytrace.descriptors.embed import Embedder, auto_decode_processes, embed_files
from copytrace.descriptors.model import load_descriptor

from photos import photo


@pytest.fixture(scope="module")
def embedder():
    return Embedder(load_descriptor("default"), device="cpu")


@pytest.fixture
def files(photos_dir, tmp_path):
    """The JPEG photos plus a PNG (not for the JPEG decoder) and a corrupt file."""
    from PIL import Image

    paths = sorted(str(p) for p in photos_dir.glob("*.jpg"))[:6]
    Image.fromarray(photo("coffee")).save(tmp_path / "coffee.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return [*paths, str(tmp_path / "coffee.png"), str(tmp_path / "broken.jpg")]


def _run(files, embedder, **kwargs):
    return [item for batch in embed_files(files, embedder, batch_size=3, **kwargs)
            for item in batch]


def test_process_pool_decoding_gives_the_threaded_results(files, embedder):
    threads = _run(files, embedder, decode_processes=0)
    procs = _run(files, embedder, decode_processes=2)
    assert [i.index for i in procs] == list(range(len(files)))
    for a, b in zip(threads, procs, strict=True):
        assert (a.error is None) == (b.error is None)
        if a.vector is not None:
            np.testing.assert_allclose(a.vector, b.vector, atol=1e-5)
            assert (a.image.width, a.image.sha256) == (b.image.width, b.image.sha256)
    assert threads[-1].vector is None and threads[-1].error  # a corrupt file: a reason, no vector


def test_batch_jpeg_decoding_embeds_like_pil(files, embedder):
    pil = _run(files, embedder, decode_device=None, decode_processes=0)
    batched = _run(files, embedder, decode_device="cpu", decode_processes=0)
    cos = [float(a.vector @ b.vector) for a, b in zip(pil, batched, strict=True)
           if a.vector is not None]
    assert len(cos) == len(files) - 1 and min(cos) >= 0.98, cos
    assert batched[-1].vector is None and batched[-1].error  # corrupt: an error, not a crash
    assert batched[-2].vector is not None  # the PNG went through the CPU decoder
    assert [(b.image.width, b.image.height, b.image.sha256) for b in batched[:-1]] == \
           [(a.image.width, a.image.height, a.image.sha256) for a in pil[:-1]]


def test_decode_batch_squashes_to_the_model_square(files):
    out = decode_batch(files[:2], size=64, device="cpu")
    assert all(o.pixels.shape == (64, 64, 3) and o.pixels.dtype == np.uint8 for o in out)


def test_decode_processes_follow_the_granted_cores():
    assert auto_decode_processes(2) == 0  # threads on a 2-core box
    assert auto_decode_processes(16) == 14


@pytest.mark.parametrize("shape", [(768, 1024), (300, 260), (90, 120)])
def test_batch_decoding_matches_the_cpu_decoders_pixels(tmp_path, shape):
    """Same geometry as the CPU decoder (its DCT shrink of big JPEGs, PIL's two rounded resize
    passes), so an index built on a GPU embeds like one built on the CPU."""
    from PIL import Image

    from copytrace.descriptors.decode import decode_file

    path = tmp_path / "photo.jpg"
    Image.fromarray(photo("astronaut")).resize(shape[::-1]).save(path, quality=90)
    cpu = decode_file(path, target_size=224).pixels.astype(int)
    (batched,) = decode_batch([path], size=224, device="cpu")
    diff = np.abs(cpu - batched.pixels.astype(int))
    assert diff.mean() < 0.3 and np.quantile(diff, 0.999) <= 4, (diff.mean(), diff.max())
