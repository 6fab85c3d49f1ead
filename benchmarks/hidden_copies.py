"""Copies that hide: the dev references shown small inside a screenshot frame or pasted small into
another photo, some of them turned by 90 degrees, evaluated through the real query engine.

    python -m copytrace.benchmarks.hidden_copies --data ../shared/data --work /tmp/ct-hidden \
        --index /tmp/ct-match/idx-dev

Makes (seeded, once) a DISC-style folder `WORK/hidden-copies` of queries whose originals are
references of the dev benchmark (`dev_benchmark.ensure_dev_benchmark`; its queries are not
touched): the photo at 10-40 % of a social-media screenshot (`dedup_planted.social_frame`, three
frame styles), pasted at 3-10 % of the area into a photo that is not in the dev catalog, a few of
each turned by 90 degrees, and the same framings of photos that are in no catalog (which must
not be called copies: the frame or the background alone is no evidence). Then queries them
against the dev index with `--no-verify` and with the default pipeline, each without and with the
small-copy pass (`matching.small_copies`; the same engine, one run), and prints the per-family table
(`edit_families`) and ms per query of each. `--bench DIR` evaluates another DISC-style folder
(the dev benchmark itself) the same way.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from copytrace.benchmarks.dedup_planted import FRAME_SIZE, PHOTO_BOX, social_frame
from copytrace.benchmarks.dev_benchmark import dev_data_root, ensure_dev_benchmark
from copytrace.benchmarks.disc_io import read_ground_truth
from copytrace.benchmarks.edit_families import family_dicts, family_table, family_text, query_families
from copytrace.benchmarks.make_disc import jpeg_bytes, load_photo
from copytrace.benchmarks.metrics import PredictedMatch
from copytrace.indexing import scan_folder
from copytrace.matching import iou, small_regions
from copytrace.pipelines import QueryEngine, QueryTimings, build_index
from copytrace.util import write_bytes_atomic

log = logging.getLogger(__name__)

BACKGROUNDS = slice(300, 700)
"""ImageNet samples in neither the dev (last 300) nor the calibration (first 300) benchmark."""


Box = tuple[int, int, int, int]


def _scaled(photo: Image.Image, area: float, width: int, height: int) -> Image.Image:
    """`photo` resized to cover `area` of a `width` x `height` image."""
    side = (area * width * height / (photo.width * photo.height)) ** 0.5
    return photo.resize((max(8, round(photo.width * side)), max(8, round(photo.height * side))),
                        Image.BILINEAR)


def _framed(photo: Image.Image, area: float, style: int) -> tuple[Image.Image, Box]:
    """The photo at `area` of the screenshot frame of `style`, and where it sits."""
    small = _scaled(photo, area, *FRAME_SIZE)
    small.thumbnail((PHOTO_BOX[2] - PHOTO_BOX[0], PHOTO_BOX[3] - PHOTO_BOX[1]), Image.BILINEAR)
    x0 = PHOTO_BOX[0] + (PHOTO_BOX[2] - PHOTO_BOX[0] - small.width) // 2
    y0 = PHOTO_BOX[1] + (PHOTO_BOX[3] - PHOTO_BOX[1] - small.height) // 2
    return social_frame(small, style), (x0, y0, x0 + small.width, y0 + small.height)


def _pasted(photo: Image.Image, background: Image.Image, area: float,
            rng: random.Random) -> tuple[Image.Image, Box]:
    """The photo at `area` of `background`, pasted at a random place in it, and where."""
    out = background.copy()
    small = _scaled(photo, area, out.width, out.height)
    x = rng.randrange(0, max(1, out.width - small.width))
    y = rng.randrange(0, max(1, out.height - small.height))
    out.paste(small, (x, y))
    return out, (x, y, x + small.width, y + small.height)


def _turned(img: Image.Image, box: Box, rng: random.Random) -> tuple[Image.Image, Box]:
    """Turned by 90 degrees either way, with the box turned along."""
    x0, y0, x1, y1 = box
    if rng.random() < 0.5:  # counter-clockwise: (x, y) -> (y, W - x)
        return img.transpose(Image.Transpose.ROTATE_90), (y0, img.width - x1, y1, img.width - x0)
    return img.transpose(Image.Transpose.ROTATE_270), (img.height - y1, x0, img.height - y0, x1)


def _band(area: float) -> str:
    return "tiny" if area < 0.1 else "small" if area < 0.2 else "medium"


def make_hidden(data: Path, dev: Path, out: Path, *, seed: int = 0, screenshots: int = 60,
                pastes: int = 45, rotated: int = 12, negatives: int = 20) -> Path:
    """Write `out/queries`, `out/gt.csv`, `out/sources.csv` (edits name the families; `box`
    is where the photo sits in the query), once."""
    if (out / "gt.csv").exists():
        return out
    rng = random.Random(seed)
    with open(dev / "sources.csv", newline="") as fh:
        refs = sorted((r["id"], r["source"]) for r in csv.DictReader(fh)
                      if r["role"] == "reference" and "imagenet" in r["source"])
    files = [s.uri for s in scan_folder(data / "photos" / "imagenet-sample")]
    backgrounds = files[BACKGROUNDS]
    rng.shuffle(backgrounds)
    unindexed, backgrounds = backgrounds[:negatives], backgrounds[negatives:]
    picked = rng.sample(refs, screenshots + pastes)
    every = max(1, (screenshots + pastes) // rotated)
    rows: list[tuple[Image.Image, str, str, str, Box]] = []  # image, reference, source, edits, box
    for i, (rid, src) in enumerate(picked):
        photo = Image.open(dev / "references" / f"{rid}.jpg").convert("RGB")
        if i < screenshots:  # half of them below the first pass's 8 % region floor
            area = rng.uniform(0.04, 0.10) if i % 2 else rng.uniform(0.10, 0.40)
            img, box = _framed(photo, area, i % 3)
            edits = [f"screenshot({area:.2f} style{i % 3})"]
        else:
            area = rng.uniform(0.03, 0.10)
            img, box = _pasted(photo, load_photo(backgrounds[i % len(backgrounds)], 1024), area,
                               rng)
            edits = [f"paste({area:.2f})"]
        edits.append(_band(area))
        if i % every == every // 2:
            img, box = _turned(img, box, rng)
            edits.append("rot90")
        rows.append((img, rid, src, "+".join(edits), box))
    for j, src in enumerate(unindexed):  # framings of photos in no catalog: must stay below 0.5
        photo = load_photo(src, 1024)
        if j % 2 == 0:
            area = rng.uniform(0.04, 0.40)
            img, box = _framed(photo, area, j % 3)
            edit = f"screenshot({area:.2f} style{j % 3})"
        else:
            area = rng.uniform(0.03, 0.10)
            img, box = _pasted(photo, load_photo(backgrounds[-1 - j], 1024), area, rng)
            edit = f"paste({area:.2f})"
        rows.append((img, "", src, edit + "+not-indexed", box))
    rng.shuffle(rows)
    gt, sources = [("query_id", "reference_id")], [("id", "role", "source", "edits", "box")]
    for i, (img, rid, src, edits, box) in enumerate(rows):
        qid = f"H{i:06d}"
        write_bytes_atomic(out / "queries" / f"{qid}.jpg",
                           jpeg_bytes(img, rng.choice((75, 85, 90))))
        gt.append((qid, rid))
        sources.append((qid, "query", src, edits, " ".join(map(str, box))))
    write_bytes_atomic(out / "sources.csv", _csv(sources))
    write_bytes_atomic(out / "gt.csv", _csv(gt))
    return out


def _csv(rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode()


def proposal_hits(bench: Path, ids: list[str], *, limit: int = 2) -> dict[str, bool]:
    """Per query with a photo box: does one of `small_regions`' rectangles find it (IoU >= 0.7)?"""
    with open(bench / "sources.csv", newline="") as fh:
        boxes = {r["id"]: tuple(map(int, r["box"].split())) for r in csv.DictReader(fh)
                 if r.get("box")}
    out = {}
    for q in ids:
        if q in boxes:
            pixels = np.asarray(Image.open(bench / "queries" / f"{q}.jpg").convert("RGB"))
            out[q] = any(iou(b, boxes[q]) >= 0.7 for b in small_regions(pixels, limit=limit))
    return out


