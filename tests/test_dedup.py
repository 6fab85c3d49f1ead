"""Dedup audit on real photos: exact, PDQ and verified near duplicates, content-not-template,
Parquet outputs, clusters with a keep policy, the report, DuckDB SQL, incremental runs, PDQ
hash lists and the CLI as a real process."""

from __future__ import annotations

import base64
import calendar
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from devtools import CHROMIUM, DevTools, console_errors
from PIL import Image

from copytrace.benchmarks.dedup_planted import social_frame
from copytrace.descriptors.augment import random_copy
from copytrace.descriptors.pdq import pdq_hash
from copytrace.matching.calibrate import load_calibration
from copytrace.matching.clusters import ImageFacts, KeepPolicy, connected_groups, representative
from copytrace.matching.pdq import from_hex, range_pairs, read_hash_list, to_hex
from copytrace.matching.templates import (
    ContentCheck,
    TemplateConfig,
    content_check,
    learn_templates,
    thumbnail,
)
from copytrace.matching.verify import VerifyConfig, verify_batch
from copytrace.pipelines.dedup.against import dedup_against
from copytrace.pipelines.dedup.audit import CLUSTER_SCHEMA, PAIR_SCHEMA, dedup, rejection_reason, taken_time
from copytrace.pipelines.dedup.bridges import bridges, drop_inconsistent
from copytrace.pipelines.dedup.score import ScoredPair
from copytrace.pipelines.dedup.sql import audit_sql

from photos import PHOTO_NAMES, jpeg_bytes, photo

# each also posted inside the same screenshot frame (textured photos: two dark, low-texture
# square photos in one frame, like moon and retina, still agree too much at the check's 8 px cells)
FRAMED = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
          "coins", "camera", "grass")


def test_connected_groups_and_keep_policies():
    assert connected_groups([("b", "c"), ("a", "b"), ("x", "y")]) == [["a", "b", "c"], ["x", "y"]]
    facts = {"a": ImageFacts(100, 10, 50.0, 2), "b": ImageFacts(400, 5, 90.0, 1),
             "c": ImageFacts(400, 9, 10.0, 0)}
    assert representative(["a", "b", "c"], facts, KeepPolicy.LARGEST) == "c"  # ties: more bytes
    assert representative(["a", "b", "c"], facts, KeepPolicy.OLDEST) == "c"
    assert representative(["a", "b"], facts, KeepPolicy.OLDEST) == "a"
    assert representative(["a", "b"], facts, KeepPolicy.FIRST) == "b"


def test_taken_time_reads_exif_before_file_time(tmp_path):
    path = tmp_path / "dated.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2003:04:05 06:07:08"  # DateTimeOriginal
    Image.fromarray(photo("coffee")).save(path, exif=exif)
    os.utime(path, (0, 0))  # 1970: older still, but EXIF says when it was taken
    assert taken_time(str(path)) == calendar.timegm((2003, 4, 5, 6, 7, 8, 0, 0, 0))
    plain = tmp_path / "plain.jpg"
    Image.fromarray(photo("coffee")).save(plain)
    os.utime(plain, (1e9, 1e9))
    assert taken_time(str(plain)) == 1e9


def test_pdq_hex_round_trip_and_matching(tmp_path):
    a, _ = pdq_hash(photo("chelsea"))
    again = np.asarray(Image.open(io.BytesIO(jpeg_bytes(photo("chelsea"), 60))))
    b, _ = pdq_hash(again[::2, ::2])  # re-encoded and halved: still a PDQ match
    c, _ = pdq_hash(photo("rocket"))
    assert from_hex(to_hex(a)) == a and len(to_hex(a)) == 64
    listing = tmp_path / "list.csv"
    listing.write_text(f"hash,label\n{to_hex(a)},cat-known\n{to_hex(c)}\n")
    codes, labels = read_hash_list(listing)
    assert codes == [a, c] and labels[0] == "cat-known"
    found = list(range_pairs(np.frombuffer(b, np.uint8)[None], np.stack(
        [np.frombuffer(x, np.uint8) for x in codes])))
    assert [(p.b, p.distance <= 31) for p in found] == [(0, True)]


