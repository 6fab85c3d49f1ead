"""The query engine on a real index: decode once, the decision band, cached reference keypoints."""

from __future__ import annotations

import os
import random
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copytrace.descriptors.augment import random_copy
from copytrace.matching.calibrate import Decision, DecisionBand, fit_band
from copytrace.pipelines.build import build_index
from copytrace.pipelines.engine import KEYPOINT_CACHE_DIR, QueryEngine, QueryTimings, VerifyMode
from copytrace.pipelines.verify_pool import VerifyBackend

from photos import jpeg_bytes, photo

_opened: list[tuple[str, str]] | None = None
_hook_lock = threading.Lock()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], (str, bytes, Path)):
        level = "io" if args[1] is not None else "os"  # io.open audits its mode, os.open None
        with _hook_lock:
            _opened.append((str(Path(os.fsdecode(args[0])).resolve()), level))


def times_opened(opened: list[tuple[str, str]], path: Path) -> int:
    """How often `path` was opened: an `io.open` through an opener that calls `os.open` audits
    both, so one open is one of either; a second open of any kind raises one of the counts."""
    key = str(path.resolve())
    return max(sum(1 for p, lv in opened if p == key and lv == level) for level in ("io", "os"))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only while `_opened` is set


class count_opens:  # noqa: N801 - used like a function
    """Every file the interpreter opens meanwhile (io.open and os.open audit events)."""

    def __enter__(self) -> list[tuple[str, str]]:
        global _opened
        _opened = []
        return _opened

    def __exit__(self, *exc: object) -> None:
        global _opened
        _opened = None


@pytest.fixture(scope="module")
def index(tmp_path_factory, photos_dir) -> Path:
    root = tmp_path_factory.mktemp("engine") / "index"
    build_index(photos_dir, root, use_ray=False, show_progress=False)
    return root


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """Edited copies of indexed photos, as files."""
    folder = tmp_path_factory.mktemp("copies")
    rng = random.Random(7)
    for name, edits in [("astronaut", ["crop", "text"]), ("chelsea", ["colour", "jpeg"]),
                        ("coffee", ["flip", "blur"]), ("rocket", ["pad", "shapes"])]:
        copy, _ = random_copy(Image.fromarray(photo(name)), rng, allowed=edits, min_edits=2,
                              max_edits=2)
        (folder / f"{name}-copy.jpg").write_bytes(jpeg_bytes(copy, 85))
    return folder


def test_a_query_file_is_opened_once_per_query(index, copies):
    files = sorted(copies.glob("*.jpg"))
    with QueryEngine.open(index, keypoint_cache=False) as engine:
        engine.query(files[:1], k=3, verify=VerifyMode.FULL)  # warm-up: background, catalog
        with count_opens() as opened:
            results = engine.query(files, k=3, verify=VerifyMode.FULL)
    assert [r.matches[0].reference_id for r in results] == [f.stem[:-5] for f in files]
    assert all(r.matches[0].evidence["verified"] for r in results)  # keypoints were needed
    for f in files:
        assert times_opened(opened, f) == 1, (f, opened)


def test_the_query_job_opens_each_query_file_once(index, copies):
    from copytrace.pipelines.query import query

    with count_opens() as opened:
        results = query(copies, index, k=3, verify="full", use_ray=False, show_progress=False,
                        verify_backend="inline")
    assert all(r.matches[0].evidence["verified"] for r in results)
    for f in copies.glob("*.jpg"):
        assert times_opened(opened, f) == 1, (f, opened)


def test_engine_takes_paths_bytes_and_arrays_alike(index, copies):
    f = copies / "chelsea-copy.jpg"
    with QueryEngine.open(index) as engine:
        pixels = engine.decode(f).pixels
        results = engine.query([f, f.read_bytes(), pixels, b"not an image"], k=2,
                               query_ids=["path", "bytes", "array", "junk"])
    assert [r.query_id for r in results] == ["path", "bytes", "array", "junk"]
    assert {r.matches[0].reference_id for r in results[:3]} == {"chelsea"}
    scores = [r.matches[0].score for r in results[:3]]
    assert max(scores) - min(scores) < 1e-6  # same pixels, same answer
    assert results[3].error and not results[3].matches


