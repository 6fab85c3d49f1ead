"""A read-only index folder answers queries (CLI `serve`, `query`) with nothing written next to
it: the caches go to `--cache-dir`. SIGTERM of `copytrace serve` (the console script, which
re-executes itself under tcmalloc) finishes the request in flight, then exits 0. `query --root`
refuses listings naming paths outside the root."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from copytrace.indexing.sources import SourceError
from copytrace.pipelines.build import build_index
from copytrace.pipelines.query import query

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       "RAY_USAGE_STATS_ENABLED": "0", "COPYTRACE_TOKEN": "", "COLUMNS": "300"}
NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def _read_only(folder: Path):
    """Make `folder` read-only: a read-only remount of a tmpfs holding it when root (root ignores
    permission bits), else permission bits."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-o", "remount,ro", str(folder.parent)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot remount the index's tmpfs read-only")
        try:
            yield
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(folder.parent)], check=False)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


@pytest.fixture(scope="module")
def ro_index(tmp_path_factory, photos_dir):
    """An index alone on its own filesystem (a small tmpfs when root), made read-only in tests."""
    disk = tmp_path_factory.mktemp("ro")
    if os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    images = tmp_path_factory.mktemp("images")
    for n in NAMES:
        shutil.copy(photos_dir / f"{n}.jpg", images / f"{n}.jpg")
    index = disk / "idx"
    build_index(images, index, use_ray=False, show_progress=False)
    yield index
    if os.geteuid() == 0:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _big_copy(photos_dir: Path) -> bytes:
    """An upscaled astronaut: verification takes long enough to be in flight at SIGTERM."""
    img = Image.open(photos_dir / "astronaut.jpg").convert("RGB").resize((2400, 2400))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.slow
def test_serve_read_only_index_with_cache_dir_and_sigterm_exits_0(ro_index, tmp_path, photos_dir):
    cache = tmp_path / "cache"
    before = _snapshot(ro_index)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _read_only(ro_index):
        proc = subprocess.Popen([BIN, "serve", "--index", str(ro_index), "--port", str(port),
                                 "--cache-dir", str(cache)], env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                        break
                assert proc.poll() is None and time.monotonic() < deadline, \
                    proc.stdout.read().decode()
                time.sleep(0.2)
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(httpx.post, f"{url}/v1/query",
                                      params={"k": 4, "verify": "full"},
                                      content=_big_copy(photos_dir), timeout=300)
                while httpx.get(f"{url}/v1/health", timeout=5).json()["queue"] == 0:
                    assert not pending.done()
                    time.sleep(0.01)
                proc.send_signal(signal.SIGTERM)  # to the console script's own process
                r = pending.result()
            assert r.status_code == 200, r.text
            top = r.json()["matches"][0]
            assert top["reference_id"] == "astronaut" and top["verified"] is True
            assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert _snapshot(ro_index) == before  # nothing written next to the index
    (sub,) = cache.iterdir()  # one subfolder for this index
    assert (sub / "background.npz").exists()
    assert list((sub / "keypoints").rglob("*.npz")), "the reference keypoints were not cached"


@pytest.mark.slow
def test_query_read_only_index_with_and_without_cache_dir(ro_index, tmp_path, photos_dir):
    before = _snapshot(ro_index)
    cache = tmp_path / "cache"
    with _read_only(ro_index):
        for cache_dir in (None, cache):
            results = query(str(photos_dir / "coffee.jpg"), str(ro_index), k=2, verify="full",
                            show_progress=False, cache_dir=cache_dir)
            top = results[0].matches[0]
            assert top.reference_id == "coffee" and top.evidence["verified"] is True
        assert _snapshot(ro_index) == before
    assert [p.name for p in cache.iterdir()][0].startswith("idx-")
    assert list(cache.rglob("background.npz")) and list(cache.rglob("keypoints/*/*.npz"))


def test_query_root_refuses_listing_paths_outside_it(tmp_path, photos_dir):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "outside").mkdir()
    shutil.copy(photos_dir / "rocket.jpg", tmp_path / "outside" / "rocket.jpg")
    shutil.copy(photos_dir / "coffee.jpg", allowed / "coffee.jpg")
    (allowed / "escape.jpg").symlink_to(photos_dir / "chelsea.jpg")  # a link out of the root
    listings = {"outside.csv": [str(tmp_path / "outside" / "rocket.jpg")],
                "link.csv": ["escape.jpg"], "dots.csv": ["coffee.jpg", "../outside/rocket.jpg"]}
    for name, rows in listings.items():
        (allowed / name).write_text("path\n" + "\n".join(rows) + "\n")
        with pytest.raises(SourceError, match="outside the allowed root"):
            query(str(allowed / name), str(tmp_path / "none"), root=allowed, show_progress=False)
    with pytest.raises(SourceError, match="outside the allowed root"):
        query(str(tmp_path / "outside" / "rocket.jpg"), str(tmp_path / "none"), root=allowed)
    # the CLI: one line, exit 2, before any index or model is opened
    proc = subprocess.run([BIN, "query", str(allowed / "dots.csv"), "--index",
                           str(tmp_path / "none"), "--root", str(allowed)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "outside the allowed root" in lines[0] and "refused" in lines[0]
