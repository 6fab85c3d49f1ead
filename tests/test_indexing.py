"""Listing inputs, choosing and sharding FAISS indexes (real FAISS), memory budgets."""

from __future__ import annotations

import numpy as np
import pytest

from copytrace.indexing.budget import parse_size
from copytrace.indexing.index_spec import choose_index
from copytrace.indexing.shards import ShardedIndex, build_shards
from copytrace.indexing.sources import SourceError, list_sources


def test_ids_are_stems_and_colliding_stems_keep_their_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/x.jpg", "b/x.jpg", "a/y.png", "b/readme.txt"):
        (tmp_path / p).write_bytes(b"0")
    ids = {s.image_id for s in list_sources(tmp_path)}
    assert ids == {"a/x", "b/x", "y"}
    assert "readme" in {s.image_id for s in list_sources(tmp_path, all_files=True)}


def test_csv_listing_with_ids_and_relative_paths(tmp_path):
    (tmp_path / "img.jpg").write_bytes(b"0")
    listing = tmp_path / "list.csv"
    listing.write_text("path,image_id\nimg.jpg,first\n/abs/other.jpg,second\n")
    sources = list_sources(listing)
    assert [(s.image_id, s.uri) for s in sources] == [
        ("first", str(tmp_path / "img.jpg")), ("second", "/abs/other.jpg")]
    listing.write_text("file_name\nimg.jpg\n")
    with pytest.raises(SourceError, match="'path'"):
        list_sources(listing)
    with pytest.raises(SourceError, match="no such file"):
        list_sources(tmp_path / "missing")


def test_memory_budgets():
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    with pytest.raises(ValueError, match="4GB"):
        parse_size("lots")


def test_index_choice_follows_size_and_budget():
    assert choose_index(10_000, 256, parse_size("4GB")).spec == "Flat"
    ivf = choose_index(1_000_000, 256, parse_size("4GB"))
    assert ivf.spec.startswith("IVF") and ivf.spec.endswith(",Flat") and ivf.nprobe
    pq = choose_index(10_000_000, 512, parse_size("2GB"))
    assert "PQ" in pq.spec and pq.estimated_bytes <= parse_size("2GB")
    assert pq.spec.startswith("PCAR256,")  # wide descriptors are reduced before PQ
    ivf = next(p for p in pq.spec.split(",") if p.startswith("IVF"))
    nlist = int(ivf[3:].split("_")[0])
    assert 39 * nlist <= 10_000_000
    assert ivf.endswith("_HNSW32")  # too many lists to scan the centroids exhaustively


def test_compressed_choice_reranks_within_a_quarter_of_flat():
    n, dims = 1_000_000, 256
    budget = n * dims * 4 // 4
    choice = choose_index(n, dims, budget)
    assert ",PQ" in choice.spec and "x4fs" in choice.spec and "Refine(SQ" in choice.spec
    assert choice.estimated_bytes <= budget and choice.k_factor
    assert "HNSW" not in choice.spec  # 4096 lists: the flat quantizer is cheap
    tight = choose_index(n, dims, 40 * 10**6)  # no room for re-ranking codes
    assert "Refine" not in tight.spec and tight.estimated_bytes <= 40 * 10**6


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("spec", ["Flat", "IVF16,Flat"])
def test_shards_search_like_one_index(tmp_path, spec):
    rng = np.random.default_rng(0)
    data = _unit(rng, 3000, 32)
    paths = build_shards(spec, 32, len(data), lambda a, b: data[a:b], lambda: data,
                         tmp_path, shard_size=1000)
    assert len(paths) == 3
    index = ShardedIndex.load(paths, nprobe=16)
    assert index.ntotal == 3000
    queries = data[[5, 1500, 2999]] + 0.01 * _unit(rng, 3, 32)
    scores, ids = index.search(queries, 4)
    assert ids[:, 0].tolist() == [5, 1500, 2999]  # global positions across shards
    exact = queries @ data.T
    np.testing.assert_allclose(scores[:, 0], exact.max(axis=1), rtol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_tuning_reaches_the_target_share_of_exact_recall(tmp_path):
    from copytrace.indexing.tuning import exact_top_k, recall_at_k, tune_search

    rng = np.random.default_rng(1)
    centres = _unit(rng, 64, 32)
    data = centres[rng.integers(0, 64, 20_000)] + 0.3 * _unit(rng, 20_000, 32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    truth = rng.choice(len(data), 300, replace=False)
    queries = data[truth] + 0.25 * _unit(rng, 300, 32)  # "copies": perturbed originals
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = recall_at_k(exact_top_k(queries, len(data), lambda a, b: data[a:b], block=7000), truth)
    assert exact > 0.5
    paths = build_shards("IVF256,PQ32x4fs,Refine(SQ8)", 32, len(data), lambda a, b: data[a:b],
                         lambda: data, tmp_path, shard_size=len(data))
    index = ShardedIndex.load(paths, nprobe=1, k_factor=1)
    _, ids = index.search(queries, 10)
    assert recall_at_k(ids, truth) < 0.97 * exact  # one list and no re-ranking: not enough
    result = tune_search(index, queries, truth, exact_recall=exact, target=0.97)
    assert result.reached and result.share_of_exact >= 0.97
    assert 1 < result.nprobe < 256 and result.k_factor
    _, ids = index.search(queries, 10)  # the tuned parameters stay set
    assert recall_at_k(ids, truth) >= 0.97 * exact