def test_band_decides_clear_cases_without_keypoints(index, copies):
    """An exact copy is accepted and unrelated photos rejected by the global score alone; only
    candidates inside the band are verified."""
    exact = photo("coins")
    with QueryEngine.open(index) as engine:
        unfitted = QueryTimings()  # no band fitted for this calibration: verify everything
        engine.calibration = replace(engine.calibration, band=None)
        engine.query([exact], k=5, verify_k=5, verify="banded", timings=unfitted)
        assert unfitted.pairs_verified == 5
        engine.calibration = replace(engine.calibration, band=DecisionBand(0.02, 0.98))
        small = QueryTimings()  # a catalog this small is no background: verify everything
        engine.query([exact], k=5, verify_k=5, verify="banded", timings=small)
        assert small.pairs_verified == 5 and len(engine.index) < engine.band_min_catalog
        engine.band_min_catalog = 0
        full, banded = QueryTimings(), QueryTimings()
        r_full = engine.query([exact], k=5, verify_k=5, verify="full", timings=full)[0]
        r_band = engine.query([exact], k=5, verify_k=5, verify="banded", timings=banded)[0]
        band = engine.calibration.decision_band()
    assert full.pairs_verified == 5 and full.pairs_decided == 0
    assert banded.pairs_verified + banded.pairs_decided == 5
    assert banded.pairs_verified < full.pairs_verified
    assert r_band.matches[0].reference_id == r_full.matches[0].reference_id == "coins"
    top = r_band.matches[0]
    assert top.evidence["decided_by_global_score"] == "accept" and top.score >= band.accept
    for m in r_band.matches[1:]:
        assert m.score < 0.5
        assert m.evidence.get("decided_by_global_score", "verify") in ("reject", "verify")


def test_fit_band_keeps_the_verified_decisions():
    rng = np.random.default_rng(0)
    n = 400
    labels = rng.random(n) < 0.3
    g = np.clip(np.where(labels, rng.normal(0.8, 0.2, n), rng.normal(0.2, 0.2, n)), 0, 1)
    v = np.where(labels, 0.9, 0.1)  # verification is always right here
    band = fit_band(g, v, labels.astype(int))
    decided = np.array([band.decide(x).value for x in g])
    accepted, rejected = decided == "accept", decided == "reject"
    assert labels[accepted].all() and not labels[rejected].any()
    assert accepted.sum() > 0 and rejected.sum() > 0 and (decided == "verify").any()
    # Nothing is left undecided where the classes do not overlap; the band is the overlap.
    assert band.accept == pytest.approx(g[~labels].max(), abs=0.2)
    assert DecisionBand(0.1, 0.9).decide(0.95) is Decision.ACCEPT


def test_reference_keypoints_are_cached_in_memory_and_on_disk(index, copies):
    files = sorted(copies.glob("*.jpg"))
    with QueryEngine.open(index, verify_backend=VerifyBackend.INLINE) as engine:
        engine.query(files, k=3, verify="full")
        cache = engine.verifier.cache
        first = cache.misses
        engine.query(files, k=3, verify="full")
        assert cache.misses == first and cache.hits >= first  # second pass: all from memory
    stored = list((index / KEYPOINT_CACHE_DIR).rglob("*.npz"))
    assert len(stored) >= first
    with QueryEngine.open(index, verify_backend=VerifyBackend.INLINE) as engine:
        again = engine.query(files, k=3, verify="full")
        assert engine.verifier.cache.misses == first  # loaded from disk, none detected again
        assert engine.verifier.cache.disk is not None
    assert all(r.matches[0].evidence["verified"] for r in again)


def test_process_pool_verification_matches_inline(index, copies):
    files = sorted(copies.glob("*.jpg"))
    out = {}
    for backend in (VerifyBackend.INLINE, VerifyBackend.PROCESSES):
        with QueryEngine.open(index, verify_backend=backend, verify_workers=2,
                              keypoint_cache=False) as engine:
            out[backend] = engine.query(files, k=3, verify="full")
    for a, b in zip(out[VerifyBackend.INLINE], out[VerifyBackend.PROCESSES], strict=True):
        assert [(m.reference_id, round(m.score, 6)) for m in a.matches] == \
            [(m.reference_id, round(m.score, 6)) for m in b.matches]


def test_query_localize_opens_each_query_file_once(index, copies, tmp_path):
    """`query --localize` localizes from the decoded query and the verifier's homography; the
    job returns both in one record (`QueryRun`), and the old out-list call still works."""
    from copytrace.pipelines import QueryRun, query_index
    from copytrace.pipelines.query import query

    with count_opens() as opened:
        run = query_index(copies, index, k=3, use_ray=False, show_progress=False,
                          verify_backend="inline", localize=tmp_path / "new",
                          output=tmp_path / "p.csv")
    for f in copies.glob("*.jpg"):
        assert times_opened(opened, f) == 1, (f, opened)
    assert isinstance(run, QueryRun) and run.predictions == tmp_path / "p.csv"
    copies_found = {r.query_id for r in run.results if r.matches[0].score >= 0.5}
    assert copies_found and {o.query_id for o in run.localized} == copies_found
    for o in run.localized:
        assert o.error is None and Path(o.mask).exists() and o.method == "given", o
    outcomes: list = []
    with pytest.warns(DeprecationWarning, match="query_index"):
        results = query(copies, index, k=3, use_ray=False, show_progress=False,
                        verify_backend="inline", localize=tmp_path / "old", localized=outcomes)
    assert [r.as_json() for r in results] == [r.as_json() for r in run.results]
    assert [o.query_id for o in outcomes] == [o.query_id for o in run.localized]


