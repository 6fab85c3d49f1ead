"""`copytrace dedup NEW --against IDX` applies the full audit's checks: another photo of the same
flat object (UKBench) is not a duplicate of the indexed photo, an edited copy of it is."""

from __future__ import annotations

import random
import shutil

import pyarrow.parquet as pq
import pytest
from PIL import Image

from copytrace.descriptors.augment import EditContext, random_copy
from copytrace.pipelines.build import build_index
from copytrace.pipelines.dedup.against import dedup_against

from photos import jpeg_bytes, photo

CATALOG = (0, 4, 8, 12, 16, 20)  # first photo of six UKBench objects (4 photos per object)
OTHER_VIEWS = (5, 6, 7)  # other photos of object 1 (ukbench00004, a flat CD cover)


@pytest.mark.devdata
def test_against_rejects_other_views_reports_edited_copies(dev_data, tmp_path):
    src = dev_data / "ukbench"
    catalog, new = tmp_path / "catalog", tmp_path / "new"
    catalog.mkdir()
    new.mkdir()
    for n in CATALOG:
        shutil.copy(src / f"ukbench{n:05d}.jpg", catalog / f"ukbench{n:05d}.jpg")
    for n in OTHER_VIEWS:
        shutil.copy(src / f"ukbench{n:05d}.jpg", new / f"view{n:05d}.jpg")
    for n in (4, 8):
        edited, _ = random_copy(Image.open(src / f"ukbench{n:05d}.jpg").convert("RGB"),
                                random.Random(n), allowed=["crop", "colour", "text"],
                                min_edits=2, max_edits=2)
        (new / f"copy{n:05d}.jpg").write_bytes(jpeg_bytes(edited, 80))
    build_index(catalog, tmp_path / "idx", use_ray=False, show_progress=False)
    # a permissive threshold: the calibrated score alone would accept the other views
    # (it gives them 0.1-0.2 here), so only the view check can reject them
    result = dedup_against(new, tmp_path / "idx", tmp_path / "inc", threshold=0.1, use_ray=False,
                           report=False, show_progress=False)
    found = {(p.a, p.b) for p in result.pairs}
    assert ("copy00004", "ukbench00004") in found
    assert ("copy00008", "ukbench00008") in found
    views = [p for p in result.candidates if p.a.startswith("view") and p.b == "ukbench00004"]
    assert views, "the other photos of the object should be candidates"
    verified = [p for p in views if p.view_score is not None]
    assert len(verified) >= 2, f"the other photos should verify (a flat object): {views}"
    assert not any(p.duplicate for p in views), f"another view reported as a duplicate: {views}"
    assert all(p.reason == "another view of the object" for p in verified), views
    table = pq.read_table(tmp_path / "inc" / "candidates.parquet").to_pylist()
    copy_rows = [r for r in table if r["image_id_a"] == "copy00004"
                 and r["image_id_b"] == "ukbench00004"]
    assert copy_rows and copy_rows[0]["view_score"] is not None and copy_rows[0]["duplicate"]
    # the view check is what rejects them: without it, the verified views are duplicates
    off = dedup_against(new, tmp_path / "idx", tmp_path / "off", threshold=0.1, view_check=False,
                        use_ray=False, report=False, show_progress=False)
    assert any(p.a.startswith("view") and p.b == "ukbench00004" for p in off.pairs), off.candidates


def test_against_retries_from_the_catalog_side(tmp_path):
    """Hard edits (crop, rotation, blur, rescale at strength 1.6) of flat, dark photos fail as
    the query yet verify with the catalog photo as the query: `--against` retries that way, as
    the full audit does, and finds copies the one-way check misses."""
    catalog, new = tmp_path / "catalog", tmp_path / "new"
    catalog.mkdir()
    new.mkdir()
    for name in ("moon", "retina", "coffee", "chelsea", "rocket", "brick"):
        Image.fromarray(photo(name)).save(catalog / f"{name}.png")
    for name, seed in (("moon", 1), ("moon", 3), ("retina", 0), ("retina", 1)):
        edited, _ = random_copy(Image.fromarray(photo(name)), random.Random(seed),
                                allowed=["crop", "text", "shapes", "rescale", "blur", "rotate"],
                                min_edits=3, max_edits=3, context=EditContext(strength=1.6))
        (new / f"{name}-{seed}.jpg").write_bytes(jpeg_bytes(edited, 80))
    build_index(catalog, tmp_path / "idx", use_ray=False, show_progress=False)
    runs = {rev: dedup_against(new, tmp_path / "idx", tmp_path / f"out-{rev}", use_ray=False,
                               report=False, show_progress=False, reverse=rev)
            for rev in (False, True)}
    found = {rev: {(p.a, p.b) for p in r.pairs} for rev, r in runs.items()}
    assert all(a.split("-")[0] == b for a, b in found[True]), found[True]
    assert found[False] < found[True]  # the retry only adds pairs, and here it adds some
    rescued = [p for p in runs[True].pairs if (p.a, p.b) not in found[False]]
    assert all(p.query == p.b for p in rescued), rescued  # decided with the catalog image as query
