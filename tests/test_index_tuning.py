"""`index build` tunes an approximate index on copies of its own catalog images."""

from __future__ import annotations

from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.store import CopyIndex
from copytrace.pipelines.build import build_index


def test_build_tunes_ivf_on_catalog_copies_and_records_it(photos_dir, tmp_path):
    idx = tmp_path / "idx"
    build_index(photos_dir, idx, index_spec="IVF4,Flat", use_ray=False, show_progress=False,
                target_recall=0.97)
    manifest = Manifest.read(IndexLayout(idx).manifest)
    tuning = manifest.index.tuning
    assert tuning is not None and tuning["queries"] == len(list(photos_dir.glob("*.jpg")))
    assert tuning["reached"] and tuning["share_of_exact"] >= 0.97
    assert manifest.index.nprobe == tuning["nprobe"] and 1 <= tuning["nprobe"] <= 4
    assert CopyIndex.open(idx).faiss_index.nprobe == tuning["nprobe"]  # readers use it


def test_exact_index_needs_no_tuning(photos_dir, tmp_path):
    idx = tmp_path / "idx"
    build_index(photos_dir, idx, use_ray=False, show_progress=False)
    manifest = Manifest.read(IndexLayout(idx).manifest)
    assert manifest.index.spec == "Flat" and manifest.index.tuning is None
