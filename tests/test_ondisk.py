"""Indexes larger than the memory budget: on-disk inverted lists, chosen, searched, reopened and
updated like in-memory ones (real FAISS, memory-mapped shard files)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
from small_index import catalog_rows, small_index, vector

from copytrace.indexing.catalog import catalog_table
from copytrace.indexing.embeddings import embedding_table
from copytrace.indexing.index_spec import Storage, choose_index
from copytrace.indexing.lock import index_lock
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.shards import ShardedIndex
from copytrace.indexing.store import CopyIndex
from copytrace.indexing.updates import append, compact, remove

SPEC, NPROBE = "IVF32,SQ8", 4


def _ondisk_index(root, n=3000, shard_size=1000):
    """A small index whose manifest says its lists live on disk (as a build under a small
    budget writes it); returns its vectors."""
    vectors = small_index(root, n, shard_size=shard_size, spec=SPEC, nprobe=NPROBE)
    layout = IndexLayout(root)
    m = Manifest.read(layout.manifest)
    replace(m, index=replace(m.index, storage=Storage.ONDISK.value)).write(layout.manifest)
    return vectors


def _lists_kind(index: ShardedIndex) -> set[str]:
    return {type(faiss.downcast_InvertedLists(faiss.extract_index_ivf(s).invlists)).__name__
            for s in index.shards}


def _queries(vectors, seed=0):
    q = vectors[:: max(1, len(vectors) // 60)] + np.random.default_rng(seed).normal(
        scale=0.05, size=(1, vectors.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_a_budget_below_the_compressed_index_goes_on_disk():
    n, dims = 1_000_000, 256
    budget = 100 * 10**6  # PQ64 + 4-bit re-ranking codes would take 168 MB
    disk = choose_index(n, dims, budget)
    assert disk.storage is Storage.ONDISK and disk.spec == "IVF4096,SQ8"
    assert disk.estimated_bytes < budget < disk.disk_bytes  # RAM: centroids; disk: the codes
    assert disk.max_shard_size * (dims + 8) <= budget  # one shard's build fits the budget
    assert choose_index(n, dims, n * dims).storage is Storage.MEMORY  # a quarter of Flat fits
    kept = choose_index(n, dims, budget, allow_ondisk=False)
    assert kept.storage is Storage.MEMORY and kept.estimated_bytes <= budget


def test_ondisk_index_answers_like_the_same_index_in_ram_and_after_reopening(tmp_path):
    root = tmp_path / "idx"
    vectors = _ondisk_index(root)
    q = _queries(vectors)
    paths = [root / s for s in Manifest.read(IndexLayout(root).manifest).index.shards]
    ram = ShardedIndex.load(paths, nprobe=NPROBE)
    assert _lists_kind(ram) == {"ArrayInvertedLists"}
    want_s, want_i = ram.search(q, 10)
    for _ in range(2):  # open, close, reopen: the mapped files are read again
        disk = CopyIndex.open(root)
        assert _lists_kind(disk.faiss_index) == {"OnDiskInvertedLists"}
        got_s, got_i = disk.faiss_index.search(q, 10)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-6)
        assert [r[0].image_id for r in disk.search(vectors[:20], 1)] == [str(i) for i in range(20)]
        del disk


def test_updates_keep_an_ondisk_index_on_disk_and_correct(tmp_path):
    root = tmp_path / "idx"
    _ondisk_index(root, n=2500, shard_size=1000)
    new_ids = [str(i) for i in range(2500, 2700)]
    new = np.stack([vector(i) for i in new_ids])
    with index_lock(root):
        append(root, new_ids, new, catalog=catalog_table(catalog_rows(new_ids)),
               embeddings=embedding_table(new_ids, new))
    index = CopyIndex.open(root)
    assert index.manifest.index.storage == "ondisk" and len(index) == 2700
    assert _lists_kind(index.faiss_index) == {"OnDiskInvertedLists"}
    assert [r[0].image_id for r in index.search(new, 1)] == new_ids

    gone = new_ids[:50]
    with index_lock(root):
        remove(root, gone)
    hits = {n.image_id for row in CopyIndex.open(root).search(new[:50], 5) for n in row}
    assert not hits & set(gone)

    with index_lock(root):
        compact(root)
    index = CopyIndex.open(root)
    assert index.manifest.index.storage == "ondisk" and len(index) == 2650
    assert _lists_kind(index.faiss_index) == {"OnDiskInvertedLists"}
    assert [r[0].image_id for r in index.search(new[50:], 1)] == new_ids[50:]


def test_index_info_shows_the_storage(tmp_path):
    root = tmp_path / "idx"
    _ondisk_index(root, n=1500)
    cli = Path(sys.executable).with_name("copytrace")
    proc = subprocess.run([str(cli), "index", "info", str(root)], capture_output=True, text=True,
                          timeout=120, check=True)
    assert json.loads(proc.stdout)["index"]["storage"] == "ondisk"
