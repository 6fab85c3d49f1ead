"""Ray-sharded search: shards held by Ray actors answer like the in-process index."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from small_index import DIMS, catalog_rows, small_index, vector

from copytrace.indexing.catalog import catalog_table
from copytrace.indexing.embeddings import embedding_table
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.indexing.store import CopyIndex
from copytrace.indexing.updates import append, compact, remove
from copytrace.pipelines.shard_search import open_distributed


@pytest.mark.parametrize(("spec", "storage"), [("Flat", "memory"), ("IVF8,Flat", "memory"),
                                               ("IVF8,SQ8", "ondisk")])
def test_two_shard_actors_equal_in_process_search(tmp_path, local_ray, spec, storage):
    """Also for an index whose lists stay on disk: each actor maps its shard files."""
    vectors = small_index(tmp_path / "idx", 900, shard_size=250, spec=spec, nprobe=3)
    layout = IndexLayout(tmp_path / "idx")
    m = Manifest.read(layout.manifest)
    replace(m, index=replace(m.index, storage=storage)).write(layout.manifest)
    remove(tmp_path / "idx", ["5", "600"])  # tombstones are honoured the same way
    rng = np.random.default_rng(3)
    queries = vectors[rng.choice(900, 40, replace=False)] + 0.2 * rng.normal(size=(40, DIMS))
    local = CopyIndex.open(tmp_path / "idx")
    remote = open_distributed(tmp_path / "idx", actors=2)
    assert len(remote.faiss_index.actors) == 2 and remote.faiss_index.ntotal == 900
    try:
        want = local.search(queries, 12)
        got = remote.search(queries, 12)
        assert [[n.image_id for n in row] for row in got] == [[n.image_id for n in row]
                                                             for row in want]
        np.testing.assert_allclose([[n.score for n in row] for row in got],
                                   [[n.score for n in row] for row in want], rtol=1e-5)
        # the shards really are spread: 4 shard files over 2 actors, global positions merged
        assert len(local.manifest.index.shards) == 4
        top = remote.search(vectors[[0, 899]], 1)
        assert [row[0].image_id for row in top] == ["0", "899"]
        assert all(n.image_id not in {"5", "600"} for row in got for n in row)
    finally:
        remote.faiss_index.close()


def test_shard_actors_search_a_merged_ondisk_index_like_in_process(tmp_path, local_ray):
    """A merged on-disk index is one index file (its lists file beside it) plus the small shards
    later adds open: each file goes to an actor, which maps the lists from the shared folder."""
    root = tmp_path / "idx"
    vectors = small_index(root, 900, shard_size=250, spec="IVF8,SQ8", nprobe=3)
    m = Manifest.read(IndexLayout(root).manifest)
    replace(m, index=replace(m.index, storage="ondisk")).write(IndexLayout(root).manifest)
    compact(root)  # an on-disk index comes back merged: one quantizer, one lists file
    new_ids = [str(i) for i in range(900, 1000)]
    new = np.stack([vector(i) for i in new_ids])
    append(root, new_ids, new, catalog=catalog_table(catalog_rows(new_ids)),
           embeddings=embedding_table(new_ids, new))
    remove(root, ["5", "950"])
    local = CopyIndex.open(root)
    assert local.manifest.index.lists and len(local.manifest.index.shards) == 2
    rng = np.random.default_rng(4)
    everything = np.concatenate([vectors, new])
    queries = everything[rng.choice(1000, 40, replace=False)] + 0.2 * rng.normal(size=(40, DIMS))
    remote = open_distributed(root, actors=2)
    try:
        assert len(remote.faiss_index.actors) == 2 and remote.faiss_index.ntotal == 1000
        want, got = local.search(queries, 12), remote.search(queries, 12)
        assert [[n.image_id for n in row] for row in got] == [[n.image_id for n in row]
                                                             for row in want]
        np.testing.assert_allclose([[n.score for n in row] for row in got],
                                   [[n.score for n in row] for row in want], rtol=1e-5)
        top = remote.search(everything[[0, 999]], 1)
        assert [row[0].image_id for row in top] == ["0", "999"]
    finally:
        remote.faiss_index.close()


def test_cli_query_distributed_equals_in_process(tmp_path, photos_dir, local_ray, one_torch_thread):
    """`copytrace query --distributed` (real CLI, real model, 3 shards on 2 actors) prints what
    the in-process query prints."""
    import json

    from typer.testing import CliRunner

    from copytrace.app.cli import app
    from copytrace.indexing.manifest import IndexLayout, Manifest
    from copytrace.pipelines.build import build_index

    build_index(photos_dir, tmp_path / "idx", use_ray=False, show_progress=False, shard_size=5)
    assert len(Manifest.read(IndexLayout(tmp_path / "idx").manifest).index.shards) == 3
    queries = tmp_path / "q"
    queries.mkdir()
    for name in ("astronaut", "coins", "grass"):
        (queries / f"{name}.jpg").write_bytes((photos_dir / f"{name}.jpg").read_bytes())
    args = ["query", str(queries), "--index", str(tmp_path / "idx"), "-k", "6", "--json",
            "--no-verify", "--no-ray", "--quiet"]
    runner = CliRunner()
    plain = runner.invoke(app, args)
    spread = runner.invoke(app, [*args, "--distributed", "--shard-actors", "2"])
    assert plain.exit_code == 0 and spread.exit_code == 0, plain.output + spread.output
    want, got = json.loads(plain.stdout), json.loads(spread.stdout)
    assert [m["reference_id"] for r in got for m in r["matches"]] == \
        [m["reference_id"] for r in want for m in r["matches"]]
    assert len(want) == 3 and all(len(r["matches"]) == 6 for r in want)
    np.testing.assert_allclose([m["score"] for r in got for m in r["matches"]],
                               [m["score"] for r in want for m in r["matches"]], rtol=1e-5)
    assert {r["matches"][0]["reference_id"] for r in want} == {"astronaut", "coins", "grass"}