def test_localize_verifies_a_match_the_band_accepted_unverified(index, copies, tmp_path):
    f = copies / "chelsea-copy.jpg"
    with QueryEngine.open(index, keypoint_cache=False) as engine:
        engine.band_min_catalog = 0
        engine.calibration = replace(engine.calibration, band=DecisionBand(0.0, 0.0))
        image = engine.decode(f)
        matches = engine.rank_images([image], verify="banded")
        top = matches[0][0]
        assert top.evidence["decided_by_global_score"] == "accept" and "homography" not in \
            top.evidence
        [outcome] = engine.localize_top([image], matches, tmp_path)
    assert image.prepared is not None  # the query's keypoints were computed for it, and kept
    assert outcome.error is None and outcome.method == "given" and outcome.reference_id == \
        "chelsea"
    assert Path(outcome.mask).exists() and Path(outcome.json).exists()


def test_reference_keypoints_prepared_ahead_by_the_pool(index, copies, tmp_path):
    files = sorted(copies.glob("*.jpg"))
    with QueryEngine.open(index, verify_backend=VerifyBackend.PROCESSES, verify_workers=2,
                          cache_dir=tmp_path) as engine:
        assert engine.prepare_references() == 0
        stored = list(tmp_path.rglob(f"{KEYPOINT_CACHE_DIR}/*/*.npz"))
        assert len(stored) == len(engine.index)  # every reference, once, shared by the workers
    with QueryEngine.open(index, verify_backend=VerifyBackend.INLINE, cache_dir=tmp_path) as engine:
        results = engine.query(files, k=3, verify="full")
        assert engine.verifier.cache.misses > 0 and not list(  # read from disk, none detected again
            set(tmp_path.rglob(f"{KEYPOINT_CACHE_DIR}/*/*.npz")) - set(stored))
    assert [r.matches[0].reference_id for r in results] == [f.stem[:-5] for f in files]


def test_verifier_start_runs_the_pool_workers_before_any_query(index):
    import multiprocessing

    with QueryEngine.open(index, verify_backend=VerifyBackend.PROCESSES, verify_workers=2,
                          keypoint_cache=False) as engine:
        before = set(multiprocessing.active_children())
        engine.verifier.start()
        started = set(multiprocessing.active_children()) - before
        assert len(started) == 2 and all(p.is_alive() for p in started)
    assert not any(p.is_alive() for p in started)  # closed with the engine


def test_query_localize_no_expand_on_ray_opens_each_query_file_once(index, copies, tmp_path,
                                                                     local_ray):
    """`query --no-expand --ray --localize`: the queries are decoded once in the driver (the Ray
    embedding job would read them on the workers, then verification and localization again)."""
    from copytrace.pipelines.query import query

    outcomes: list = []
    with count_opens() as opened:
        results = query(copies, index, k=3, use_ray=True, expand=False, show_progress=False,
                        localize=tmp_path, localized=outcomes)
    for f in copies.glob("*.jpg"):
        assert times_opened(opened, f) == 1, (f, opened)
    found = {r.query_id for r in results if r.matches and r.matches[0].score >= 0.5}
    assert found and {o.query_id for o in outcomes} == found


def test_an_inline_engine_prepares_references_on_a_temporary_pool(index, tmp_path):
    import multiprocessing

    done: list[int] = []
    with QueryEngine.open(index, verify_backend=VerifyBackend.INLINE, cache_dir=tmp_path) as engine:
        before = set(multiprocessing.active_children())
        assert engine.prepare_references(progress=done.append, chunk=4) == 0
        assert not set(multiprocessing.active_children()) - before  # the pool is gone again
        assert engine.verifier.cache.misses == 0  # prepared in the workers, not here
    assert sum(done) == len(engine.index) and max(done) <= 4
    assert len(list(tmp_path.rglob(f"{KEYPOINT_CACHE_DIR}/*/*.npz"))) == len(engine.index)


def test_index_prepare_keypoints_command_and_serve_prepare(index, tmp_path):
    """The real console script fills the keypoint cache and a second run finds it complete; a
    service created with `prepare` fills its own before the first request."""
    import re
    import subprocess
    import sys

    from copytrace.app.service.app import create_app

    cli = [sys.executable, "-m", "copytrace.app.cli", "index", "prepare-keypoints",
           str(index), "--cache-dir", str(tmp_path / "a"), "-q", "--workers", "2"]
    first = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    n = int(re.search(r"keypoints of (\d+) references", first.stdout).group(1))
    stored = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.npz")}
    assert n > 0 and len(stored) == n
    assert subprocess.run(cli, capture_output=True, timeout=300).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.npz")} == stored
    create_app(index, cache_dir=tmp_path / "b", prepare=True)
    assert len(list((tmp_path / "b").rglob(f"{KEYPOINT_CACHE_DIR}/*/*.npz"))) == n
    bad = subprocess.run([*cli[:5], str(tmp_path / "nope"), "-q"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
