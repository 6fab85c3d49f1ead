"""Incremental updates: add, remove (tombstones), compact, verify, and versioned manifests."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from small_index import DIMS, catalog_rows, small_index, vector

from copytrace.indexing.catalog import catalog_table
from copytrace.indexing.embeddings import embedding_table, read_embeddings
from copytrace.indexing.lock import index_lock
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.shards import build_shards
from copytrace.indexing.store import CopyIndex
from copytrace.indexing.updates import UpdateError, append
from copytrace.indexing.verify import verify_index
from copytrace.pipelines.build import build_index
from copytrace.pipelines.index_update import add_images, compact_index, remove_images


def _copy(photos_dir, names, folder):
    folder.mkdir()
    for n in names:
        shutil.copy(photos_dir / f"{n}.jpg", folder / f"{n}.jpg")
    return folder


def _search_all(index_dir, vectors, k=5):
    index = CopyIndex.open(index_dir)
    return [[(n.image_id, round(n.score, 4)) for n in row] for row in index.search(vectors, k)]


def test_add_remove_compact_equals_fresh_build(photos_dir, tmp_path):
    names = sorted(p.stem for p in photos_dir.glob("*.jpg"))
    first, later, dropped = names[:8], names[8:], names[1:3]
    idx = tmp_path / "idx"
    build_index(_copy(photos_dir, first, tmp_path / "a"), idx, chunk_size=4, use_ray=False,
                show_progress=False)
    assert Manifest.read(IndexLayout(idx).manifest).version == 1

    r = add_images(_copy(photos_dir, later, tmp_path / "b"), idx, show_progress=False)
    assert (r.version, r.added, r.live) == (2, len(later), len(names))
    again = add_images(tmp_path / "b", idx, show_progress=False)  # the same files: a no-op
    assert (again.version, again.added, again.live) == (2, 0, len(names))
    with pytest.raises(UpdateError, match="already in the index"):  # same ids, other files
        add_images(_copy(photos_dir, later[:1], tmp_path / "b2"), idx, show_progress=False)

    r = remove_images(dropped, idx)
    assert (r.version, r.removed, r.live) == (3, 2, len(names) - 2)
    _, vectors = read_embeddings(IndexLayout(idx).embeddings_dir)
    hits = {n.image_id for row in CopyIndex.open(idx).search(vectors, len(names)) for n in row}
    assert hits == set(names) - set(dropped)  # tombstones honoured at search
    assert verify_index(idx).ok

    r = compact_index(idx)
    assert (r.version, r.live) == (4, len(names) - 2)
    report = verify_index(idx)
    assert report.ok, report.problems
    assert report.facts["tombstones"] == 0

    keep = [n for n in names if n not in dropped]
    fresh = tmp_path / "fresh"
    build_index(_copy(photos_dir, keep, tmp_path / "c"), fresh, chunk_size=4, use_ray=False,
                show_progress=False)
    ids, queries = read_embeddings(IndexLayout(fresh).embeddings_dir)
    assert sorted(ids) == sorted(read_embeddings(IndexLayout(idx).embeddings_dir)[0])
    assert _search_all(idx, queries) == _search_all(fresh, queries)


def _writer(root: str, batches: int, size: int, start: int) -> None:
    for b in range(batches):
        ids = [str(start + b * size + i) for i in range(size)]
        rows = catalog_rows(ids)
        vectors = np.stack([vector(i) for i in ids])
        with index_lock(root):
            append(root, ids, vectors, catalog=catalog_table(rows),
                   embeddings=embedding_table(ids, vectors))


def test_reader_during_add_sees_whole_versions_only(tmp_path):
    root = tmp_path / "idx"
    small_index(root, 50, shard_size=60)
    writer = mp.get_context("spawn").Process(target=_writer, args=(str(root), 40, 7, 50))
    writer.start()
    seen: dict[int, int] = {}
    last = 0
    try:
        while writer.is_alive() or not seen:
            index = CopyIndex.open(root)
            version, n = index.manifest.version, len(index.ids)
            assert version >= last  # versions only grow
            last = version
            assert index.faiss_index.ntotal == n == index.manifest.counts["indexed"]
            assert n == 50 + 7 * (version - 1)  # each version is one whole batch
            newest = index.ids[-1]
            top = index.search(vector(newest)[None], 1)[0][0]
            assert top.image_id == newest and top.score > 0.999
            seen[version] = n
            time.sleep(0.005)
    finally:
        writer.join(timeout=120)
    assert writer.exitcode == 0
    assert len(seen) >= 3, f"the reader saw too few versions to test anything: {seen}"
    final = CopyIndex.open(root)
    assert final.manifest.version == 41 and len(final.ids) == 50 + 40 * 7
    assert len(final.manifest.index.shards) == -(-len(final.ids) // 60)  # new shards opened
    report = verify_index(root)
    assert report.ok, report.problems
    # only this version's and the previous version's files are left on disk
    layout = IndexLayout(root)
    assert len(list(layout.root.glob("ids*.parquet"))) <= 2
    ids = pq.read_table(layout.root / final.manifest.id_map).column("image_id").to_pylist()
    assert ids == [str(i) for i in range(50 + 40 * 7)]


def test_verify_catches_a_shard_that_disagrees(tmp_path):
    root = tmp_path / "idx"
    small_index(root, 40, shard_size=40)
    assert verify_index(root).ok
    layout = IndexLayout(root)
    other = np.stack([vector(str(1000 + i)) for i in range(40)])
    build_shards("Flat", DIMS, 40, lambda a, b: other[a:b], lambda: other, layout.faiss_dir,
                 shard_size=40)  # overwrite the shard with other vectors
    report = verify_index(root)
    assert not report.ok and "own position" in report.problems[0]


def test_cli_remove_compact_verify(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "copytrace")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}

    def run(*args):
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)

    root = tmp_path / "idx"
    small_index(root, 30, shard_size=10)
    r = run("index", "remove", "3", "4", "--index", str(root))
    assert r.returncode == 0 and "version 2" in r.stdout and "28 live" in r.stdout, r.stderr
    r = run("index", "remove", "nope", "--index", str(root))
    assert r.returncode != 0 and "not in the index" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no traceback
    r = run("index", "compact", str(root))
    assert r.returncode == 0 and "version 3" in r.stdout, r.stderr
    r = run("index", "verify", str(root))
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] and json.loads(r.stdout)["ids"] == 28
    manifest = Manifest.read(IndexLayout(root).manifest)
    (root / manifest.id_map).unlink()
    (root / manifest.id_map).write_bytes(b"")  # a torn id map
    r = run("index", "verify", str(root))
    assert r.returncode != 0
