"""CPU embedding workers: one-thread model processes (local pool, Ray actors) embed like one
process does, chunk by chunk, in order."""

from __future__ import annotations

import numpy as np

from copytrace.indexing.sources import list_sources
from copytrace.pipelines.embed_job import EmbedSettings, run_inline, run_on_ray


def _chunks(folder, size: int = 4):
    sources = list_sources(folder, all_files=True)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    sources += list_sources(folder / "broken.jpg")
    return [(no, sources[s : s + size]) for no, s in enumerate(range(0, len(sources), size))]


def _by_id(results) -> dict[str, np.ndarray]:
    out = {}
    for r in results:
        t = r.embeddings.to_pydict()
        out.update({i: np.asarray(v, np.float32) for i, v in zip(t["image_id"], t["embedding"],
                                                                 strict=True)})
    return out


def test_pool_and_ray_workers_embed_like_one_process(tmp_path, photos_dir, local_ray,
                                                     one_torch_thread):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(photos_dir, folder)
    chunks = _chunks(folder)
    settings = EmbedSettings(batch_size=3, device="cpu")
    one = list(run_inline(chunks, settings, workers=1))
    pool = list(run_inline(chunks, settings, workers=2))
    ray_results = sorted(run_on_ray(chunks, settings, num_workers=2), key=lambda r: r.chunk)
    assert [r.chunk for r in pool] == [no for no, _ in chunks]  # the pool keeps chunk order
    want = _by_id(one)
    assert len(want) == len(list(photos_dir.iterdir())) and "broken" not in want
    for got in (_by_id(pool), _by_id(ray_results)):
        assert sorted(got) == sorted(want)
        for image_id, v in want.items():
            np.testing.assert_allclose(got[image_id], v, atol=1e-5)
    for r, w in zip(pool, one, strict=True):  # the catalog rows too, the broken file included
        assert r.catalog.to_pydict() == w.catalog.to_pydict()
    assert "error" in pool[-1].catalog.column("status").to_pylist()