@pytest.fixture(scope="module")
def frames():
    """Nine different photos in the same screenshot frame, and the raw photos."""
    return {n: np.asarray(social_frame(Image.fromarray(photo(n)), 0)) for n in FRAMED}


def test_content_check_rejects_shared_frame_accepts_screenshot(frames):
    model = learn_templates(np.stack([thumbnail(f) for f in frames.values()]
                                     + [thumbnail(photo(n)) for n in PHOTO_NAMES]))
    cfg = TemplateConfig()
    a, b = frames["astronaut"], frames["coffee"]
    tmpl = model.template_cells(thumbnail(a)[None])[0]
    # header and footer rows are template, the photo is not
    assert tmpl[:2].mean() > 0.9 and tmpl[13:].mean() > 0.9 and tmpl[4:12, 4:12].mean() < 0.1
    same_frame = np.eye(3)  # identical frame geometry: the frame lines up exactly
    assert not content_check(a, b, same_frame, tmpl, config=cfg).passed
    # without template knowledge the shared frame alone is taken as evidence
    no_template = np.zeros_like(tmpl)
    assert content_check(a, b, same_frame, no_template, config=cfg).coverage > \
        content_check(a, b, same_frame, tmpl, config=cfg).coverage
    v = verify_batch([(a, [_as_file(photo("astronaut"))])])[0][0]
    assert v is not None
    assert content_check(a, photo("astronaut"), v.homography, tmpl, config=cfg).passed


def test_template_margin_rejects_photos_agreeing_only_along_the_frame_edge(frames):
    """Two dark, flat photos in one frame agree on the cells where the frame's edge meets
    them; with TemplateConfig.template_margin=1 (the default) those cells are not content."""
    model = learn_templates(np.stack([thumbnail(f) for f in frames.values()]
                                     + [thumbnail(photo(n)) for n in PHOTO_NAMES]))
    moon, retina = (np.asarray(social_frame(Image.fromarray(photo(n)), 0)) for n in ("moon", "retina"))
    tmpl = model.template_cells(thumbnail(moon)[None])[0]
    edge_only = content_check(moon, retina, np.eye(3), tmpl, config=TemplateConfig(template_margin=0))
    assert edge_only.passed  # what the margin is for: the frame edge alone passed
    margin = TemplateConfig(template_margin=1)
    assert not content_check(moon, retina, np.eye(3), tmpl, config=margin).passed
    framed_moon = content_check(moon, np.asarray(social_frame(Image.fromarray(photo("moon")), 0)),
                                np.eye(3), tmpl, config=margin)
    assert framed_moon.passed  # the same photo in the frame still agrees on its content


def _as_file(arr: np.ndarray) -> str:
    import tempfile

    path = Path(tempfile.mkdtemp()) / "x.png"
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture(scope="module")
def dup_folder(tmp_path_factory, photos_dir, frames):
    folder = tmp_path_factory.mktemp("dupfolder")
    for p in photos_dir.iterdir():
        shutil.copy(p, folder / p.name)
    shutil.copy(photos_dir / "coffee.jpg", folder / "coffee-again.jpg")
    copy, _ = random_copy(Image.fromarray(photo("astronaut")), random.Random(0),
                          allowed=["crop", "text"], min_edits=2, max_edits=2)
    (folder / "astronaut-edited.jpg").write_bytes(jpeg_bytes(copy, 85))
    for n, framed in frames.items():
        (folder / f"post-{n}.jpg").write_bytes(jpeg_bytes(framed, 90))
    return folder


