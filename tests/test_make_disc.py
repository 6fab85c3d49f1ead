"""The benchmark generator is reproducible and its ground truth is consistent."""

from __future__ import annotations

import csv
import hashlib

from copytrace.benchmarks.make_disc import make_disc


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_benchmark(tmp_path, photos_dir):
    a = make_disc(photos_dir, tmp_path / "a", seed=7, limit=8)
    make_disc(photos_dir, tmp_path / "b", seed=7, limit=8)
    assert _digest(tmp_path / "a" / "queries") == _digest(tmp_path / "b" / "queries")
    assert (a.references, a.positive_queries, a.negative_queries) == (6, 6, 2)
    rows = _rows(tmp_path / "a" / "gt.csv")
    refs = {p.stem for p in (tmp_path / "a" / "references").iterdir()}
    assert len(rows) == 8 and {r["query_id"] for r in rows} == \
        {p.stem for p in (tmp_path / "a" / "queries").iterdir()}
    assert {r["reference_id"] for r in rows if r["reference_id"]} <= refs
    c = make_disc(photos_dir, tmp_path / "c", seed=8, limit=8)
    assert c.references == 6
    assert _digest(tmp_path / "a" / "queries") != _digest(tmp_path / "c" / "queries")


def test_hard_negative_groups(tmp_path, photos_dir):
    groups = tmp_path / "groups" / "groups.csv"
    groups.parent.mkdir()
    names = sorted(p.name for p in photos_dir.iterdir())[:6]
    for n in names:
        (groups.parent / n).write_bytes((photos_dir / n).read_bytes())
    groups.write_text("file,group\n" + "".join(f"{n},{i // 3}\n" for i, n in enumerate(names)))
    s = make_disc(photos_dir, tmp_path / "b", seed=0, skip=6, hard_negatives=groups)
    assert s.hard_negative_queries == 4  # 2 groups x (3 views - 1 reference)
    rows = _rows(tmp_path / "b" / "gt.csv")
    assert sum(1 for r in rows if not r["reference_id"]) == s.negative_queries + 4