MODES = {  # label -> (verify mode, small-copy pass on); before = without the pass
    "before: --no-verify": ("off", False),
    "before: default": ("banded", False),
    "after: --no-verify": ("off", True),
    "after: default": ("banded", True),
}


def evaluate(bench: Path, index: Path, *, k: int = 10, limit: int | None = None) -> dict:
    """Each mode of `MODES` through one engine: predictions, family rows and ms per query."""
    gt, queries = read_ground_truth(bench / "gt.csv")
    ids = sorted(queries)[:limit]
    paths = [bench / "queries" / f"{q}.jpg" for q in ids]
    fams = {q: f for q, f in query_families(bench).items() if q in set(ids)}
    gt = [g for g in gt if g.query in set(ids)]
    out: dict = {"queries": len(ids), "modes": {}}
    with QueryEngine.open(index, device="cpu") as engine:
        base = engine.config
        engine.query(paths[:2], verify="off", query_ids=ids[:2])  # warm the model and caches
        for label, (verify, regions) in MODES.items():
            engine.config = base if regions else replace(
                base, expand=replace(base.expand, small_regions=0))
            timings = QueryTimings()
            t = time.perf_counter()
            results = []
            for s in range(0, len(paths), 32):
                results += engine.query(paths[s : s + 32], verify=verify, k=k,
                                        query_ids=ids[s : s + 32], timings=timings)
            ms = 1000 * (time.perf_counter() - t) / max(1, len(ids))
            preds = [PredictedMatch(r.query_id, m.reference_id, m.score)
                     for r in results for m in r.matches]
            rows = family_table(gt, preds, fams)
            log.warning("%s: %.1f ms/query", label, ms)
            out["modes"][label] = {"ms_per_query": round(ms, 1), "families": family_dicts(rows),
                                   "extra_views": timings.views, "_rows": rows}
        engine.config = base
    hits = proposal_hits(bench, ids)
    out["proposals_found"] = {f: f"{sum(hits[q] for q in qs if q in hits)}/"
                                 f"{sum(q in hits for q in qs)}"
                              for f, qs in _by_family(fams).items()}
    for label, m in out["modes"].items():
        plain = out["modes"][label.split(":")[0] + ": --no-verify"]["ms_per_query"]
        m["cost_vs_no_verify"] = round(m["ms_per_query"] / plain, 2)
    return out


