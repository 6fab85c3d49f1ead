"""Query adapters (`copytrace adapt`): an adapter that only memorises its pairs is refused,
`--adapter none` is today's query, adding and removing one are index versions, and an adapter
trained for another model is refused in one line. Whether adapters lift new copies of their
pattern and leave the other patterns alone is measured on the dev benchmark
(`benchmarks/pattern_bench.py`): on this 48-image index no adapter lifted held-out copies."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copytrace.indexing.adapters import AdapterError, adapter_cards, load_adapters, remove_adapter
from copytrace.indexing.manifest import IndexLayout, Manifest
from copytrace.pipelines.adapt import AdaptOptions, adapt_index
from copytrace.pipelines.build import build_index
from copytrace.pipelines.engine import QueryEngine

from photos import PHOTO_NAMES, jpeg_bytes, photo

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
OPTIONS = AdaptOptions(views_per_pair=3, replay=64, negatives=16)


def made_up(img: Image.Image, rng: random.Random) -> Image.Image:
    """A pattern no training edit makes: colours inverted, channels rotated, a striped frame."""
    arr = 255 - np.asarray(img.convert("RGB"))[..., [1, 2, 0]]
    h, w = arr.shape[:2]
    b = max(8, min(h, w) // 6)
    out = np.zeros((h + 2 * b, w + 2 * b, 3), np.uint8)
    stripes = ((np.arange(out.shape[1]) // max(2, b // 3)) % 2 * 255).astype(np.uint8)
    out[:] = stripes[None, :, None]
    out[..., 1] = rng.randrange(256)
    out[b : b + h, b : b + w] = arr
    return Image.fromarray(out)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """48 references (the quadrants of scikit-image's photos) indexed; their pattern copies."""
    root = tmp_path_factory.mktemp("adapt")
    refs = root / "refs"
    refs.mkdir()
    ids = []
    for name in PHOTO_NAMES:
        arr = photo(name)
        h, w = arr.shape[:2]
        for q, (y, x) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            tile = arr[y * h // 2 : (y + 1) * h // 2, x * w // 2 : (x + 1) * w // 2]
            (refs / f"{name}-{q}.jpg").write_bytes(jpeg_bytes(tile, 95))
            ids.append(f"{name}-{q}")
    index = root / "idx"
    build_index(refs, index, use_ray=False, show_progress=False)
    copies = root / "copies"
    copies.mkdir()
    rng = random.Random(0)
    for i in ids:
        (copies / f"{i}.jpg").write_bytes(jpeg_bytes(made_up(Image.open(refs / f"{i}.jpg"), rng)))
    return index, copies, ids


def _pairs(path: Path, copies: Path, ids: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["copy", "original"])
        w.writerows([(str(copies / f"{i}.jpg"), i) for i in ids])
    return path


def test_an_adapter_that_only_memorises_its_pairs_is_refused(catalog, tmp_path,
                                                             one_torch_thread):
    """On 48 references, 24 pairs of this pattern teach the adapter their own originals, not
    the pattern: copies of pairs left out of training rank their originals worse with it
    (measured: the other 24 copies' top-1 fell from 19 to 5 when such an adapter was used).
    Saving it would make every later query of the pattern worse, so `adapt` refuses."""
    index, copies, ids = catalog
    version = Manifest.read(IndexLayout(index).manifest).version
    with pytest.raises(AdapterError, match="not saved: on example pairs left out of its "
                                           "training, top-1 fell"):
        adapt_index(_pairs(tmp_path / "pairs.csv", copies, ids[:24]), index, name="inverted",
                    options=OPTIONS, show_progress=False)
    manifest = Manifest.read(IndexLayout(index).manifest)
    assert manifest.version == version and manifest.adapters == {}


def test_adapter_none_is_todays_query_and_removal_is_an_index_change(catalog, tmp_path,
                                                                    one_torch_thread):
    index, copies, ids = catalog
    queries = [copies / f"{i}.jpg" for i in ids[:6]]
    with QueryEngine.open(index, device="cpu") as engine:
        assert engine.adapters == []
        plain = [r.as_json() for r in engine.query(queries, verify="off")]
    version = Manifest.read(IndexLayout(index).manifest).version
    adapt_index(_pairs(tmp_path / "pairs.csv", copies, ids[:10]), index, name="inv",
                options=OPTIONS, show_progress=False, allow_worse=True)
    manifest = Manifest.read(IndexLayout(index).manifest)
    assert manifest.version == version + 1 and set(manifest.adapters) == {"inv"}
    assert [c.name for c in adapter_cards(index)] == ["inv"]
    with QueryEngine.open(index, device="cpu", adapters="none") as engine:
        assert [r.as_json() for r in engine.query(queries, verify="off")] == plain
    with QueryEngine.open(index, device="cpu", adapters="inv") as engine:
        views = {m["view"] for r in engine.query(queries, verify="off")
                 for m in r.as_json()["matches"]}
        assert any(v == "adapter:inv" for v in views)
    assert remove_adapter(index, "inv") == version + 2
    assert Manifest.read(IndexLayout(index).manifest).adapters == {}
    with pytest.raises(AdapterError, match="no adapter 'inv'"):
        load_adapters(index, "inv")


def test_an_adapter_for_another_model_is_refused_in_one_line(catalog, tmp_path):
    index, copies, ids = catalog
    adapt_index(_pairs(tmp_path / "pairs.csv", copies, ids[:6]), index, name="other",
                options=AdaptOptions(views_per_pair=1, replay=16, negatives=4),
                show_progress=False, allow_worse=True)
    rel = Manifest.read(IndexLayout(index).manifest).adapters["other"]
    card = index / Path(rel).with_suffix(".json")
    d = json.loads(card.read_text())
    card.write_text(json.dumps(d | {"model_id": "someone-else@0123456789ab",
                                    "model_sha256": "0" * 64}))
    with pytest.raises(AdapterError, match="trained for model someone-else"):
        load_adapters(index, "other")
    assert load_adapters(index, "all") == []  # under 'all' it is skipped, the index stays usable
    proc = subprocess.run([BIN, "query", str(copies / f"{ids[0]}.jpg"), "--index", str(index),
                           "--adapter", "other", "--no-verify"], capture_output=True, text=True,
                          env=ENV, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "adapter 'other' was trained for model someone-else" in lines[0]
    proc = subprocess.run([BIN, "index", "info", str(index)], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert [a["name"] for a in json.loads(proc.stdout)["adapters"]] == ["other"]
    proc = subprocess.run([BIN, "index", "adapter-remove", "other", "--index", str(index)],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0 and "adapter 'other' removed" in proc.stdout
