"""kill -9 of the whole `copytrace index build` process tree (Ray workers included), then the
same command again, equals a clean build: same rows, ids, vectors, shards; no temp files left.
Disk full mid-build: one line, committed parts intact, resumable. A read-only index answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from polling import wait_for

from copytrace.benchmarks.reliability import kill_session, session_pids
from copytrace.indexing.fingerprint import fingerprint, leftovers
from copytrace.pipelines.build import build_index

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"}
CHUNK = 2  # images per committed part: several commits even in a small folder
NAMES = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera")

pytestmark = pytest.mark.slow


def kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL every process of the build's session at once; nothing of it may survive."""
    killed = kill_session(proc)
    assert not session_pids(proc.pid), "processes of the killed build survived"
    return killed


def start_build(images: Path, index: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([BIN, "index", "build", str(images), "--index", str(index),
                             "--chunk-size", str(CHUNK), "-q", *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def parts(index: Path) -> int:
    return len(list((index / "catalog").glob("part-*.parquet")))


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos_dir) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for name in NAMES:
        shutil.copy(photos_dir / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "notes.txt").write_text("an error row must survive the crash too\n")
    return folder


@pytest.fixture(scope="module")
def clean(images, tmp_path_factory):
    index = tmp_path_factory.mktemp("clean") / "idx"
    build_index(images, index, chunk_size=CHUNK, use_ray=False, show_progress=False)
    return fingerprint(index)


@pytest.fixture(scope="module")
def clean_ray(images, tmp_path_factory, clean):
    """A clean `--ray` build: its one-thread workers agree with an inline build to ~1e-7, not
    to the bit, so a killed Ray build is compared with the same command run cleanly."""
    index = tmp_path_factory.mktemp("clean-ray") / "idx"
    proc = subprocess.run([BIN, "index", "build", str(images), "--index", str(index),
                           "--chunk-size", str(CHUNK), "-q", "--ray"], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    ray = fingerprint(index)
    assert (ray.catalog, ray.positions) == (clean.catalog, clean.positions)
    return ray


@pytest.mark.parametrize(("moment", "ray"), [
    ("first part committed", False),
    ("FAISS shards being written", False),
    ("first part committed", True),
])
def test_kill_9_then_rerun_equals_a_clean_build(images, clean, request, tmp_path, moment, ray):
    index = tmp_path / "idx"
    mode = "--ray" if ray else "--no-ray"
    proc = start_build(images, index, mode)
    if moment == "first part committed":
        landed = wait_for(lambda: parts(index) >= 1, proc)
    else:
        landed = wait_for(lambda: (index / "faiss").exists(), proc)
    assert landed, f"the build finished before '{moment}': {proc.stderr.read()}"
    killed = kill_tree(proc)
    if ray:
        assert killed > 3  # the driver plus Ray's own processes and workers
    assert not (index / "manifest.json").exists() or moment != "first part committed"
    rerun = subprocess.run([BIN, "index", "build", str(images), "--index", str(index),
                            "--chunk-size", str(CHUNK), "-q", mode], env=ENV,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert fingerprint(index) == (request.getfixturevalue("clean_ray") if ray else clean)
    assert clean.duplicate_ids == 0 and clean.catalog_rows == len(NAMES) + 1
    assert leftovers(index) == []


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                                 reason="needs root to mount a small tmpfs")


@needs_mount
def test_disk_full_mid_build_is_one_line_and_resumable(images, clean, tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("cannot mount tmpfs here")
    try:
        index = disk / "idx"
        filler = disk / "filler"
        # Leave room for the first parts only (a part pair is ~6 KiB, tmpfs counts 4 KiB pages).
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler.write_bytes(b"\0" * (free - 40 * 1024))
        proc = subprocess.run([BIN, "index", "build", str(images), "--index", str(index),
                               "--chunk-size", str(CHUNK), "-q", "--no-ray"], env=ENV,
                              capture_output=True, text=True, timeout=600)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert "disk full" in lines[0] and "rerun the same command" in lines[0]
        committed = parts(index)
        assert committed >= 1 and leftovers(index) == []
        filler.unlink()
        rerun = subprocess.run([BIN, "index", "build", str(images), "--index", str(index),
                                "--chunk-size", str(CHUNK), "-q", "--no-ray"], env=ENV,
                               capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
        assert f"resumed an interrupted build: {committed} of" in " ".join(rerun.stdout.split())
        assert fingerprint(index) == clean
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@needs_mount
def test_read_only_index_serves_queries_and_writes_nothing(images, tmp_path, photos_dir):
    from copytrace.pipelines.query import query

    disk = tmp_path / "ro"
    if not _mount_tmpfs(disk, "64m"):
        pytest.skip("cannot mount tmpfs here")
    try:
        index = disk / "idx"
        build_index(images, index, chunk_size=CHUNK, use_ray=False, show_progress=False)
        before = sorted(p.relative_to(index) for p in index.rglob("*"))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        results = query(str(photos_dir / "coffee.jpg"), str(index), k=2, verify="full",
                        show_progress=False)
        assert results[0].matches[0].reference_id == "coffee"
        assert results[0].matches[0].evidence["verified"] is True
        assert sorted(p.relative_to(index) for p in index.rglob("*")) == before
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