def _by_family(fams: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for q, names in fams.items():
        for f in names:
            out.setdefault(f, []).append(q)
    return {**dict(sorted(out.items())), "all": list(fams)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dev data root (default ../shared/data)")
    parser.add_argument("--work", default="/tmp/copytrace-hidden", help="work folder")
    parser.add_argument("--index", help="the dev index (built in WORK/idx-dev when not given)")
    parser.add_argument("--bench", help="evaluate this DISC-style folder instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="only the first N queries")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    data, work = dev_data_root(args.data), Path(args.work)
    dev = ensure_dev_benchmark(data, work)
    index = Path(args.index) if args.index else work / "idx-dev"
    if not (index / "manifest.json").exists():
        build_index(dev / "references", index, use_ray=False, show_progress=False)
    bench = Path(args.bench) if args.bench else make_hidden(data, dev, work / "hidden-copies",
                                                             seed=args.seed)
    report = evaluate(bench, index, limit=args.limit)
    report["benchmark"] = str(bench)
    tables = {label: m.pop("_rows") for label, m in report["modes"].items()}
    print(json.dumps(report, indent=2, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))
    for label, rows in tables.items():
        m = report["modes"][label]
        print("\n" + family_text(rows, title=f"{label}: {m['ms_per_query']} ms/query "
                                              f"({m['cost_vs_no_verify']}x --no-verify), "
                                              f"{m['extra_views']} extra views"))
    print("\nphoto found by a small-region rectangle (IoU >= 0.7), per family: "
          + ", ".join(f"{f} {v}" for f, v in report["proposals_found"].items()))
    return report


if __name__ == "__main__":
    main()
