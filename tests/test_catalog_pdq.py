"""The catalog's PDQ column: filled by `index build --pdq` and `index add`, read by `copytrace hash
INDEX` without the files, and old catalog parts without the column still read (Parquet, DuckDB)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from copytrace.descriptors.pdq import hash_file, pdq_hash
from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.catalog_sql import sql
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.pipelines.build import build_index
from copytrace.pipelines.index_update import add_images
from copytrace.pipelines.pdq_hashes import hash_images, hashes_csv

from photos import jpeg_bytes, photo

NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def _bits(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


@pytest.fixture
def folders(tmp_path, photos_dir):
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    for name in NAMES:
        shutil.copy(photos_dir / f"{name}.jpg", first)
    big = Image.fromarray(photo("astronaut")).resize((2400, 2400), Image.LANCZOS)  # DCT-scaled
    (first / "big.jpg").write_bytes(jpeg_bytes(big, 90))
    shutil.copy(photos_dir / "moon.jpg", later)
    return first, later


def test_build_pdq_fills_the_column_and_hash_reads_it(folders, tmp_path):
    first, later = folders
    index = tmp_path / "index"
    build_index(first, index, use_ray=False, show_progress=False, pdq=True)
    assert Manifest.read(IndexLayout(index).manifest).pdq
    add_images(later, index, use_ray=False, show_progress=False)  # the index's setting holds
    rows = read_catalog(IndexLayout(index).catalog_dir).to_pylist()
    assert sorted(r["image_id"] for r in rows) == sorted([*NAMES, "big", "moon"])
    for r in rows:
        assert (r["pdq"], r["pdq_quality"]) == hash_file(r["uri"]), r["image_id"]
    big = next(r for r in rows if r["image_id"] == "big")
    full, _ = pdq_hash(np.asarray(Image.open(big["uri"]).convert("RGB")))
    assert _bits(big["pdq"], full) <= 10  # the DCT-scaled decode moves the hash a few bits
    listed = hashes_csv(hash_images(first))
    _query_matches_the_hash_list(index, first, tmp_path)
    first.rename(tmp_path / "away")  # the column is read, not the files
    from_index = hash_images(index)
    assert from_index.failed == {}
    assert set(listed.splitlines()) <= set(hashes_csv(from_index).splitlines())
    (tmp_path / "away").rename(first)
    _parts_without_the_column_still_read(index, hashed=len(rows))


def _parts_without_the_column_still_read(index, *, hashed: int):
    """A build's part as an older copytrace wrote it (no pdq columns) beside the add's part:
    Parquet reads the missing columns as null, DuckDB views both parts (union_by_name), and
    `hash INDEX` hashes the files of the rows without a stored hash."""
    layout = IndexLayout(index)
    before = {r["image_id"]: r["pdq"] for r in read_catalog(layout.catalog_dir).to_pylist()}
    first_part = sorted(layout.catalog_dir.glob("*.parquet"))[0]
    old = pq.read_table(first_part).drop_columns(["pdq", "pdq_quality"])
    pq.write_table(old, first_part)
    table = read_catalog(layout.catalog_dir)
    assert table.num_rows == hashed and table.column("pdq").null_count == old.num_rows
    got = sql(index, "SELECT count(*) AS n, count(pdq) AS hashed FROM catalog "
                     "WHERE pdq IS NULL OR octet_length(pdq) = 32")
    assert got.to_pylist() == [{"n": hashed, "hashed": hashed - old.num_rows}]
    hashes = hash_images(index)
    assert dict(zip(hashes.ids, (bytes(h) for h in hashes.pdq), strict=True)) == before


def _query_matches_the_hash_list(index, first, tmp_path):
    """`copytrace query --match-hashes`: a listed image's query carries its list entry."""
    (tmp_path / "list.csv").write_text("pdq_hex,label\n" + "".join(
        f"{h.hex()},listed {n}\n" for n in ("chelsea", "rocket")
        for h in [hash_file(first / f"{n}.jpg")[0]]))
    queries = tmp_path / "queries"
    queries.mkdir()
    for n in ("chelsea", "coffee"):
        shutil.copy(first / f"{n}.jpg", queries)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "copytrace.app.cli", "query", str(queries),
                        "--index", str(index), "--no-verify", "--no-ray", "--format", "json",
                        "--match-hashes", str(tmp_path / "list.csv"), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    got = {q["query_id"]: q["hash_matches"] for q in json.loads(r.stdout)}
    assert got["coffee"] == []
    assert [(m["list_label"], m["distance"]) for m in got["chelsea"]] == [("listed chelsea", 0)]
