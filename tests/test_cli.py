"""The real `copytrace` command: help that explains, one-line errors, a full round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BIN = str(Path(sys.executable).parent / "copytrace")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([BIN, *args], capture_output=True, text=True, env=ENV, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_help_lists_the_jobs():
    text = run("--help").stdout
    for command in ("index", "query", "eval", "bench"):
        assert command in text
    build_help = run("index", "build", "--help").stdout
    assert "--memory-budget" in build_help and "--ray-address" in build_help


def test_missing_input_is_a_one_line_error(tmp_path):
    proc = run("index", "build", str(tmp_path / "nope"), "--index", str(tmp_path / "i"),
               check=False)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no such file or folder" in lines[0] and "nope" in lines[0]
    proc = run("query", str(tmp_path), "--index", str(tmp_path / "not-an-index"), check=False)
    assert proc.returncode == 2 and "not a copytrace index" in proc.stderr


def test_round_trip_build_query_eval(tmp_path, photos_dir):
    index = tmp_path / "index"
    run("index", "build", str(photos_dir), "--index", str(index), "--no-ray", "-q")
    preds = tmp_path / "preds.csv"
    run("query", str(photos_dir), "--index", str(index), "-k", "3", "-o", str(preds), "-q")
    gt = tmp_path / "gt.csv"
    gt.write_text("query_id,reference_id\n" + "".join(f"{p.stem},{p.stem}\n"
                                                      for p in photos_dir.glob("*.jpg")))
    scores = json.loads(run("eval", "disc", "--gt", str(gt), "--predictions", str(preds),
                            "--json").stdout)
    assert scores["acc@1"] == 1.0 and scores["uAP"] > 0.99
    info = json.loads(run("index", "info", str(index)).stdout)
    assert info["counts"]["indexed"] == len(list(photos_dir.glob("*.jpg")))
    one = json.loads(run("query", str(photos_dir / "coffee.jpg"), "--index", str(index),
                         "--json", "-q").stdout)
    assert one[0]["matches"][0]["reference_id"] == "coffee"
    n = len(list(photos_dir.glob("*.jpg")))
    errors = run("index", "errors", str(index))
    assert errors.stdout == "" and f"0 errors in {n} inputs" in errors.stderr
    again = run("index", "build", str(photos_dir), "--index", str(index), "--no-ray", "-q")
    assert "already up to date" in again.stdout and "resumed" not in again.stdout
    refused = run("serve", "--index", str(index), "--model", str(tmp_path / "no-model.pt"),
                  "--port", "1", check=False)
    assert refused.returncode == 2 and "serving" not in refused.stderr, refused.stderr


def test_query_localize_writes_the_edit_mask(tmp_path, photos_dir):
    import numpy as np
    from PIL import Image, ImageDraw

    index = tmp_path / "index"
    run("index", "build", str(photos_dir), "--index", str(index), "--no-ray", "-q")
    copy = Image.open(photos_dir / "astronaut.jpg").convert("RGB")
    ImageDraw.Draw(copy).rectangle((300, 60, 420, 180), fill=(255, 0, 0))  # an edit
    copy = copy.resize((400, 400))
    query = tmp_path / "edited.jpg"
    copy.save(query, quality=90)
    out = tmp_path / "diffs"
    run("query", str(query), "--index", str(index), "-k", "3", "--localize", str(out), "-q")
    mask = np.asarray(Image.open(out / "edited__astronaut.mask.png"))
    assert mask.shape == (400, 400)
    assert mask[75:85, 310:320].mean() > 200  # inside the painted box (scaled by 400/512)
    assert mask[300:400, 0:100].mean() < 20  # untouched corner
    assert (out / "edited__astronaut.json").exists()
    # `localize` writes only what is asked for: JSON alone needs no --mask
    only_json = tmp_path / "only.json"
    said = run("localize", str(query), str(photos_dir / "astronaut.jpg"), "--json", str(only_json))
    assert json.loads(only_json.read_text())["original"].endswith("astronaut.jpg")
    assert "json" in said.stdout and not list(tmp_path.glob("*.png"))
    nothing = run("localize", str(query), str(photos_dir / "astronaut.jpg"), check=False)
    assert nothing.returncode == 2 and "give --mask, --overlay or --json" in nothing.stderr
