"""Indexes larger than the memory budget: on-disk inverted lists, chosen, searched, reopened and
updated like in-memory ones (real FAISS, memory-mapped files). New builds merge every shard's
lists into one lists file under one quantizer; indexes built before (each shard file with its own
lists, "legacy" below) stay readable and updatable, and `compact` merges them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest
from small_index import catalog_rows, small_index, vector

from copytrace.indexing.catalog import catalog_table
from copytrace.indexing.embeddings import embedding_table
from copytrace.indexing.index_spec import Storage, choose_index
from copytrace.indexing.lock import index_lock
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.ondisk import lists_path
from copytrace.indexing.shards import ShardedIndex, build_shards
from copytrace.indexing.store import CopyIndex, id_map_table
from copytrace.indexing.updates import append, compact, remove
from copytrace.indexing.verify import verify_index
from copytrace.util.atomic import write_parquet_atomic

SPEC, NPROBE = "IVF32,SQ8", 4


def _merged_index(root, n=3000, shard_size=1000):
    """An on-disk index as a build under a small budget writes it: shards of `shard_size`
    merged into one index file and one lists file; returns its vectors."""
    vectors = small_index(root, n, shard_size=n, spec="Flat")  # catalog + embedding parts
    layout = IndexLayout(root)
    for old in layout.faiss_dir.iterdir():
        old.unlink()
    paths = build_shards(SPEC, vectors.shape[1], n, lambda a, b: vectors[a:b], lambda: vectors,
                         layout.faiss_dir, shard_size=shard_size, storage=Storage.ONDISK)
    write_parquet_atomic(layout.id_map, id_map_table([str(i) for i in range(n)]))
    m = Manifest.read(layout.manifest)
    info = replace(m.index, spec=SPEC, nprobe=NPROBE, shards=[str(p.relative_to(root)) for p in paths],
                   shard_size=shard_size, storage=Storage.ONDISK.value,
                   lists=str(lists_path(paths[0]).relative_to(root)))
    replace(m, index=info).write(layout.manifest)
    return vectors


def _ondisk_index(root, n=3000, shard_size=1000):
    """A legacy on-disk index: each shard file keeps its own lists (and quantizer copy), as
    on-disk builds wrote them before merging; returns its vectors."""
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


def _reference(vectors, train, out_dir):
    """The same vectors in RAM, one shard, trained on the same sample as the merged build."""
    return build_shards(SPEC, vectors.shape[1], len(vectors), lambda a, b: vectors[a:b],
                        lambda: train, out_dir, shard_size=len(vectors) + 1)


def test_merged_index_answers_like_the_same_index_in_ram_across_reopen_and_moving(tmp_path,
                                                                                   capfd):
    root = tmp_path / "idx"
    vectors = _merged_index(root, n=3000, shard_size=1000)  # 3 shards merged
    assert "resizing" not in capfd.readouterr().out  # FAISS's printf kept off stdout (JSON)
    m = Manifest.read(IndexLayout(root).manifest)
    assert m.index.shards == ["faiss/ivf.faiss"] and m.index.lists == "faiss/ivf.ivfdata"
    assert sorted(p.name for p in (root / "faiss").iterdir()) == ["ivf.faiss", "ivf.ivfdata"]
    ram = ShardedIndex.load(_reference(vectors, vectors, tmp_path / "ram"), nprobe=NPROBE)
    q = _queries(vectors)
    want_s, want_i = ram.search(q, 10)
    for where in (root, root, tmp_path / "moved"):  # open, reopen, then from another folder
        if not where.exists():
            root.rename(where)
        disk = CopyIndex.open(where)
        assert _lists_kind(disk.faiss_index) == {"OnDiskInvertedLists"}
        assert len(disk.faiss_index.shards) == 1  # one quantizer, one lists file
        got_s, got_i = disk.faiss_index.search(q, 10)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-6)
        assert [r[0].image_id for r in disk.search(vectors[:20], 1)] == [str(i) for i in range(20)]
        del disk


def test_legacy_ondisk_index_answers_like_the_same_index_in_ram_and_after_reopening(tmp_path):
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


def _add(root, ids):
    vectors = np.stack([vector(i) for i in ids])
    with index_lock(root):
        append(root, ids, vectors, catalog=catalog_table(catalog_rows(ids)),
               embeddings=embedding_table(ids, vectors))
    return vectors


def test_updates_on_a_merged_index_stay_correct(tmp_path):
    """add: new small shards beside the merged file (never rewritten); remove: tombstones;
    compact: one merged file again. Each answers like the same vectors in RAM."""
    root = tmp_path / "idx"
    base = _merged_index(root, n=2500, shard_size=1000)
    first = Manifest.read(IndexLayout(root).manifest)
    new_ids = [str(i) for i in range(2500, 2850)]
    new = np.concatenate([_add(root, new_ids[:200]), _add(root, new_ids[200:])])  # 2nd fills 1st
    index = CopyIndex.open(root)
    m = index.manifest
    assert m.index.storage == "ondisk" and m.index.lists == first.index.lists
    assert m.index.shards[0] == first.index.shards[0] and len(m.index.shards) == 2
    assert len(index) == 2850 and _lists_kind(index.faiss_index) == {"OnDiskInvertedLists"}
    added = faiss.extract_index_ivf(index.faiss_index.shards[1])
    assert not added.own_fields  # the added shard searches with the merged file's quantizer
    everything = np.concatenate([base, new])
    ram = ShardedIndex.load(_reference(everything, base, tmp_path / "ram"), nprobe=NPROBE)
    q = np.concatenate([_queries(base), _queries(new, seed=1)])
    want_s, want_i = ram.search(q, 10)
    got_s, got_i = index.faiss_index.search(q, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=1e-6)
    assert [r[0].image_id for r in index.search(new, 1)] == new_ids

    gone = [*new_ids[:30], *[str(i) for i in range(20)]]
    with index_lock(root):
        remove(root, gone)
    index = CopyIndex.open(root)
    _, wide = ram.search(q, 10 + len(gone))
    want = [[str(p) for p in row if str(p) not in gone][:10] for row in wide]
    assert [[n.image_id for n in row] for row in index.search(q, 10)] == want

    with index_lock(root):
        compact(root)
    index = CopyIndex.open(root)
    m = index.manifest
    assert len(m.index.shards) == 1 and m.index.lists == f"faiss/ivf.v{m.version}.ivfdata"
    assert len(index) == 2800 and _lists_kind(index.faiss_index) == {"OnDiskInvertedLists"}
    live = [str(i) for i in range(20, 2850) if str(i) not in gone]
    every = np.stack([vector(i) for i in live])
    assert [r[0].image_id for r in index.search(every, 1)] == live
    assert verify_index(root).ok
    with index_lock(root):
        remove(root, ["25"])  # the next change deletes what neither it nor compact reads
    assert not (root / first.index.lists).exists() and (root / m.index.lists).exists()


def test_updates_keep_a_legacy_ondisk_index_on_disk_and_correct_and_compact_merges_it(tmp_path):
    root = tmp_path / "idx"
    _ondisk_index(root, n=2500, shard_size=1000)
    new_ids = [str(i) for i in range(2500, 2700)]
    new = _add(root, new_ids)
    index = CopyIndex.open(root)
    assert index.manifest.index.storage == "ondisk" and len(index) == 2700
    assert index.manifest.index.lists is None and len(index.manifest.index.shards) == 3
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
    assert index.manifest.index.lists is not None and len(index.faiss_index.shards) == 1
    assert _lists_kind(index.faiss_index) == {"OnDiskInvertedLists"}
    assert [r[0].image_id for r in index.search(new[50:], 1)] == new_ids[50:]


def test_index_info_shows_the_storage(tmp_path):
    root = tmp_path / "idx"
    _merged_index(root, n=1500)
    cli = Path(sys.executable).with_name("copytrace")
    proc = subprocess.run([str(cli), "index", "info", str(root)], capture_output=True, text=True,
                          timeout=120, check=True)
    info = json.loads(proc.stdout)["index"]
    assert info["storage"] == "ondisk" and info["lists"] == "faiss/ivf.ivfdata"



@pytest.mark.slow
def test_index_build_under_a_small_budget_serves_from_disk_like_ram_and_takes_adds(photo_crops,
                                                                                   tmp_path):
    """The real `index build` (in-process, as `copytrace index build --memory-budget 4KB`
    runs it) on 24 images: the budget sends the lists to disk. Queries answer exactly as the
    same catalog and spec built in RAM; an added image is then found."""
    import shutil

    from copytrace.pipelines import add_images, build_index, query_index
    from copytrace.pipelines.engine import match_config

    disk, ram = tmp_path / "disk", tmp_path / "ram"
    report = build_index(photo_crops / "catalog", disk, memory_budget="4KB", chunk_size=8,
                         use_ray=False, show_progress=False)
    m = Manifest.read(IndexLayout(disk).manifest)
    assert (report.indexed, m.index.storage, m.index.shards) == (24, "ondisk", ["faiss/ivf.faiss"])
    assert m.index.spec == report.index_spec == "IVF16,SQ8" and m.index.nprobe
    assert m.index.lists == "faiss/ivf.ivfdata" and (disk / m.index.lists).stat().st_size > 0
    opened = CopyIndex.open(disk)
    lists = faiss.extract_index_ivf(opened.faiss_index.shards[0]).invlists
    assert isinstance(faiss.downcast_InvertedLists(lists), faiss.OnDiskInvertedLists)

    # the same catalog in RAM: its embedded chunks copied, the build resumed with the same spec
    ram.mkdir()
    for part in ("catalog", "embeddings"):
        shutil.copytree(disk / part, ram / part)
    shutil.copy(IndexLayout(disk).build_state, IndexLayout(ram).build_state)
    again = build_index(photo_crops / "catalog", ram, index_spec=m.index.spec, chunk_size=8,
                        use_ray=False, show_progress=False)
    r = Manifest.read(IndexLayout(ram).manifest)
    assert (again.resumed_chunks, r.index.storage, r.index.lists) == (3, "memory", None)
    assert r.index.nprobe == m.index.nprobe  # the same tuning

    config = replace(match_config(k=5, normalize=False, expand=False, verify=False), rotate=None)

    def top(index: Path, queries: Path) -> dict[str, list[tuple[str, float]]]:
        run = query_index(queries, index, config=config, use_ray=False, show_progress=False)
        return {q.query_id: [(x.reference_id, x.similarity) for x in q.matches]
                for q in run.results}

    on_disk, in_ram = top(disk, photo_crops / "copies"), top(ram, photo_crops / "copies")
    assert len(on_disk) == 6 and all(len(row) == 5 for row in on_disk.values())
    for q, row in on_disk.items():
        assert [i for i, _ in row] == [i for i, _ in in_ram[q]]
        assert np.allclose([s for _, s in row], [s for _, s in in_ram[q]], atol=1e-6)
    # the originals of the copies rank first
    assert sum(row[0][0] == q.replace("-copy", "-0") for q, row in on_disk.items()) >= 5

    added = add_images(photo_crops / "new", disk, show_progress=False)
    assert (added.added, added.live) == (1, 25)
    assert (disk / m.index.lists).exists()  # the merged lists stay; the add is a shard beside
    found = top(disk, photo_crops / "new")["astronaut-2"]
    assert found[0][0] == "astronaut-2", found  # (SQ8 trained on 24 vectors: not score 1)
