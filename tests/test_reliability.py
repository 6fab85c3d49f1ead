"""Right answers or a loud error: absolute catalog uris, unreadable references reported, every
input accounted for, one writer per index, listings confined to --root. Real files, real index."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from copytrace.indexing.catalog import read_catalog
from copytrace.indexing.lock import LOCK_FILE, IndexLockedError, index_lock
from copytrace.indexing.relocate import relocate
from copytrace.indexing.sources import SourceError, list_sources
from copytrace.pipelines.build import build_index
from copytrace.pipelines.query import query

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins")
DEPTH = 1100


def _remove_deep_chain(root: Path) -> None:
    """rmtree recurses; remove the `d/d/d/...` chain from the bottom up instead."""
    deep = root / "/".join(["d"] * DEPTH)
    for child in deep.iterdir():
        child.unlink()
    for _ in range(DEPTH):
        for child in deep.iterdir():
            child.unlink()
        deep.rmdir()
        deep = deep.parent


def _copy_photos(photos_dir: Path, dest: Path, names=PHOTOS) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(photos_dir / f"{name}.jpg", dest / f"{name}.jpg")
    return dest


def _edited_copy(src: Path, dest: Path) -> Path:
    """A copy a user would call a copy: cropped, resized, recompressed."""
    im = Image.open(src).convert("RGB")
    w, h = im.size
    im.crop((w // 10, h // 12, w - w // 8, h - h // 10)).resize((320, 300)).save(dest, quality=70)
    return dest


def _verdict(results) -> list[tuple[str, float, object]]:
    return [(m.reference_id, round(m.score, 6), m.evidence.get("verified"))
            for m in results[0].matches]


@pytest.fixture(scope="module")
def relative_index(tmp_path_factory, photos_dir):
    """An index built as a new user would: `index build imgs --index idx` inside a work folder."""
    work = tmp_path_factory.mktemp("work")
    _copy_photos(photos_dir, work / "imgs")
    query_file = _edited_copy(photos_dir / "astronaut.jpg", work / "astronaut-copy.jpg")
    before = os.getcwd()
    os.chdir(work)
    try:
        build_index("imgs", "idx", use_ray=False, show_progress=False)
        here = query(str(query_file), "idx", k=3, verify="full", show_progress=False)
    finally:
        os.chdir(before)
    return work, query_file, here


def test_catalog_uris_are_absolute_and_the_source_root_is_recorded(relative_index):
    work, _, _ = relative_index
    uris = read_catalog(work / "idx" / "catalog").column("uri").to_pylist()
    assert uris and all(os.path.isabs(u) and os.path.exists(u) for u in uris)
    assert all(u == os.path.normpath(u) for u in uris)
    import json

    manifest = json.loads((work / "idx" / "manifest.json").read_text())
    assert manifest["source"] == str(work / "imgs")


def test_same_verdict_from_another_working_directory(relative_index, tmp_path, monkeypatch):
    work, query_file, here = relative_index
    assert here[0].matches[0].reference_id == "astronaut"
    assert here[0].matches[0].score >= 0.5 and here[0].matches[0].evidence["verified"] is True
    monkeypatch.chdir(tmp_path)
    there = query(str(query_file), str(work / "idx"), k=3, verify="full", show_progress=False)
    assert _verdict(there) == _verdict(here)


def test_moved_references_are_unavailable_then_relocated(relative_index, tmp_path):
    work, query_file, here = relative_index
    moved = tmp_path / "moved"
    shutil.copytree(work / "imgs", moved)
    index = tmp_path / "idx"
    shutil.copytree(work / "idx", index)
    relocate(index, work / "imgs", tmp_path / "gone")  # the catalog now points at nothing
    lost = query(str(query_file), str(index), k=3, verify="full", show_progress=False)
    top = lost[0].matches[0]
    assert top.reference_id == "astronaut"
    assert top.evidence["verified"] == "unavailable"
    assert "file not found" in top.evidence["verify_error"]
    assert top.score >= 0.5  # an unreadable original is no evidence against the copy

    report = relocate(index, tmp_path / "gone", moved)
    assert report.relocated == report.rows == len(PHOTOS) and report.missing == 0
    back = query(str(query_file), str(index), k=3, verify="full", show_progress=False)
    assert _verdict(back) == _verdict(here)
    uris = read_catalog(index / "catalog").column("uri").to_pylist()
    assert all(u.startswith(str(moved) + os.sep) for u in uris)
    # the build state follows: rebuilding from the new place resumes instead of refusing
    again = build_index(moved, index, use_ray=False, show_progress=False)
    assert again.resumed_chunks == 1 and again.up_to_date and again.indexed == len(PHOTOS)


def test_dedup_from_another_working_directory_finds_the_same_pairs(tmp_path, photos_dir,
                                                                    monkeypatch):
    from copytrace.pipelines.dedup.audit import dedup

    work = tmp_path / "work"
    imgs = _copy_photos(photos_dir, work / "imgs")
    shutil.copy(imgs / "coffee.jpg", imgs / "coffee-again.jpg")  # exact duplicate
    _edited_copy(imgs / "astronaut.jpg", imgs / "astronaut-edit.jpg")  # near duplicate
    _edited_copy(imgs / "rocket.jpg", imgs / "rocket-edit.jpg")
    monkeypatch.chdir(work)
    build_index("imgs", "idx", use_ray=False, show_progress=False)
    here = dedup("idx", "audit-here", report=False, show_progress=False)
    monkeypatch.chdir(tmp_path)
    there = dedup(str(work / "idx"), str(tmp_path / "audit-there"), report=False,
                  show_progress=False)
    pairs = _duplicate_pairs(here)
    assert {("coffee", "coffee-again"), ("astronaut", "astronaut-edit"),
            ("rocket", "rocket-edit")} <= pairs
    assert _duplicate_pairs(there) == pairs


def _duplicate_pairs(report) -> set[tuple[str, str]]:
    """(a, b) of the pairs the audit calls duplicates (its pair record is being reshaped)."""
    out = set()
    for p in report.pairs:
        if getattr(p, "duplicate", True):
            a, b = (p.a, p.b) if hasattr(p, "a") else (p.image_a, p.image_b)
            out.add((min(a, b), max(a, b)))
    return out


def _messy_folder(root: Path, photos_dir: Path) -> dict[str, str]:
    """A folder with every kind of entry a real collection has; returns name -> expected reason
    (empty for images that must be indexed)."""
    _copy_photos(photos_dir, root, ("astronaut", "chelsea"))
    expect = {"astronaut": "", "chelsea": ""}
    (root / "broken.jpg").symlink_to(root / "nowhere.jpg")
    expect["broken"] = "broken symbolic link"
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    expect["loop"] = "symbolic link loop|cannot open"
    (root / "album.png").mkdir()
    shutil.copy(photos_dir / "coffee.jpg", root / "album.png" / "coffee.jpg")
    expect["album"] = "directory"
    expect["coffee"] = ""
    os.mkfifo(root / "pipe.jpg")
    expect["pipe"] = "not a regular file"
    (root / "notes.txt").write_text("not an image\n")
    expect["notes"] = "not a recognised image format"
    (root / "empty.jpg").write_bytes(b"")
    expect["empty"] = "empty file"
    deep = root
    for _ in range(DEPTH):  # deeper than Python's recursion limit
        deep = deep / "d"
        os.mkdir(deep)
    shutil.copy(photos_dir / "rocket.jpg", deep / "rocket.jpg")
    expect["rocket"] = ""
    (root / "d" / "up").symlink_to(root, target_is_directory=True)  # a folder loop
    odd = os.fsencode(str(root)) + b"/caf\xe9.jpg"  # Latin-1 name: not UTF-8
    with open(odd, "wb") as fh:
        fh.write((photos_dir / "coins.jpg").read_bytes())
    expect["caf\\xe9"] = "not valid UTF-8"
    return expect


def test_every_path_gets_exactly_one_catalog_row(tmp_path, photos_dir):
    expect = _messy_folder(tmp_path / "messy", photos_dir)
    report = build_index(tmp_path / "messy", tmp_path / "idx", use_ray=False,
                         show_progress=False)
    rows = {r["image_id"]: r for r in read_catalog(tmp_path / "idx" / "catalog").to_pylist()}
    assert sorted(rows) == sorted(expect)
    import re

    for image_id, reason in expect.items():
        row = rows[image_id]
        if reason:
            assert row["status"] == "error" and re.search(reason, row["error"]), row
            assert "\n" not in row["error"]
        else:
            assert row["status"] == "ok", row
    assert report.inputs == len(expect)
    assert report.errors == sum(bool(r) for r in expect.values())
    assert report.indexed == report.inputs - report.errors
    _remove_deep_chain(tmp_path / "messy")


def test_a_file_that_vanishes_before_it_is_read_gets_a_row(tmp_path, photos_dir):
    imgs = _copy_photos(photos_dir, tmp_path / "imgs", ("astronaut", "chelsea"))
    listing = tmp_path / "list.csv"
    listing.write_text("path\nimgs/astronaut.jpg\nimgs/chelsea.jpg\nimgs/gone.jpg\n")
    report = build_index(listing, tmp_path / "idx", use_ray=False, show_progress=False)
    rows = {r["image_id"]: r for r in read_catalog(tmp_path / "idx" / "catalog").to_pylist()}
    assert rows["gone"]["status"] == "error" and rows["gone"]["error"] == "file not found"
    assert (report.inputs, report.indexed, report.errors) == (3, 2, 1)
    assert imgs.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_permission_denied_files_and_folders_are_recorded(photos_dir):
    from copytrace.descriptors.decode import DecodeError, read_bytes

    top = Path(tempfile.mkdtemp(prefix="ct-perm-"))
    try:
        top.chmod(0o755)
        shutil.copy(photos_dir / "astronaut.jpg", top / "open.jpg")
        shutil.copy(photos_dir / "coffee.jpg", top / "secret.jpg")
        (top / "secret.jpg").chmod(0o000)
        (top / "locked").mkdir(mode=0o700)
        shutil.copy(photos_dir / "chelsea.jpg", top / "locked" / "hidden.jpg")
        os.seteuid(65534)  # nobody: root reads everything, a real user does not
        try:
            sources = {s.image_id: s for s in list_sources(top)}
            with pytest.raises(DecodeError, match="permission denied"):
                read_bytes(sources["secret"].uri)
            assert read_bytes(sources["open"].uri)
        finally:
            os.seteuid(0)
        assert "cannot list folder" in sources["locked"].error
        assert sources["secret"].error is None  # known only when read: the build records it
    finally:
        shutil.rmtree(top)


def test_root_confines_listings(tmp_path, photos_dir):
    allowed = _copy_photos(photos_dir, tmp_path / "allowed", ("astronaut",))
    outside = _copy_photos(photos_dir, tmp_path / "outside", ("coffee",))
    (allowed / "escape.jpg").symlink_to(outside / "coffee.jpg")
    ok = tmp_path / "allowed" / "ok.csv"
    ok.write_text("path\nastronaut.jpg\n")
    assert [s.image_id for s in list_sources(ok, root=allowed)] == ["astronaut"]
    for line in ("../outside/coffee.jpg", "/etc/passwd", "escape.jpg"):
        bad = tmp_path / "allowed" / "bad.csv"
        bad.write_text(f"path\nastronaut.jpg\n{line}\n")
        with pytest.raises(SourceError, match="outside the allowed root"):
            list_sources(bad, root=allowed)
    with pytest.raises(SourceError, match="outside the allowed root"):
        list_sources(outside, root=allowed)


_HOLDER = textwrap.dedent("""
    import sys, time
    from copytrace.indexing.lock import index_lock
    with index_lock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(tmp_path):
    index = tmp_path / "idx"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(index)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError, match=f"process {holder.pid}"), index_lock(index):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert str(holder.pid) in (index / LOCK_FILE).read_text()  # kill -9 left the file behind
    with index_lock(index):  # ... but the kernel released the flock: stale, taken over
        assert str(os.getpid()) in (index / LOCK_FILE).read_text()


def test_rerun_removes_temp_files_and_overwrite_keeps_the_lock(tmp_path, photos_dir):
    imgs = _copy_photos(photos_dir, tmp_path / "imgs", ("astronaut", "chelsea"))
    index = tmp_path / "idx"
    build_index(imgs, index, use_ray=False, show_progress=False)
    (index / "catalog" / ".part-000001.parquet.tmp-12345").write_bytes(b"half")  # killed writer
    again = build_index(imgs, index, use_ray=False, show_progress=False)
    assert again.resumed_chunks == 1 and not list(index.rglob(".*.tmp-*"))
    build_index(imgs, index, use_ray=False, show_progress=False, overwrite=True)
    assert (index / LOCK_FILE).exists()
    ids = pq.read_table(index / "ids.parquet").column("image_id").to_pylist()
    assert sorted(ids) == ["astronaut", "chelsea"]
