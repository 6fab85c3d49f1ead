"""`matching_bench` runs end to end through the public query API (so it cannot rot again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from copytrace.benchmarks import matching_bench
from copytrace.benchmarks.make_disc import make_disc


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
    assert "verify_k=1" in report["retune"] and "crops: whole image only" in report["retune"]
    # A rerun re-scores from the caches and gives the same numbers.
    again = matching_bench.main(["--bench", str(bench), "--work", str(work), "--no-ray", "-k", "3"])
    assert again["stages"]["+verify (full)"] == stages["+verify (full)"]