@pytest.fixture(scope="module")
def audit(dup_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    return dedup(dup_folder, out, keep="largest", use_ray=False, show_progress=False)


def test_dedup_finds_copies_not_shared_frames(audit):
    pairs = {(p.a, p.b): p for p in audit.pairs}
    assert pairs[("coffee", "coffee-again")].kind == "exact"
    assert ("astronaut", "astronaut-edited") in pairs
    framed_pairs = [k for k in pairs if k[0].startswith("post-") and k[1].startswith("post-")]
    assert framed_pairs == []  # different photos in one frame are not duplicates
    screenshots = [k for k in pairs if {k[0], k[1]} in ({n, f"post-{n}"} for n in FRAMED)]
    assert len(screenshots) >= 6  # a photo and its screenshot are
    wrong = [k for k in pairs if k[0].replace("post-", "").split("-")[0]
             != k[1].replace("post-", "").split("-")[0]]
    assert wrong == []
    rejected = [p for p in audit.candidates if p.reason == "evidence on template only"]
    assert rejected, "the shared frame should have produced (rejected) candidates"


def test_dedup_outputs(audit, dup_folder):
    out = audit.out
    pairs = pq.read_table(out / "pairs.parquet")
    clusters = pq.read_table(out / "clusters.parquet")
    assert pairs.schema.equals(PAIR_SCHEMA) and clusters.schema.equals(CLUSTER_SCHEMA)
    assert pairs.num_rows == len(audit.pairs)
    rows = clusters.to_pylist()
    by_cluster: dict[int, list[dict]] = {}
    for r in rows:
        by_cluster.setdefault(r["cluster_id"], []).append(r)
    for members in by_cluster.values():
        keep = [m for m in members if m["keep"]]
        assert len(keep) == 1 and keep[0]["is_representative"]
    pixels = {p.stem: Image.open(p).size[0] * Image.open(p).size[1] for p in dup_folder.iterdir()}
    framed_kept = framed_larger = 0
    for members in by_cluster.values():  # --keep largest: the most content pixels
        ids = {r["image_id"] for r in members}
        kept = next(r["image_id"] for r in members if r["keep"])
        shots = [i for i in ids if i.startswith("post-") and i.removeprefix("post-") in ids]
        if shots:  # a screenshot mostly has more pixels (the frame) than its photo; keep the photo
            framed_larger += pixels[shots[0]] > pixels[shots[0].removeprefix("post-")]
            assert not kept.startswith("post-"), (kept, ids)
            framed_kept += 1
        else:
            assert pixels[kept] == max(pixels[i] for i in ids)
    assert framed_kept >= 6 and framed_larger >= 4
    html = (out / "report.html").read_text()
    assert "Threshold sweep" in html and "Cluster sizes" in html
    for src in re.findall(r'src="([^"]+)"', html):
        assert (out / src).is_file(), src
    assert json.loads((out / "audit.json").read_text())["pairs"] == len(audit.pairs)


def test_self_join_as_ray_job_matches_in_process(audit, monkeypatch):
    """The descriptor self-join sharded into Ray tasks (each opens its own engine) finds the
    same neighbours as the in-process loop, crops included."""
    from copytrace.pipelines.dedup import candidates as dc
    from copytrace.pipelines.engine import QueryEngine, match_config

    monkeypatch.setattr(dc, "SHARD_ROWS", 7)  # several tasks on a small index
    engine = QueryEngine.open(audit.index, config=match_config(k=5, expand=False, verify=True))
    catalog = engine.index.catalog()
    uris = dict(zip(catalog.column("image_id").to_pylist(), catalog.column("uri").to_pylist(),
                    strict=True))
    inline: dict = {}
    ray_found: dict = {}
    dc.descriptor_candidates(engine, inline, uris=uris, k=5, min_score=0.02)
    dc.descriptor_candidates(engine, ray_found, uris=uris, k=5, min_score=0.02, use_ray=True)
    assert inline and set(ray_found) == set(inline)
    assert ("astronaut", "astronaut-edited") in inline
    for key, c in inline.items():
        assert ray_found[key].similarity == pytest.approx(c.similarity, abs=1e-4)


def test_sql_over_audit(audit):
    t = audit_sql(audit.out, "SELECT p.kind, count(*) n, min(c.width) w FROM pairs p "
                  "JOIN catalog c ON c.image_id = p.image_id_a GROUP BY 1 ORDER BY 1")
    kinds = dict(zip(t.column("kind").to_pylist(), t.column("n").to_pylist(), strict=True))
    assert kinds["exact"] == 1 and sum(kinds.values()) == len(audit.pairs)
    pdq = audit_sql(audit.out, "SELECT pdq_hex FROM pdq WHERE image_id = 'coffee'")
    assert len(pdq.column("pdq_hex")[0].as_py()) == 64
    with pytest.raises(ValueError, match="SQL error"):
        audit_sql(audit.out, "SELECT nope FROM pairs")


def test_incremental_against_index(audit, dup_folder, tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    copy, _ = random_copy(Image.fromarray(photo("chelsea")), random.Random(3),
                          allowed=["crop", "colour"], min_edits=2, max_edits=2)
    (new / "chelsea-repost.jpg").write_bytes(jpeg_bytes(copy, 85))
    shutil.copy(dup_folder / "rocket.jpg", new / "rocket-same-bytes.jpg")
    framed = social_frame(Image.fromarray(photo("brick")), 0)  # brick: never framed before
    (new / "post-brick.jpg").write_bytes(jpeg_bytes(framed, 90))
    result = dedup_against(new, audit.index, tmp_path / "inc", use_ray=False, show_progress=False)
    found = {(p.a, p.b, str(p.kind)) for p in result.pairs}
    assert ("rocket-same-bytes", "rocket", "exact") in found
    assert any(a == "chelsea-repost" and b == "chelsea" for a, b, _ in found)
    partners = {b for a, b, _ in found if a == "post-brick"}
    assert not any(b.startswith("post-") for b in partners)
    clusters = pq.read_table(tmp_path / "inc" / "clusters.parquet").to_pylist()
    assert all(not r["keep"] for r in clusters if r["image_id"] == "chelsea-repost")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "copytrace.app.cli", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=600)


def test_cli_hash_match_hashes_and_sql(audit, dup_folder, tmp_path):
    r = _cli("hash", str(dup_folder / "chelsea.jpg"), "--format", "pdq-hex", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "pdq_hex,image_id,quality" and len(lines[1].split(",")[0]) == 64
    (tmp_path / "hashes.csv").write_text(r.stdout)
    # --keep oldest: no EXIF dates here, so file times decide; the copies are made the oldest,
    # which --keep largest would never pick (the edited copy is a crop, the other a tie)
    for name, year in (("astronaut-edited", 2001), ("coffee-again", 2002)):
        stamp = time.mktime((year, 6, 1, 12, 0, 0, 0, 0, -1))
        os.utime(dup_folder / f"{name}.jpg", (stamp, stamp))
    r = _cli("dedup", str(audit.index), "--out", str(tmp_path / "a2"), "--no-report",
             "--keep", "oldest", "--match-hashes", str(tmp_path / "hashes.csv"), "--quiet",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    matched = pq.read_table(tmp_path / "a2" / "hash_matches.parquet").column("image_id").to_pylist()
    assert "chelsea" in matched and "rocket" not in matched
    clusters = pq.read_table(tmp_path / "a2" / "clusters.parquet").to_pylist()
    cluster_of = {r["image_id"]: r["cluster_id"] for r in clusters}
    kept = {r["cluster_id"]: r["image_id"] for r in clusters if r["keep"]}
    assert kept[cluster_of["astronaut"]] == "astronaut-edited"
    assert kept[cluster_of["coffee"]] == "coffee-again"
    assert json.loads((tmp_path / "a2" / "audit.json").read_text())["keep"] == "oldest"
    r = _cli("sql", str(tmp_path / "a2"), "SELECT count(*) AS n FROM clusters WHERE keep",
             cwd=tmp_path)
    assert r.returncode == 0 and str(len(audit.clusters)) in r.stdout
    r = _cli("sql", str(tmp_path / "a2"), "SELECT count(*) AS n FROM clusters WHERE keep",
             "--format", "json", cwd=tmp_path)  # the same rendering as `index sql`
    assert r.returncode == 0 and json.loads(r.stdout) == [{"n": len(audit.clusters)}]
    r = _cli("sql", str(tmp_path / "a2"), "SELEC broken", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


SCREENSHOT_ENV = "COPYTRACE_REPORT_SCREENSHOT"  # where to keep the screenshot (default: tmp)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_report_loads_in_chromium_without_errors(audit, tmp_path):
    report = Path(audit.out) / "report.html"
    tools = DevTools(tmp_path / "profile")
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target,
                                                       "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1600,
                                                          "deviceScaleFactor": 1,
                                                          "mobile": False}, session=session)
        tools.send("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
        tools.wait_event("Page.loadEventFired", timeout=120)
        images = json.loads(tools.send("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images).map(i => "
                          "[i.getAttribute('src'), i.complete && i.naturalWidth > 0]))",
            "returnByValue": True}, session=session)["result"]["value"])
        heading = tools.send("Runtime.evaluate", {"expression": "document.querySelector('h1')"
                                                  ".textContent", "returnByValue": True},
                             session=session)["result"]["value"]
        shot = tools.send("Page.captureScreenshot", {"format": "png"}, session=session)
        time.sleep(0.5)  # late console / network events
        tools.send("Runtime.evaluate", {"expression": "1"}, session=session)
    finally:
        tools.close()
    path = Path(os.environ.get(SCREENSHOT_ENV, tmp_path / "report.png"))
    path.write_bytes(base64.b64decode(shot["data"]))
    assert heading == "copytrace dedup audit"
    assert console_errors(tools.events) == []
    assert len(images) >= 2 * len(audit.clusters)  # every cluster shows its members
    broken = [src for src, ok in images if not ok]
    assert broken == [], f"thumbnails that did not load: {broken[:5]}"
    assert path.stat().st_size > 10_000


@pytest.mark.devdata
def test_view_check_rejects_other_photos_of_a_flat_object_keeps_copies(dev_data, tmp_path):
    """UKBench: handheld photos of one flat object (a CD cover seen from different angles)
    verify with hundreds of inliers; the shipped view check (fitted on other UKBench objects)
    calls them other views, and still accepts edited digital copies of the same photos.
    Known limit: photos re-shot from (almost) the same position look like copies to it."""
    from copytrace.matching.calibrate import load_calibration
    from copytrace.matching.verify import VerifyConfig
    from copytrace.matching.view_check import shipped_view_check
    from copytrace.pipelines.dedup.score import ScoreJob, score_jobs

    check = shipped_view_check()
    assert check is not None
    files = [dev_data / "ukbench" / f"ukbench{n:05d}.jpg" for n in (4, 5, 6, 7)]
    copies = []
    for n, f in enumerate(files):
        edited, _ = random_copy(Image.open(f).convert("RGB"), random.Random(n),
                                allowed=["crop", "colour", "text"], min_edits=2, max_edits=2)
        copies.append(tmp_path / f"copy{n}.jpg")
        copies[-1].write_bytes(jpeg_bytes(edited, 80))
    views = [(a, b) for a in files for b in files if a != b]
    jobs = [ScoreJob(str(a), str(a), [(str(b), str(b), 0.3)]) for a, b in views]
    jobs += [ScoreJob(str(c), str(c), [(str(f), str(f), 0.3)]) for c, f in zip(copies, files,
                                                                                strict=True)]
    scored = score_jobs(jobs, {}, verify_config=VerifyConfig(), calibration=load_calibration(),
                        template_config=TemplateConfig())
    verdicts = [check.is_copy(ev["verification"], ev["check"].coverage, ev.get("shading"),
                              ev.get("residuals"))
                if ev.get("verification") is not None and ev["check"] is not None else None
                for _, _, _, ev in scored]
    other, copy = verdicts[: len(views)], verdicts[len(views):]
    assert sum(v is not None for v in copy) >= 3, "edited copies should verify"
    assert all(v for v in copy if v is not None), f"a verified copy called another view: {copy}"
    decided = [v for v in other if v is not None]
    assert len(decided) >= 8, "the other views should verify (a flat object)"
    assert sum(not v for v in decided) >= 0.75 * len(decided), other


def test_keep_largest_prefers_content_over_pixels():
    """A crop copy has less content than its original; an upscaled screenshot-like copy in a
    blank frame has more pixels but the same content, so the original is kept."""
    from copytrace.matching.keep_rule import largest_content, member_content

    orig = photo("coffee")  # 400 x 600
    crop = orig[50:350, 100:500]
    framed = np.full((700, 800, 3), 255, np.uint8)
    framed[150:550, 100:700] = orig
    images = {"orig": orig, "crop": crop, "framed": framed}
    sizes = {k: (v.shape[1], v.shape[0]) for k, v in images.items()}

    @dataclass
    class Pair:
        a: str
        b: str
        query: str
        homography: tuple

    def shift(dx: float, dy: float) -> tuple:
        return (1.0, 0.0, dx, 0.0, 1.0, dy, 0.0, 0.0, 1.0)

    pairs = [Pair("crop", "orig", "crop", shift(100, 50)),
             Pair("framed", "orig", "orig", shift(100, 150))]
    content = member_content(list(images), pairs, sizes, {}, images.__getitem__, texture_std=5.0)
    assert content["orig"].pixels > content["crop"].pixels
    assert sizes["framed"][0] * sizes["framed"][1] > content["framed"].pixels
    assert largest_content(list(images), content, lambda m: (m,)) == "orig"
    assert largest_content(["crop", "framed"], content, lambda m: (m,)) == "framed"


def _pair(a: str, b: str, score: float = 0.9) -> ScoredPair:
    return ScoredPair(a, b, "near", score, 0.9, None, 50, 1.0, 0, True, "content match")


def test_bridges_are_pairs_joining_two_groups():
    pairs = [_pair("a", "c"), _pair("a", "b"), _pair("b", "d"), _pair("x", "y"), _pair("y", "z"),
             _pair("x", "z")]
    assert [(p.a, p.b, c, d) for p, c, d in bridges(pairs)] == [("a", "b", "c", "d")]


def test_inconsistent_bridge_dropped_consistent_chain_kept(tmp_path, frames):
    """Two screenshots in one frame joined by a (frame-only) pair whose photos share nothing
    are split; a chain photo - screenshot - crop of the screenshot - smaller crop stays."""
    files = {}
    for name, pixels in (("astronaut", photo("astronaut")), ("coffee", photo("coffee")),
                         ("post-astronaut", frames["astronaut"]), ("post-coffee", frames["coffee"]),
                         ("shot-crop", frames["astronaut"][60:560, 10:470]),
                         ("crop-crop", frames["astronaut"][150:450, 60:400])):
        files[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(pixels).save(files[name])
    kwargs = dict(use_ray=False, ray_address=None, keypoint_dir=None, verify_config=VerifyConfig(),
                  calibration=load_calibration(), template_config=TemplateConfig())
    frame_only = [_pair("astronaut", "post-astronaut"), _pair("coffee", "post-coffee"),
                  _pair("post-astronaut", "post-coffee", 0.6)]
    kept, dropped = drop_inconsistent(frame_only, files, {}, **kwargs)
    assert list(dropped) == [frozenset(("post-astronaut", "post-coffee"))]
    assert dropped[frozenset(("post-astronaut", "post-coffee"))].reason.startswith(
        "partners disagree")
    assert len(kept) == 2
    chain = [_pair("astronaut", "post-astronaut"), _pair("post-astronaut", "shot-crop"),
             _pair("crop-crop", "shot-crop")]
    assert [(p.a, p.b) for p, _, _ in bridges(chain)] == [("post-astronaut", "shot-crop")]
    kept, dropped = drop_inconsistent(chain, files, {}, **kwargs)
    assert dropped == {} and kept == chain


def test_rejection_reason_says_template_only_when_the_agreement_is_on_the_template():
    """A shared frame agrees on its template cells, the photos inside do not: "template only".
    A paste-over copy agrees on some content and little template: "content disagrees", even
    though its overlap holds template cells."""
    frame_only = ContentCheck(overlap_cells=100, template_cells=30, agreeing_content=2,
                              agreeing_all=30, passed=False)
    pasted_over = ContentCheck(overlap_cells=100, template_cells=10, agreeing_content=30,
                               agreeing_all=32, passed=False)
    assert rejection_reason(frame_only) == "evidence on template only"
    assert rejection_reason(pasted_over) == "content disagrees"
