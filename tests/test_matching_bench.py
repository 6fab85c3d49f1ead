"""`matching_bench` runs end to end through the public query API (so it cannot rot again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from copytrace.benchmarks import matching_bench
from copytrace.benchmarks.edit_families import OTHER_VIEW, family_table, query_families
from copytrace.benchmarks.make_disc import make_disc
from copytrace.benchmarks.metrics import GroundTruthMatch, PredictedMatch


def test_family_table_counts_found_below_threshold_and_missed(tmp_path: Path):
    """Per edit family: a copy found above 0.5, one found below it, one never predicted; an
    other-view photo scored a copy counts as a false copy of its own row."""
    (tmp_path / "sources.csv").write_text(
        "id,role,source,edits\nR1,reference,a.jpg,\n"
        "Q1,query,a.jpg,jpeg+crop(0.6)\nQ2,query,b.jpg,crop\nQ3,query,c.jpg,rotate+jpeg\n"
        "Q4,query,d.jpg,hard-negative-of:R1\n")
    fams = query_families(tmp_path)
    assert fams["Q1"] == ["crop", "jpeg"] and fams["Q4"] == [OTHER_VIEW]
    gt = [GroundTruthMatch("Q1", "R1"), GroundTruthMatch("Q2", "R2"), GroundTruthMatch("Q3", "R3")]
    preds = [PredictedMatch("Q1", "R1", 0.9), PredictedMatch("Q2", "R2", 0.3),
             PredictedMatch("Q3", "R9", 0.2), PredictedMatch("Q4", "R1", 0.7)]
    rows = {r.family: r for r in family_table(gt, preds, fams)}
    assert (rows["crop"].copies, rows["crop"].top10, rows["crop"].below_threshold) == (2, 2, 1)
    assert (rows["rotate"].missed, rows["jpeg"].missed) == (1, 1)
    assert rows[OTHER_VIEW].scored_copy == 1 and rows[OTHER_VIEW].copies == 0
    assert rows["all"].queries == 4 and rows["all"].scored_copy == 2


@pytest.mark.slow
def test_matching_bench_smoke(tmp_path: Path, photos_dir: Path, one_torch_thread):
    bench = tmp_path / "bench"
    make_disc(photos_dir, bench, seed=0, max_side=320)
    work = tmp_path / "work"
    report = matching_bench.main(["--bench", str(bench), "--work", str(work), "--no-ray",
                                  "-k", "3", "--retune"])
    stages = report["stages"]
    assert set(stages) >= {"PDQ", "global", "+normalize", "+expand", "+verify (full)",
                           "+verify (banded default)"}
    # Real verification ran: some pairs were verified, and every copy of a photo that is a
    # reference finds it at rank 1 with the full pipeline (these are mild edits of distinct photos).
    assert report["verification"]["pairs_full"] > 0
    assert stages["+verify (full)"]["acc@1"] >= 0.5
    assert stages["+verify (full)"]["uAP"] > 0.3
    fam = {r["family"]: r for r in report["families"]["+verify (banded default)"]}
    assert fam["all"]["copies"] == stages["+verify (full)"]["positives"]
    assert fam["all"]["top10"] + fam["all"]["missed"] == fam["all"]["copies"]
    assert "verify_k=1" in report["retune"] and "crops: whole image only" in report["retune"]
    # A rerun re-scores from the caches and gives the same numbers.
    again = matching_bench.main(["--bench", str(bench), "--work", str(work), "--no-ray", "-k", "3"])
    assert again["stages"]["+verify (full)"] == stages["+verify (full)"]
