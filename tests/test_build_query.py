"""End to end on real photos with real Ray, Parquet, DuckDB and FAISS: build, resume, query."""

from __future__ import annotations

import csv
import io
import random
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from copytrace.descriptors.augment import EditContext, random_copy
from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.catalog_sql import status_summary
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.store import CopyIndex
from copytrace.pipelines.build import BuildError, build_index
from copytrace.pipelines.query import query

from photos import jpeg_bytes, photo

BAD_FILES = {
    "zero": ("zero.jpg", b""),
    "notes": ("notes.txt", b"not an image at all\n"),
    "fake": ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
}


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, photos_dir: Path) -> Path:
    """Good photos plus corrupt, truncated, empty and non-image files, in nested folders."""
    folder = tmp_path_factory.mktemp("mixed")
    shutil.copytree(photos_dir, folder / "good")
    (folder / "bad").mkdir()
    for name, data in BAD_FILES.values():
        (folder / "bad" / name).write_bytes(data)
    data = jpeg_bytes(photo("astronaut"))
    (folder / "bad" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, mixed_dir: Path, local_ray) -> Path:
    index = tmp_path_factory.mktemp("idx") / "index"
    build_index(mixed_dir, index, chunk_size=5, show_progress=False)
    return index


def test_build_keeps_every_good_image_and_reports_each_bad_one(built, mixed_dir, photos_dir):
    catalog = read_catalog(IndexLayout(built).catalog_dir).to_pylist()
    by_id = {r["image_id"]: r for r in catalog}
    good = {p.stem for p in photos_dir.glob("*.jpg")}
    assert len(catalog) == len(good) + 4
    for image_id in good:
        assert by_id[image_id]["status"] == "ok"
        assert by_id[image_id]["width"] > 0 and len(by_id[image_id]["sha256"]) == 64
    reasons = {r["image_id"]: r["error"] for r in catalog if r["status"] == "error"}
    assert set(reasons) == {"zero", "notes", "fake", "truncated"}
    assert "empty" in reasons["zero"] and "truncated" in reasons["truncated"]
    assert all("\n" not in r for r in reasons.values())
    manifest = Manifest.read(IndexLayout(built).manifest)
    assert manifest.counts == {"inputs": len(good) + 4, "indexed": len(good), "errors": 4}
    assert status_summary(built) == {"error": 4, "ok": len(good)}
    ids = pq.read_table(IndexLayout(built).id_map).column("image_id").to_pylist()
    assert sorted(ids) == sorted(good)


def test_edited_copies_find_their_original_first(built, tmp_path, photos_dir):
    rng = random.Random(3)
    others = [Image.fromarray(photo("rocket")), Image.fromarray(photo("coffee"))]
    queries = tmp_path / "queries"
    queries.mkdir()
    names = ["astronaut", "chelsea", "hubble_deep_field", "coins"]
    edits = {"astronaut": ["crop", "text"], "chelsea": ["colour", "shapes"],
             "hubble_deep_field": ["flip", "jpeg"], "coins": ["pad", "blur"]}
    for name in names:
        copy, _ = random_copy(Image.fromarray(photo(name)), rng, allowed=edits[name],
                              min_edits=2, max_edits=2, context=EditContext(others=others))
        (queries / f"{name}-copy.jpg").write_bytes(jpeg_bytes(copy, 80))
    out = tmp_path / "preds.csv"
    results = query(queries, built, k=5, output=out, use_ray=False, show_progress=False)
    top = {r.query_id: r.matches[0].reference_id for r in results}
    assert top == {f"{n}-copy": n for n in names}
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["query_id", "reference_id", "score"]
    assert len(rows) == 1 + 5 * len(names)
    for r in results:  # best first
        scores = [m.score for m in r.matches]
        assert scores == sorted(scores, reverse=True)


def test_query_on_ray_matches_inline(built, photos_dir, local_ray):
    inline = query(photos_dir, built, k=3, use_ray=False, show_progress=False)
    on_ray = query(photos_dir, built, k=3, use_ray=True, show_progress=False)
    assert [[m.reference_id for m in r.matches] for r in inline] == \
        [[m.reference_id for m in r.matches] for r in on_ray]
    for r in inline:
        if r.error is None:
            assert r.matches[0].reference_id == r.query_id  # each photo finds itself
            assert r.matches[0].similarity > 0.99


def test_interrupted_build_resumes_only_missing_chunks(tmp_path, mixed_dir, local_ray):
    index = tmp_path / "index"
    build_index(mixed_dir, index, chunk_size=4, use_ray=False, show_progress=False)
    layout = IndexLayout(index)
    parts = sorted(layout.catalog_dir.glob("part-*.parquet"))
    assert len(parts) == 4  # 16 inputs / 4
    parts[1].unlink()  # as if the job died before chunk 1 was written
    (layout.embeddings_dir / parts[1].name).unlink()
    kept = parts[2].stat().st_mtime_ns
    report = build_index(mixed_dir, index, chunk_size=4, use_ray=False, show_progress=False)
    assert report.resumed_chunks == 3
    assert parts[2].stat().st_mtime_ns == kept  # finished chunks were not redone
    assert len(CopyIndex.open(index)) == report.indexed == 12


def test_resume_with_other_settings_is_refused(tmp_path, photos_dir):
    index = tmp_path / "index"
    build_index(photos_dir, index, chunk_size=6, use_ray=False, show_progress=False)
    with pytest.raises(BuildError, match="--overwrite"):
        build_index(photos_dir, index, chunk_size=5, use_ray=False, show_progress=False)
    report = build_index(photos_dir, index, chunk_size=5, use_ray=False, overwrite=True,
                         show_progress=False)
    assert report.resumed_chunks == 0 and report.indexed == len(list(photos_dir.iterdir()))
