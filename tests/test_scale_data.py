"""The scale benchmark's catalog (benchmarks/scale_data.py): a sparse sample of rows reads the
same vectors as the ranges around it, generated or spilled, across generation blocks."""

from __future__ import annotations

import numpy as np

from copytrace.benchmarks import scale_data
from copytrace.benchmarks.scale_data import SyntheticCatalog


def test_read_rows_equals_read_range(tmp_path, monkeypatch):
    monkeypatch.setattr(scale_data, "DISTRACTOR_BLOCK", 1000)  # several blocks at a small n
    rng = np.random.default_rng(0)
    real = rng.standard_normal((300, 32)).astype(np.float32)
    planted = rng.standard_normal((20, 32)).astype(np.float32)
    n = 5_000
    rows = np.union1d(np.arange(320), rng.choice(n, 700, replace=False))
    whole = SyntheticCatalog(real, n, planted=planted).read_range(0, n)
    generated = SyntheticCatalog(real, n, planted=planted)
    assert np.array_equal(generated.read_rows(rows), whole[rows])
    spill = tmp_path / "distractors.f32"
    SyntheticCatalog(real, n, planted=planted).write_spill(spill)
    spilled = SyntheticCatalog(real, n, planted=planted, spill=spill)
    assert spilled.spill == spill
    assert np.array_equal(spilled.read_rows(rows), whole[rows])
    assert np.array_equal(spilled.read_rows(rows[:5]), whole[:5])  # real rows only
    assert not np.array_equal(spilled.read_rows(rows[-3:]), whole[-3:])  # not just any rows
