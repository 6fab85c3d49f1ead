"""The demo's story: its data records what each copy was made from, its verdicts are judged at
the 0.5 threshold ("correct" = the verdict is right), and its table fits 80 columns."""

from __future__ import annotations

import csv

import pytest
from PIL import Image
from rich.console import Console

from copytrace.benchmarks.demo import pick_localization, verdict_table
from copytrace.benchmarks.demo_set import HARD_NEGATIVE, DemoCopy, make_demo_set
from copytrace.benchmarks.demo_story import judge
from copytrace.matching.results import Match, QueryResult


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_set(tmp_path_factory.mktemp("demo"), seed=0)


def test_demo_set_records_edits_and_pasted_photos(demo):
    with open(demo.ground_truth, newline="") as fh:
        gt = {r["query_id"]: r["reference_id"] for r in csv.DictReader(fh)}
    assert gt[HARD_NEGATIVE] == ""  # the other view of the stereo pair is not a copy
    assert {c.query_id: c.original for c in demo.copies} == gt
    refs = {p.stem for p in demo.references.iterdir()}
    for c in demo.copies:
        assert (demo.queries / f"{c.query_id}.jpg").is_file()
        if c.original:
            assert c.original in refs and c.edits and "+".join(c.edits) in c.query_id
    pasted = [c for c in demo.copies if "paste_into" in c.edits]
    assert pasted, "seed 0 makes image-in-image copies"
    for c in pasted:
        background = c.others["paste_into"]
        assert background in refs and background != c.original
        if c.edits[-1] == "paste_into" or c.edits[-2:] == ("paste_into", "jpeg"):
            # nothing resized it afterwards: the copy has the background photo's size
            with Image.open(demo.queries / f"{c.query_id}.jpg") as q, \
                    Image.open(demo.references / f"{background}.jpg") as bg:
                assert q.size == bg.size


def _result(qid: str, *matches: tuple[str, float], inliers: int | None = None) -> QueryResult:
    return QueryResult(qid, f"{qid}.jpg", [Match(r, s, s, {"inliers": inliers} if inliers else {})
                                           for r, s in matches])


def test_verdicts_are_judged_at_the_threshold():
    copy = DemoCopy("camera__copy0_text", "camera", 0, ("text",))
    found = judge(copy, _result(copy.query_id, ("camera", 0.93), ("coins", 0.02)))
    assert (found.outcome, found.is_copy, found.correct, found.rank) == ("found", True, True, 1)
    assert found.why == ""
    low = judge(copy, _result(copy.query_id, ("camera", 0.04), inliers=12))
    assert low.outcome == "missed" and not low.correct and not low.is_copy
    assert "0.04 < 0.5" in low.why and "12 verified inliers" in low.why

    pasted = DemoCopy("camera__copy1_paste_into", "camera", 1, ("paste_into",), {"paste_into": "chelsea"})
    wrong = judge(pasted, _result(pasted.query_id, ("chelsea", 0.98), ("camera", 0.77)))
    assert wrong.outcome == "wrong original" and wrong.is_copy and not wrong.correct and wrong.rank == 2
    assert "image-in-image" in wrong.why and "pasted small into chelsea" in wrong.why
    assert "the query holds both" in wrong.why  # camera also scored above 0.5
    roles = _result(pasted.query_id, ("chelsea", 0.98), ("camera", 0.77))
    roles.matches[0].evidence["role"], roles.matches[1].evidence["role"] = "background", "inserted"
    both = judge(pasted, roles)  # the engine said which photo was pasted into which
    assert both.outcome == "found" and both.correct and both.inserted and both.rank == 2

    negative = DemoCopy(HARD_NEGATIVE, "", 0, ())
    assert judge(negative, _result(HARD_NEGATIVE, ("motorcycle", 0.34))).outcome == "rejected"
    alarm = judge(negative, _result(HARD_NEGATIVE, ("motorcycle", 0.71)))
    assert alarm.outcome == "false alarm" and not alarm.correct and "not a copy" in alarm.why


def test_verdict_table_fits_80_columns_and_keeps_ids(demo):
    verdicts = [judge(c, _result(c.query_id, (c.original or "motorcycle", 0.9123))) for c in demo.copies]
    console = Console(width=80, record=True, color_system=None)
    console.print(verdict_table(verdicts))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for c in demo.copies:
        assert c.label in text
        if c.original:
            assert any(line.split()[:1] == [c.label] and f" {c.original} " in line for line in lines)
    assert pick_localization(verdicts) is not None


@pytest.mark.slow
def test_the_demo_runs_and_explains_itself_in_80_columns(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "copytrace.benchmarks.demo", "--out", str(tmp_path / "d"),
                           "--copies", "1"], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert max(map(len, text.splitlines())) <= 80
    for step in range(1, 7):
        assert f"{step}/6 " in text
    assert "At the 0.5 threshold:" in text and "22 images indexed" in text
    assert "copytrace " in text and "PDQ (peer)" in text and "R@P90" in text
    assert (tmp_path / "d" / "report" / "index.html").is_file()
    assert list((tmp_path / "d" / "localize").glob("*.overlay.png"))
