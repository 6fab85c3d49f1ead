"""Every CLI failure is one line on stderr and a non-zero exit, through the real `copytrace`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from copytrace.indexing.lock import index_lock
from copytrace.pipelines.build import build_index

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "COLUMNS": "80"}


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([BIN, *args], capture_output=True, text=True, env=ENV, timeout=600,
                          cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exactly one non-empty stderr line, no traceback, naming `needles`."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0, proc.stdout
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, photos_dir) -> Path:
    imgs = tmp_path_factory.mktemp("imgs")
    for name in ("astronaut", "coffee"):
        shutil.copy(photos_dir / f"{name}.jpg", imgs / f"{name}.jpg")
    index = tmp_path_factory.mktemp("index") / "idx"
    build_index(imgs, index, use_ray=False, show_progress=False)
    return index


@pytest.mark.parametrize("k", ["0", "-3"])
def test_invalid_k_is_refused(tmp_path, photos_dir, k):
    proc = run("query", str(photos_dir / "coffee.jpg"), "--index", str(tmp_path), "-k", k)
    assert proc.returncode == 2
    one_line_error(proc, "-k")


def test_bad_sql_is_one_line(small_index):
    proc = run("index", "sql", str(small_index), "SELEC * FROM catalog")
    assert proc.returncode == 2
    one_line_error(proc, "SQL error", "SELEC")
    proc = run("index", "sql", str(small_index), "SELECT nope FROM catalog")
    one_line_error(proc, "SQL error", "nope")
    ok = run("index", "sql", str(small_index), "SELECT count(*) AS n FROM catalog")
    assert ok.returncode == 0 and "2" in ok.stdout


def test_unreadable_queries_fail_loudly(tmp_path, small_index):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    one_line_error(run("query", str(text), "--index", str(small_index), "-q"),
                   "cannot read query", "notes.txt", "not a recognised image format")
    folder = tmp_path / "no-images"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    (folder / "b.csv.bak").write_text("b\n")
    one_line_error(run("query", str(folder), "--index", str(small_index), "-q"),
                   "none of the 2 queries")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run("query", str(empty), "--index", str(small_index), "-q"), "no images found")
    link = tmp_path / "gone.jpg"
    link.symlink_to(tmp_path / "nowhere.jpg")
    one_line_error(run("query", str(link), "--index", str(small_index), "-q"),
                   "broken symbolic link")


def test_build_without_images_leaves_no_index(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(3):
        (texts / f"{i}.txt").write_text("not an image\n")
    index = tmp_path / "idx"
    proc = run("index", "build", str(texts), "--index", str(index), "--no-ray", "-q")
    assert proc.returncode == 2
    one_line_error(proc, "no images found", "none of its 3 files")
    assert not index.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run("index", "build", str(empty), "--index", str(index), "--no-ray", "-q"),
                   "no files found")
    assert not index.exists()


def test_debug_shows_the_traceback(small_index):
    proc = run("index", "sql", str(small_index), "SELEC 1", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_second_writer_refused_by_the_cli(tmp_path, photos_dir):
    index = tmp_path / "idx"
    with index_lock(index):
        proc = run("index", "build", str(photos_dir), "--index", str(index), "--no-ray", "-q")
    assert proc.returncode == 2
    one_line_error(proc, "is being written by process", str(os.getpid()))


def test_relocate_command(tmp_path, small_index):
    index = tmp_path / "idx"
    shutil.copytree(small_index, index)
    import json

    old = json.loads((index / "manifest.json").read_text())["source"]
    new = tmp_path / "new-home"
    shutil.copytree(old, new)
    proc = run("index", "relocate", str(index), old, str(new))
    assert proc.returncode == 0, proc.stderr
    assert "relocated 2 of 2" in proc.stdout
    assert json.loads((index / "manifest.json").read_text())["source"] == str(new)
    one_line_error(run("index", "relocate", str(index), "/no/such/root", str(new)),
                   "no catalog uri")
