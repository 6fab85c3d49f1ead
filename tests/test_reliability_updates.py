"""kill -9 of `copytrace index add` / `index remove` (the whole process tree, Ray included), then
the same command again, equals a clean run: same catalog rows, ids, vectors, tombstones, manifest
version; no temp files or uncommitted parts left. Between an add's parts and its manifest swap,
catalog SQL and the catalog reader see the previous version only. After add + remove, a query
scores exactly as on a fresh build of the same images (the background sample follows the index)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from polling import wait_for

from copytrace.benchmarks.reliability import kill_session, session_pids
from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.catalog_sql import sql
from copytrace.indexing.fingerprint import fingerprint, leftovers
from copytrace.indexing.hold_points import ENV as HOLD_ENV
from copytrace.indexing.parts import manifest_version, uncommitted_parts
from copytrace.pipelines.build import build_index
from copytrace.pipelines.engine import QueryEngine
from copytrace.pipelines.index_update import add_images, remove_images

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "300"}
BASE = ("astronaut", "chelsea", "coffee")
NEW = ("rocket", "coins", "camera")
DROP = ["chelsea", "rocket"]
ATTEMPTS = 4  # a kill polled from outside may come after the moment it waits for

pytestmark = pytest.mark.slow


def _folder(photos_dir: Path, names, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for n in names:
        shutil.copy(photos_dir / f"{n}.jpg", folder / f"{n}.jpg")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, photos_dir):
    """The base index (a template to copy), the new images, and clean add / remove results."""
    work = tmp_path_factory.mktemp("updates")
    base = work / "base"
    build_index(_folder(photos_dir, BASE, work / "a"), base, use_ray=False, show_progress=False)
    new = _folder(photos_dir, NEW, work / "b")
    (new / "notes.txt").write_text("an error row of the add must survive the crash too\n")
    added = work / "added"
    shutil.copytree(base, added)
    add_images(new, added, show_progress=False)
    removed = work / "removed"
    shutil.copytree(added, removed)
    remove_images(DROP, removed)
    return {"base": base, "new": new, "added": added, "removed": removed, "work": work,
            "clean_add": fingerprint(added), "clean_remove": fingerprint(removed)}


@pytest.fixture(scope="module")
def clean_ray_add(runs):
    """A clean `index add --ray`: Ray's one-thread workers agree with an inline add to ~1e-7, not
    to the bit, so a killed Ray add is compared with the same command run cleanly."""
    index = runs["work"] / "added-ray"
    shutil.copytree(runs["base"], index)
    proc = _run("add", str(runs["new"]), "--index", str(index), "-q", "--ray")
    assert proc.returncode == 0, proc.stderr
    ray = fingerprint(index)
    assert (ray.catalog, ray.positions) == (runs["clean_add"].catalog, runs["clean_add"].positions)
    return ray


def _lock_purpose(index: Path) -> str | None:
    try:
        return json.loads((index / ".lock").read_text() or "{}").get("purpose")
    except (OSError, ValueError):
        return None


def _start(*args: str, hold_at_swap: bool = False) -> subprocess.Popen:
    """The command in its own session; `hold_at_swap` holds it (60 s) just before its manifest
    swap, so a kill lands inside the commit window every time instead of by luck."""
    env = {**ENV, HOLD_ENV: "manifest-swap:60"} if hold_at_swap else ENV
    return subprocess.Popen([BIN, "index", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, "index", *args], env=ENV, capture_output=True, text=True,
                          timeout=600)


def _kill(proc: subprocess.Popen) -> int:
    killed = kill_session(proc)
    assert not session_pids(proc.pid), "processes of the killed command survived"
    return killed


def _new_parts(index: Path) -> bool:
    return any((index / "embeddings").glob("part-*.v2.parquet"))


@pytest.mark.parametrize(("moment", "ray"), [
    ("embedding", False),
    ("parts written, manifest not swapped", False),
    ("embedding", True),
])
def test_kill_9_during_add_then_rerun_equals_a_clean_add(runs, request, tmp_path, moment, ray):
    index = tmp_path / "idx"
    args = ("add", str(runs["new"]), "--index", str(index), "-q", "--ray" if ray else "--no-ray")
    for _ in range(ATTEMPTS):
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(runs["base"], index)
        proc = _start(*args, hold_at_swap=moment != "embedding")
        if moment == "embedding":
            sid = proc.pid
            hit = wait_for(lambda: _lock_purpose(index) == "add_images"
                            and (not ray or len(session_pids(sid)) > 3), proc,  # noqa: B023
                           interval=0.001)
        else:
            hit = wait_for(lambda: _new_parts(index), proc, interval=0.001)
        killed = _kill(proc)
        version = manifest_version(index)
        if moment != "embedding":
            hit = hit and version == 1 and bool(uncommitted_parts(index))
        if hit:
            break
    assert hit, f"no attempt was killed at '{moment}'"
    assert version == 1
    if ray:
        assert killed > 3  # the driver plus Ray's own processes and workers
    if moment != "embedding":
        # a reader between the parts and the swap sees version 1 only, never half of the add
        assert sql(index, "SELECT count(*) AS n FROM catalog").column("n")[0].as_py() == len(BASE)
        assert sql(index, "SELECT count(*) AS n FROM embeddings").column("n")[0].as_py() == 3
        assert sorted(read_catalog(index / "catalog").column("image_id").to_pylist()) \
            == sorted(BASE)
    rerun = _run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "version 2" in rerun.stdout
    clean = request.getfixturevalue("clean_ray_add") if ray else runs["clean_add"]
    assert fingerprint(index) == clean
    assert manifest_version(index) == 2 and leftovers(index) == []


def test_rerun_of_an_add_that_committed_is_a_no_op(runs, tmp_path):
    index = tmp_path / "idx"
    shutil.copytree(runs["added"], index)
    rerun = _run("add", str(runs["new"]), "--index", str(index), "-q", "--no-ray")
    assert rerun.returncode == 0, rerun.stderr
    assert "version 2, 0 added" in rerun.stdout
    assert fingerprint(index) == runs["clean_add"]


@pytest.mark.parametrize("moment", ["lock taken", "tombstones written, manifest not swapped"])
def test_kill_9_during_remove_then_rerun_equals_a_clean_remove(runs, tmp_path, moment):
    index = tmp_path / "idx"
    args = ("remove", *DROP, "--index", str(index))
    for _ in range(ATTEMPTS):
        shutil.rmtree(index, ignore_errors=True)
        shutil.copytree(runs["added"], index)
        proc = _start(*args, hold_at_swap=moment != "lock taken")
        if moment == "lock taken":
            hit = wait_for(lambda: _lock_purpose(index) == "remove_images", proc, interval=0.001)
        else:
            hit = wait_for(lambda: (index / "tombstones.v3.parquet").exists(), proc,
                           interval=0.001)
        _kill(proc)
        if hit and manifest_version(index) == 2:
            break
    assert hit and manifest_version(index) == 2, f"no attempt was killed at '{moment}'"
    rerun = _run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert fingerprint(index) == runs["clean_remove"]
    assert manifest_version(index) == 3 and leftovers(index) == []
    again = _run(*args)  # removing removed ids again changes nothing, not even the version
    assert again.returncode == 0 and "version 3, 0 removed" in again.stdout, again.stderr
    assert fingerprint(index) == runs["clean_remove"]


def _scores(index: Path, query: np.ndarray) -> list[tuple[str, float]]:
    with QueryEngine.open(index) as engine:
        result = engine.query([query], k=5, verify="off")[0]
    return [(m.reference_id, round(m.score, 6)) for m in result.matches]


def test_query_after_add_and_remove_scores_as_a_fresh_build(runs, tmp_path, photos_dir):
    """A catalog-sample background drawn before an update is stale after it, even when the
    number of live images is unchanged (one added, one removed): it is drawn again from the
    new version, without the removed images."""
    crop = np.asarray(Image.open(photos_dir / "coffee.jpg").convert("RGB"))[40:360, 60:560]
    index = tmp_path / "idx"
    shutil.copytree(runs["base"], index)
    _scores(index, crop)  # stores a background sample of version 1
    assert (index / "background.npz").exists()
    add_images(_folder(photos_dir, ["rocket"], tmp_path / "one"), index, show_progress=False)
    remove_images(["chelsea"], index)
    after = _scores(index, crop)
    fresh = tmp_path / "fresh"
    build_index(_folder(photos_dir, ["astronaut", "coffee", "rocket"], tmp_path / "f"), fresh,
                use_ray=False, show_progress=False)
    assert after[0][0] == "coffee" and sorted(i for i, _ in after) == ["astronaut", "coffee",
                                                                       "rocket"]
    assert after == _scores(fresh, crop)


def test_kill_9_inside_compact_then_rerun_equals_a_clean_compact(runs, tmp_path):
    """Compaction writes filtered parts as files of the new version: until its manifest swap a
    reader sees the removed rows' version whole (catalog SQL, the catalog reader), a kill leaves
    the index as it was, and a rerun equals a clean compact. The replaced parts stay for readers
    of the previous version and go with the next change."""
    clean = tmp_path / "clean"
    shutil.copytree(runs["removed"], clean)
    done = _run("compact", str(clean))
    assert done.returncode == 0, done.stderr
    before = sql(runs["removed"], "SELECT count(*) AS n FROM catalog").column("n")[0].as_py()
    index = tmp_path / "idx"
    shutil.copytree(runs["removed"], index)
    proc = _start("compact", str(index), hold_at_swap=True)
    hit = wait_for(lambda: (index / "ids.v4.parquet").exists()
                   and any((index / "catalog").glob("part-*.v4.parquet")), proc, interval=0.01)
    assert hit and manifest_version(index) == 3
    assert sql(index, "SELECT count(*) AS n FROM catalog").column("n")[0].as_py() == before
    assert set(DROP) <= set(read_catalog(index / "catalog").column("image_id").to_pylist())
    _kill(proc)
    rerun = _run("compact", str(index))
    assert rerun.returncode == 0, rerun.stderr
    assert fingerprint(index) == fingerprint(clean)
    assert manifest_version(index) == 4 and leftovers(index) == []
    assert sql(index, "SELECT count(*) AS n FROM catalog").column("n")[0].as_py() == before - 2
    assert not set(DROP) & set(read_catalog(index / "catalog").column("image_id").to_pylist())
    assert _numbers_twice(index), "the replaced parts are kept for readers of version 3"
    remove_images(["astronaut"], index)  # the next change deletes what version 3 read only
    assert not _numbers_twice(index)
    assert sql(index, "SELECT count(*) AS n FROM catalog").column("n")[0].as_py() == before - 2


def _numbers_twice(index: Path) -> list[str]:
    """Part numbers present in more than one file (a part and its compacted replacement)."""
    names = [f"{sub}/{p.name.split('.')[0]}" for sub in ("catalog", "embeddings")
             for p in (index / sub).glob("part-*.parquet")]
    return sorted({n for n in names if names.count(n) > 1})
